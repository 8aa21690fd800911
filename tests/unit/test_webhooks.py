"""Webhooks on a real database, without Ray: the outbox the job's final write fills, a deliverer in this
process (or in a subprocess killed mid-send) sending to a real HTTP receiver on 127.0.0.1, and the
admin routes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from standardwebhooks import Webhook

from catalog.data import load_catalog
from db import jobs, webhooks
from db.job_failures import RENDER_FAILED
from db.models import WebhookAttempt, WebhookDelivery
from deployments.storage import LocalStorage
from serve_app.admin.webhooks.service import new_secret
from serve_app.deps import Services
from serve_app.generation.service import job_out
from serve_app.jobqueue.outbound import DestinationRefused, post
from serve_app.jobqueue.webhooks import DeliveryPolicy, WebhookDeliverer
from serve_app.settings import Settings
from serve_app.web import create_app
from tests.in_process import ADMIN_SECRET, admin_headers
from tests.job_rows import queue_job

ROOT = Path(__file__).resolve().parents[2]
FAST = DeliveryPolicy(timeout_seconds=1.0, retry_seconds=(0.05, 0.05, 0.05, 0.05), lease_seconds=2.0,
                      poll_seconds=0.05, concurrency=4, production=False)


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 answering each POST as `script` says, in order (then 204): a
    status code, or "hang" (hold the request until `release` or 30 s)."""

    script: list[int | str]
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers["Content-Length"]))
        self.requests.append(({k.lower(): v for k, v in handler.headers.items()}, body))
        self.arrived.set()
        action = self.script[len(self.requests) - 1] if len(self.requests) <= len(self.script) else 204
        if action == "hang":
            self.release.wait(30)
            return
        handler.send_response(action)
        if 300 <= action < 400:
            handler.send_header("Location", self.url + "/elsewhere")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def ids(self) -> list[str]:
        return [headers["webhook-id"] for headers, _ in self.requests]


@contextmanager
def receiving(*script: int | str) -> Iterator[Receiver]:
    receiver = Receiver(list(script))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver.answer(self)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def clean(sessions):
    """No endpoint but the test's own, before and after (the shared fixture empties the jobs, and with them
    the deliveries), so no other module's jobs fill an outbox."""
    def truncate() -> None:
        with sessions.begin() as session:
            session.execute(text("TRUNCATE webhook_endpoints RESTART IDENTITY CASCADE"))
    truncate()
    yield sessions
    truncate()


@pytest.fixture
def storage(tmp_path) -> LocalStorage:
    return LocalStorage(tmp_path, "http://testserver/media")


def endpoint(sessions, url: str, events=("job.completed", "job.failed", "job.canceled", "job.expired")) -> tuple[int, str]:
    secret = new_secret()
    with sessions.begin() as session:
        return webhooks.add_endpoint(session, url=url, events=events, description="", secret=secret).id, secret


def finished_job(sessions, outcome: str = "completed", cuts: tuple[str, ...] = ("recto",)) -> str:
    """A job taken through the queue's own functions to `outcome`: claimed, its cuts recorded and
    completed, or failed by its runner before any cut, or canceled while pending."""
    with sessions.begin() as session:
        job_id = queue_job(session, cuts=list(cuts), seed=7).job_id
    if outcome == "canceled":
        with sessions.begin() as session:
            assert jobs.request_cancel(session, job_id) == "canceled"
        return job_id
    with sessions.begin() as session:
        [job] = jobs.claim_jobs(session, "test-runner", 1, 30)
        lease = jobs.lease_of(job)
        for cut in cuts if outcome == "completed" else ():
            jobs.record_cut(session, lease, cut, {"status": "completed", "key": f"generated/t/{cut}.jpg", "seed": 7})
    with sessions.begin() as session:
        if outcome == "completed":
            assert jobs.complete_job(session, lease, [f"http://testserver/media/generated/t/{c}.jpg" for c in cuts])
        else:
            assert jobs.fail_job(session, lease, RENDER_FAILED, "boom")
    return job_id


def deliveries(sessions) -> list[WebhookDelivery]:
    with sessions() as session:
        return list(session.query(WebhookDelivery).order_by(WebhookDelivery.id))


def attempts(sessions) -> list[WebhookAttempt]:
    with sessions() as session:
        return list(session.query(WebhookAttempt).order_by(WebhookAttempt.id))


