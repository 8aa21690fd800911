"""Live job state (GET /jobs/{id}/events) on a real database, served by uvicorn on a loopback port.

The runner works in-process with the tiny model (as in test_runner); the queue's transitions are also
driven directly through db/jobs.py where a test needs each step under its control.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import psycopg
import pytest
from sqlalchemy import text

from db import jobs
from db.job_failures import RENDER_FAILED
from deployments.generation import CutGenerator
from deployments.storage import LocalStorage
from serve_app.deps import Services
from serve_app.generation.event_stream import EventStreamReader
from serve_app.generation.events import LISTEN_NAME, READ_NAME
from serve_app.jobqueue.worker import JobWorker
from serve_app.settings import Settings
from serve_app.web import create_app
from tests.in_process import catalog_services, job_worker, render_chain
from tests.job_rows import queue_job
from tests.servers import uvicorn_serving

TWO_CUTS = {"family_id": "lana-fria", "color_id": "lana-fria-azul-marino", "cuts": ["recto", "cruzado"], "seed": 11}
KEEPALIVE = 0.3


@pytest.fixture
def services(sessions, tmp_path) -> Services:
    settings = Settings(data_dir=tmp_path, events_keepalive_seconds=KEEPALIVE, events_stream_seconds=60)
    return catalog_services(sessions, LocalStorage(tmp_path, "http://127.0.0.1/media"), settings)


def serving(services: Services):
    return uvicorn_serving(services, lifespan="on", timeout_graceful_shutdown=1)


@pytest.fixture
def base_url(services) -> Iterator[str]:
    with serving(services) as url:
        yield url


async def sse(response: httpx.Response) -> AsyncIterator[dict]:
    """The server-sent events of a response, as {"comment": …} or {"event", "id", "data", "raw"}."""
    reader = EventStreamReader()
    async for line in response.aiter_lines():
        if (event := reader.line(line)) is not None:
            yield event


def states(events: list[dict]) -> list[tuple]:
    """(job status, status of each cut) per event."""
    return [(e["data"]["status"], *(p["status"] for p in e["data"]["progress"])) for e in events]


def collapse(values: list) -> list:
    return [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]


class HoldSecondCut:
    """The real in-process renderer, with the second cut held until the test opens the gate, so the
    stream must show the first cut finished while the job is still processing."""

    def __init__(self, inner, held: str) -> None:
        self.inner, self.held, self.gate = inner, held, asyncio.Event()

    async def render(self, task):
        if task.cut == self.held:
            await self.gate.wait()
        return await self.inner.render(task)


def _runner(services: Services, database_url: str, model) -> JobWorker:
    chain = render_chain(CutGenerator(model, services.storage), services.storage)
    return job_worker(services.sessions, database_url, services.catalog, chain)


def test_a_two_cut_job_streams_pending_processing_each_cut_then_completed_and_closes(services, base_url, database_url,
                                                                                       model):
    runner = _runner(services, database_url, model)
    runner.renderer = held = HoldSecondCut(runner.renderer, "cruzado")

    async def scenario():
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            job_id = (await client.post("/generate", json=TWO_CUTS)).json()["job_id"]
            events, running = [], None
            async with client.stream("GET", f"/jobs/{job_id}/events") as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                assert response.headers["cache-control"] == "no-cache"
                async for item in sse(response):
                    if "data" not in item:
                        continue
                    events.append(item)
                    if running is None:  # the job's first state is on screen: now let the runner at it
                        running = asyncio.create_task(runner.run_forever())
                    cuts = {p["cut"]: p["status"] for p in item["data"]["progress"]}
                    if cuts["recto"] == "completed":
                        held.gate.set()
            # The server closed the stream (the loop above ended by itself).
            runner.stop()
            await running
            polled = await client.get(f"/jobs/{job_id}")
            return job_id, events, polled

    job_id, events, polled = asyncio.run(scenario())
    assert {e["event"] for e in events} == {"job"}
    ids = [e["id"] for e in events]
    assert ids == sorted(ids), "event ids never decrease"
    for before, after in zip(events, events[1:]):  # an id repeats only for a waiting job's new place in the queue
        if after["id"] == before["id"]:
            assert after["data"]["status"] == "pending" and after["data"]["queue_position"] is not None
            moved = {key for key in after["data"] if after["data"][key] != before["data"][key]}
            assert moved <= {"queue_position", "estimated_start_at"} and moved, moved
    seen = states(events)
    assert seen[0] == ("pending", "pending", "pending")
    assert collapse([s[0] for s in seen]) == ["pending", "processing", "completed"]
    # Each cut only moves forward: pending → processing → completed.
    order = {"pending": 0, "processing": 1, "completed": 2}
    for cut in (1, 2):
        assert [order[s[cut]] for s in seen] == sorted(order[s[cut]] for s in seen)
    assert ("processing", "completed", "processing") in seen  # recto done while cruzado still renders
    assert seen[-1] == ("completed", "completed", "completed")
    last = events[-1]["data"]
    assert last["job_id"] == job_id and len(last["result_urls"]) == 2 and last["seeds"] == [11, 12]
    # The final event is GET /jobs/{id}, byte for byte, and its id is that state's version.
    assert events[-1]["raw"] == polled.text
    assert sum(1 for s in seen if s[0] == "completed") == 1


def test_last_event_id_resumes_after_what_the_client_saw(services, base_url, sessions):
    async def first_event(client, job_id, last_event_id=None) -> tuple[int, dict | None]:
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
        async with client.stream("GET", f"/jobs/{job_id}/events", headers=headers) as response:
            if response.status_code != 200:
                return response.status_code, None
            async for item in sse(response):
                if "data" in item:
                    return 200, item

    async def scenario():
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            job_id = (await client.post("/generate", json=TWO_CUTS)).json()["job_id"]
            _, pending = await first_event(client, job_id)
            with sessions.begin() as s:
                [claimed] = jobs.claim_jobs(s, "test-runner", 1, 30)
                lease = jobs.lease_of(claimed)
            _, processing = await first_event(client, job_id, pending["id"])

            # Resuming from the current version: nothing is repeated; the next change comes next.
            async with client.stream("GET", f"/jobs/{job_id}/events",
                                     headers={"Last-Event-ID": str(processing["id"])}) as response:
                items = aiter(sse(response))
                quiet = []
                while len(quiet) < 2:
                    quiet.append(await anext(items))
                with sessions.begin() as s:
                    jobs.record_cut(s, lease, "recto", {"status": "processing", "seed": 11, "attempt": 1})
                progressed = await anext(items)
                while "data" not in progressed:
                    progressed = await anext(items)
                with sessions.begin() as s:
                    jobs.complete_job(s, lease, ["u1", "u2"])
                completed = await anext(items)
                while "data" not in completed:
                    completed = await anext(items)
                rest = [item async for item in items]
            after_final, _ = await first_event(client, job_id, completed["id"])
            fresh = await first_event(client, job_id)
            return pending, processing, quiet, progressed, completed, rest, after_final, fresh

    pending, processing, quiet, progressed, completed, rest, after_final, fresh = asyncio.run(scenario())
    assert pending["data"]["status"] == "pending"
    assert processing["data"]["status"] == "processing" and processing["id"] > pending["id"]
    assert all("comment" in item for item in quiet), quiet  # the state it already had was not sent again
    assert progressed["data"]["progress"][0]["status"] == "processing" and progressed["id"] > processing["id"]
    assert completed["data"]["status"] == "completed" and completed["id"] > progressed["id"]
    assert [item for item in rest if "data" in item] == []  # and the stream ended there
    assert after_final == 204  # an EventSource that already has the final state stops reconnecting
    assert fresh[0] == 200 and fresh[1]["id"] == completed["id"] and fresh[1]["data"]["status"] == "completed"


def test_an_idle_stream_sends_keep_alive_comments(services, base_url):
    async def scenario():
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            job_id = (await client.post("/generate", json=TWO_CUTS)).json()["job_id"]
            async with client.stream("GET", f"/jobs/{job_id}/events") as response:
                items, started = [], time.monotonic()
                async for item in sse(response):
                    items.append((time.monotonic() - started, item))
                    if len(items) == 4:
                        return items

    items = asyncio.run(scenario())
    assert items[0][1]["data"]["status"] == "pending"
    assert [item for _, item in items[1:]] == [{"comment": "keep-alive"}] * 3
    gaps = [b - a for (a, _), (b, _) in zip(items[1:], items[2:])]
    assert all(KEEPALIVE * 0.5 < gap < KEEPALIVE * 4 for gap in gaps), gaps


def test_an_unknown_job_is_a_404_json_before_any_stream(services, base_url):
    response = httpx.get(f"{base_url}/jobs/no-such-job/events", timeout=10)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": "job no-such-job not found"}
    assert services.events.describe()["streams"] == 0


def test_openapi_documents_the_stream_and_its_errors(services):
    operation = create_app(services).openapi()["paths"]["/jobs/{job_id}/events"]["get"]
    assert set(operation["responses"]) >= {"200", "204", "404", "503"}
    assert list(operation["responses"]["200"]["content"]) == ["text/event-stream"]
    assert [p["name"] for p in operation["parameters"]] == ["job_id", "last-event-id"]


def test_many_streams_share_one_listen_connection_and_hold_no_route_thread_or_pooled_connection(services, base_url, sessions,
                                                                                database_url):
    async def scenario():
        async with httpx.AsyncClient(base_url=base_url, timeout=30,
                                     limits=httpx.Limits(max_connections=100)) as client:
            job_ids = [(await client.post("/generate", json=TWO_CUTS)).json()["job_id"] for _ in range(3)]
            opened: list[tuple[str, AsyncIterator[dict], httpx.Response]] = []
            async with asyncio.TaskGroup() as group:
                async def open_one(n: int):
                    job_id = job_ids[n % 3]
                    request = client.build_request("GET", f"/jobs/{job_id}/events")
                    response = await client.send(request, stream=True)
                    items = aiter(sse(response))
                    first = await anext(items)
                    while "data" not in first:
                        first = await anext(items)
                    opened.append((job_id, items, response))
                for n in range(30):
                    group.create_task(open_one(n))
            with psycopg.connect(database_url) as conn:
                names = [name for (name,) in conn.execute(
                    "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()")]
            checked_out = sessions.kw["bind"].pool.checkedout()
            described = services.events.describe()
            # 30 streams, 16 route threads: polling still gets a thread at once.
            started = time.monotonic()
            polled = await client.get(f"/jobs/{job_ids[0]}")
            assert polled.status_code == 200 and time.monotonic() - started < 2
            with sessions.begin() as s:
                leases = [jobs.lease_of(j) for j in jobs.claim_jobs(s, "test-runner", 3, 30)]
            with sessions.begin() as s:
                for lease in leases:
                    jobs.complete_job(s, lease, ["u1", "u2"])

            async def last_of(items):
                return [item async for item in items if "data" in item][-1]
            finals = await asyncio.gather(*(last_of(items) for _, items, _ in opened))
            for _, _, response in opened:
                await response.aclose()
            return job_ids, opened, names, checked_out, described, finals

    job_ids, opened, names, checked_out, described, finals = asyncio.run(scenario())
    assert names.count(LISTEN_NAME) == 1 and names.count(READ_NAME) <= 1
    assert checked_out == 0  # no stream holds a connection of the route pool
    assert described["streams"] == 30 and described["watched_jobs"] == 3 and described["listening"]
    assert [f["data"]["status"] for f in finals] == ["completed"] * 30
    assert [f["data"]["job_id"] for f in finals] == [job_id for job_id, _, _ in opened]
    deadline = time.monotonic() + 5
    while services.events.describe()["streams"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert services.events.describe()["streams"] == 0  # every closed stream let go of its watch


def test_the_final_event_survives_losing_the_listen_connection(services, base_url, sessions, database_url):
    """As in a database restart: the hub's connections are cut, the job completes while nobody listens
    (its NOTIFY goes nowhere), and the stream still ends with `completed` once the hub is back."""
    async def scenario():
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            job_id = (await client.post("/generate", json=TWO_CUTS)).json()["job_id"]
            with sessions.begin() as s:
                [claimed] = jobs.claim_jobs(s, "test-runner", 1, 30)
                lease = jobs.lease_of(claimed)
            async with client.stream("GET", f"/jobs/{job_id}/events") as response:
                items = aiter(sse(response))
                first = await anext(items)
                while "data" not in first:
                    first = await anext(items)
                async with asyncio.timeout(10):  # the hub starts listening with its first stream
                    while not services.events.listening:
                        await asyncio.sleep(0.02)
                with psycopg.connect(database_url, autocommit=True) as conn:
                    cut = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                       "WHERE datname = current_database() AND application_name IN (%s, %s)",
                                       (LISTEN_NAME, READ_NAME)).fetchone()[0]
                with sessions.begin() as s:
                    assert jobs.complete_job(s, lease, ["u1", "u2"])
                rest = [item async for item in items]
            return first, cut, rest

    first, cut, rest = asyncio.run(scenario())
    assert first["data"]["status"] == "processing"
    assert cut >= 1
    data = [item for item in rest if "data" in item]
    assert [d["data"]["status"] for d in data] == ["completed"]
    assert data[0]["id"] > first["id"]


def test_every_visible_transition_announces_the_job_without_waking_the_runners(sessions, database_url):
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {jobs.EVENTS_CHANNEL}")
        listener.execute(f"LISTEN {jobs.NOTIFY_CHANNEL}")

        def heard() -> list[tuple[str, str]]:
            listener.execute("SELECT 1")
            return [(n.channel, n.payload) for n in listener.notifies(timeout=0.2)]

        def step(fn, *args):
            with sessions.begin() as s:
                result = fn(s, *args)
            with sessions() as s:
                version = s.scalar(text("SELECT updated_at FROM generation_jobs WHERE job_id = :j"), {"j": job_id})
            return result, heard(), version

        with sessions.begin() as s:
            job_id = queue_job(s, family_id="lana-fria", color_id="lana-fria-azul-marino", cuts=["recto"],
                               seed=1, swatch_url=None, swatch_key=None).job_id
        heard()
        events = (jobs.EVENTS_CHANNEL, job_id)
        versions = []
        claimed, notes, v = step(lambda s: jobs.claim_jobs(s, "r", 1, 30))
        lease = jobs.lease_of(claimed[0])
        versions.append(v)
        assert notes == [events]
        for fn, args in ((jobs.record_cut, (lease, "recto", {"status": "processing", "seed": 1})),
                         (jobs.fail_job, (lease, RENDER_FAILED, "boom"))):
            _, notes, v = step(fn, *args)
            assert notes == [events], fn.__name__  # progress never wakes the runners
            versions.append(v)
        _, notes, v = step(jobs.retry_failed_job, job_id)
        assert sorted(notes) == sorted([events, (jobs.NOTIFY_CHANNEL, job_id)])
        versions.append(v)
        claimed, _, v = step(lambda s: jobs.claim_jobs(s, "r", 1, 30))
        lease = jobs.lease_of(claimed[0])
        versions.append(v)
        _, notes, v = step(jobs.release_jobs, [lease])
        assert events in notes
        versions.append(v)
        claimed, _, v = step(lambda s: jobs.claim_jobs(s, "r", 1, 0.01))
        versions.append(v)
        time.sleep(0.05)
        rescued, notes, v = step(lambda s: jobs.release_expired_leases(s, [0.0]))
        assert rescued == [(job_id, "pending")] and notes == [events]
        versions.append(v)
        claimed, _, v = step(lambda s: jobs.claim_jobs(s, "r", 1, 30))
        lease = jobs.lease_of(claimed[0])
        versions.append(v)
        outcome, notes, v = step(jobs.request_cancel, job_id)
        assert outcome == "requested" and notes == [events]
        versions.append(v)
        ok, notes, v = step(jobs.mark_canceled, lease)
        assert ok and notes == [events]
        versions.append(v)
        # A refused (stale) write announces nothing and changes no version.
        ok, notes, v = step(jobs.complete_job, lease, ["u"])
        assert not ok and notes == [] and v == versions[-1]
    assert versions == sorted(set(versions)), versions


def test_a_write_from_an_older_transaction_still_moves_the_version_forward(sessions):
    """Transaction A starts first but writes last (it waited): its version must still be the newer one."""
    with sessions.begin() as s:
        job_id = queue_job(s, family_id="lana-fria", color_id="lana-fria-azul-marino", cuts=["recto", "cruzado"],
                           seed=1, swatch_url=None, swatch_key=None).job_id
        lease = jobs.lease_of(jobs.claim_jobs(s, "r", 1, 30)[0])
    older = sessions()
    older.begin()
    older.execute(text("SELECT now()"))  # fixes A's transaction time
    time.sleep(0.05)
    with sessions.begin() as s:
        jobs.record_cut(s, lease, "recto", {"status": "completed", "seed": 1})
    with sessions() as s:
        newer_version = jobs.get_job(s, job_id).updated_at
    jobs.record_cut(older, lease, "cruzado", {"status": "processing", "seed": 2})
    older.commit()
    older.close()
    with sessions() as s:
        job = jobs.get_job(s, job_id)
    assert job.updated_at > newer_version
    assert job.cut_progress["recto"]["status"] == "completed" and job.cut_progress["cruzado"]["status"] == "processing"
