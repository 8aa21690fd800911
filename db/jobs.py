"""Job-queue operations on `generation_jobs`.

The semantics follow the well-known Postgres queues (procrastinate, River): a row is claimed with
`FOR UPDATE SKIP LOCKED` under a lease that its runner renews. Every claim is a new attempt with a
fresh `lease_token`, and every write of that attempt (progress, renewal, complete, fail, cancel,
release) is fenced on its `Lease`: once the lease lapsed and the job was re-queued, a stale attempt's
writes change nothing, even when the same runner has claimed the job again. An expired lease puts the
job back with backoff (or fails it once its attempts are spent). `NOTIFY` on `NOTIFY_CHANNEL` only wakes
runners.

Every write a client can see (claim, cut progress, complete, fail, cancel, retry, release, rescue) bumps
`updated_at` strictly (the row's event version: never equal, never backwards, even when two
transactions race on one row) and sends the job id on `EVENTS_CHANNEL` in the same transaction, so a
change is announced exactly when it commits. The event streams listen there; runners never do.

Every state change of a job is a function here; functions take a Session and never commit: the caller
owns the transaction (`with maker.begin()`). The hot routes' functions (`read_job` and the idempotency
look-ups) are async and take an autocommit `AsyncConnection` instead: each is one
statement, so each is its own transaction, and they return plain rows (the model's attribute names, no
ORM objects to build on the path every poll takes).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (JSON, Boolean, ColumnElement, Connection, Integer, Row, Select, String, case, func, insert,
                        literal, or_, select, text, tuple_, update)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql import bindparam, cast

from db.fabrics import color_swatch_key_sql
from db.job_failures import DEADLINE_PASSED, INTERRUPTED, RETRYING, FailureReason
from db.models import Color, FabricFamily, GenerationJob, QueuePosition

# A job still pending or processing: what counts against its client's cap. Written out, not bound: a
# generic plan only uses a partial index whose predicate it can see.
_UNFINISHED_SQL = text("generation_jobs.status IN ('pending', 'processing')")
FINAL_STATUSES = ("completed", "failed", "canceled", "expired")
LANES = ("interactive", "batch")  # claimed in this order (see `claim_jobs`)
NOTIFY_CHANNEL = "sastre_jobs"  # a job is due: wakes the runners
EVENTS_CHANNEL = "sastre_job_events"  # a job's visible state changed: wakes its event streams


@dataclass(frozen=True)
class Lease:
    """One attempt at a job: the fence its writes carry."""

    job_id: str
    token: str


def lease_of(job: GenerationJob) -> Lease:
    return Lease(job.job_id, job.lease_token)


def _held(lease: Lease):
    """The WHERE clause of a fenced write: the job is still processing under this very attempt."""
    return (GenerationJob.job_id == lease.job_id, GenerationJob.lease_token == lease.token,
            GenerationJob.status == "processing")


def _seconds(value: float):
    return func.make_interval(0, 0, 0, 0, 0, 0, value)


def _touched():
    """The new `updated_at` of a visible write: the wall clock, but always past the row's last version.

    `now()` is the transaction's start, so a transaction that began earlier but waited for the row lock
    would move the version backwards; `clock_timestamp()` after the lock, floored at the previous value
    plus 1 µs (READ COMMITTED re-reads the row it waited for), keeps it strictly increasing per job.
    """
    return func.greatest(func.clock_timestamp(), GenerationJob.updated_at + _seconds(0.000001))


def announce(session: Session, job_ids) -> None:
    """Tell the event streams these jobs changed (delivered at commit; Postgres folds repeats)."""
    job_ids = list(job_ids)
    if job_ids:
        session.execute(text("SELECT pg_notify(:channel, job_id) FROM unnest(CAST(:job_ids AS text[])) AS job_id"),
                        {"channel": EVENTS_CHANNEL, "job_ids": job_ids})


# What POST /generate answers with, and what planning the job's cuts takes (`serve_app/jobqueue/plans.py`): the
# RETURNING of the job it inserts (every column would be parsed for nothing; GET /jobs/{id} reads more).
ACCEPTED_COLUMNS = (GenerationJob.job_id, GenerationJob.status, GenerationJob.seed, GenerationJob.family_id,
                    GenerationJob.color_id, GenerationJob.swatch_url, GenerationJob.cuts, GenerationJob.result_token,
                    GenerationJob.swatch_digest)


def _unfinished_count(client, cap):
    """How many pending or processing jobs `client` has, counting no further than `cap` (an index-only
    scan of at most `cap` entries, so the cap check stays cheap for a client that hit it)."""
    mine = (select(literal(1)).where(GenerationJob.client == client, _UNFINISHED_SQL).limit(cap).subquery())
    return select(func.count()).select_from(mine).scalar_subquery()


def _insert_job(swatch_key: ColumnElement, capped: bool) -> Select:
    """The statement behind `create_job`, built once per swatch source and cap: on the hottest write path,
    building and cache-keying a fresh statement per request cost more CPU than PostgreSQL's work."""
    values = {
        "job_id": bindparam("job_id", type_=String), "status": literal("pending", String),
        "family_id": FabricFamily.family_id, "color_id": Color.color_id, "cuts": bindparam("cuts", type_=JSON),
        "seed": bindparam("seed", type_=Integer), "swatch_url": bindparam("swatch_url", type_=String),
        "swatch_key": swatch_key, "swatch_digest": bindparam("swatch_digest", type_=String),
        "max_attempts": bindparam("max_attempts", type_=Integer),
        "idempotency_key": bindparam("idempotency_key", type_=String),
        "request_hash": bindparam("request_hash", type_=String), "client": bindparam("client", type_=String),
        "result_token": bindparam("result_token", type_=String), "lane": bindparam("lane", type_=String),
        # NULL seconds make a NULL deadline: none.
        "deadline_at": func.now() + func.make_interval(0, 0, 0, 0, 0, 0, bindparam("deadline_seconds")),
    }
    conditions = [FabricFamily.family_id == bindparam("family_id"), FabricFamily.status == "active",
                  Color.color_id == bindparam("color_id"), Color.status == "active"]
    if capped:  # counted after a per-client lock (migration 0010), so concurrent POSTs cannot pass the cap
        conditions.append(func.sastre_below_client_cap(bindparam("client", type_=String),
                                                       bindparam("client_cap", type_=Integer), type_=Boolean))
    job = (
        insert(GenerationJob)
        .from_select(list(values), select(*values.values())
                     .join_from(Color, FabricFamily, Color.fabric_family_id == FabricFamily.id).where(*conditions))
        .returning(*ACCEPTED_COLUMNS)
        .cte("job")
    )
    # The NOTIFY rides in the SELECT that returns the row: sent once per inserted row, at its commit.
    return select(job, func.pg_notify(NOTIFY_CHANNEL, job.c.job_id).cast(String).label("woke"))