def run_until(deliverer: WebhookDeliverer, done: Callable[[], bool], timeout: float = 10) -> None:
    async def scenario() -> None:
        task = asyncio.create_task(deliverer.run_forever())
        try:
            deadline = time.monotonic() + timeout
            while not await asyncio.to_thread(done):
                assert time.monotonic() < deadline, "timed out waiting for the deliveries"
                await asyncio.sleep(0.05)
        finally:
            deliverer.stop()
            await task
    asyncio.run(scenario())


def delivered(sessions, count: int = 1) -> Callable[[], bool]:
    return lambda: sum(d.status == "delivered" for d in deliveries(sessions)) >= count


def deliverer(sessions, storage, policy: DeliveryPolicy = FAST) -> WebhookDeliverer:
    return WebhookDeliverer(sessions, lambda job: job_out(job, storage).model_dump(mode="json"), policy)


def test_a_receiver_failing_three_times_gets_the_event_on_attempt_four_signed_under_one_id(clean, storage):
    sessions = clean
    with receiving(500, 503, 500, 204) as receiver:
        _, secret = endpoint(sessions, receiver.url + "/hooks?shop=1")
        job_id = finished_job(sessions)
        run_until(deliverer(sessions, storage), delivered(sessions))
    assert len(receiver.requests) == 4
    assert len(set(receiver.ids())) == 1 and receiver.ids()[0].startswith("msg_")
    headers, body = receiver.requests[-1]
    event = Webhook(secret).verify(body, headers)
    with sessions() as session:
        shown = job_out(jobs.get_job(session, job_id), storage).model_dump(mode="json")
    assert event["type"] == "job.completed" and event["data"] == shown
    assert event["data"]["status"] == "completed" and event["data"]["result_urls"]
    with pytest.raises(Exception):
        Webhook(new_secret()).verify(body, headers)
    assert [a.status_code for a in attempts(sessions)] == [500, 503, 500, 204]
    assert [a.error for a in attempts(sessions)][-1] is None and all(a.latency_ms is not None for a in attempts(sessions))
    [delivery] = deliveries(sessions)
    assert (delivery.status, delivery.attempts, delivery.message_id) == ("delivered", 4, receiver.ids()[0])


def test_every_final_write_emits_its_event_and_the_filter_decides_who_gets_it(clean, storage):
    """Completed and failed by a runner, canceled by the cancel route's function, expired by any write:
    each in the transaction of its final state; an endpoint gets only the types it subscribed to, and
    cut.completed comes once per cut, naming it."""
    sessions = clean
    with receiving() as failures, receiving() as cuts:
        failures_id, _ = endpoint(sessions, failures.url, events=["job.failed", "job.expired"])
        cuts_id, _ = endpoint(sessions, cuts.url, events=["cut.completed"])
        completed = finished_job(sessions, "completed", cuts=("recto", "cruzado"))
        failed = finished_job(sessions, "failed")
        finished_job(sessions, "canceled")
        with sessions.begin() as session:
            expiring = queue_job(session, cuts=["recto"], seed=1).job_id
            session.execute(text("UPDATE generation_jobs SET status = 'expired' WHERE job_id = :j"), {"j": expiring})
            session.execute(text("UPDATE generation_jobs SET status = 'expired' WHERE job_id = :j"), {"j": expiring})
        run_until(deliverer(sessions, storage), delivered(sessions, 4))
    events = [json.loads(body) for _, body in failures.requests]
    assert sorted((e["type"], e["data"]["job_id"]) for e in events) == sorted(
        [("job.failed", failed), ("job.expired", expiring)])
    cut_events = [json.loads(body) for _, body in cuts.requests]
    assert sorted((e["type"], e["cut"], e["data"]["job_id"]) for e in cut_events) == [
        ("cut.completed", "cruzado", completed), ("cut.completed", "recto", completed)]
    assert sorted(d.endpoint_id for d in deliveries(sessions)) == sorted([failures_id] * 2 + [cuts_id] * 2)


