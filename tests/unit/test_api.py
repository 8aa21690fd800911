"""The FastAPI app on a real database, without Ray: idempotency, cancel, backpressure, outages."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from catalog.data import load_catalog
from catalog.loader import sync_catalog
from db import jobs
from db.engine import make_engine, make_sessionmaker
from deployments.storage import LocalStorage
from serve_app.api import Services
from serve_app.web import create_app
from serve_app.backpressure import BacklogGate
from serve_app.bootstrap import put_catalog_swatches
from serve_app.settings import Settings

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


def test_database_outage_is_a_json_503(api):
    engine = make_engine("postgresql://postgres@127.0.0.1:9/nowhere")
    down = Services(settings=api.settings, sessions=make_sessionmaker(engine), storage=api.storage, catalog=api.catalog)
    for method, path, body in [("GET", "/jobs/x", None), ("POST", "/generate", NAVY), ("GET", "/catalog", None)]:
        response = call(down, method, path, json=body)
        assert response.status_code == 503, (path, response.text)
        assert response.json() == {"detail": "database unavailable, retry shortly"}
        assert response.headers["retry-after"] == "2"
    engine.dispose()


def test_backlog_gate_rechecks_at_most_every_ttl(api, sessions):
    gate = BacklogGate(limit=1, ttl_seconds=60)
    with sessions() as s:
        assert not gate.is_full(s)
    call(api, "POST", "/generate", json=NAVY)
    with sessions() as s:
        assert not gate.is_full(s)  # cached for the TTL: no query per request
        gate._checked_at -= 61
        assert gate.is_full(s)