# (the job names its own swatch, the client is capped) -> the statement
_INSERT_JOB = {(own, capped): _insert_job(bindparam("swatch_key", type_=String) if own else color_swatch_key_sql(),
                                          capped)
               for own in (False, True) for capped in (False, True)}
# What GET /jobs/{id} shows (`job_out`), and nothing else: each column the driver describes costs CPU.
JOB_VIEW_COLUMNS = (GenerationJob.job_id, GenerationJob.status, GenerationJob.family_id, GenerationJob.color_id,
                    GenerationJob.cuts, GenerationJob.seed, GenerationJob.swatch_url, GenerationJob.result_urls,
                    GenerationJob.cut_progress, GenerationJob.error_message, GenerationJob.attempts,
                    GenerationJob.created_at, GenerationJob.updated_at, GenerationJob.started_at,
                    GenerationJob.completed_at, GenerationJob.result_token, GenerationJob.swatch_digest,
                    GenerationJob.deadline_at)
# With the job's place in the queue as the last runner tick ranked it (db/queue_positions.py): one
# primary-key join, no ranking on the poll.
_READ_JOB = (select(*JOB_VIEW_COLUMNS, QueuePosition.ahead, QueuePosition.estimated_start_at)
             .outerjoin(QueuePosition, QueuePosition.job_id == GenerationJob.job_id)
             .where(GenerationJob.job_id == bindparam("job_id")))