def test_a_hanging_receiver_is_timed_out_and_retried(clean, storage):
    sessions = clean
    policy = DeliveryPolicy(timeout_seconds=0.5, retry_seconds=(0.05,), lease_seconds=2.0, poll_seconds=0.05,
                            concurrency=4, production=False)
    with receiving("hang", 204) as receiver:
        endpoint(sessions, receiver.url)
        finished_job(sessions)
        run_until(deliverer(sessions, storage, policy), delivered(sessions))
    assert len(receiver.requests) == 2 and len(set(receiver.ids())) == 1
    first, second = attempts(sessions)
    assert (first.status_code, first.error) == (None, "no answer within 0.5 s") and first.latency_ms >= 500
    assert (second.status_code, second.error) == (204, None)


def test_a_redirect_is_not_followed_and_a_spent_schedule_fails_the_delivery(clean, storage):
    sessions = clean
    policy = DeliveryPolicy(timeout_seconds=1.0, retry_seconds=(0.05,), lease_seconds=2.0, poll_seconds=0.05,
                            concurrency=4, production=False)
    with receiving(302, 500) as receiver:
        endpoint(sessions, receiver.url)
        finished_job(sessions)
        run_until(deliverer(sessions, storage, policy), lambda: deliveries(sessions)[0].status == "failed")
    assert [r[0]["content-type"] for r in receiver.requests] == ["application/json"] * 2  # nothing at /elsewhere
    assert [a.error for a in attempts(sessions)] == ["answered 302: redirects are not followed", "answered 500"]


def test_production_never_sends_to_a_private_loopback_or_link_local_address():
    async def attempt(url: str) -> None:
        await post(url, b"{}", {}, timeout=1, production=True)

    for url in ("http://example.com/hook", "https://127.0.0.1/hook", "https://10.1.2.3/", "https://169.254.169.254/",
                "https://[::1]/", "https://[::ffff:127.0.0.1]/", "https://localhost/hook"):
        with pytest.raises(DestinationRefused):
            asyncio.run(attempt(url))


KILLED_DELIVERER = """
import asyncio, sys
from db.engine import make_engine, make_sessionmaker
from serve_app.jobqueue.webhooks import DeliveryPolicy, WebhookDeliverer
sessions = make_sessionmaker(make_engine(sys.argv[1]))
policy = DeliveryPolicy(timeout_seconds=2.0, retry_seconds=(0.05,), lease_seconds=3.0, poll_seconds=0.05,
                        concurrency=4, production=False)
asyncio.run(WebhookDeliverer(sessions, lambda job: {"job_id": job.job_id}, policy, owner="doomed").run_forever())
"""


