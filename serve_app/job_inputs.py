"""A job's own copy of its swatch, so upload expiry never changes a queued job's result.

Uploads live under `temp-uploads/` and expire (a bucket lifecycle rule, or the runner's sweep). When
a job is accepted with an uploaded swatch, the upload is copied to `jobs/{job_id}/swatch.{ext}`,
outside the expiring prefix, and the job row keeps that key. Retention: the copy is deleted once the
job completes or is canceled (nothing can run it again); a failed job keeps it, so an admin retry
renders the same input. Catalog swatches live as long as the catalog and are used where they are.
"""

from __future__ import annotations

import logging
import posixpath

from deployments.storage import JOB_PREFIX, UPLOAD_PREFIX, Storage, StorageError

logger = logging.getLogger("sastre.jobs")


def own_swatch(storage: Storage, key: str | None, job_id: str) -> str | None:
    """The key the job will read its swatch from: a copy it owns when `key` is an upload.

    Raises `ObjectMissing` when the upload is gone, `StorageError` when the store does not answer.
    """
    if key is None or not key.startswith(UPLOAD_PREFIX):
        return key
    owned = f"{JOB_PREFIX}{job_id}/swatch{posixpath.splitext(key)[1]}"
    storage.copy(key, owned)
    return owned


def swatch_version(job_id: str, key: str | None, color_key: str | None, color_version: int) -> str | None:
    """What names the content stored under a job's swatch `key` without reading it, or None.

    The job's own copy is written once, when the job is accepted, under a key no other job uses; the
    color's catalog swatch changes only with `colors.swatch_version`. Any other key (none today) has
    no such promise, and the generator reads it for every cut.
    """
    if key is None:
        return None
    if key.startswith(f"{JOB_PREFIX}{job_id}/"):
        return "own-copy"
    if key == color_key:
        return f"color-v{color_version}"
    return None


def forget_swatch(storage: Storage, job_id: str, key: str | None) -> None:
    """Delete the job's own swatch copy, if it has one (best effort: a leftover is only garbage)."""
    if key and key.startswith(f"{JOB_PREFIX}{job_id}/"):
        try:
            storage.delete(key)
        except StorageError:
            logger.warning("could not delete job %s's swatch %s", job_id, key, exc_info=True)