def create_job(
    conn: Connection | Session,
    *,
    family_id: str,
    color_id: str,
    cuts: list[str],
    seed: int,
    swatch_url: str | None = None,
    swatch_key: str | None = None,
    swatch_digest: str | None = None,
    max_attempts: int = 3,
    client: str = "",
    client_cap: int | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    job_id: str | None = None,
    result_token: str | None = None,
    deadline_seconds: float | None = None,
    lane: str = "interactive",
) -> Row | None:
    """The one job insert, in one statement: a pending job if `color_id` is an active color of the active
    family `family_id` and (with a `client_cap`) `client` has fewer than `client_cap` unfinished jobs, and
    the runners' wake-up at its commit. Returns the new row's `ACCEPTED_COLUMNS`, or None (nothing
    written) when the family or color is unknown or inactive or the client is at its cap
    (`unfinished_jobs` tells which). `client_cap=None` is an admin's job (prewarm): no cap.

    The job's swatch is `swatch_key` (what its `swatch_url` resolved to, with its `swatch_digest`) or,
    when None, the color's catalog swatch, read in the same statement. A taken `idempotency_key` raises
    IntegrityError; the caller looks the existing job up and compares `request_hash`. A job not finished
    `deadline_seconds` after its insert ends `expired`; `lane` is its priority (`claim_jobs`).

    Synchronous, on a Session or a Connection; the hot path runs it on its asyncio connection with
    `AsyncConnection.run_sync`, which costs no more than an `execute` there.
    """
    params = {"job_id": job_id or str(uuid.uuid4()), "family_id": family_id, "color_id": color_id, "cuts": list(cuts),
              "seed": seed, "swatch_url": swatch_url, "swatch_key": swatch_key, "swatch_digest": swatch_digest,
              "max_attempts": max_attempts, "idempotency_key": idempotency_key, "request_hash": request_hash,
              "client": client, "client_cap": client_cap, "result_token": result_token or uuid.uuid4().hex,
              "deadline_seconds": deadline_seconds, "lane": lane}
    statement = _INSERT_JOB[(swatch_key is not None, client_cap is not None)]
    return conn.execute(statement, params).one_or_none()


async def read_job(conn: AsyncConnection, job_id: str) -> Row | None:
    """GET /jobs/{id}: one indexed lookup."""
    return (await conn.execute(_READ_JOB, {"job_id": job_id})).one_or_none()


async def read_job_by_idempotency_key(conn: AsyncConnection, key: str, ttl_seconds: float) -> Row | None:
    """The live job an Idempotency-Key made, or None.

    A key expires `ttl_seconds` after the job it created (24 h by default, as with the payment APIs
    that popularized them): the old job keeps everything but the key, which is then free for a new job.
    """
    freed = _free_expired_key(key, ttl_seconds).returning(GenerationJob.id).cte("freed")
    # One statement: its SELECT still sees the row the UPDATE frees, so that row is left out by id.
    live = select(GenerationJob.__table__).where(GenerationJob.idempotency_key == key,
                                                 GenerationJob.id.not_in(select(freed.c.id)))
    return (await conn.execute(live)).one_or_none()


async def unfinished_jobs(conn: AsyncConnection, client: str, cap: int) -> int:
    """`client`'s pending and processing jobs, counted up to `cap`: why POST /generate's INSERT refused."""
    return await conn.scalar(select(_unfinished_count(client, cap)))


async def pending_at_least(conn: AsyncConnection, limit: int) -> bool:
    """`backlog_at_least` for the ingress's backlog gate."""
    return (await conn.scalar(_backlog_count(limit))) >= limit


def notify(session: Session, job_id: str) -> None:
    """Wake the runners (delivered when the transaction commits; a poll covers a lost one)."""
    session.execute(text("SELECT pg_notify(:channel, :job_id)"), {"channel": NOTIFY_CHANNEL, "job_id": job_id})


def get_job(session: Session, job_id: str) -> GenerationJob | None:
    return session.scalars(select(GenerationJob).where(GenerationJob.job_id == job_id)).one_or_none()


def job_swatch(session: Session, job_id: str) -> Row | None:
    """The job's swatch as its previews draw it: (`swatch_key`, `swatch_digest`), or None for an unknown job."""
    return session.execute(select(GenerationJob.swatch_key, GenerationJob.swatch_digest)
                           .where(GenerationJob.job_id == job_id)).one_or_none()


