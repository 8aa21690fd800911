"""Fair share and data ageing through the launched service, which they share: callers on distinct
loopback addresses, each its own client; lifetimes of seconds, pruned every second.

Client A (127.0.0.21) queues more one-cut jobs than its cap of unfinished jobs while the generator is
stalled (the test-only fault file: so the runner drains nothing meanwhile and the numbers are exact),
and gets 429s; client B (127.0.0.22) then queues one and is accepted. The stall ends, and B's job starts
within one claim round instead of after A's backlog.

Client C (127.0.0.23) then queues two jobs; an admin keeps one. Once they are older than their
lifetime the unkept one and its image are gone, and the kept one and its image are still served.

Deadlines, on the same stalled runner: client D's job that waits for a slot expires unrendered, and its
2-cut job that was running when its deadline passed ends `expired` at its next cut boundary, the cut
that finished still served.

Ingress: the default, HAProxy, which passes the caller on (serve_app/edge/haproxy_forwarding.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from db.engine import make_engine, make_sessionmaker
from tests.conftest import fresh_database
from tests.integration.conftest import IMAGE_SIZE, UNLIMITED
from tests.services import Services

pytestmark = pytest.mark.integration

A, B, C, D = "127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"
LIFETIME_SECONDS = 10  # the fair-share counts read pending jobs and ones started seconds ago: none aged out
CAP = 150
CONCURRENCY = 2
ONE_CUT = {"family_id": "lana-fria", "color_id": "lana-fria-azul-marino", "cuts": ["recto"]}


@pytest.fixture(scope="module")
def shop(services: Services, server_url: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    root = tmp_path_factory.mktemp("fair-share")
    stall = root / "stall"
    with fresh_database(server_url) as database_url:
        settings = {"database_url": database_url, "data_dir": str(root / "data"), "model_profile": "tiny-random",
                    "image_size": IMAGE_SIZE, "poll_seconds": 0.5, **UNLIMITED,
                    "runner_concurrency": CONCURRENCY, "max_unfinished_jobs_per_client": CAP,
                    "render_cache": False, "fault_stall_file": str(stall),
                    "job_retention_days": LIFETIME_SECONDS / 86400, "failed_job_retention_days": LIFETIME_SECONDS / 86400,
                    "prune_interval_seconds": 1}
        with services.own(root, settings) as launched:
            yield launched.base_url, database_url, stall


def caller(base_url: str, address: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=30, transport=httpx.HTTPTransport(local_address=address))


def test_a_busy_client_hits_its_cap_and_another_clients_job_starts_within_one_claim_round(shop):
    base_url, database_url, stall = shop
    stall.touch()  # the runner takes CONCURRENCY of A's jobs and hangs in the generator: nothing drains

    def post_as_a(_: int) -> httpx.Response:
        with caller(base_url, A) as client:
            return client.post("/generate", json=ONE_CUT)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post_as_a, range(CAP + 20)))
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            clients = dict(conn.execute(text("SELECT client, count(*) FROM generation_jobs GROUP BY client")).all())
        assert clients == {A: CAP}, clients  # the caller's own address; exactly its cap of jobs
        statuses = [r.status_code for r in answers]
        assert statuses.count(202) == CAP and statuses.count(429) == 20
        refused = next(r for r in answers if r.status_code == 429)
        assert "unfinished jobs" in refused.json()["detail"] and refused.headers["retry-after"] == "10"

        with caller(base_url, B) as client:
            accepted = client.post("/generate", json=ONE_CUT)
            assert accepted.status_code == 202, accepted.text  # B has its own cap: A's does not refuse B
            b_job = accepted.json()["job_id"]
            # Its place, ranked by the runner's next tick: first in line, though A queued 150 before it.
            b_place = _wait_for(client, b_job, lambda job: job["queue_position"] is not None, timeout=10)
            with engine.connect() as conn:
                a_newest = conn.scalar(text("SELECT job_id FROM generation_jobs WHERE client = :a "
                                            "ORDER BY created_at DESC, id DESC LIMIT 1"), {"a": A})
            # Behind B's and A's 147 other waiting jobs (A's other CONCURRENCY are in the stalled generator).
            assert b_place["queue_position"] == 0
            assert client.get(f"/jobs/{a_newest}").json()["queue_position"] == CAP - CONCURRENCY
            stall.unlink()
            deadline = time.monotonic() + 120
            while client.get(f"/jobs/{b_job}").json()["status"] == "pending":
                assert time.monotonic() < deadline, "B's job never started"
                time.sleep(0.2)
        with engine.connect() as conn:
            a_first = conn.scalar(text(
                "SELECT count(*) FROM generation_jobs a, generation_jobs b WHERE b.job_id = :b AND a.client = :a "
                "AND a.started_at > b.created_at AND a.started_at < b.started_at"), {"a": A, "b": b_job})
            a_waiting = conn.scalar(text("SELECT count(*) FROM generation_jobs WHERE client = :a AND status = "
                                         "'pending'"), {"a": A})
    finally:
        stall.unlink(missing_ok=True)
        engine.dispose()
    # FIFO would have started all of A's 148 waiting jobs first; the fair claim starts B's at the next
    # free slot (a claim that began before B's job committed may still take one of A's per slot).
    assert a_first <= CONCURRENCY, f"{a_first} of A's jobs started after B queued and before B's job"
    assert a_waiting >= CAP - 2 * CONCURRENCY - 5  # A's backlog was still there when B's job started


def test_a_finished_job_and_its_image_age_out_and_a_kept_one_stays(shop):
    from serve_app.admin.auth.service import create_user

    base_url, database_url, _ = shop
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine).begin() as session:
            create_user(session, "ageing-admin", "a long enough password")
    finally:
        engine.dispose()
    with caller(base_url, C) as client:
        login = client.post("/admin/login", data={"username": "ageing-admin", "password": "a long enough password"})
        bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
        proof, other = (client.post("/generate", json=ONE_CUT).json()["job_id"] for _ in range(2))
        kept = client.post(f"/admin/generations/{proof}/keep", headers=bearer)
        assert kept.status_code == 200 and kept.json()["kept"] is True and kept.json()["client"] == C
        deadline = time.monotonic() + 180  # behind what is left of A's backlog, in turns with it
        while {client.get(f"/jobs/{job}").json()["status"] for job in (proof, other)} != {"completed"}:
            assert time.monotonic() < deadline, "C's jobs did not complete"
            time.sleep(0.5)
        images = {job: client.get(f"/jobs/{job}").json()["result_urls"][0] for job in (proof, other)}
        assert {job: client.get(url).status_code for job, url in images.items()} == {proof: 200, other: 200}
        deadline = time.monotonic() + LIFETIME_SECONDS + 60
        while client.get(f"/jobs/{other}").status_code != 404:
            assert time.monotonic() < deadline, "the finished job never aged out"
            time.sleep(1)
        assert client.get(images[other]).status_code == 404  # its image went with it
        finished = datetime.fromisoformat(client.get(f"/jobs/{proof}").json()["completed_at"])
        time.sleep(max(0.0, (finished - datetime.now(timezone.utc)).total_seconds() + LIFETIME_SECONDS + 3))
        assert client.get(f"/jobs/{proof}").json()["status"] == "completed"  # kept: past its lifetime, still there
        assert client.get(images[proof]).status_code == 200


def _wait_for(client: httpx.Client, job_id: str, done, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while not done(job := client.get(f"/jobs/{job_id}").json()):
        assert time.monotonic() < deadline, f"timed out; the job is {job}"
        time.sleep(0.2)
    return job


def test_deadlines_expire_a_waiting_job_unrendered_and_stop_a_running_one_at_its_next_cut(shop):
    base_url, database_url, stall = shop
    engine = make_engine(database_url)
    try:  # what the earlier tests queued has drained: the runner's CONCURRENCY slots are free
        deadline = time.monotonic() + 120
        with engine.connect() as conn:
            while conn.execute(text("SELECT count(*) FROM generation_jobs WHERE status IN "
                                    "('pending', 'processing')")).scalar():
                assert time.monotonic() < deadline, "the earlier tests' jobs never drained"
                time.sleep(0.5)
    finally:
        engine.dispose()
    stall.touch()
    try:
        with caller(base_url, D) as client:
            two_cuts = client.post("/generate", json={**ONE_CUT, "cuts": ["recto", "cruzado"]},
                                   headers={"Cancel-After": "3s"}).json()["job_id"]
            filler = client.post("/generate", json=ONE_CUT).json()["job_id"]  # the runner's other slot
            for job_id in (two_cuts, filler):
                _wait_for(client, job_id, lambda job: job["status"] == "processing")
            waiting = client.post("/generate", json={**ONE_CUT, "deadline_seconds": 1}).json()["job_id"]
            expired = _wait_for(client, waiting, lambda job: job["status"] != "pending", timeout=15)
            assert expired["status"] == "expired" and expired["started_at"] is None and expired["attempts"] == 0
            assert expired["error_message"].startswith("deadline_passed:")
            assert [cut["status"] for cut in expired["progress"]] == ["pending"]  # never rendered

            running = client.get(f"/jobs/{two_cuts}").json()
            past = datetime.fromisoformat(running["deadline_at"]) - datetime.now(timezone.utc)
            time.sleep(max(0.0, past.total_seconds()) + 0.5)
            stall.unlink()  # the cuts in the generator finish; the first one written meets the deadline
            stopped = _wait_for(client, two_cuts, lambda job: job["status"] not in ("pending", "processing"))
            assert stopped["status"] == "expired" and stopped["error_message"].startswith("deadline_passed:")
            done = [cut for cut in stopped["progress"] if cut["status"] == "completed"]
            assert done and all(client.get(cut["url"]).status_code == 200 for cut in done)  # kept and served
            assert _wait_for(client, filler, lambda job: job["status"] != "processing")["status"] == "completed"
    finally:
        stall.unlink(missing_ok=True)
