"""Password hashing, token issuing and checking, secrets, and the create-admin CLI."""

from __future__ import annotations

import asyncio
import io
import os
import stat
import subprocess
import sys
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from jose import jwt
from sqlalchemy import select, update

from catalog.data import load_catalog
from db.models import AdminLoginFailure, AdminUser
from deployments.storage import LocalStorage
from serve_app import cli
from serve_app.admin.auth.password_pool import PasswordPool
from serve_app.admin.auth.service import (
    AuthError,
    LoginPolicy,
    authenticate,
    create_user,
    hash_password,
    issue_token,
    local_secret,
    user_for_token,
    verify_password,
)
from serve_app.bootstrap import resolve_jwt_secret
from serve_app.deps import Services
from serve_app.web import create_app
from serve_app.settings import Settings


def test_passwords_are_bcrypt_hashed_and_checked():
    hashed = hash_password("a long enough secret")
    assert hashed.startswith("$2b$") and "a long enough secret" not in hashed
    assert verify_password("a long enough secret", hashed) and not verify_password("wrong", hashed)
    with pytest.raises(ValueError, match="10 characters"):
        hash_password("short")


def test_tokens_round_trip_and_expire(sessions):
    with sessions.begin() as s:
        user = create_user(s, "alice", "a long enough secret")
    token = issue_token(user, "k" * 32, timedelta(minutes=5))
    with sessions() as s:
        assert user_for_token(s, token, "k" * 32).username == "alice"
        with pytest.raises(AuthError):
            user_for_token(s, token, "another key")
        with pytest.raises(AuthError):
            user_for_token(s, issue_token(user, "k" * 32, timedelta(seconds=-1)), "k" * 32)
        claims = jwt.get_unverified_claims(token)
        assert claims["ver"] == 0
        with pytest.raises(AuthError):  # a token from before token versions: no `ver`, refused
            user_for_token(s, jwt.encode({k: v for k, v in claims.items() if k != "ver"}, "k" * 32), "k" * 32)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def _login(sessions, username: str, password: str) -> AdminUser:
    pool, policy = PasswordPool(workers=1, queue=4), LoginPolicy(per_address=10, window=timedelta(minutes=15))
    return asyncio.run(authenticate(sessions, pool, policy, username, password, "10.0.0.1"))


def test_authenticate_records_failures(sessions):
    with sessions.begin() as s:
        create_user(s, "bob", "a long enough secret")
    with pytest.raises(AuthError):
        _login(sessions, "nobody", "whatever")
    with sessions() as s:
        assert s.scalar(select(AdminLoginFailure.username)) == "nobody"
    assert _login(sessions, "bob", "a long enough secret").username == "bob"


