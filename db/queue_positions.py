"""Queue positions: where each pending job stands in the claim order, and when it should start.

Ranking the queue is a window over every pending row, too dear for a poll (GET /jobs/{id} is the hottest
route, and a backlog is when shoppers poll most). So a runner ranks it once per tick, the way
`jobs.claim_jobs` will claim (interactive lane first; within a lane, fair turns across clients, then
oldest first), and keeps the first `HORIZON` places in `queue_positions`, which the job read joins by
primary key. A job further back shows no position until it comes within the horizon.

The estimated start divides the jobs ahead by the pace the queue has kept lately: finished jobs per
second over the last `PACE_WINDOW_SECONDS` (the ageing index finds them). With no recent pace (a fresh
service, or nothing finished lately) there is no estimate.

Each refresh announces the jobs whose place changed on the job events channel, so an open event stream
shows a waiting job moving up. One runner refreshes at a time (an advisory lock); the others skip.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.jobs import announce

HORIZON = 1000  # places kept: past this far back a position says little, and the refresh stays cheap
PACE_WINDOW_SECONDS = 300
_LOCK = 0x5A57_0051  # pg_try_advisory_xact_lock key: one refresher at a time


@dataclass(frozen=True)
class QueuePlace:
    ahead: int
    estimated_start_at: datetime | None


_REFRESH = text("""
    WITH busy AS (
        SELECT client, count(*) AS running FROM generation_jobs WHERE status = 'processing' GROUP BY client
    ), ranked AS (
        SELECT j.job_id, j.lane, j.next_attempt_at, j.created_at, j.id,
               row_number() OVER (PARTITION BY j.lane, j.client ORDER BY j.next_attempt_at, j.created_at, j.id)
                 + coalesce(busy.running, 0) AS turn
        FROM generation_jobs j LEFT JOIN busy USING (client)
        WHERE j.status = 'pending' AND (j.deadline_at IS NULL OR j.deadline_at > now())
    ), ordered AS (
        SELECT job_id, (row_number() OVER (ORDER BY lane = 'batch', turn, next_attempt_at, created_at, id) - 1)::int
                 AS ahead
        FROM ranked ORDER BY ahead LIMIT :horizon
    ), pace AS (
        SELECT count(*) / greatest(extract(epoch FROM now() - min(completed_at)), 1) AS per_second, count(*) AS n
        FROM generation_jobs
        WHERE status IN ('completed', 'failed', 'canceled', 'expired') AND NOT kept
          AND completed_at > now() - make_interval(secs => :window)
    ), placed AS (
        SELECT ordered.job_id, ordered.ahead,
               CASE WHEN pace.n >= 2 THEN now() + make_interval(secs => ordered.ahead / pace.per_second) END
                 AS estimated_start_at
        FROM ordered, pace
    ), gone AS (
        DELETE FROM queue_positions q WHERE NOT EXISTS (SELECT FROM placed WHERE placed.job_id = q.job_id)
    ), kept AS (
        INSERT INTO queue_positions (job_id, ahead, estimated_start_at) SELECT * FROM placed
        ON CONFLICT (job_id) DO UPDATE SET ahead = excluded.ahead, estimated_start_at = excluded.estimated_start_at
    )
    -- The statement's snapshot still holds the previous places: the jobs that moved.
    SELECT placed.job_id FROM placed LEFT JOIN queue_positions q USING (job_id)
    WHERE q.ahead IS DISTINCT FROM placed.ahead
""")


def refresh(session: Session, horizon: int = HORIZON) -> list[str] | None:
    """Rank the queue into `queue_positions` and announce the jobs whose place changed; None when another
    runner is refreshing right now. The caller commits."""
    if not session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _LOCK}):
        return None
    moved = list(session.scalars(_REFRESH, {"horizon": horizon, "window": PACE_WINDOW_SECONDS}))
    announce(session, moved)
    return moved


def places(session: Session, job_ids: list[str]) -> dict[str, QueuePlace]:
    """The last refresh's places of these jobs (those within the horizon)."""
    rows = session.execute(text("SELECT job_id, ahead, estimated_start_at FROM queue_positions "
                                "WHERE job_id = ANY(:ids)"), {"ids": list(job_ids)})
    return {job_id: QueuePlace(ahead, start) for job_id, ahead, start in rows}
