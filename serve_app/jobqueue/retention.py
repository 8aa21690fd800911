"""Data ages out: finished jobs and their renders, and render-cache entries nobody asks for any more.

Lifetimes are settings (`Lifetimes.of`): a completed or canceled job, with its renders, lives
`job_retention_days` after it finished (30: long enough for a customer to come back to a proof), a
failed one `failed_job_retention_days` (14: time to look at it and retry), and a render-cache entry
`render_cache_retention_days` after its last hit (30), so the catalog's pre-rendered views stay while
shops ask for them. A job an admin keeps (`POST /admin/generations/{id}/keep`) never ages out, nor
does anything it names. Login failures are pruned by the login throttle itself.

The runner prunes every `prune_interval_seconds`, in batches of `prune_batch_size` rows, each batch
its own short transaction (`db/retention.py`). Rows go first and objects after the commit, and only
objects no remaining row names: no row ever points at a deleted object. The price is that a crash
between the commit and the deletes leaves some objects behind (garbage nobody can reach, never a
broken link). Nothing a pending or processing job needs is touched: such jobs are never chosen, their
own swatch copies live under their own id, and the results they name count as named.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from db import retention
from deployments.storage import Storage, StorageError
from serve_app.jobqueue.swatches import is_own_copy
from serve_app.settings import Settings

logger = logging.getLogger("sastre.retention")

DAY = 24 * 3600
MAX_BATCHES = 20  # per prune: a large first backlog is worked off over several intervals, not in one go


@dataclass(frozen=True)
class Lifetimes:
    finished_seconds: float  # completed and canceled jobs, and their renders
    failed_seconds: float
    render_cache_seconds: float  # since the entry's last hit
    batch: int

    @classmethod
    def of(cls, settings: Settings) -> Lifetimes:
        return cls(settings.job_retention_days * DAY, settings.failed_job_retention_days * DAY,
                   settings.render_cache_retention_days * DAY, settings.prune_batch_size)


@dataclass
class Pruned:
    jobs: int = 0
    cache_entries: int = 0
    objects: int = 0


def prune(sessions: sessionmaker[Session], storage: Storage, lifetimes: Lifetimes) -> Pruned:
    """Delete what has aged out, a batch per transaction, until a batch comes back short (or `MAX_BATCHES`)."""
    pruned = Pruned()
    for _ in range(MAX_BATCHES):
        with sessions.begin() as session:
            deleted = retention.delete_finished_jobs(session, finished_seconds=lifetimes.finished_seconds,
                                                     failed_seconds=lifetimes.failed_seconds, batch=lifetimes.batch)
            unused = retention.delete_unused_cache_entries(session, unused_seconds=lifetimes.render_cache_seconds,
                                                           batch=lifetimes.batch)
            results = {key for job in deleted for key in job.result_keys} | set(unused)
            doomed = results - retention.still_named(session, results)
        # A job's own swatch copy (`jobs/{job_id}/…`) is named by that job alone.
        doomed |= {job.swatch_key for job in deleted if is_own_copy(job.job_id, job.swatch_key)}
        pruned.jobs += len(deleted)
        pruned.cache_entries += len(unused)
        pruned.objects += _delete_objects(storage, sorted(doomed))
        if len(deleted) < lifetimes.batch and len(unused) < lifetimes.batch:
            break
    if pruned.jobs or pruned.cache_entries:
        logger.info("aged out %d jobs, %d render-cache entries and %d objects", pruned.jobs, pruned.cache_entries,
                    pruned.objects)
    return pruned


def _delete_objects(storage: Storage, keys: list[str]) -> int:
    """Delete objects no row names any more; one that will not go is left as garbage (logged), never retried."""
    deleted = 0
    for key in keys:
        try:
            storage.delete(key)
            deleted += 1
        except StorageError as exc:
            logger.warning("aged-out object %s could not be deleted (%s); it stays as garbage", key, exc)
    return deleted