def _admin_cli(database_url: str, data_dir, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
    """`python -m serve_app.cli ...` in a process of its own, as an operator runs it."""
    env = {**os.environ, "SASTRE_DATABASE_URL": database_url, "SASTRE_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "serve_app.cli", *args], env=env, capture_output=True, text=True,
                          input=None if password is None else password + "\n", timeout=120)


def _admin_api_status(sessions, tmp_path, token: str) -> int:
    """GET /admin/fabrics with `token`, through the app's own routes and dependencies."""
    services = Services(settings=Settings(data_dir=tmp_path), sessions=sessions,
                        storage=LocalStorage(tmp_path, "http://testserver/media"), catalog=load_catalog(),
                        jwt_secret="k" * 32)
    with TestClient(create_app(services)) as client:
        return client.get("/admin/fabrics", headers={"Authorization": f"Bearer {token}"}).status_code


def test_set_password_and_deactivate_admin_end_every_earlier_token(sessions, database_url, tmp_path):
    with sessions.begin() as s:
        create_user(s, "dora", "the first password")
        create_user(s, "eve", "eve's own password")
    before = issue_token(_login(sessions, "dora", "the first password"), "k" * 32, timedelta(minutes=5))
    eves = issue_token(_login(sessions, "eve", "eve's own password"), "k" * 32, timedelta(minutes=5))

    changed = _admin_cli(database_url, tmp_path, "set-password", "dora", "--password-stdin", password="the new password")
    assert changed.returncode == 0, changed.stderr
    assert "password of 'dora' changed" in changed.stdout
    # Issued in the same second as the change, or the one before: refused all the same (token version).
    after = issue_token(_login(sessions, "dora", "the new password"), "k" * 32, timedelta(minutes=5))
    with sessions() as s:
        with pytest.raises(AuthError):
            user_for_token(s, before, "k" * 32)
        assert user_for_token(s, after, "k" * 32).username == "dora"
        assert user_for_token(s, eves, "k" * 32).username == "eve"  # another admin's token is untouched
    with pytest.raises(AuthError):
        _login(sessions, "dora", "the first password")
    assert _admin_api_status(sessions, tmp_path, before) == 401  # what an admin route answers the old token
    assert _admin_api_status(sessions, tmp_path, after) == 200

    closed = _admin_cli(database_url, tmp_path, "deactivate-admin", "dora")
    assert closed.returncode == 0 and "'dora' deactivated" in closed.stdout
    with sessions() as s:
        with pytest.raises(AuthError):
            user_for_token(s, after, "k" * 32)
        assert s.scalar(select(AdminUser.is_active).where(AdminUser.username == "dora")) is False
    assert _admin_api_status(sessions, tmp_path, after) == 401
    with pytest.raises(AuthError):
        _login(sessions, "dora", "the new password")
    with sessions.begin() as s:  # reopened by hand, its old tokens stay dead
        s.execute(update(AdminUser).where(AdminUser.username == "dora").values(is_active=True))
    with sessions() as s, pytest.raises(AuthError):
        user_for_token(s, after, "k" * 32)

    unknown = _admin_cli(database_url, tmp_path, "deactivate-admin", "nobody")
    assert unknown.returncode == 1 and "no admin user 'nobody'" in unknown.stderr
    short = _admin_cli(database_url, tmp_path, "set-password", "eve", "--password-stdin", password="short")
    assert short.returncode == 1 and "10 characters" in short.stderr


def test_local_secret_is_made_once_and_private(tmp_path):
    first = local_secret(tmp_path)
    assert local_secret(tmp_path) == first and len(first) >= 48
    assert stat.S_IMODE(os.stat(tmp_path / "jwt_secret").st_mode) == 0o600


def test_production_refuses_to_start_without_a_secret(tmp_path):
    with pytest.raises(RuntimeError, match="SASTRE_JWT_SECRET"):
        resolve_jwt_secret(Settings(environment="production", data_dir=tmp_path))
    assert resolve_jwt_secret(Settings(environment="production", jwt_secret="s" * 40, data_dir=tmp_path)) == "s" * 40
    assert not (tmp_path / "jwt_secret").exists()


def test_create_admin_cli(sessions, database_url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SASTRE_DATABASE_URL", database_url)
    monkeypatch.setenv("SASTRE_DATA_DIR", str(tmp_path))
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough secret\n"))
    cli.main(["create-admin", "carol", "--password-stdin"])
    assert "admin user 'carol' created" in capsys.readouterr().out
    with sessions() as s:
        user = s.scalar(select(AdminUser).where(AdminUser.username == "carol"))
    assert verify_password("a long enough secret", user.password_hash)
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough secret\n"))
    with pytest.raises(SystemExit, match="already exists"):
        cli.main(["create-admin", "carol", "--password-stdin"])


def test_production_refuses_to_start_with_a_short_jwt_secret(tmp_path):
    from serve_app.app import build_app

    with pytest.raises(RuntimeError, match="at least 32 bytes"):
        build_app({"environment": "production", "jwt_secret": "s" * 31, "data_dir": str(tmp_path)})
    assert resolve_jwt_secret(Settings(environment="production", jwt_secret="s" * 32, data_dir=tmp_path)) == "s" * 32
    assert resolve_jwt_secret(Settings(environment="local", jwt_secret="short", data_dir=tmp_path)) == "short"


def test_passwords_longer_than_bcrypt_accepts_are_refused_clearly():
    with pytest.raises(ValueError, match="72 bytes"):
        hash_password("é" * 40)  # 80 bytes in UTF-8
    assert not verify_password("é" * 40, hash_password("a long enough secret"))


def test_python_jose_is_a_release_without_the_2024_cves():
    from importlib.metadata import version

    from packaging.version import Version

    assert Version(version("python-jose")) >= Version("3.4.0")  # CVE-2024-33663, CVE-2024-33664