def get_jobs(session: Session, job_ids) -> list[GenerationJob]:
    """Several jobs in one round trip (unknown ids are simply absent)."""
    return list(session.scalars(select(GenerationJob).where(GenerationJob.job_id.in_(list(job_ids)))))


def find_by_idempotency_key(session: Session, key: str) -> GenerationJob | None:
    return session.scalars(select(GenerationJob).where(GenerationJob.idempotency_key == key)).one_or_none()


def _free_expired_key(key: str, ttl_seconds: float):
    return (update(GenerationJob)
            .where(GenerationJob.idempotency_key == key, GenerationJob.created_at < func.now() - _seconds(ttl_seconds))
            .values(idempotency_key=None, request_hash=None))


def backlog_at_least(session: Session, limit: int) -> bool:
    """Whether `limit` or more jobs are pending; counts at most `limit` rows, so it stays cheap."""
    return session.scalar(_backlog_count(limit)) >= limit


def _backlog_count(limit: int):
    due = select(GenerationJob.id).where(GenerationJob.status == "pending").limit(limit).subquery()
    return select(func.count()).select_from(due)


@dataclass(frozen=True)
class Backlog:
    """The queue at a glance: what runners publish as metrics (and may report to Serve's autoscaler)."""

    pending_jobs: int
    pending_cuts: int  # cuts of pending jobs not yet finished (a re-queued job keeps its finished ones)
    cuts_in_flight: int  # cuts of processing jobs not yet finished
    oldest_pending_seconds: float  # 0 when nothing is pending


_BACKLOG = text("""
    SELECT count(*) FILTER (WHERE status = 'pending'),
           coalesce(sum(open_cuts) FILTER (WHERE status = 'pending'), 0),
           coalesce(sum(open_cuts) FILTER (WHERE status = 'processing'), 0),
           coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'pending')), 0)
    FROM (SELECT status, created_at,
                 json_array_length(cuts) - (SELECT count(*) FROM jsonb_each(cut_progress) AS cut
                                            WHERE cut.value ->> 'status' = 'completed') AS open_cuts
          FROM generation_jobs WHERE status IN ('pending', 'processing')) AS unfinished
""")


def backlog(session: Session) -> Backlog:
    """One aggregate over the unfinished rows only (both statuses are partially indexed), so it stays
    cheap to run on every runner tick."""
    pending, cuts, in_flight, oldest = session.execute(_BACKLOG).one()
    return Backlog(int(pending), int(cuts), int(in_flight), float(oldest))


def request_cancel(session: Session, job_id: str) -> str | None:
    """Cancel a job: "canceled" (it was pending), "requested" (a runner stops it at the next cut
    boundary), "final" (already finished: nothing to cancel), or None for an unknown job."""
    done = session.execute(
        update(GenerationJob).where(GenerationJob.job_id == job_id, GenerationJob.status == "pending")
        .values(status="canceled", cancel_requested=True, completed_at=func.now(), updated_at=_touched())
    )
    if done.rowcount:
        announce(session, [job_id])
        return "canceled"
    flagged = session.execute(
        update(GenerationJob).where(GenerationJob.job_id == job_id, GenerationJob.status == "processing")
        .values(cancel_requested=True, updated_at=_touched())
    )
    if flagged.rowcount:
        announce(session, [job_id])
        return "requested"
    return "final" if get_job(session, job_id) is not None else None


def cancel_requested(session: Session, job_id: str) -> bool:
    return bool(session.scalar(select(GenerationJob.cancel_requested).where(GenerationJob.job_id == job_id)))


def mark_canceled(session: Session, lease: Lease) -> bool:
    result = session.execute(
        update(GenerationJob)
        .where(*_held(lease))
        .values(status="canceled", completed_at=func.now(), updated_at=_touched(), lease_owner=None,
                lease_token=None, lease_expires_at=None)
    )
    return _announced(session, lease, result.rowcount == 1)


def mark_expired(session: Session, lease: Lease) -> bool:
    """The attempt met its job's deadline at a cut boundary: `expired`, the cuts done so far kept."""
    result = session.execute(
        update(GenerationJob)
        .where(*_held(lease))
        .values(status="expired", error_message=DEADLINE_PASSED.message, completed_at=func.now(),
                updated_at=_touched(), lease_owner=None, lease_token=None, lease_expires_at=None)
    )
    return _announced(session, lease, result.rowcount == 1)


