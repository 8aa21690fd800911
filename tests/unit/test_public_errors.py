"""A failed job tells its client a code and a sentence; the exception's text stays with logs and admins.

The real API served by uvicorn on a loopback port, PostgreSQL, and the real runner whose renders fail
the way a dead Ray actor and an unreachable bucket make them fail: with text that names internal
addresses and endpoints.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import text

from db.job_failures import NOT_IN_CATALOG, RENDER_FAILED
from deployments.storage import LocalStorage
from serve_app.deps import Services
from serve_app.jobqueue.worker import JobWorker
from serve_app.settings import Settings
from tests.in_process import ADMIN_SECRET, admin_headers, catalog_services, job_worker, running
from tests.unit.test_job_events import TWO_CUTS, serving, sse

# What a dead replica and a storage outage put in an exception: none of it is the client's business.
ACTOR_DIED = ("ActorDiedError: The actor died unexpectedly before finishing this task. class_name: "
              "ServeReplica:sastre:SdxlTurboGenerator actor_id: 9f3c2b1e ip: 10.0.7.23 port 41235")
STORAGE_DOWN = "EndpointConnectionError: Could not connect to https://acct-7f3a.r2.cloudflarestorage.com/sastre-media"
SECRETS = ("10.0.7.23", "41235", "ServeReplica", "ActorDiedError", "r2.cloudflarestorage.com", "sastre-media",
           "EndpointConnectionError")


class BrokenCluster:
    """A renderer whose first cut loses its actor and whose second cannot reach the bucket."""

    async def render(self, task):
        raise RuntimeError(ACTOR_DIED if task.cut == "recto" else STORAGE_DOWN)


@pytest.fixture
def services(sessions, tmp_path) -> Services:
    storage = LocalStorage(tmp_path, "http://127.0.0.1/media")
    return catalog_services(sessions, storage, Settings(data_dir=tmp_path), jwt_secret=ADMIN_SECRET)


def _runner(services: Services, database_url: str, renderer) -> JobWorker:
    return job_worker(services.sessions, database_url, services.catalog, renderer, cut_attempts=2,
                      cut_retry_seconds=0.01)


def test_a_job_that_fails_on_actor_deaths_and_storage_errors_shows_only_a_code_and_a_sentence(services, sessions,
                                                                                                database_url):
    runner = _runner(services, database_url, BrokenCluster())

    async def scenario(base_url: str) -> tuple[list[dict], httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            job_id = (await client.post("/generate", json=TWO_CUTS)).json()["job_id"]
            events, worker = [], None
            async with client.stream("GET", f"/jobs/{job_id}/events") as response:
                async for item in sse(response):
                    if "data" in item:
                        events.append(item)
                        worker = worker or asyncio.create_task(runner.run_forever())
            runner.stop()
            await worker
            polled = await client.get(f"/jobs/{job_id}")
            admin = await client.get(f"/admin/generations/{job_id}", headers=admin_headers(sessions))
            return events, polled, admin

    with serving(services) as base_url:
        events, polled, admin = asyncio.run(scenario(base_url))
    assert polled.status_code == 200 and polled.json()["status"] == "failed"
    assert polled.json()["error_message"] == "render_failed: the render failed; try again" == RENDER_FAILED.message
    assert events[-1]["data"]["status"] == "failed" and events[-1]["raw"] == polled.text
    public = polled.text + "".join(event["raw"] for event in events)
    assert [leak for leak in SECRETS if leak in public] == []
    # The admin's view keeps the reason, word for word, beside the public code.
    assert admin.status_code == 200
    shown = admin.json()
    assert shown["error_message"] == RENDER_FAILED.message
    assert shown["error_detail"].startswith("CutFailed: cut ") and ("10.0.7.23" in shown["error_detail"]
                                                                   or "r2.cloudflarestorage.com" in shown["error_detail"])


def test_a_job_whose_fabric_left_the_catalog_says_so_in_its_code(services, sessions, database_url):
    runner = _runner(services, database_url, BrokenCluster())

    async def scenario(base_url: str) -> dict:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            job_id = (await client.post("/generate", json=TWO_CUTS)).json()["job_id"]
            with sessions.begin() as s:  # the color is deleted between acceptance and the claim
                s.execute(text("DELETE FROM colors WHERE color_id = :c"), {"c": TWO_CUTS["color_id"]})
            async with running(runner):
                while (job := (await client.get(f"/jobs/{job_id}")).json())["status"] not in ("failed", "completed"):
                    await asyncio.sleep(0.1)
            return job

    with serving(services) as base_url:
        job = asyncio.run(scenario(base_url))
    assert (job["status"], job["error_message"]) == ("failed", NOT_IN_CATALOG.message)
    assert "lana-fria-azul-marino" not in job["error_message"]
