"""Password hashing, token issuing and checking, secrets, and the create-admin CLI."""

from __future__ import annotations

import io
import os
import stat
from datetime import timedelta

import pytest
from jose import jwt
from sqlalchemy import select

from db.models import AdminLoginFailure, AdminUser
from serve_app import cli
from serve_app.admin.auth.service import (
    AuthError,
    authenticate,
    create_user,
    hash_password,
    issue_token,
    local_secret,
    user_for_token,
    verify_password,
)
from serve_app.bootstrap import resolve_jwt_secret
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
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_authenticate_records_failures(sessions):
    with sessions.begin() as s:
        create_user(s, "bob", "a long enough secret")
    with pytest.raises(AuthError):
        authenticate(sessions, "nobody", "whatever", "10.0.0.1")
    with sessions() as s:
        assert s.scalar(select(AdminLoginFailure.username)) == "nobody"
    assert authenticate(sessions, "bob", "a long enough secret", "10.0.0.1").username == "bob"


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
