"""The running service while jobs run: what strangers can read of its health, and how it answers
300 concurrent clients when the database cannot keep up (a table locked past the statement timeout)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from db.engine import make_sessionmaker
from serve_app.admin.auth.service import create_user
from tests.database_faults import TableLock
from tests.integration.test_service import NAVY, _wait
from tests.load_clients import poll_and_post

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery staple"
CLIENTS = 300


@pytest.fixture(scope="module")
def admin_headers(service, service_engine) -> dict:
    with make_sessionmaker(service_engine).begin() as s:
        create_user(s, "health-admin", PASSWORD)
    with service.client() as client:
        token = client.post("/admin/login", data={"username": "health-admin", "password": PASSWORD}).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def test_public_health_names_no_job_pid_or_host_while_jobs_run(service, admin_headers):
    with service.client() as client:
        job_ids = [client.post("/generate", json={**NAVY, "cuts": ["recto", "cruzado"]}).json()["job_id"]
                   for _ in range(8)]
        deadline = time.monotonic() + 60
        while True:  # catch the runner with jobs in hand, then ask the public route at once
            details = client.get("/admin/health", headers=admin_headers).json()
            in_hand = details["deployments"]["JobRunner"]["active_jobs"]
            if in_hand:
                public = client.get("/health")
                break
            assert time.monotonic() < deadline, "the runner never had a job in hand"
            time.sleep(0.02)
        for job_id in job_ids:
            _wait(client, job_id)
        unauthenticated = client.get("/admin/health")
    owner_host, owner_pid, _ = details["deployments"]["JobRunner"]["owner"].split(":")
    assert set(in_hand) <= set(job_ids)
    assert details["ingress"]["pid"] > 0 and details["ingress"]["host"] == owner_host
    assert details["ingress"]["client"] == "127.0.0.1"  # Serve's proxy hands on the caller's address
    assert public.status_code == 200
    for secret in [*job_ids, owner_host, owner_pid, str(details["ingress"]["pid"])]:
        assert secret not in public.text, secret
    body = public.json()
    assert set(body) == {"status", "model_profile", "warnings", "database", "storage", "deployments"}
    assert body["status"] == "ok" and body["model_profile"] == "tiny-random"
    assert all(part == {"ok": True} for part in [body["database"], body["storage"], *body["deployments"].values()])
    assert unauthenticated.status_code == 401


def test_300_clients_while_jobs_run_and_a_lock_outlasts_the_statement_timeout(service, service_database_url,
                                                                               admin_headers):
    with service.client() as client:
        ingress = client.get("/admin/health", headers=admin_headers).json()["ingress"]
        accepted = [client.post("/generate", json={**NAVY, "cuts": ["recto"]}) for _ in range(10)]
    assert {r.status_code for r in accepted} == {202}, accepted[0].text
    job_ids = [r.json()["job_id"] for r in accepted]
    assert ingress["pool"]["size"] >= ingress["threads"]  # every route thread has its connection

    lock = TableLock(service_database_url, "generation_jobs", after=3, hold=4).start()
    results = asyncio.run(poll_and_post(service.base_url, job_ids, {**NAVY, "cuts": ["recto"]}, lambda: lock.over_for(5),
                                        clients=CLIENTS, post_every=40, pause=0.05))
    lock.join()
    statuses = Counter(answer.status for answer in results)
    assert set(statuses) <= {200, 202, 503}, statuses
    assert statuses[503] > 0, statuses  # the lock did outlast the statement timeout …
    assert all(retry_after and int(retry_after) > 0 for status, retry_after, _ in results if status == 503)
    assert statuses[200] > 0 and statuses[202] > 0, statuses
    with service.client() as client:  # … and every job accepted meanwhile still completes
        finals = [_wait(client, job_id, timeout=180)[0]["status"] for job_id in job_ids]
    assert set(finals) == {"completed"}, Counter(finals)
