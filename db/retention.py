"""Ageing out: the statements that delete finished jobs and unused render-cache entries, a batch at a time.

Each statement deletes at most `batch` rows it could lock at once (`FOR UPDATE SKIP LOCKED`), so a prune
never waits for a row a runner holds, never holds many locks for long, and two runners pruning at once
share the work. Only finished jobs (completed, failed, canceled, expired) that no admin keeps are ever chosen:
a pending or processing job is never deleted, whatever its age.

Objects are not rows: a result object (`cut_progress[cut].key`) may be named by the job that rendered
it, by later jobs that reused it through the render cache, and by the cache entry itself.
`still_named` answers, after the batch's deletes and in the same transaction, which of the keys the
deleted rows named some remaining row still names; only the others may go (after the commit, see
`serve_app/jobqueue/retention.py`). A render-cache hit names an object only while it holds the entry's row
lock (`render_cache.touch`), so a hit and the prune of its entry cannot both win.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session


@dataclass(frozen=True)
class DeletedJob:
    job_id: str
    swatch_key: str | None
    result_keys: list[str]  # every object key its progress named (its own renders or cache hits)


_DELETE_JOBS = text("""
    DELETE FROM generation_jobs WHERE id IN (
        SELECT id FROM generation_jobs
        WHERE status IN ('completed', 'failed', 'canceled', 'expired') AND NOT kept
          AND completed_at < now() - make_interval(secs => least(:finished_seconds, :failed_seconds))
          AND completed_at < now() - make_interval(secs => CASE WHEN status = 'failed' THEN :failed_seconds
                                                                ELSE :finished_seconds END)
        ORDER BY completed_at LIMIT :batch FOR UPDATE SKIP LOCKED)
    RETURNING job_id, swatch_key, jsonb_path_query_array(cut_progress, '$.*.key')
""")


def delete_finished_jobs(session: Session, *, finished_seconds: float, failed_seconds: float,
                         batch: int) -> list[DeletedJob]:
    """Delete up to `batch` finished, unkept jobs older than their lifetime (from `completed_at`):
    `failed_seconds` for failed jobs, `finished_seconds` for completed and canceled ones."""
    rows = session.execute(_DELETE_JOBS, {"finished_seconds": finished_seconds, "failed_seconds": failed_seconds,
                                          "batch": batch})
    return [DeletedJob(job_id, swatch_key, [key for key in keys if isinstance(key, str)])
            for job_id, swatch_key, keys in rows]


_DELETE_CACHE_ENTRIES = text("""
    DELETE FROM render_cache WHERE key_hash IN (
        SELECT key_hash FROM render_cache WHERE used_at < now() - make_interval(secs => :seconds)
        ORDER BY used_at LIMIT :batch FOR UPDATE SKIP LOCKED)
    RETURNING object_key
""")


def delete_unused_cache_entries(session: Session, *, unused_seconds: float, batch: int) -> list[str]:
    """Delete up to `batch` render-cache entries not hit for `unused_seconds`; the object keys they named."""
    return list(session.scalars(_DELETE_CACHE_ENTRIES, {"seconds": unused_seconds, "batch": batch}))


_STILL_NAMED = text("""
    SELECT key FROM unnest(CAST(:keys AS text[])) AS key
    WHERE EXISTS (SELECT 1 FROM render_cache WHERE object_key = key)
       OR EXISTS (SELECT 1 FROM generation_jobs WHERE jsonb_path_query_array(cut_progress, '$.*.key') ? key)
""")


def still_named(session: Session, keys) -> set[str]:
    """Which of `keys` a remaining job or cache entry names (both look-ups are indexed)."""
    keys = sorted(set(keys))
    if not keys:
        return set()
    return set(session.scalars(_STILL_NAMED, {"keys": keys}))
