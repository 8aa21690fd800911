"""Instant previews: a cut drawn in a swatch's cloth (deployments/preview.py), for a catalog color, an
upload of ours, or a job's own swatch, in milliseconds and with no model.

It runs in the ingress, in a route thread: a cold preview is ~10-20 ms of CPU and needs the swatch
bytes the ingress can read itself, so a deployment of its own would only add a Ray hop and ship the
JPEG back. Previews are cached per replica by (swatch digest, cut, size); a job's own swatch is not even
hashed, its row keeps the digest. A job's previews
(`?job_id=`, the URL its plan gives) draw the job's own copy of its swatch, so they keep working after
the upload it came from expired.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache

from fastapi import HTTPException

from catalog.data import CutSpec
from catalog.loader import color_swatch_key
from db import jobs
from db.fabrics import get_color
from deployments.digests import swatch_digest
from deployments.preview import CutTemplate, UnreadableSwatch
from deployments.storage import ObjectMissing, StorageError
from serve_app.deps import Services
from serve_app.jobqueue.swatches import SwatchRefused, is_own_copy, resolve_swatch

SIZES = (256, 512)  # a prepared 512 px template holds ~8 MB, so sizes are few and fixed


@lru_cache(maxsize=32)
def cut_template(spec: CutSpec) -> CutTemplate:
    """The cut's shipped regions and shading, read once per process."""
    return CutTemplate(spec.cut_id, spec.regions_png(), spec.shading_png())


def preview_swatch(services: Services, color_id: str | None, swatch_url: str | None,
                   job_id: str | None) -> tuple[str, str | None]:
    """The swatch to draw and its digest when one is known without reading it: a job's own copy (the digest
    its row keeps), an upload of ours (same rules as POST /generate), or a catalog color's."""
    if sum(given is not None for given in (color_id, swatch_url, job_id)) != 1:
        raise HTTPException(422, "give exactly one of color_id, swatch_url and job_id")
    if swatch_url is not None:
        try:
            return resolve_swatch(services.storage, swatch_url, None,
                                  timedelta(hours=services.settings.upload_ttl_hours)), None
        except SwatchRefused as exc:
            raise HTTPException(422, str(exc)) from None
    with services.sessions() as session:
        if job_id is not None:
            job = jobs.job_swatch(session, job_id)
            if job is None:
                raise HTTPException(404, f"job {job_id} not found")
            key, missing = job.swatch_key, f"job {job_id} has no swatch to preview"
            digest = job.swatch_digest if is_own_copy(job_id, job.swatch_key) else None
        else:
            found = get_color(session, color_id)
            if found is None:
                raise HTTPException(404, f"color {color_id} not found")
            key, missing, digest = color_swatch_key(*found), f"color {color_id} has no swatch to preview", None
    if key is None:
        raise HTTPException(404, missing)
    return key, digest


def render_preview(services: Services, cut: str, size: int, color_id: str | None, swatch_url: str | None,
                   job_id: str | None = None) -> tuple[bytes, str]:
    """The preview JPEG and its entity tag (what the cache keys on: swatch content, cut, size)."""
    if size not in SIZES:
        raise HTTPException(422, f"size must be one of {', '.join(map(str, SIZES))}")
    spec = services.catalog.cut(cut)
    if spec is None:
        known = ", ".join(c.cut_id for c in services.catalog.cuts)
        raise HTTPException(422, f"unknown cut: {cut}; known cuts: {known}")
    key, digest = preview_swatch(services, color_id, swatch_url, job_id)
    try:
        swatch = services.storage.get(key)
    except ObjectMissing:
        raise HTTPException(404, "the swatch to preview no longer exists") from None
    except StorageError:
        raise HTTPException(503, "storage unavailable, retry shortly", headers={"Retry-After": "2"}) from None
    try:
        digest = digest or swatch_digest(swatch)
        jpeg = services.previews.render(swatch, cut_template(spec), size, digest)
    except UnreadableSwatch:
        raise HTTPException(422, "the swatch is not an image we can read") from None
    etag = f'"{digest[:32]}-{cut}-{size}"'
    return jpeg, etag