def test_a_deliverer_killed_mid_send_leaves_the_delivery_to_the_next_after_its_lease(clean, storage, database_url):
    """kill -9 while the receiver holds the request open: no outcome is ever recorded by the dead one;
    once its lease lapses another deliverer sends the same message (same webhook-id), and the dead
    attempt is listed, marked."""
    sessions = clean
    with receiving("hang", 204) as receiver:
        endpoint(sessions, receiver.url)
        finished_job(sessions)
        doomed = subprocess.Popen([sys.executable, "-c", KILLED_DELIVERER, database_url], cwd=ROOT,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            assert receiver.arrived.wait(20), "the doomed deliverer never sent"
        finally:
            os.kill(doomed.pid, signal.SIGKILL)
            doomed.wait(10)
        [sending] = deliveries(sessions)
        assert (sending.status, sending.lease_owner) == ("sending", "doomed")
        started = time.monotonic()
        run_until(deliverer(sessions, storage), delivered(sessions), timeout=15)
        waited = time.monotonic() - started
    assert len(receiver.requests) == 2 and len(set(receiver.ids())) == 1
    assert waited > 0.5  # not before the 3 s lease from the claim lapsed (some of it passed before the kill)
    dead, alive = attempts(sessions)
    assert (dead.status_code, dead.error) == (None, webhooks.NO_OUTCOME)
    assert alive.status_code == 204


# The admin routes.

@pytest.fixture
def admin(clean, tmp_path, storage) -> tuple[FastAPI, dict[str, str]]:
    return _app(clean, tmp_path, storage, "local")


def _app(sessions, tmp_path, storage, environment: str) -> tuple[FastAPI, dict[str, str]]:
    """The app (webhook settings as `environment` has them) and an admin's Authorization header."""
    services = Services(settings=Settings(data_dir=tmp_path, environment=environment, jwt_secret=ADMIN_SECRET),
                        sessions=sessions, storage=storage, catalog=load_catalog(), jwt_secret=ADMIN_SECRET)
    return create_app(services), admin_headers(sessions)


async def _call(app, method: str, path: str, **options) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.request(method, path, **options)


def call(app, method: str, path: str, **options) -> httpx.Response:
    return asyncio.run(_call(app, method, path, **options))


def test_the_secret_is_shown_once_and_rotation_signs_with_both_for_a_while(admin, clean, storage):
    app, headers = admin
    with receiving() as receiver:
        made = call(app, "POST", "/admin/webhooks", headers=headers,
                    json={"url": receiver.url + "/hooks", "events": ["job.completed"], "description": "shop"})
        assert made.status_code == 201, made.text
        secret = made.json()["secret"]
        assert secret.startswith("whsec_") and Webhook(secret)
        listed = call(app, "GET", "/admin/webhooks", headers=headers)
        assert listed.status_code == 200 and secret not in listed.text and "secret" not in listed.json()[0]
        rotated = call(app, "POST", f"/admin/webhooks/{made.json()['id']}/rotate", headers=headers)
        assert rotated.status_code == 200 and rotated.json()["secret"] not in (secret, None)
        assert call(app, "GET", "/admin/webhooks", headers=headers).json()[0]["previous_secret_until"]
        finished_job(clean)
        run_until(deliverer(clean, storage), delivered(clean))
    [(sent_headers, body)] = receiver.requests
    assert Webhook(rotated.json()["secret"]).verify(body, sent_headers)["type"] == "job.completed"
    assert Webhook(secret).verify(body, sent_headers)  # the replaced secret still verifies during the overlap
    page = call(app, "GET", f"/admin/webhooks/{made.json()['id']}/deliveries", headers=headers).json()
    [item] = page["items"]
    assert item["status"] == "delivered" and [a["status_code"] for a in item["attempts"]] == [204]
    again = call(app, "POST", f"/admin/webhooks/{made.json()['id']}/deliveries/{item['id']}/redeliver", headers=headers)
    assert again.status_code == 202
    assert deliveries(clean)[0].status == "pending" and deliveries(clean)[0].message_id == item["message_id"]


def test_routes_refuse_strangers_bad_urls_and_unknown_events(admin, clean):
    app, headers = admin
    assert call(app, "GET", "/admin/webhooks").status_code == 401
    assert call(app, "POST", "/admin/webhooks", json={"url": "http://127.0.0.1:9/"}).status_code == 401
    for body in ({"url": "ftp://example.com/"}, {"url": "http://user:pw@example.com/"}, {"url": "not a url"},
                 {"url": "https://example.com/", "events": ["job.exploded"]}, {"url": "https://example.com/", "events": []}):
        refused = call(app, "POST", "/admin/webhooks", headers=headers, json=body)
        assert refused.status_code == 422, (body, refused.text)
    made = call(app, "POST", "/admin/webhooks", headers=headers, json={"url": "http://127.0.0.1:9/hook"})
    assert made.status_code == 201  # a developer's loopback receiver, outside production
    disabled = call(app, "PATCH", f"/admin/webhooks/{made.json()['id']}", headers=headers, json={"enabled": False})
    assert disabled.status_code == 200 and disabled.json()["enabled"] is False
    finished_job(clean)
    assert deliveries(clean) == []  # a disabled endpoint is not written to
    assert call(app, "DELETE", f"/admin/webhooks/{made.json()['id']}", headers=headers).status_code == 204
    assert call(app, "POST", "/admin/webhooks/999/rotate", headers=headers).status_code == 404


def test_production_registers_only_https_to_public_addresses(clean, tmp_path, storage):
    app, headers = _app(clean, tmp_path, storage, "production")
    for url in ("http://93.184.215.14/hook", "https://127.0.0.1/hook", "https://192.168.1.10/", "https://localhost/",
                "https://169.254.169.254/latest/meta-data"):
        refused = call(app, "POST", "/admin/webhooks", headers=headers, json={"url": url})
        assert refused.status_code == 422 and "url refused" in refused.json()["detail"], url
    assert call(app, "POST", "/admin/webhooks", headers=headers,
                json={"url": "https://93.184.215.14/hook"}).status_code == 201
