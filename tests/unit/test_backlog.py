"""The backlog the runners publish (db/jobs.py `backlog`), against a real PostgreSQL."""

from __future__ import annotations

from sqlalchemy import func, update

from db import jobs
from db.models import GenerationJob
from tests.job_rows import queue_job


def _job(session, cuts: list[str], minutes_old: float = 0) -> str:
    job = queue_job(session, cuts=cuts, seed=1, swatch_url=None, swatch_key=None)
    if minutes_old:
        session.execute(update(GenerationJob).where(GenerationJob.job_id == job.job_id)
                        .values(created_at=func.now() - func.make_interval(0, 0, 0, 0, 0, minutes_old)))
    return job.job_id


def test_an_empty_queue_has_no_backlog(sessions):
    with sessions() as session:
        assert jobs.backlog(session) == jobs.Backlog(0, 0, 0, 0.0)


def test_the_backlog_counts_unfinished_cuts_of_waiting_and_running_jobs_and_the_oldest_wait(sessions):
    with sessions.begin() as session:
        _job(session, ["recto", "cruzado"], minutes_old=3)
        _job(session, ["recto"], minutes_old=1)
        running = _job(session, ["recto", "cruzado", "recto-2"])
        done = _job(session, ["recto"])
    with sessions.begin() as session:
        # Claim the two newest (the oldest are claimed first, so make those not yet due).
        session.execute(update(GenerationJob).where(GenerationJob.job_id.not_in([running, done]))
                        .values(next_attempt_at=func.now() + func.make_interval(0, 0, 0, 0, 1)))
        leases = {job.job_id: jobs.lease_of(job) for job in jobs.claim_jobs(session, "runner", 5, 30)}
    with sessions.begin() as session:
        assert jobs.record_cut(session, leases[running], "recto", {"status": "completed", "key": "k"})
        assert jobs.record_cut(session, leases[running], "cruzado", {"status": "processing"})
        assert jobs.complete_job(session, leases[done], ["u"])
    with sessions() as session:
        backlog = jobs.backlog(session)
    assert (backlog.pending_jobs, backlog.pending_cuts, backlog.cuts_in_flight) == (2, 3, 2)
    assert 180 <= backlog.oldest_pending_seconds < 190  # the 3-minute-old job, not the 1-minute one


def test_a_requeued_job_waits_only_for_the_cuts_it_has_not_finished(sessions):
    with sessions.begin() as session:
        job_id = _job(session, ["recto", "cruzado"])
    with sessions.begin() as session:
        [lease] = [jobs.lease_of(job) for job in jobs.claim_jobs(session, "runner", 1, 30)]
        assert jobs.record_cut(session, lease, "recto", {"status": "completed", "key": "k"})
    with sessions.begin() as session:
        assert jobs.release_jobs(session, [lease]) == [job_id]
    with sessions() as session:
        backlog = jobs.backlog(session)
    assert (backlog.pending_jobs, backlog.pending_cuts, backlog.cuts_in_flight) == (1, 1, 0)