def expire_overdue(session: Session) -> list[str]:
    """Pending jobs whose deadline passed end `expired` without a render (the deadline index finds them).
    Processing ones are left to their attempt, which stops at its next cut boundary (`record_cut`)."""
    expired = list(session.scalars(
        update(GenerationJob)
        .where(GenerationJob.status == "pending", GenerationJob.deadline_at.is_not(None),
               GenerationJob.deadline_at <= func.now())
        .values(status="expired", error_message=DEADLINE_PASSED.message, completed_at=func.now(),
                updated_at=_touched())
        .returning(GenerationJob.job_id)
    ))
    announce(session, expired)
    return expired


def _announced(session: Session, lease: Lease, written: bool) -> bool:
    if written:
        announce(session, [lease.job_id])
    return written


def _tokens(leases: list[Lease]):
    return tuple_(GenerationJob.job_id, GenerationJob.lease_token).in_([(l.job_id, l.token) for l in leases])


def release_jobs(session: Session, leases: list[Lease]) -> list[str]:
    """Hand jobs back unfinished (graceful shutdown): pending again at once, the attempt not counted."""
    if not leases:
        return []
    released = list(session.scalars(
        update(GenerationJob)
        .where(_tokens(leases), GenerationJob.status == "processing")
        .values(status="pending", attempts=GenerationJob.attempts - 1, lease_owner=None, lease_token=None,
                lease_expires_at=None, next_attempt_at=func.now(), updated_at=_touched())
        .returning(GenerationJob.job_id)
    ))
    for job_id in released:
        notify(session, job_id)
    announce(session, released)
    return released


def claim_jobs(session: Session, owner: str, limit: int, lease_seconds: float,
               held: list[str] = (), batch_limit: int | None = None) -> list[GenerationJob]:
    """Claim up to `limit` due pending jobs, fairly across clients; concurrent claimers never get the same row.

    Lanes: interactive jobs (a shopper's) are claimed first; batch jobs (prewarm) only with the room
    left, and at most `batch_limit` of them (None: no bound). A runner that holds few batch jobs at a
    time therefore never has more than those few ahead of a shopper's job (see the runner).
    Jobs whose deadline passed are never claimed (`expire_overdue` ends them).

    Fair share: each client's due jobs queue oldest first, and the claim serves the clients in turns,
    where a job's turn is its place in its client's queue plus the jobs that client already has
    processing. A client that queued 200 jobs, 16 of them running, therefore waits behind another
    client's first job: that one is claimed by the next claim with room, not after the 200. Equal
    turns go oldest first. Rows without a client ('') are one client.

    Each claimed row gets a fresh `lease_token` (see `lease_of`). `held` names jobs the caller still has
    an attempt of (its lease lapsed, the job was re-queued, the attempt has not noticed yet): they are
    left for another runner, so one runner never holds two attempts of a job.
    """
    claimed = _claim_lane(session, owner, limit, lease_seconds, held, "interactive")
    room = limit - len(claimed)
    if batch_limit is not None:
        room = min(room, batch_limit)
    if room > 0:
        claimed += _claim_lane(session, owner, room, lease_seconds, held, "batch")
    announce(session, [job.job_id for job in claimed])
    return sorted(claimed, key=lambda job: (job.created_at, job.id))


