"""Job-queue operations on `generation_jobs`.

The semantics follow the well-known Postgres queues (procrastinate, River): a row is claimed with
`FOR UPDATE SKIP LOCKED` under a lease that its runner renews; every write after the claim is fenced on
`lease_owner`, so a runner that lost its lease cannot overwrite the new owner's work; an expired lease
puts the job back with backoff (or fails it once its attempts are spent). `NOTIFY` only wakes runners.

Functions take a Session and never commit: the caller owns the transaction (`with maker.begin()`).
"""

from __future__ import annotations

import uuid
from sqlalchemy import case, func, select, text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session
from sqlalchemy.sql import bindparam, cast

from db.models import GenerationJob

NOTIFY_CHANNEL = "sastre_jobs"


def _seconds(value: float):
    return func.make_interval(0, 0, 0, 0, 0, 0, value)


def create_job(
    session: Session,
    *,
    family_id: str,
    color_id: str,
    cuts: list[str],
    seed: int,
    swatch_url: str | None,
    swatch_key: str | None,
    max_attempts: int = 3,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    job_id: str | None = None,
) -> GenerationJob:
    """Insert a pending job and wake the runners when the transaction commits.

    With an `idempotency_key` that is already taken the INSERT raises IntegrityError; the caller
    looks the existing job up (`find_by_idempotency_key`) and compares `request_hash`.
    """
    job = GenerationJob(
        job_id=job_id or str(uuid.uuid4()), status="pending", family_id=family_id, color_id=color_id, cuts=list(cuts),
        seed=seed, swatch_url=swatch_url, swatch_key=swatch_key, max_attempts=max_attempts,
        idempotency_key=idempotency_key, request_hash=request_hash,
        cut_progress={cut: {"status": "pending", "seed": seed + index} for index, cut in enumerate(cuts)},
    )
    session.add(job)
    session.flush()
    notify(session, job.job_id)
    return job


def notify(session: Session, job_id: str) -> None:
    """Wake the runners (delivered when the transaction commits; a poll covers a lost one)."""
    session.execute(text("SELECT pg_notify(:channel, :job_id)"), {"channel": NOTIFY_CHANNEL, "job_id": job_id})


def get_job(session: Session, job_id: str) -> GenerationJob | None:
    return session.scalars(select(GenerationJob).where(GenerationJob.job_id == job_id)).one_or_none()


def find_by_idempotency_key(session: Session, key: str) -> GenerationJob | None:
    return session.scalars(select(GenerationJob).where(GenerationJob.idempotency_key == key)).one_or_none()


def backlog_at_least(session: Session, limit: int) -> bool:
    """Whether `limit` or more jobs are pending; counts at most `limit` rows, so it stays cheap."""
    due = select(GenerationJob.id).where(GenerationJob.status == "pending").limit(limit).subquery()
    return session.scalar(select(func.count()).select_from(due)) >= limit


def request_cancel(session: Session, job_id: str) -> str | None:
    """Cancel a job: "canceled" (it was pending), "requested" (a runner stops it at the next cut
    boundary), "final" (already finished: nothing to cancel), or None for an unknown job."""
    done = session.execute(
        update(GenerationJob).where(GenerationJob.job_id == job_id, GenerationJob.status == "pending")
        .values(status="canceled", cancel_requested=True, completed_at=func.now(), updated_at=func.now())
    )
    if done.rowcount:
        return "canceled"
    flagged = session.execute(
        update(GenerationJob).where(GenerationJob.job_id == job_id, GenerationJob.status == "processing")
        .values(cancel_requested=True, updated_at=func.now())
    )
    if flagged.rowcount:
        return "requested"
    return "final" if get_job(session, job_id) is not None else None


def cancel_requested(session: Session, job_id: str) -> bool:
    return bool(session.scalar(select(GenerationJob.cancel_requested).where(GenerationJob.job_id == job_id)))


def mark_canceled(session: Session, job_id: str, owner: str) -> bool:
    result = session.execute(
        update(GenerationJob)
        .where(GenerationJob.job_id == job_id, GenerationJob.lease_owner == owner,
               GenerationJob.status == "processing")
        .values(status="canceled", completed_at=func.now(), updated_at=func.now(), lease_owner=None,
                lease_expires_at=None)
    )
    return result.rowcount == 1


def release_jobs(session: Session, owner: str, job_ids: list[str]) -> list[str]:
    """Hand jobs back unfinished (graceful shutdown): pending again at once, the attempt not counted."""
    if not job_ids:
        return []
    released = list(session.scalars(
        update(GenerationJob)
        .where(GenerationJob.job_id.in_(job_ids), GenerationJob.lease_owner == owner,
               GenerationJob.status == "processing")
        .values(status="pending", attempts=GenerationJob.attempts - 1, lease_owner=None, lease_expires_at=None,
                next_attempt_at=func.now(), updated_at=func.now())
        .returning(GenerationJob.job_id)
    ))
    for job_id in released:
        notify(session, job_id)
    return released


