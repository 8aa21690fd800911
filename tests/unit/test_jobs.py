"""Job-queue operations against a real PostgreSQL."""

from __future__ import annotations

import threading

from sqlalchemy import func, select, text, update

from db import jobs
from db.job_failures import INTERRUPTED, RENDER_FAILED
from db.models import GenerationJob
from serve_app.jobqueue.plans import plan_cuts
from tests.job_rows import ensure_color, expire_leases, queue_job


def _create(sessions, n: int = 1, cuts=("recto", "cruzado")) -> list[str]:
    ids = []
    with sessions.begin() as s:
        for i in range(n):
            job = queue_job(s, cuts=list(cuts), seed=100 + i,
                                  swatch_url=None, swatch_key="k.png")
            ids.append(job.job_id)
    return ids


def _claim_one(sessions, owner: str) -> tuple[str, GenerationJob]:
    """A new job, claimed by `owner` for 30 s: its id and its claimed row."""
    [job_id] = _create(sessions)
    with sessions.begin() as s:
        [job] = jobs.claim_jobs(s, owner, 1, 30)
    return job_id, job


def test_create_inserts_a_pending_row_whose_cuts_are_planned_from_its_seed(sessions):
    [job_id] = _create(sessions)
    with sessions() as s:
        job = jobs.get_job(s, job_id)
    assert job.status == "pending"
    assert job.cuts == ["recto", "cruzado"]
    assert job.cut_progress == {}  # nothing done yet; each cut's seed is the plan's, not a stored copy
    assert [(plan.cut, plan.seed) for plan in plan_cuts(job)] == [("recto", 100), ("cruzado", 101)]
    assert job.attempts == 0 and job.lease_owner is None


def test_create_stores_the_swatch_digest_it_is_given(sessions):
    with sessions.begin() as s:
        accepted = queue_job(s, cuts=["recto"], seed=1, swatch_key="jobs/j/swatch.png", swatch_digest="ab" * 32)
    assert accepted.swatch_digest == "ab" * 32  # the 202's plan has it without a second read
    with sessions() as s:
        assert jobs.get_job(s, accepted.job_id).swatch_digest == "ab" * 32


def test_create_refuses_an_unknown_color_and_a_client_at_its_cap_but_an_admin_job_has_no_cap(sessions):
    with sessions.begin() as s:
        ensure_color(s)
        assert jobs.create_job(s, family_id="f", color_id="other", cuts=["recto"], seed=1) is None
        assert jobs.create_job(s, family_id="f", color_id="c", cuts=["recto"], seed=1, client="a", client_cap=1)
        assert jobs.create_job(s, family_id="f", color_id="c", cuts=["recto"], seed=2, client="a", client_cap=1) is None
        assert jobs.create_job(s, family_id="f", color_id="c", cuts=["recto"], seed=3, client="a") is not None
    with sessions() as s:
        assert s.scalar(text("SELECT count(*) FROM generation_jobs")) == 2


def test_create_sends_notify(sessions, database_url):
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {jobs.NOTIFY_CHANNEL}")
        [job_id] = _create(sessions)
        notes = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.payload for n in notes] == [job_id]


def test_claim_takes_oldest_first_and_sets_lease(sessions):
    ids = _create(sessions, 3)
    with sessions.begin() as s:
        claimed = jobs.claim_jobs(s, "runner-a", 2, lease_seconds=30)
    assert [j.job_id for j in claimed] == ids[:2]
    with sessions() as s:
        job = jobs.get_job(s, ids[0])
        lease_left = s.scalar(text("SELECT extract(epoch FROM lease_expires_at - now()) FROM generation_jobs WHERE job_id = :j"), {"j": ids[0]})
    assert job.status == "processing" and job.attempts == 1 and job.lease_owner == "runner-a"
    assert job.started_at is not None
    assert 25 < lease_left <= 30