def _claim_lane(session: Session, owner: str, limit: int, lease_seconds: float, held: list[str],
                lane: str) -> list[GenerationJob]:
    """`claim_jobs` within one lane: fair turns across clients, each counting all its processing jobs."""
    busy = (select(GenerationJob.client, func.count().label("running"))
            .where(GenerationJob.status == "processing").group_by(GenerationJob.client).cte("busy"))
    place = func.row_number().over(partition_by=GenerationJob.client,
                                   order_by=(GenerationJob.next_attempt_at, GenerationJob.created_at, GenerationJob.id))
    due = (select(GenerationJob.id, GenerationJob.client, GenerationJob.next_attempt_at, GenerationJob.created_at,
                  place.label("place"))
           .where(GenerationJob.status == "pending", GenerationJob.next_attempt_at <= func.now(),
                  GenerationJob.lane == lane, GenerationJob.job_id.not_in(list(held)),
                  or_(GenerationJob.deadline_at.is_(None), GenerationJob.deadline_at > func.now()))
           .cte("due"))
    row = aliased(GenerationJob)
    turn = due.c.place + func.coalesce(busy.c.running, 0)
    chosen = (
        select(row.id)
        .join(due, due.c.id == row.id)
        .outerjoin(busy, busy.c.client == due.c.client)
        .where(row.status == "pending", due.c.place <= limit)  # a client's later jobs cannot be among them
        .order_by(turn, due.c.next_attempt_at, due.c.created_at, due.c.id)
        .limit(limit)
        .with_for_update(of=row, skip_locked=True)
        .scalar_subquery()
    )
    return list(session.scalars(
        update(GenerationJob)
        .where(GenerationJob.id.in_(chosen))
        .values(
            status="processing",
            attempts=GenerationJob.attempts + 1,
            lease_owner=owner,
            lease_token=func.gen_random_uuid().cast(String),
            lease_expires_at=func.now() + _seconds(lease_seconds),
            started_at=func.coalesce(GenerationJob.started_at, func.now()),
            updated_at=_touched(),
            error_message=None,
            error_detail=None,
        )
        .returning(GenerationJob)
        .execution_options(synchronize_session=False)
    ))


def renew_leases(session: Session, leases: list[Lease], lease_seconds: float) -> set[Lease]:
    """Extend the leases whose attempts still hold their jobs; returns those leases."""
    if not leases:
        return set()
    rows = session.execute(
        update(GenerationJob)
        .where(_tokens(leases), GenerationJob.status == "processing")
        .values(lease_expires_at=func.now() + _seconds(lease_seconds))
        .returning(GenerationJob.job_id, GenerationJob.lease_token)
    ).all()
    return {Lease(job_id, token) for job_id, token in rows}


@dataclass(frozen=True)
class CutRecorded:
    """A progress write that landed, whether the client has asked to cancel the job meanwhile, and whether
    its deadline has passed."""

    cancel_requested: bool
    deadline_passed: bool = False


def record_cut(session: Session, lease: Lease, cut: str, progress: dict) -> CutRecorded | None:
    """Atomically set one cut's progress entry (jsonb_set), so concurrent cuts never clobber each other.

    One statement also answers the runner's cut-boundary questions, "was cancel requested? has the
    deadline passed?", so a cut costs no separate read for them. None when the write was refused: the
    attempt lost its lease.
    """
    row = session.execute(
        update(GenerationJob)
        .where(*_held(lease))
        .values(
            cut_progress=func.jsonb_set(GenerationJob.cut_progress, [cut], cast(bindparam("entry", progress, type_=JSONB), JSONB)),
            updated_at=_touched(),
        )
        .returning(GenerationJob.cancel_requested, GenerationJob.deadline_at < func.clock_timestamp())
    ).one_or_none()
    if not _announced(session, lease, row is not None):
        return None
    return CutRecorded(bool(row[0]), bool(row[1]))


def complete_job(session: Session, lease: Lease, result_urls: list[str]) -> bool:
    result = session.execute(
        update(GenerationJob)
        .where(*_held(lease))
        .values(status="completed", result_urls=result_urls, completed_at=func.now(), updated_at=_touched(),
                lease_owner=None, lease_token=None, lease_expires_at=None, error_message=None, error_detail=None)
    )
    return _announced(session, lease, result.rowcount == 1)


def fail_job(session: Session, lease: Lease, reason: FailureReason, detail: str) -> bool:
    """The attempt's final failure: the client sees `reason`, admins and logs the raw `detail`."""
    result = session.execute(
        update(GenerationJob)
        .where(*_held(lease))
        .values(status="failed", error_message=reason.message, error_detail=detail[:2000], completed_at=func.now(),
                updated_at=_touched(), lease_owner=None, lease_token=None, lease_expires_at=None)
    )
    return _announced(session, lease, result.rowcount == 1)