def claim_jobs(session: Session, owner: str, limit: int, lease_seconds: float) -> list[GenerationJob]:
    """Claim up to `limit` due pending jobs, oldest first; concurrent claimers never get the same row."""
    due = (
        select(GenerationJob.id)
        .where(GenerationJob.status == "pending", GenerationJob.next_attempt_at <= func.now())
        .order_by(GenerationJob.next_attempt_at, GenerationJob.created_at, GenerationJob.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    claimed = session.scalars(
        update(GenerationJob)
        .where(GenerationJob.id.in_(due))
        .values(
            status="processing",
            attempts=GenerationJob.attempts + 1,
            lease_owner=owner,
            lease_expires_at=func.now() + _seconds(lease_seconds),
            started_at=func.coalesce(GenerationJob.started_at, func.now()),
            updated_at=func.now(),
            error_message=None,
        )
        .returning(GenerationJob)
        .execution_options(synchronize_session=False)
    ).all()
    return sorted(claimed, key=lambda job: (job.created_at, job.id))


def renew_leases(session: Session, owner: str, job_ids: list[str], lease_seconds: float) -> set[str]:
    """Extend the leases `owner` still holds; returns the job ids it still owns."""
    if not job_ids:
        return set()
    rows = session.scalars(
        update(GenerationJob)
        .where(GenerationJob.job_id.in_(job_ids), GenerationJob.lease_owner == owner,
               GenerationJob.status == "processing")
        .values(lease_expires_at=func.now() + _seconds(lease_seconds))
        .returning(GenerationJob.job_id)
    ).all()
    return set(rows)


def record_cut(session: Session, job_id: str, owner: str, cut: str, progress: dict) -> bool:
    """Atomically set one cut's progress entry (jsonb_set), so concurrent cuts never clobber each other."""
    result = session.execute(
        update(GenerationJob)
        .where(GenerationJob.job_id == job_id, GenerationJob.lease_owner == owner,
               GenerationJob.status == "processing")
        .values(
            cut_progress=func.jsonb_set(GenerationJob.cut_progress, [cut], cast(bindparam("entry", progress, type_=JSONB), JSONB)),
            updated_at=func.now(),
        )
    )
    return result.rowcount == 1


def complete_job(session: Session, job_id: str, owner: str, result_urls: list[str]) -> bool:
    result = session.execute(
        update(GenerationJob)
        .where(GenerationJob.job_id == job_id, GenerationJob.lease_owner == owner,
               GenerationJob.status == "processing")
        .values(status="completed", result_urls=result_urls, completed_at=func.now(), updated_at=func.now(),
                lease_owner=None, lease_expires_at=None, error_message=None)
    )
    return result.rowcount == 1


def fail_job(session: Session, job_id: str, owner: str, error: str) -> bool:
    result = session.execute(
        update(GenerationJob)
        .where(GenerationJob.job_id == job_id, GenerationJob.lease_owner == owner,
               GenerationJob.status == "processing")
        .values(status="failed", error_message=error[:2000], completed_at=func.now(), updated_at=func.now(),
                lease_owner=None, lease_expires_at=None)
    )
    return result.rowcount == 1


def release_expired_leases(session: Session, backoff_seconds: float = 2.0,
                           exclude_owner: str | None = None) -> list[tuple[str, str]]:
    """The rescuer: jobs whose lease ran out go back to pending (exponential backoff) or fail when spent.

    Returns (job_id, new status) for each job it moved. `exclude_owner` spares the caller's own jobs.
    """
    expired = [GenerationJob.status == "processing", GenerationJob.lease_expires_at < func.now()]
    if exclude_owner is not None:
        expired.append(GenerationJob.lease_owner != exclude_owner)
    spent = GenerationJob.attempts >= GenerationJob.max_attempts
    rows = session.execute(
        update(GenerationJob)
        .where(*expired)
        .values(
            status=case((spent, "failed"), else_="pending"),
            error_message=case(
                (spent, "worker lost its lease; attempts exhausted"), else_="worker lost its lease; retrying"
            ),
            completed_at=case((spent, func.now()), else_=None),
            next_attempt_at=func.now() + _seconds(backoff_seconds) * func.power(2, GenerationJob.attempts - 1),
            lease_owner=None,
            lease_expires_at=None,
            updated_at=func.now(),
        )
        .returning(GenerationJob.job_id, GenerationJob.status)
    ).all()
    return [(job_id, status) for job_id, status in rows]
