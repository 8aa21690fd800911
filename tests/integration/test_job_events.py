"""Live job state through the Ray Serve proxy: GET /jobs/{id}/events on the real service."""

from __future__ import annotations

import time

import httpx
import pytest

from serve_app.generation.event_stream import EventStreamReader

pytestmark = pytest.mark.integration

TWO_CUTS = {"family_id": "lana-fria", "color_id": "lana-fria-azul-marino", "cuts": ["recto", "cruzado"]}


def follow(client: httpx.Client, job_id: str, timeout: float = 180) -> tuple[list[dict], int]:
    """Read the job's events as an EventSource would: reconnect with Last-Event-ID whenever the server
    closes the stream before a final state. Returns the events and the number of requests made."""
    events: list[dict] = []
    requests = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        headers = {"Last-Event-ID": str(events[-1]["id"])} if events else {}
        requests += 1
        with client.stream("GET", f"/jobs/{job_id}/events", headers=headers, timeout=timeout) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            reader = EventStreamReader()
            for line in response.iter_lines():
                event = reader.line(line)
                if event is not None and "data" in event:
                    events.append(event)
        if events and events[-1]["data"]["status"] in ("completed", "failed", "canceled"):
            return events, requests
    raise AssertionError(f"job {job_id} not final after {timeout}s: {[e['data']['status'] for e in events]}")


def test_an_event_stream_through_the_serve_proxy_ends_with_the_completed_job(service):
    with service.client() as client:
        job_id = client.post("/generate", json=TWO_CUTS).json()["job_id"]
        events, requests = follow(client, job_id)
        polled = client.get(f"/jobs/{job_id}")
    statuses = [e["data"]["status"] for e in events]
    assert statuses[-1] == "completed" and statuses.count("completed") == 1
    assert set(statuses) <= {"pending", "processing", "completed"}
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids))
    assert events[-1]["raw"] == polled.text  # the same JSON as GET /jobs/{id}
    assert len(events[-1]["data"]["result_urls"]) == 2
    assert requests <= 3  # one stream, or a couple of resumes on a slow machine


def test_an_unknown_job_stream_is_a_404_through_the_proxy(service):
    with service.client() as client:
        response = client.get("/jobs/no-such-job/events")
    assert response.status_code == 404 and response.json() == {"detail": "job no-such-job not found"}