def release_expired_leases(session: Session, retry_delays: Sequence[float],
                           spare: list[Lease] = ()) -> list[tuple[str, str]]:
    """The rescuer: jobs whose lease ran out go back to pending, due after a backoff, or fail when spent.

    `retry_delays[n - 1]` is the wait, in seconds, of a job whose `n`th attempt died; its last value holds
    for any later attempt. The caller's policy computes them (serve_app.retrying.Backoff.schedule): the
    statement only picks one per row by its attempt count, so one statement still rescues the batch.

    Returns (job_id, new status) for each job it moved. `spare` names attempts the caller is still
    running (and renewing): a late renewal must not make a runner rescue itself. Any other expired
    lease is rescued, the caller's own included: an attempt that died is no reason to wait forever.
    """
    expired = [GenerationJob.status == "processing", GenerationJob.lease_expires_at < func.now()]
    if spare:
        expired.append(or_(GenerationJob.lease_token.is_(None), ~_tokens(list(spare))))
    spent = GenerationJob.attempts >= GenerationJob.max_attempts
    rows = session.execute(
        update(GenerationJob)
        .where(*expired)
        .values(
            status=case((spent, "failed"), else_="pending"),
            error_message=case((spent, INTERRUPTED.message), else_=RETRYING.message),
            error_detail=func.concat("the lease of runner ", GenerationJob.lease_owner, " expired; ",
                                     case((spent, "attempts exhausted"), else_="retrying")),
            completed_at=case((spent, func.now()), else_=None),
            next_attempt_at=func.now() + _seconds(case(dict(enumerate(retry_delays, start=1)),
                                                       value=GenerationJob.attempts, else_=retry_delays[-1])),
            lease_owner=None,
            lease_token=None,
            lease_expires_at=None,
            updated_at=_touched(),
        )
        .returning(GenerationJob.job_id, GenerationJob.status)
    ).all()
    announce(session, [job_id for job_id, _ in rows])
    return [(job_id, status) for job_id, status in rows]


def retry_failed_job(session: Session, job_id: str) -> str | None:
    """An admin's retry: a failed job is pending again with a fresh attempt budget, keeping the cuts it
    finished. Returns "retried", the status that forbids it, or None for an unknown job."""
    retried = session.execute(
        update(GenerationJob).where(GenerationJob.job_id == job_id, GenerationJob.status == "failed")
        .values(status="pending", attempts=0, error_message=None, error_detail=None, completed_at=None,
                cancel_requested=False, next_attempt_at=func.now(), updated_at=_touched())
    ).rowcount
    if retried:
        notify(session, job_id)
        announce(session, [job_id])
        return "retried"
    return session.scalar(select(GenerationJob.status).where(GenerationJob.job_id == job_id))


def keep_job(session: Session, job_id: str, kept: bool) -> GenerationJob | None:
    """An admin keeps a job (an order's proof: it and every object it names never age out), or lets it
    age again, from its `completed_at` as before. None for an unknown job. Not a visible change of the
    job for its client: `updated_at` stays."""
    return session.scalars(update(GenerationJob).where(GenerationJob.job_id == job_id).values(kept=kept)
                           .returning(GenerationJob).execution_options(synchronize_session=False)).one_or_none()


def list_jobs(session: Session, *, status: str | None = None, family_id: str | None = None,
              color_id: str | None = None, created_from: datetime | None = None,
              created_to: datetime | None = None, before: tuple[datetime, int] | None = None,
              limit: int = 20) -> list[GenerationJob]:
    """Jobs newest first, filtered; `before` is the (created_at, id) of the last row of the previous page,
    so pages stay stable while new jobs arrive."""
    query = select(GenerationJob)
    for column, value in ((GenerationJob.status, status), (GenerationJob.family_id, family_id),
                          (GenerationJob.color_id, color_id)):
        if value is not None:
            query = query.where(column == value)
    if created_from is not None:
        query = query.where(GenerationJob.created_at >= created_from)
    if created_to is not None:
        query = query.where(GenerationJob.created_at < created_to)
    if before is not None:
        query = query.where(tuple_(GenerationJob.created_at, GenerationJob.id) < tuple_(*before))
    query = query.order_by(GenerationJob.created_at.desc(), GenerationJob.id.desc()).limit(limit)
    return list(session.scalars(query))