def test_concurrent_claims_never_share_a_row(sessions):
    ids = set(_create(sessions, 40))
    results: dict[str, list[str]] = {}
    barrier = threading.Barrier(4)

    def claimer(name: str) -> None:
        got: list[str] = []
        barrier.wait()
        while True:
            with sessions.begin() as s:
                batch = jobs.claim_jobs(s, name, 3, 30)
            if not batch:
                break
            got += [j.job_id for j in batch]
        results[name] = got

    threads = [threading.Thread(target=claimer, args=(f"r{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [j for got in results.values() for j in got]
    assert len(claimed) == len(set(claimed)) == 40
    assert set(claimed) == ids


def test_record_cut_updates_one_entry_and_is_fenced_by_the_lease(sessions):
    job_id, job = _claim_one(sessions, "owner")
    with sessions.begin() as s:
        assert jobs.record_cut(s, jobs.lease_of(job), "recto", {"status": "completed", "url": "u1", "seed": 100})
        assert not jobs.record_cut(s, jobs.Lease(job_id, "intruder"), "cruzado", {"status": "completed"})
    with sessions() as s:
        progress = jobs.get_job(s, job_id).cut_progress
    assert progress["recto"] == {"status": "completed", "url": "u1", "seed": 100}
    assert "cruzado" not in progress  # the intruder wrote nothing


def test_a_progress_write_answers_whether_cancel_was_requested(sessions):
    """The runner's cut-boundary cancel check rides on its progress write: one statement, not two."""
    job_id, job = _claim_one(sessions, "owner")
    lease = jobs.lease_of(job)
    with sessions.begin() as s:
        assert jobs.record_cut(s, lease, "recto", {"status": "processing", "seed": 100}) == jobs.CutRecorded(False)
    with sessions.begin() as s:
        assert jobs.request_cancel(s, job_id) == "requested"
    with sessions.begin() as s:
        assert jobs.record_cut(s, lease, "recto", {"status": "completed", "seed": 100}) == jobs.CutRecorded(True)
        assert jobs.record_cut(s, jobs.Lease(job_id, "intruder"), "recto", {"status": "processing"}) is None
    with sessions() as s:
        assert jobs.get_job(s, job_id).cut_progress["recto"] == {"status": "completed", "seed": 100}


def test_complete_and_fail(sessions):
    a, b = _create(sessions, 2)
    with sessions.begin() as s:
        leases = {j.job_id: jobs.lease_of(j) for j in jobs.claim_jobs(s, "o", 2, 30)}
    with sessions.begin() as s:
        assert not jobs.complete_job(s, jobs.Lease(a, "someone-else"), ["x"])
        assert jobs.complete_job(s, leases[a], ["u1", "u2"])
        assert jobs.fail_job(s, leases[b], RENDER_FAILED, "RuntimeError: boom")
    with sessions() as s:
        done, failed = jobs.get_job(s, a), jobs.get_job(s, b)
    assert (done.status, done.result_urls, done.lease_owner) == ("completed", ["u1", "u2"], None)
    assert done.completed_at is not None
    assert (failed.status, failed.error_message, failed.error_detail) == ("failed", RENDER_FAILED.message,
                                                                    "RuntimeError: boom")


def test_expired_lease_goes_back_to_pending_then_fails_when_attempts_spent(sessions):
    a, b = _create(sessions, 2)
    with sessions.begin() as s:
        jobs.claim_jobs(s, "dead-runner", 2, 30)
        # Only `a` has an expired lease; `b`'s runner is alive.
        expire_leases(s, a)
    with sessions.begin() as s:
        moved = jobs.release_expired_leases(s, [0.0])
    assert moved == [(a, "pending")]
    with sessions() as s:
        assert jobs.get_job(s, a).lease_owner is None
        assert jobs.get_job(s, b).status == "processing"

    with sessions.begin() as s:
        s.execute(update(GenerationJob).where(GenerationJob.job_id == a).values(attempts=3, status="processing",
                  lease_owner="x", lease_expires_at=text("now() - interval '1 second'")))
    with sessions.begin() as s:
        assert jobs.release_expired_leases(s, [0.0]) == [(a, "failed")]
    with sessions() as s:
        failed = jobs.get_job(s, a)
    assert failed.error_message == INTERRUPTED.message and "attempts exhausted" in failed.error_detail


def test_renew_keeps_only_owned_leases(sessions):
    a, b = _create(sessions, 2)
    with sessions.begin() as s:
        [mine] = jobs.claim_jobs(s, "me", 1, 1)
        [theirs] = jobs.claim_jobs(s, "other", 1, 1)
    with sessions.begin() as s:
        assert jobs.renew_leases(s, [jobs.lease_of(mine), jobs.Lease(b, "not-theirs")], 60) == {jobs.lease_of(mine)}
    assert theirs.job_id == b
    with sessions() as s:
        left = s.scalar(text("SELECT extract(epoch FROM lease_expires_at - now()) FROM generation_jobs WHERE job_id = :j"), {"j": a})
    assert left > 50


def test_cancel_pending_processing_and_final(sessions):
    pending, processing, done = _create(sessions, 3)
    with sessions.begin() as s:
        leases = {j.job_id: jobs.lease_of(j) for j in jobs.claim_jobs(s, "o", 3, 30)}
        s.execute(update(GenerationJob).where(GenerationJob.job_id == pending)
                  .values(status="pending", lease_owner=None, lease_token=None))
        jobs.complete_job(s, leases[done], ["u"])
    with sessions.begin() as s:
        assert jobs.request_cancel(s, pending) == "canceled"
        assert jobs.request_cancel(s, processing) == "requested"
        assert jobs.request_cancel(s, done) == "final"
        assert jobs.request_cancel(s, "no-such-job") is None
    with sessions() as s:
        assert jobs.get_job(s, pending).status == "canceled"
        assert jobs.get_job(s, processing).status == "processing" and jobs.cancel_requested(s, processing)
    with sessions.begin() as s:
        assert not jobs.mark_canceled(s, jobs.Lease(processing, "someone-else"))
        assert jobs.mark_canceled(s, leases[processing])
    with sessions() as s:
        assert jobs.get_job(s, processing).status == "canceled"


def test_release_returns_jobs_without_spending_an_attempt(sessions, database_url):
    import psycopg

    a, b = _create(sessions, 2)
    with sessions.begin() as s:
        [leaving] = jobs.claim_jobs(s, "leaving", 1, 30)
        jobs.claim_jobs(s, "staying", 1, 30)
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {jobs.NOTIFY_CHANNEL}")
        with sessions.begin() as s:
            assert jobs.release_jobs(s, [jobs.lease_of(leaving), jobs.Lease(b, "not-mine")]) == [a]
        assert [n.payload for n in listener.notifies(timeout=5, stop_after=1)] == [a]
    with sessions() as s:
        released, kept = jobs.get_job(s, a), jobs.get_job(s, b)
    assert (released.status, released.attempts, released.lease_owner) == ("pending", 0, None)
    assert (kept.status, kept.lease_owner) == ("processing", "staying")


def test_backlog_check_counts_only_pending(sessions):
    ids = _create(sessions, 3)
    with sessions.begin() as s:
        assert jobs.backlog_at_least(s, 3) and not jobs.backlog_at_least(s, 4)
        jobs.claim_jobs(s, "o", 1, 30)
    with sessions.begin() as s:
        assert not jobs.backlog_at_least(s, 3) and jobs.backlog_at_least(s, 2)
    assert len(ids) == 3


def test_backlog_counts_pending_cuts_cuts_in_flight_and_the_oldest_wait(sessions):
    with sessions.begin() as s:
        assert jobs.backlog(s) == jobs.Backlog(0, 0, 0, 0.0)
    ids = _create(sessions, 2, cuts=("recto", "cruzado", "smoking")) + _create(sessions, 2, cuts=("recto",))
    with sessions.begin() as s:
        s.execute(update(GenerationJob).where(GenerationJob.job_id == ids[0])
                  .values(created_at=text("now() - interval '90 seconds'")))
        s.execute(update(GenerationJob).where(GenerationJob.job_id == ids[1])
                  .values(created_at=text("now() - interval '40 seconds'")))
        jobs.claim_jobs(s, "o", 1, 30)  # the oldest: 3 cuts now in flight
        jobs.request_cancel(s, ids[3])  # canceled: no longer backlog
    with sessions.begin() as s:
        backlog = jobs.backlog(s)
    assert (backlog.pending_jobs, backlog.pending_cuts, backlog.cuts_in_flight) == (2, 4, 3)
    assert 40 <= backlog.oldest_pending_seconds < 60  # the 90 s old job is in hand; the 40 s old one waits


def test_idempotency_key_is_unique(sessions):
    import pytest
    from sqlalchemy.exc import IntegrityError

    with sessions.begin() as s:
        job = queue_job(s, cuts=["recto"], seed=1, swatch_url=None,
                              swatch_key=None, idempotency_key="k-1", request_hash="h")
    with sessions() as s:
        assert jobs.find_by_idempotency_key(s, "k-1").job_id == job.job_id
    with pytest.raises(IntegrityError), sessions.begin() as s:
        queue_job(s, cuts=["recto"], seed=1, swatch_url=None,
                        swatch_key=None, idempotency_key="k-1", request_hash="h")


def test_a_rescued_job_is_due_after_the_wait_its_attempt_count_picks(sessions):
    """The caller's schedule, picked per row by the attempts made, in one statement; past its end the last wait holds."""
    ids = _create(sessions, 3)
    with sessions.begin() as s:
        jobs.claim_jobs(s, "dead-runner", 3, 30)
        for job_id, attempts in zip(ids, (1, 2, 5)):
            s.execute(update(GenerationJob).where(GenerationJob.job_id == job_id)
                      .values(attempts=attempts, max_attempts=9, lease_expires_at=text("now() - interval '1 second'")))
    with sessions.begin() as s:  # one transaction: now() is the rescue's own
        moved = jobs.release_expired_leases(s, [10.0, 100.0, 1000.0])
        waits = dict(s.execute(select(GenerationJob.job_id, func.extract("epoch", GenerationJob.next_attempt_at - func.now()))
                               .where(GenerationJob.job_id.in_(ids))).all())
    assert sorted(moved) == sorted((job_id, "pending") for job_id in ids)
    assert [float(waits[job_id]) for job_id in ids] == [10.0, 100.0, 1000.0]


def test_rescuer_spares_the_callers_own_jobs(sessions):
    mine, theirs = _create(sessions, 2)
    with sessions.begin() as s:
        [running] = jobs.claim_jobs(s, "me", 1, 30)
        jobs.claim_jobs(s, "dead", 1, 30)
        expire_leases(s)
    with sessions.begin() as s:
        assert jobs.release_expired_leases(s, [0.0], spare=[jobs.lease_of(running)]) == [(theirs, "pending")]
    with sessions() as s:
        assert jobs.get_job(s, mine).status == "processing"


def test_a_stale_attempt_cannot_write_after_its_runner_claimed_the_job_again(sessions):
    """The fence is the attempt's lease token, not the runner: the same runner's old attempt is refused."""
    job_id, first = _claim_one(sessions, "runner")
    stale = jobs.lease_of(first)
    with sessions.begin() as s:
        expire_leases(s, job_id)
        assert jobs.release_expired_leases(s, [0.0]) == [(job_id, "pending")]
    with sessions.begin() as s:
        [second] = jobs.claim_jobs(s, "runner", 1, 30)  # the same runner claims it again: a new attempt
        current = jobs.lease_of(second)
    assert stale.token and current.token and stale.token != current.token
    with sessions.begin() as s:
        assert not jobs.record_cut(s, stale, "recto", {"status": "completed", "url": "stale"})
        assert jobs.renew_leases(s, [stale], 60) == set()
        assert not jobs.complete_job(s, stale, ["stale"])
        assert not jobs.fail_job(s, stale, RENDER_FAILED, "stale")
        assert not jobs.mark_canceled(s, stale)
        assert jobs.release_jobs(s, [stale]) == []
    with sessions() as s:
        job = jobs.get_job(s, job_id)
    assert (job.status, job.attempts, job.lease_token) == ("processing", 2, current.token)
    assert "recto" not in job.cut_progress  # the stale attempt wrote nothing
    with sessions.begin() as s:
        assert jobs.renew_leases(s, [stale, current], 60) == {current}
        assert jobs.complete_job(s, current, ["u1", "u2"])
    with sessions() as s:
        done = jobs.get_job(s, job_id)
    assert (done.status, done.result_urls, done.lease_token) == ("completed", ["u1", "u2"], None)


def test_the_rescuer_spares_only_attempts_still_running(sessions):
    """A runner's own expired lease is rescued unless that attempt is alive in the runner."""
    alive, dead, from_before_tokens = _create(sessions, 3)
    with sessions.begin() as s:
        claimed = {j.job_id: jobs.lease_of(j) for j in jobs.claim_jobs(s, "me", 3, 30)}
        expire_leases(s)
        s.execute(update(GenerationJob).where(GenerationJob.job_id == from_before_tokens).values(lease_token=None))
    with sessions.begin() as s:
        moved = jobs.release_expired_leases(s, [0.0], spare=[claimed[alive]])
    assert sorted(moved) == sorted([(dead, "pending"), (from_before_tokens, "pending")])
    with sessions() as s:
        assert jobs.get_job(s, alive).status == "processing"


def test_retrying_a_failed_job_queues_it_with_a_fresh_budget(sessions, database_url):
    import psycopg

    failed, running = _create(sessions, 2)
    with sessions.begin() as s:
        leases = {j.job_id: jobs.lease_of(j) for j in jobs.claim_jobs(s, "o", 2, 30)}
        jobs.fail_job(s, leases[failed], RENDER_FAILED, "boom")
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {jobs.NOTIFY_CHANNEL}")
        with sessions.begin() as s:
            assert jobs.retry_failed_job(s, failed) == "retried"
            assert jobs.retry_failed_job(s, running) == "processing"
            assert jobs.retry_failed_job(s, "no-such-job") is None
        assert [n.payload for n in listener.notifies(timeout=5, stop_after=1)] == [failed]
    with sessions() as s:
        job = jobs.get_job(s, failed)
    assert (job.status, job.attempts, job.error_message, job.error_detail, job.completed_at) == ("pending", 0, None, None,
                                                                                                None)
