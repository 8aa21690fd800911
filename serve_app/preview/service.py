"""Instant previews: a cut drawn in a swatch's cloth (deployments/preview.py), for a catalog color or an
upload of ours, in milliseconds and with no model.

It runs in the ingress, in a route thread: a cold preview is ~10-20 ms of CPU and needs the swatch
bytes the ingress can read itself, so a deployment of its own would only add a Ray hop and ship the
JPEG back. Previews are cached per replica by (swatch content hash, cut, size).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from urllib.parse import urlencode

from fastapi import HTTPException

from catalog.data import CutSpec
from catalog.loader import color_swatch_key
from db.catalog import get_color
from deployments.preview import CutTemplate, UnreadableSwatch
from deployments.storage import ObjectMissing, StorageError
from serve_app.deps import Services
from serve_app.uploads.service import resolve_swatch

SIZES = (256, 512)  # a prepared 512 px template holds ~8 MB, so sizes are few and fixed


def preview_url(cut: str, *, color_id: str, swatch_url: str | None = None) -> str:
    """Where a front end gets a cut's preview: the uploaded swatch's when there is one, else the color's."""
    query = {"swatch_url": swatch_url} if swatch_url else {"color_id": color_id}
    return f"/preview?{urlencode({**query, 'cut': cut})}"


@lru_cache(maxsize=32)
def cut_template(spec: CutSpec) -> CutTemplate:
    """The cut's shipped regions and shading, read once per process."""
    return CutTemplate(spec.cut_id, spec.regions_png(), spec.shading_png())


def preview_swatch_key(services: Services, color_id: str | None, swatch_url: str | None) -> str:
    """The swatch to draw: an upload of ours (same rules as POST /generate), or a catalog color's."""
    if (color_id is None) == (swatch_url is None):
        raise HTTPException(422, "give exactly one of color_id and swatch_url")
    if swatch_url is not None:
        return resolve_swatch(services, swatch_url, collection=None)
    with services.sessions() as session:
        found = get_color(session, color_id)
        if found is None:
            raise HTTPException(404, f"color {color_id} not found")
        key = color_swatch_key(*found)
    if key is None:
        raise HTTPException(404, f"color {color_id} has no swatch to preview")
    return key


def render_preview(services: Services, cut: str, size: int, color_id: str | None,
                   swatch_url: str | None) -> tuple[bytes, str]:
    """The preview JPEG and its entity tag (what the cache keys on: swatch content, cut, size)."""
    if size not in SIZES:
        raise HTTPException(422, f"size must be one of {', '.join(map(str, SIZES))}")
    spec = services.catalog.cut(cut)
    if spec is None:
        known = ", ".join(c.cut_id for c in services.catalog.cuts)
        raise HTTPException(422, f"unknown cut: {cut}; known cuts: {known}")
    key = preview_swatch_key(services, color_id, swatch_url)
    try:
        swatch = services.storage.get(key)
    except ObjectMissing:
        raise HTTPException(404, "the swatch to preview no longer exists") from None
    except StorageError:
        raise HTTPException(503, "storage unavailable, retry shortly", headers={"Retry-After": "2"}) from None
    try:
        jpeg = services.previews.render(swatch, cut_template(spec), size)
    except UnreadableSwatch:
        raise HTTPException(422, "the swatch is not an image we can read") from None
    etag = f'"{hashlib.sha256(swatch).hexdigest()[:32]}-{cut}-{size}"'
    return jpeg, etag
