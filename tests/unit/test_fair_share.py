"""Fair share: a per-client cap on unfinished jobs, and claims that serve clients in turns (real PostgreSQL)."""

from __future__ import annotations

import time

from sqlalchemy import text

from db import jobs
from db.models import GenerationJob
from tests.job_rows import queue_job
from tests.unit.test_api import NAVY, api, from_client, limited  # noqa: F401 (api is a fixture)


def _queue(sessions, client: str, n: int) -> list[str]:
    with sessions.begin() as s:
        return [queue_job(s, cuts=["recto"], seed=i, swatch_url=None,
                                swatch_key="k.png", client=client).job_id for i in range(n)]


def test_a_client_with_a_long_queue_does_not_delay_another_clients_first_job(sessions):
    """A queues 200, a runner takes 16; then B queues one: the next claim with room takes B's, not A's 17th."""
    a_jobs = _queue(sessions, "127.0.0.11", 200)
    with sessions.begin() as s:
        first = jobs.claim_jobs(s, "runner", 16, lease_seconds=30)
    assert [j.job_id for j in first] == a_jobs[:16]  # alone, A is served oldest first
    time.sleep(0.01)
    [b_job] = _queue(sessions, "127.0.0.12", 1)
    with sessions.begin() as s:
        [next_one] = jobs.claim_jobs(s, "runner", 1, lease_seconds=30)
    assert next_one.job_id == b_job


def test_claims_take_each_clients_jobs_in_turns_oldest_first(sessions):
    a = _queue(sessions, "a", 4)
    b = _queue(sessions, "b", 2)
    legacy = _queue(sessions, "", 2)  # rows written without a client (tools, older versions): one client
    with sessions.begin() as s:
        claimed = {j.job_id for j in jobs.claim_jobs(s, "runner", 3, lease_seconds=30)}
    assert claimed == {a[0], b[0], legacy[0]}  # turn 1 of every client, A's oldest first
    with sessions.begin() as s:
        claimed = {j.job_id for j in jobs.claim_jobs(s, "runner", 3, lease_seconds=30)}
    assert claimed == {a[1], b[1], legacy[1]}  # then turn 2 of every client
    with sessions.begin() as s:
        assert [j.job_id for j in jobs.claim_jobs(s, "runner", 6, lease_seconds=30)] == a[2:]


def test_fair_claims_still_never_share_a_row_and_skip_jobs_not_due(sessions):
    import threading

    for client in ("a", "b", "c"):
        _queue(sessions, client, 20)
    with sessions.begin() as s:
        s.execute(text("UPDATE generation_jobs SET next_attempt_at = now() + interval '1 hour' WHERE client = 'c'"))
    results: dict[int, list[str]] = {}
    barrier = threading.Barrier(4)

    def claim(worker: int) -> None:
        barrier.wait()
        got = []
        while True:
            with sessions.begin() as s:
                batch = jobs.claim_jobs(s, f"runner-{worker}", 3, lease_seconds=30)
            if not batch:
                break
            got += [j.job_id for j in batch]
        results[worker] = got

    threads = [threading.Thread(target=claim, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = [job_id for got in results.values() for job_id in got]
    assert len(claimed) == len(set(claimed)) == 40  # a's and b's, each once; c's are not due


def test_the_fair_claim_stays_cheap_on_10k_pending_rows(sessions):
    with sessions.begin() as s:
        s.execute(text("""
            INSERT INTO generation_jobs (job_id, status, family_id, color_id, cuts, seed, client, cut_progress)
            SELECT gen_random_uuid()::text, 'pending', 'f', 'c', '["recto"]', i, '10.0.' || (i % 50) || '.1', '{}'
            FROM generate_series(1, 10000) AS i"""))
        s.execute(text("ANALYZE generation_jobs"))
    started = time.perf_counter()
    with sessions.begin() as s:
        claimed = jobs.claim_jobs(s, "runner", 16, lease_seconds=30)
    elapsed = time.perf_counter() - started
    assert len({j.client for j in claimed}) == 16  # 16 different clients' first jobs
    assert elapsed < 0.5, f"claim took {elapsed:.3f} s on 10k pending rows"


def test_a_client_at_its_cap_of_unfinished_jobs_gets_429_and_another_client_does_not(api, sessions):
    services = limited(api, max_unfinished_jobs_per_client=3, rate_limit_generate="1000/minute")
    statuses = [from_client(services, "198.51.100.20", "POST", "/generate", json=NAVY).status_code for _ in range(4)]
    assert statuses == [202, 202, 202, 429]
    refused = from_client(services, "198.51.100.20", "POST", "/generate", json=NAVY)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "10"
    assert "3 unfinished jobs" in refused.json()["detail"]
    assert from_client(services, "198.51.100.21", "POST", "/generate", json=NAVY).status_code == 202
    # A finished job frees its place: the client may queue one more.
    with sessions.begin() as s:
        s.execute(text("UPDATE generation_jobs SET status = 'completed' WHERE id = "
                       "(SELECT min(id) FROM generation_jobs WHERE client = '198.51.100.20')"))
    assert from_client(services, "198.51.100.20", "POST", "/generate", json=NAVY).status_code == 202
    with sessions() as s:
        clients = [c for (c,) in s.query(GenerationJob.client).order_by(GenerationJob.id)]
    assert clients == ["198.51.100.20"] * 3 + ["198.51.100.21", "198.51.100.20"]
    # An unknown color is still a 422, not the cap.
    unknown = from_client(services, "198.51.100.20", "POST", "/generate", json={**NAVY, "color_id": "nope"})
    assert unknown.status_code == 422
