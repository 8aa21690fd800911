"""A job's swatch: which one a client may name, the job's own copy of it, and its digest, in one place.

A swatch is its content digest (`deployments.digests.swatch_digest`); URLs and keys are only ways to
reach it. A client names a swatch by a URL of ours (`resolve_swatch`): an upload, or a swatch of the
family's collection; nothing is ever fetched. When a job is accepted with an uploaded swatch, the
upload is copied to `jobs/{job_id}/swatch.{ext}`, outside the expiring `temp-uploads/` prefix, and
digested, once (`own_swatch`): the row keeps the key and the digest, so upload expiry never changes a
queued job, its previews keep working, and no later reader hashes the swatch again. The copy lives as
long as the job: the prune deletes it with the row (`serve_app/jobqueue/retention.py`), and a job
refused after its copy was made drops it at once (`forget_swatch`). Catalog swatches live as long as
the catalog and are used where they are; a job on one is digested by prewarm when it queues the job,
or else by the runner when it plans the job (`catalog_swatch_digest`).
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from deployments.digests import swatch_digest
from deployments.storage import JOB_PREFIX, UPLOAD_PREFIX, Storage, StorageError

logger = logging.getLogger("sastre.jobs")


class SwatchRefused(ValueError):
    """A client's swatch URL that no job may use; the message is the public sentence."""


@dataclass(frozen=True)
class OwnedSwatch:
    """The swatch a job reads, and its digest."""

    key: str
    digest: str


def resolve_swatch(storage: Storage, url: str, collection: str | None, upload_ttl: timedelta) -> str:
    """Map a client's swatch URL back to a key of ours: an upload younger than `upload_ttl`, or a swatch of
    `collection`. Raises `SwatchRefused` for anything else; nothing is ever fetched."""
    key = storage.key_for_url(url)
    allowed = key is not None and (key.startswith(UPLOAD_PREFIX) or (collection and key.startswith(collection + "/")))
    if not allowed:
        raise SwatchRefused("swatch_url must be a swatch URL issued by this service (an upload or a catalog swatch)")
    modified = storage.modified_at(key)
    if modified is None:
        raise SwatchRefused("swatch_url refers to a swatch that does not exist or has expired")
    if key.startswith(UPLOAD_PREFIX) and modified + upload_ttl < datetime.now(timezone.utc):
        raise SwatchRefused("swatch_url refers to an upload that has expired: upload the swatch again")
    return key


def own_swatch(storage: Storage, key: str, job_id: str) -> OwnedSwatch:
    """The swatch the job will read, and its digest: a copy it owns when `key` is an upload.

    Reads the swatch once, to digest it. Raises `ObjectMissing` when it is gone, `StorageError` when
    the store does not answer.
    """
    if key.startswith(UPLOAD_PREFIX):
        owned = f"{JOB_PREFIX}{job_id}/swatch{posixpath.splitext(key)[1]}"
        storage.copy(key, owned)
        key = owned
    return OwnedSwatch(key, swatch_digest(storage.get(key)))


def catalog_swatch_digest(storage: Storage, key: str | None) -> str | None:
    """The digest of a catalog swatch, for a job that does not carry one; None when there is none or it
    cannot be read (its cuts then render at IP scale 0 and are neither looked up nor remembered)."""
    if key is None:
        return None
    try:
        return swatch_digest(storage.get(key))
    except StorageError as exc:
        logger.info("swatch %s unreadable (%s): its cuts are neither looked up nor remembered", key, exc)
        return None


def is_own_copy(job_id: str, key: str | None) -> bool:
    """Whether `key` is the job's own copy: written once, when the job was accepted, so its digest on the row
    always names what is stored there (a catalog swatch may be replaced in place by an admin)."""
    return bool(key) and key.startswith(f"{JOB_PREFIX}{job_id}/")


def forget_swatch(storage: Storage, job_id: str, key: str | None) -> None:
    """Delete the job's own swatch copy, if it has one (best effort: a leftover is only garbage)."""
    if is_own_copy(job_id, key):
        try:
            storage.delete(key)
        except StorageError:
            logger.warning("could not delete job %s's swatch %s", job_id, key, exc_info=True)
