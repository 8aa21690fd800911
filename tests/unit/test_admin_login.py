"""POST /admin/login on a real database, without Ray: throttling per (username, client), long passwords."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import func, select

from catalog.data import load_catalog
from db.models import AdminLoginFailure
from deployments.storage import LocalStorage
from serve_app.deps import Services
from serve_app.admin.auth.service import create_user
from serve_app.settings import Settings
from serve_app.web import create_app

PASSWORD = "the real admin's password"


@pytest.fixture
def services(sessions, tmp_path):
    with sessions.begin() as s:
        create_user(s, "admin", PASSWORD)
    return Services(settings=Settings(data_dir=tmp_path), sessions=sessions,
                    storage=LocalStorage(tmp_path, "http://testserver/media"), catalog=load_catalog(),
                    jwt_secret="k" * 32)


async def _logins(services: Services, attempts: list[tuple[str, str, str]]) -> list[httpx.Response]:
    """(username, password, client address) each, all sent at once."""
    app = create_app(services)

    async def one(username: str, password: str, address: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(address, 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.post("/admin/login", data={"username": username, "password": password})

    return await asyncio.gather(*(one(*attempt) for attempt in attempts))


def _failures(sessions, username: str, address: str) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(AdminLoginFailure)
                        .where(AdminLoginFailure.username == username, AdminLoginFailure.address == address))


def test_fifty_parallel_wrong_logins_never_pass_the_limit(services, sessions):
    responses = asyncio.run(_logins(services, [("admin", f"guess number {i}", "203.0.113.9") for i in range(50)]))
    codes = sorted(r.status_code for r in responses)
    assert codes == [401] * 5 + [429] * 45  # only five guesses ever reached the password check
    assert _failures(sessions, "admin", "203.0.113.9") == 5
    assert all(r.headers["retry-after"] for r in responses if r.status_code == 429)


def test_a_stranger_guessing_cannot_lock_the_real_admin_out(services, sessions):
    stranger = asyncio.run(_logins(services, [("admin", f"guess {i}", "203.0.113.9") for i in range(8)]))
    assert sorted(r.status_code for r in stranger) == [401] * 5 + [429] * 3
    # A scan from the admin's own address, under other usernames, does not lock the admin out either.
    scan = asyncio.run(_logins(services, [(f"user{i}", "x" * 12, "127.0.0.1") for i in range(8)]))
    assert {r.status_code for r in scan} == {401}
    [admin] = asyncio.run(_logins(services, [("admin", PASSWORD, "127.0.0.1")]))
    assert admin.status_code == 200 and admin.json()["token_type"] == "bearer"


def test_a_success_forgets_the_pairs_failures(services, sessions):
    asyncio.run(_logins(services, [("admin", "wrong password", "198.51.100.7")] * 4))
    [ok] = asyncio.run(_logins(services, [("admin", PASSWORD, "198.51.100.7")]))
    assert ok.status_code == 200 and _failures(sessions, "admin", "198.51.100.7") == 0


def test_a_password_longer_than_bcrypt_accepts_is_a_clear_422(services, sessions):
    [response] = asyncio.run(_logins(services, [("admin", "é" * 40, "198.51.100.7")]))  # 80 bytes
    assert response.status_code == 422
    assert "72 bytes" in response.json()["detail"]
    assert _failures(sessions, "admin", "198.51.100.7") == 0  # not a guess: nothing counted
