"""POST /admin/login on a real database, without Ray: limits per address, delays per username, the
bounded bcrypt pool, pruning, long usernames and passwords."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid

import httpx
import pytest
from sqlalchemy import func, insert, select, text

from catalog.data import load_catalog
from db.models import AdminLoginFailure
from deployments.storage import LocalStorage
from serve_app.admin.auth.password_pool import PasswordPool
from serve_app.admin.auth.service import create_user, username_delay
from serve_app.deps import Services
from serve_app.settings import Settings
from serve_app.web import create_app

PASSWORD = "the real admin's password"


def _services(sessions, tmp_path, **settings) -> Services:
    return Services(settings=Settings(data_dir=tmp_path, **settings), sessions=sessions,
                    storage=LocalStorage(tmp_path, "http://testserver/media"), catalog=load_catalog(),
                    jwt_secret="k" * 32)


@pytest.fixture
def services(sessions, tmp_path):
    with sessions.begin() as s:
        create_user(s, "admin", PASSWORD)
    return _services(sessions, tmp_path, login_queue=64)


async def _logins(services: Services, attempts: list[tuple[str, str, str]]) -> list[httpx.Response]:
    """(username, password, client address) each, all sent at once."""
    app = create_app(services)

    async def one(username: str, password: str, address: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(address, 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.post("/admin/login", data={"username": username, "password": password})

    return await asyncio.gather(*(one(*attempt) for attempt in attempts))


def _failures(sessions, **where: str) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(AdminLoginFailure)
                        .where(*(getattr(AdminLoginFailure, column) == value for column, value in where.items())))


def _random_user() -> str:
    return f"guess-{uuid.uuid4().hex[:10]}"


def test_fifty_parallel_wrong_logins_from_one_address_never_pass_its_limit(services, sessions):
    """Whatever the usernames: the address has ten failed tries per window, then 429."""
    responses = asyncio.run(_logins(services, [(_random_user(), f"guess {i}", "203.0.113.9") for i in range(50)]))
    codes = sorted(r.status_code for r in responses)
    assert codes == [401] * 10 + [429] * 40  # only ten guesses ever reached the password check
    assert _failures(sessions, address="203.0.113.9") == 10
    refused = [r for r in responses if r.status_code == 429]
    assert all(895 <= int(r.headers["retry-after"]) <= 900 for r in refused)  # when the oldest failure ages out
    assert "from this address" in refused[0].json()["detail"]
    [other] = asyncio.run(_logins(services, [("admin", PASSWORD, "203.0.113.10")]))
    assert other.status_code == 200  # the next address is not affected


def test_a_username_failing_everywhere_slows_its_next_try_but_never_locks_the_admin_out(services, sessions):
    strangers = asyncio.run(_logins(services, [("admin", f"guess {i}", f"198.51.100.{i}") for i in range(5)]))
    assert [r.status_code for r in strangers] == [401] * 5
    started = time.perf_counter()
    [admin] = asyncio.run(_logins(services, [("admin", PASSWORD, "127.0.0.41")]))
    waited = time.perf_counter() - started
    assert admin.status_code == 200 and admin.json()["token_type"] == "bearer"
    assert 1.0 <= waited < 3  # five failures of "admin" elsewhere: its next try waits 1 s, and gets in
    assert [username_delay(n) for n in range(4, 11)] == [0, 1, 2, 4, 8, 10, 10]


def test_past_the_password_pool_a_login_is_a_429_that_costs_nothing(sessions, tmp_path):
    services = _services(sessions, tmp_path, login_workers=1, login_queue=1)
    responses = asyncio.run(_logins(services, [(_random_user(), "a guess", f"192.0.2.{i}") for i in range(6)]))
    codes = sorted(r.status_code for r in responses)
    assert codes == [401] * 2 + [429] * 4  # one checking, one waiting, the rest refused at once
    busy = [r for r in responses if r.status_code == 429]
    assert all(int(r.headers["retry-after"]) >= 1 and "at once" in r.json()["detail"] for r in busy)
    assert _failures(sessions) == 2  # a refusal at the door is not a try


def test_old_failures_are_pruned_in_small_batches_by_the_logins(services, sessions):
    with sessions.begin() as s:
        s.execute(text("INSERT INTO admin_login_failures (username, address, failed_at) SELECT 'u' || n, "
                       "'192.0.2.1', now() - interval '16 minutes' FROM generate_series(1, 150) AS n"))
        s.execute(insert(AdminLoginFailure), [{"username": "admin", "address": "192.0.2.2"}] * 3)
    [first] = asyncio.run(_logins(services, [(_random_user(), "a guess", "192.0.2.3")]))
    assert first.status_code == 401
    assert _failures(sessions, address="192.0.2.1") == 50  # one batch of 100 per try: no long lock
    asyncio.run(_logins(services, [(_random_user(), "a guess", "192.0.2.3")]))
    assert _failures(sessions, address="192.0.2.1") == 0
    assert _failures(sessions, address="192.0.2.2") == 3  # still inside the window: kept


def test_a_success_forgets_the_pairs_failures(services, sessions):
    asyncio.run(_logins(services, [("admin", "wrong password", "198.51.100.7")] * 4))
    [ok] = asyncio.run(_logins(services, [("admin", PASSWORD, "198.51.100.7")]))
    assert ok.status_code == 200 and _failures(sessions, username="admin", address="198.51.100.7") == 0


def test_a_password_longer_than_bcrypt_accepts_is_a_clear_422(services, sessions):
    [response] = asyncio.run(_logins(services, [("admin", "é" * 40, "198.51.100.7")]))  # 80 bytes
    assert response.status_code == 422
    assert "72 bytes" in response.json()["detail"]
    assert _failures(sessions, address="198.51.100.7") == 0  # not a guess: nothing counted


def test_a_username_longer_than_64_characters_is_a_clear_422(services, sessions):
    [long], [longest] = (asyncio.run(_logins(services, [(name, "a guess", "198.51.100.8")]))
                         for name in ("u" * 65, "u" * 64))
    assert long.status_code == 422 and "64 characters" in long.json()["detail"]
    assert longest.status_code == 401
    assert _failures(sessions, address="198.51.100.8") == 1  # only the 64-character try counted
    with sessions.begin() as s, pytest.raises(ValueError, match="1 to 64 characters"):
        create_user(s, "a" * 65, PASSWORD)


def test_password_checks_run_in_the_idle_cpu_class_not_the_routes():
    pool = PasswordPool(workers=1, queue=0)

    async def policy() -> int:
        return await pool.run(lambda: os.sched_getscheduler(threading.get_native_id()))

    assert asyncio.run(policy()) == os.SCHED_IDLE and os.sched_getscheduler(0) == os.SCHED_OTHER


def test_a_password_thread_rests_as_long_as_each_check_took():
    """Three checks of 0.1 s of CPU on one thread: each answered as soon as it is done, but the next
    starts only after a rest as long, so a flood gets at most half a core."""
    pool = PasswordPool(workers=1, queue=2)

    def check() -> float:
        until = time.thread_time() + 0.1
        while time.thread_time() < until:
            pass
        return time.perf_counter()

    async def three() -> list[float]:
        started = time.perf_counter()
        return [done - started for done in await asyncio.gather(pool.run(check), pool.run(check), pool.run(check))]

    first, second, third = asyncio.run(three())
    assert second - first >= 0.2 and third - second >= 0.2  # a rest (>= the check's 0.1 s), then a check
    assert first >= 0.1
