"""Health checks and overload on the real application (Ray Serve over HTTP, PostgreSQL behind a proxy).

One service for the module. It reaches its database through a TCP proxy the test can cut
(tests/database_faults.py), counts a dependency down after 6 s of failures, and runs with small queues
where the tests overload it: the Ingress holds 4 requests and queues 4 more, the generator 1 and 1. A
fault-injection file (refused in production) makes every generator model call hang, which keeps the
generator's slot taken for as long as a test needs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import sessionmaker

from db import jobs
from db.engine import make_engine, make_sessionmaker
from serve_app.launcher import Launched
from tests.conftest import fresh_database
from tests.database_faults import DatabaseProxy
from tests.integration.conftest import UNLIMITED
from tests.integration.test_metrics import scrape, series
from tests.integration.test_service import NAVY, _wait

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

UNHEALTHY_AFTER = 6
INGRESS_DRAIN_SECONDS = 3
INGRESS_SLOTS, INGRESS_QUEUE = 4, 4
RUNNER = "ServeReplica:sastre:JobRunner"
INGRESS = "ServeReplica:sastre:Ingress"


@dataclass
class Guarded:
    launched: Launched
    proxy: DatabaseProxy
    sessions: sessionmaker  # the test's own way to the database, around the proxy
    stall_file: Path

    def client(self, timeout: float = 30) -> httpx.Client:
        return httpx.Client(base_url=self.launched.base_url, timeout=timeout)

    def submit(self, client: httpx.Client, cuts: list[str], seed: int) -> str:
        response = client.post("/generate", json={**NAVY, "cuts": cuts, "seed": seed})
        assert response.status_code == 202, response.text
        return response.json()["job_id"]


@pytest.fixture(scope="module")
def guarded(services, server_url, tmp_path_factory) -> Iterator[Guarded]:
    root = tmp_path_factory.mktemp("health")
    stall_file = root / "stall-the-generator"
    with fresh_database(server_url) as database_url, pytest.MonkeyPatch.context() as env:
        # A replaced ingress replica drains for 30 s by default, for load balancers in front of the
        # cluster; here HAProxy is the only one, and the test waits for the replaced replica to stop.
        env.setenv("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", str(INGRESS_DRAIN_SECONDS))
        proxy = DatabaseProxy(database_url)
        engine = make_engine(database_url)
        settings = {"database_url": proxy.url, "data_dir": str(root / "data"), "model_profile": "tiny-random",
                    "image_size": 64, "poll_seconds": 0.5, "db_statement_timeout_seconds": 2,
                    "unhealthy_after_seconds": UNHEALTHY_AFTER, "fault_stall_file": str(stall_file), **UNLIMITED}
        small_queues = {"Ingress": {"max_ongoing_requests": INGRESS_SLOTS, "max_queued_requests": INGRESS_QUEUE},
                        "SdxlTurboGenerator": {"max_ongoing_requests": 1, "max_queued_requests": 1}}
        try:
            with services.own(root, settings, startup_timeout=480, deployment_options=small_queues) as launched:
                yield Guarded(launched, proxy, make_sessionmaker(engine), stall_file)
        finally:
            engine.dispose()
            proxy.close()


def test_past_its_queue_the_ingress_answers_503_with_retry_after_at_once(guarded):
    body = json.dumps({**NAVY, "cuts": ["recto"]}).encode()

    async def overload(base_url: str) -> tuple[list[int], list[tuple[int, str | None, str, float]], list[int]]:
        release = asyncio.Event()

        async def slow_body() -> AsyncIterator[bytes]:  # a client on a slow link: its request holds a slot
            yield body[:10]
            await release.wait()
            yield body[10:]

        async with httpx.AsyncClient(base_url=base_url, timeout=60,
                                     limits=httpx.Limits(max_connections=100)) as client:
            held = [asyncio.create_task(client.post("/generate", content=slow_body(), headers={
                "content-type": "application/json", "content-length": str(len(body))})) for _ in range(INGRESS_SLOTS)]
            await asyncio.sleep(2)  # every slot taken
            started = time.monotonic()

            async def one() -> tuple[int, str | None, str, float]:
                response = await client.get("/livez")
                return (response.status_code, response.headers.get("retry-after"), response.text,
                        time.monotonic() - started)

            flood = [asyncio.create_task(one()) for _ in range(INGRESS_QUEUE + 30)]
            answered, waiting = await asyncio.wait(flood, timeout=5)
            release.set()  # the slow clients finish: the slots free up and the queued requests are served
            return ([(await task).status_code for task in held], [task.result() for task in answered],
                    [(await task)[0] for task in waiting])

    held, answered, served_later = asyncio.run(overload(guarded.launched.base_url))
    # Serve may refuse a few more than its bound while its count catches up, never fewer: at most the
    # queue's 4 waited, every other request was refused at once, none timed out or failed otherwise.
    assert held == [202] * INGRESS_SLOTS, held
    assert len(served_later) <= INGRESS_QUEUE and set(served_later) <= {200}, served_later
    assert len(answered) >= 30 and {status for status, _, _, _ in answered} == {503}, answered
    assert {(retry_after, text) for _, retry_after, text, _ in answered} == {
        ("2", "Request dropped due to backpressure")}
    assert max(seconds for _, _, _, seconds in answered) < 3, answered


def test_a_busy_generator_refuses_cuts_and_the_runner_resends_them_without_spending_an_attempt(guarded):
    before = scrape(guarded.launched.metrics_url)
    guarded.stall_file.touch()  # the generator's one slot hangs: one cut waits in its queue, the rest are refused
    try:
        with guarded.client() as client:
            job_ids = [guarded.submit(client, ["recto", "cruzado"], seed=100 + i) for i in range(3)]
            deadline = time.monotonic() + 60
            refused = series("ray_sastre_refused_total", reason="stage_busy")
            while scrape(guarded.launched.metrics_url)[refused] - before[refused] < 3:
                assert time.monotonic() < deadline, "no stage_busy refusal counted while the generator was full"
                time.sleep(0.5)
    finally:
        guarded.stall_file.unlink()
    with guarded.client() as client:
        finals = [_wait(client, job_id, timeout=180)[0] for job_id in job_ids]
    assert [final["status"] for final in finals] == ["completed"] * 3, finals
    with guarded.sessions() as session:
        attempts = [entry["attempt"] for job_id in job_ids
                    for entry in jobs.get_job(session, job_id).cut_progress.values()]
    assert attempts == [1] * 6, attempts  # a refusal is not a failure: no cut was tried twice


def test_a_runner_that_cannot_reach_the_database_is_replaced_and_jobs_complete_once_it_is_back(guarded):
    (runner,) = guarded.launched.processes(RUNNER)
    (ingress,) = guarded.launched.processes(INGRESS)
    guarded.proxy.set_mode("refuse")  # the service's every connection is dropped, every new one refused
    cut_at = time.monotonic()
    replaced_after = {}
    try:
        deadline = cut_at + 180
        while len(replaced_after) < 2:
            for title, old in ((RUNNER, runner), (INGRESS, ingress)):
                if title not in replaced_after and [pid for pid in guarded.launched.processes(title) if pid != old]:
                    replaced_after[title] = time.monotonic() - cut_at
            assert time.monotonic() < deadline, f"Serve did not replace both replicas: {replaced_after}"
            time.sleep(0.5)
    finally:
        guarded.proxy.set_mode("forward")
    # The grace, then three failed checks 5 s apart; never before the grace has run out. The ingress
    # probes the database too, so it went the same way.
    assert all(UNHEALTHY_AFTER < seconds < 120 for seconds in replaced_after.values()), replaced_after
    deadline = time.monotonic() + 180
    with guarded.client(timeout=10) as client:
        while True:  # the new ingress may still be starting, or still see the database as away: wait for a 202
            try:
                response = client.post("/generate", json={**NAVY, "cuts": ["recto"], "seed": 21})
                if response.status_code == 202:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the service did not take jobs again after the database came back"
            time.sleep(1)
        final, _ = _wait(client, response.json()["job_id"], timeout=180)
    assert final["status"] == "completed", final
    deadline = time.monotonic() + 90  # the replaced replicas stop after their graceful shutdown
    while runner in guarded.launched.processes(RUNNER) or ingress in guarded.launched.processes(INGRESS):
        assert time.monotonic() < deadline, "a replaced replica is still running"
        time.sleep(0.5)
