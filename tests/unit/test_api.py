"""The FastAPI app on a real database, without Ray: idempotency, cancel, backpressure, outages."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import httpx
import pytest

from catalog.data import load_catalog
from catalog.loader import sync_catalog
from db import jobs
from db.engine import make_engine, make_sessionmaker
from deployments.storage import LocalStorage
from serve_app.deps import Services
from serve_app.web import create_app
from serve_app.jobqueue.backpressure import BacklogGate
from serve_app.bootstrap import put_catalog_swatches
from serve_app.settings import Settings
from tests.job_rows import queue_job

NAVY = {"family_id": "lana-fria", "color_id": "lana-fria-azul-marino", "cuts": ["recto"]}


@pytest.fixture
def api(sessions, tmp_path):
    catalog = load_catalog()
    with sessions.begin() as s:
        sync_catalog(s, catalog)
    storage = LocalStorage(tmp_path, "http://testserver/media")
    put_catalog_swatches(storage, catalog)
    settings = Settings(max_pending_jobs=3, data_dir=tmp_path)
    return Services(settings=settings, sessions=sessions, storage=storage, catalog=catalog,
                    backlog=BacklogGate(settings.max_pending_jobs, ttl_seconds=0))


def call(services: Services, method: str, path: str, **kwargs) -> httpx.Response:
    async def go():
        transport = httpx.ASGITransport(app=create_app(services), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.request(method, path, **kwargs)
    return asyncio.run(go())


def test_same_idempotency_key_and_body_returns_the_same_job(api, sessions):
    first = call(api, "POST", "/generate", json={**NAVY, "seed": 5}, headers={"Idempotency-Key": "order-17"})
    again = call(api, "POST", "/generate", json={**NAVY, "seed": 5}, headers={"Idempotency-Key": "order-17"})
    assert first.status_code == again.status_code == 202
    assert first.json()["job_id"] == again.json()["job_id"]
    assert again.headers["idempotent-replayed"] == "true"
    other = call(api, "POST", "/generate", json={**NAVY, "seed": 5}, headers={"Idempotency-Key": "order-18"})
    assert other.json()["job_id"] != first.json()["job_id"]


def test_same_key_with_another_body_is_a_conflict(api, sessions):
    call(api, "POST", "/generate", json={**NAVY, "seed": 5}, headers={"Idempotency-Key": "order-19"})
    conflict = call(api, "POST", "/generate", json={**NAVY, "seed": 6}, headers={"Idempotency-Key": "order-19"})
    assert conflict.status_code == 409 and "different request body" in conflict.json()["detail"]
    with sessions() as s:
        assert s.query(jobs.GenerationJob).count() == 1


def test_concurrent_retries_with_one_key_create_one_job(api, sessions):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: call(api, "POST", "/generate", json=NAVY,
                                                 headers={"Idempotency-Key": "double-click"}), range(6)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["job_id"] for r in responses}) == 1
    with sessions() as s:
        assert s.query(jobs.GenerationJob).count() == 1


def test_full_backlog_answers_429_with_retry_after_and_writes_nothing(api, sessions):
    for _ in range(3):
        assert call(api, "POST", "/generate", json=NAVY).status_code == 202
    refused = call(api, "POST", "/generate", json=NAVY)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "5"
    assert "retry" in refused.json()["detail"]
    with sessions() as s:
        assert s.query(jobs.GenerationJob).count() == 3


def test_cancel_routes(api, sessions):
    job_id = call(api, "POST", "/generate", json=NAVY).json()["job_id"]
    canceled = call(api, "POST", f"/jobs/{job_id}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    again = call(api, "POST", f"/jobs/{job_id}/cancel")
    assert again.status_code == 409 and "already canceled" in again.json()["detail"]
    assert call(api, "POST", "/jobs/nope/cancel").status_code == 404
    running = call(api, "POST", "/generate", json=NAVY).json()["job_id"]
    with sessions.begin() as s:
        jobs.claim_jobs(s, "runner", 1, 30)
    requested = call(api, "POST", f"/jobs/{running}/cancel")
    assert requested.status_code == 200 and requested.json()["status"] == "processing"
    with sessions() as s:
        assert jobs.cancel_requested(s, running)


@pytest.mark.parametrize("body_seconds, header, expected", [
    (15, None, 15), (None, "15s", 15), (None, "1m30s", 90), (None, "2h", 7200), (None, "20", 20),
    (60, "1m30s", 60), (600, "30s", 30),  # both: the earlier deadline wins
])
def test_a_deadline_from_the_body_or_cancel_after_is_stored_and_shown(api, sessions, body_seconds, header, expected):
    body = {**NAVY, **({"deadline_seconds": body_seconds} if body_seconds else {})}
    created = call(api, "POST", "/generate", json=body, headers={"Cancel-After": header} if header else {})
    assert created.status_code == 202, created.text
    shown = call(api, "GET", f"/jobs/{created.json()['job_id']}").json()
    with sessions() as s:
        job = jobs.get_job(s, created.json()["job_id"])
    assert abs((job.deadline_at - job.created_at).total_seconds() - expected) < 0.5
    assert datetime.fromisoformat(shown["deadline_at"]) == job.deadline_at
    assert call(api, "GET", f"/jobs/{call(api, 'POST', '/generate', json=NAVY).json()['job_id']}").json()[
        "deadline_at"] is None  # no deadline asked, none set


@pytest.mark.parametrize("body, header", [
    ({"deadline_seconds": 0}, None), ({"deadline_seconds": 86_401}, None), ({"deadline_seconds": "soon"}, None),
    ({}, "soon"), ({}, "0s"), ({}, "2d"), ({}, "-5"), ({}, "5 s"), ({}, "25h"),
])
def test_a_bad_deadline_is_a_422_and_writes_nothing(api, sessions, body, header):
    refused = call(api, "POST", "/generate", json={**NAVY, **body}, headers={"Cancel-After": header} if header else {})
    assert refused.status_code == 422 and "detail" in refused.json()
    with sessions() as s:
        assert jobs.backlog(s).pending_jobs == 0


def test_database_outage_is_a_json_503(api):
    engine = make_engine("postgresql://postgres@127.0.0.1:9/nowhere")
    down = Services(settings=api.settings, sessions=make_sessionmaker(engine), storage=api.storage, catalog=api.catalog)
    for method, path, body in [("GET", "/jobs/x", None), ("POST", "/generate", NAVY), ("GET", "/catalog", None)]:
        response = call(down, method, path, json=body)
        assert response.status_code == 503, (path, response.text)
        assert response.json() == {"detail": "database unavailable, retry shortly"}
        assert response.headers["retry-after"] == "2"
    engine.dispose()


def test_the_backlog_gate_recounts_in_the_background_never_on_the_request(api, sessions):
    gate = BacklogGate(limit=1, ttl_seconds=0.3)

    async def verdicts() -> list[bool]:
        engine = api.hot
        seen = [await gate.is_full(engine)]  # the first request counts: nothing pending
        with sessions.begin() as s:
            queue_job(s, cuts=["recto"], seed=1, swatch_url=None, swatch_key=None)
        seen.append(await gate.is_full(engine))  # within the TTL: the verdict it has, no query
        await asyncio.sleep(0.35)
        seen.append(await gate.is_full(engine))  # stale: answers at once, recounts in the background
        for _ in range(100):
            await asyncio.sleep(0.05)
            if await gate.is_full(engine):
                seen.append(True)
                break
        return seen

    assert asyncio.run(verdicts()) == [False, False, False, True]


SECRET = "unit-test-signing-key-of-at-least-32-bytes"


def admin_token(sessions) -> str:
    from datetime import timedelta

    from serve_app.admin.auth.service import create_user, issue_token

    with sessions.begin() as s:
        user = create_user(s, "unit-admin", "correct horse battery staple")
    return issue_token(user, SECRET, timedelta(minutes=5))


UNSTORABLE = ["nul\x00byte", "lone \ud800 surrogate"]


@pytest.mark.parametrize("text", UNSTORABLE, ids=["NUL", "surrogate"])
def test_text_postgresql_cannot_store_is_a_4xx_on_every_route(api, sessions, text):
    api.jwt_secret = SECRET
    bearer = {"Authorization": f"Bearer {admin_token(sessions)}"}

    def raw_json(body: dict) -> dict:  # json.dumps escapes both as \u0000 and \ud800, as a client would
        return {"content": json.dumps(body), "headers": {**bearer, "content-type": "application/json"}}

    requests = [
        ("POST", "/generate", raw_json({**NAVY, "family_id": text})),
        ("POST", "/generate", raw_json({**NAVY, "cuts": [text]})),
        ("POST", "/admin/fabrics", raw_json({"family_id": "pana", "display_name": text, "fabric": "corduroy"})),
        ("PATCH", "/admin/fabrics/lana-fria", raw_json({"display_name": text})),
        ("PATCH", "/admin/fabrics/lana-fria", raw_json({"fabric": text})),
        ("POST", "/admin/fabrics/lana-fria/colors", raw_json({"color_id": "x-1", "name": text, "english": "grey",
                                                              "hex_value": "#112233"})),
        ("PATCH", "/admin/colors/lana-fria-negro", raw_json({"english": text})),
    ]
    if "\x00" in text:  # a percent-encoded or raw NUL; a surrogate cannot be spelled outside JSON
        requests += [
            ("POST", "/admin/login", {"content": "username=nul%00byte&password=whatever+it+is",
                                      "headers": {"content-type": "application/x-www-form-urlencoded"}}),
            ("POST", "/admin/login", {"files": {"username": (None, b"nul\x00byte"), "password": (None, b"whatever")}}),
            ("POST", "/generate", {"json": NAVY, "headers": {"Idempotency-Key": "key\x00"}}),
            ("GET", "/jobs/nul%00byte", {}),
            ("POST", "/jobs/nul%00byte/cancel", {}),
            ("GET", "/admin/generations?family_id=nul%00byte", {"headers": bearer}),
            ("GET", "/admin/generations/nul%00byte", {"headers": bearer}),
            ("POST", "/admin/generations/nul%00byte/retry", {"headers": bearer}),
            ("GET", "/admin/fabrics/nul%00byte/colors", {"headers": bearer}),
            ("PATCH", "/admin/colors/nul%00byte", raw_json({"name": "x"})),
            ("DELETE", "/admin/fabrics/nul%00byte", {"headers": bearer}),
        ]
    for method, path, kwargs in requests:
        response = call(api, method, path, **kwargs)
        assert response.status_code == 422, (method, path, response.status_code, response.text)
        assert "cannot be stored" in response.json()["detail"]
    with sessions() as s:
        assert s.query(jobs.GenerationJob).count() == 0


def test_public_health_names_no_job_host_or_process_and_the_admin_view_does(api, sessions):
    import os
    import socket

    job_id = call(api, "POST", "/generate", json=NAVY).json()["job_id"]
    owner = f"{socket.gethostname()}:{os.getpid()}:1a2b3c4d"

    async def runner() -> dict:
        return {"owner": owner, "active_jobs": [job_id]}

    async def generator() -> dict:
        return {"requested_profile": "auto", "profile": "tiny-random", "device": "cpu",
                "note": "MODEL PROFILE auto: pretrained weights not found locally (OSError: /root/.cache/hub)"}

    async def stuck() -> dict:
        raise RuntimeError(f"replica on {socket.gethostname()} pid {os.getpid()} is stuck")

    api.deployment_checks = {"JobRunner": runner, "SdxlTurboGenerator": generator, "Finisher": stuck}
    api.jwt_secret = SECRET
    public = call(api, "GET", "/health")
    for secret in (job_id, socket.gethostname(), str(os.getpid()), "/root/.cache", "owner", "active_jobs"):
        assert secret not in public.text, secret
    assert public.status_code == 503
    body = public.json()
    assert body["status"] == "degraded" and body["model_profile"] == "tiny-random"
    assert body["deployments"] == {"JobRunner": {"ok": True}, "SdxlTurboGenerator": {"ok": True}, "Finisher": {"ok": False}}
    assert body["database"] == body["storage"] == {"ok": True}
    assert "NOT real renders" in body["warnings"][0]

    assert call(api, "GET", "/admin/health").status_code == 401
    detailed = call(api, "GET", "/admin/health", headers={"Authorization": f"Bearer {admin_token(sessions)}"})
    assert detailed.status_code == 200, detailed.text
    details = detailed.json()
    assert details["deployments"]["JobRunner"]["active_jobs"] == [job_id]
    assert details["deployments"]["JobRunner"]["owner"] == owner
    assert "stuck" in details["deployments"]["Finisher"]["error"]
    assert details["ingress"]["pid"] == os.getpid() and details["ingress"]["host"] == socket.gethostname()
    assert details["ingress"]["threads"] == api.settings.ingress_threads
    assert details["ingress"]["client"] == "127.0.0.1"


def from_client(services: Services, address: str, method: str, path: str, **kwargs) -> httpx.Response:
    async def go():
        transport = httpx.ASGITransport(app=create_app(services), raise_app_exceptions=False, client=(address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.request(method, path, **kwargs)
    return asyncio.run(go())


def limited(api: Services, **settings) -> Services:
    from dataclasses import replace

    return replace(api, settings=api.settings.model_copy(update=settings), rate_limits=None,
                   backlog=BacklogGate(1000, ttl_seconds=0))


def test_generate_and_upload_are_rate_limited_per_client_with_retry_after(api, sessions):
    from tests.upload_files import image_bytes

    services = limited(api, rate_limit_generate="3/minute", rate_limit_upload="2/minute")
    for _ in range(3):
        assert from_client(services, "198.51.100.7", "POST", "/generate", json=NAVY).status_code == 202
    refused = from_client(services, "198.51.100.7", "POST", "/generate", json=NAVY)
    assert refused.status_code == 429, refused.text
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "too many requests" in refused.json()["detail"]
    assert from_client(services, "198.51.100.8", "POST", "/generate", json=NAVY).status_code == 202  # another client
    upload = {"files": {"file": ("s.png", image_bytes("PNG"), "image/png")}}
    assert [from_client(services, "198.51.100.7", "POST", "/upload-swatch", **upload).status_code
            for _ in range(3)] == [201, 201, 429]
    with sessions() as s:
        assert s.query(jobs.GenerationJob).count() == 4


def test_x_forwarded_for_names_the_client_only_behind_a_trusted_proxy(api):
    services = limited(api, rate_limit_generate="2/minute", trusted_proxies=["10.0.0.0/8"])
    limits = services.rate_limits

    def status(address: str, forwarded: str) -> int:
        return from_client(services, address, "POST", "/generate", json=NAVY,
                           headers={"X-Forwarded-For": forwarded}).status_code

    # Behind the proxy, each forwarded client has its own count; hops the client wrote itself are ignored.
    assert [status("10.1.1.1", "203.0.113.5") for _ in range(3)] == [202, 202, 429]
    assert status("10.1.1.1", "203.0.113.6") == 202
    assert [status("10.1.1.1", f"192.0.2.{i}, 203.0.113.9, 10.2.2.2") for i in range(3)] == [202, 202, 429]
    # A client that is not a trusted proxy cannot pick its identity with the header.
    assert [status("198.51.100.9", f"192.0.2.{i}") for i in range(3)] == [202, 202, 429]
    from starlette.requests import Request as StarletteRequest

    scope = {"type": "http", "client": ("10.9.9.9", 1), "headers": [(b"x-forwarded-for", b"10.3.3.3, 10.4.4.4")]}
    assert limits.client(StarletteRequest(scope)) == "10.3.3.3"  # every hop a proxy: the farthest one


def test_a_shared_redis_store_holds_the_limit_across_replicas(api, redis_url):
    import uuid

    client = f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"
    shared = dict(rate_limit_generate="3/minute", rate_limit_storage=redis_url)
    replica_a, replica_b = limited(api, **shared), limited(api, **shared)
    statuses = [from_client(replica, client, "POST", "/generate", json=NAVY).status_code
                for replica in (replica_a, replica_b, replica_a, replica_b)]
    assert statuses == [202, 202, 202, 429]
    # In memory (the default), each replica counts alone: the effective limit is per replica.
    alone_a, alone_b = limited(api, rate_limit_generate="2/minute"), limited(api, rate_limit_generate="2/minute")
    statuses = [from_client(replica, client, "POST", "/generate", json=NAVY).status_code
                for replica in (alone_a, alone_b, alone_a, alone_b, alone_a)]
    assert statuses == [202, 202, 202, 202, 429]


def test_rate_limit_settings_are_checked_at_start_up():
    with pytest.raises(ValueError, match="not a rate limit"):
        Settings(rate_limit_generate="thirty a minute")
    with pytest.raises(ValueError):
        Settings(trusted_proxies=["not-an-address"])


def test_an_unreachable_rate_limit_store_lets_requests_through(api, caplog):
    services = limited(api, rate_limit_generate="1/minute", rate_limit_storage="redis://127.0.0.1:9/0")
    statuses = [from_client(services, "198.51.100.20", "POST", "/generate", json=NAVY).status_code for _ in range(2)]
    assert statuses == [202, 202]  # protection lapses; the service does not
    assert "rate limit store unavailable" in caplog.text
