"""The render cache: the fastest render is the one already made.

A cut's pixels are decided by its inputs, so a cut whose every input matches a completed cut reuses
that cut's stored image instead of being rendered. The key is the SHA-256 of all of them:

- what the job asked for: family, color, cut and the cut's seed;
- what the prompt says: the full prompt text, so an admin's edit of a family's or color's English
  words, or a cut's prompt, changes the key;
- what the images are: the SHA-256 of the swatch's bytes and of the cut's template;
- how it is rendered: the model (profile and weight sources), `render_cache_version`, image size,
  steps, control detector and watermark text.

A different model or setting therefore never hits an old entry. With `model_profile=auto` the cache is
off: which model that is (pretrained, or tiny-random when weights are missing) is only known once a
replica has loaded it, and two replicas may differ.

Where the inputs come from. Each cut's key is part of its job's plan (`serve_app/jobqueue/plans.py`),
made from the swatch's digest on the job row (worked out once, when the job was accepted: exact
content, so an uploaded photo and a catalog file give the same key if they are the same bytes, and an
admin's replacement under the same key does not). A job whose swatch cannot be read has no key: it
renders, at IP scale 0, and is not remembered; neither is a cut that fell back to IP scale 0 for any
other reason.

Where the images live. A hit points at the original object, `generated/{family}/{color}/{token}/{cut}.jpg`
of the job that rendered it (a random token, never that job's id: see `plans.result_key`), and
copies nothing: the hit costs two small queries and a storage existence check, no storage write. An
object is deleted only once no job and no entry names it (`serve_app/jobqueue/retention.py`), and a hit is
recorded in the same transaction that marks its entry used (`cached_renders.touch`), so an entry that
aged out in between is a miss, not a broken image; should the object be gone anyway, the hit is
dropped and the cut rendered. The entries are rows in
`render_cache` (`db/cached_renders.py`); an admin's change of a color's swatch or words, or a family's
words, deletes the color's or family's entries (they could not hit again anyway: it is tidiness).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from sqlalchemy.orm import Session, sessionmaker

from db import cached_renders
from deployments import metrics
from deployments.storage import Storage, StorageError
from serve_app.settings import Settings

logger = logging.getLogger("sastre.render_cache")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class RenderSettings:
    """The service-wide inputs of every render: the same for all cuts while the service runs."""

    model: str  # profile, weight sources and render_cache_version, as canonical JSON
    image_size: int
    steps: int
    detector: str
    watermark: str

    @classmethod
    def of(cls, settings: Settings) -> RenderSettings | None:
        """None when the cache is off: switched off, or a model only known once loaded (`auto`)."""
        if not settings.render_cache or settings.model_profile == "auto":
            return None
        model = {"profile": settings.model_profile, "version": settings.render_cache_version,
                 "sources": asdict(settings.model_sources()) if settings.model_profile == "pretrained" else None}
        return cls(json.dumps(model, sort_keys=True), settings.image_size, settings.num_inference_steps,
                   settings.control_detector, settings.watermark_text)


@dataclass(frozen=True)
class CutInputs:
    """What one cut asks for, beside the service-wide `RenderSettings`."""

    family_id: str
    color_id: str
    cut: str
    seed: int
    prompt: str
    template_sha256: str
    swatch_sha256: str


def cache_entry(inputs: CutInputs, render: RenderSettings) -> dict:
    """The entry's columns, `key_hash` (the SHA-256 of every other column) included, less its object."""
    components = {**asdict(inputs), **asdict(render)}
    return {"key_hash": sha256(json.dumps(components, sort_keys=True).encode()), **components}


class RenderCache:
    """The runner's side: look a planned cut up before rendering it, remember it after. The keys come
    with the job's plan (`serve_app/jobqueue/plans.py`); this class only reads and writes entries.

    Both block (database and storage), so the runner calls them on its database threads.
    """

    def __init__(self, sessions: sessionmaker[Session], storage: Storage) -> None:
        self.sessions = sessions
        self.storage = storage

    def lookup(self, job_id: str, cut: str, seed: int, entry: dict) -> dict | None:
        """The progress entry of a completed cut with this cache `entry`'s inputs, or None: render it."""
        with self.sessions.begin() as session:
            hit = cached_renders.find(session, entry["key_hash"])
            metrics.cache_looked_up("render", hit is not None)
            if hit is None:
                return None
            try:
                there = self.storage.exists(hit.object_key)
            except StorageError as exc:  # the cache only ever saves work: render rather than fail the cut
                logger.warning("render cache: storage unavailable (%s); rendering job %s cut %s", exc, job_id, cut)
                return None
            if not there:
                logger.warning("render cache: %s is gone; rendering job %s cut %s again", hit.object_key, job_id, cut)
                cached_renders.forget(session, hit.key_hash)
                return None
            return {"status": "completed", "seed": seed, "url": self.storage.url_for(hit.object_key),
                    "key": hit.object_key, "ip_adapter_fallback": False, "cached": True,
                    "finished_at": datetime.now(timezone.utc).isoformat()}

    def remember(self, job_id: str, entry: dict, progress: dict) -> None:
        """Keep a rendered cut for the next job with its inputs (never a fallback render)."""
        if progress.get("ip_adapter_fallback"):
            return
        with self.sessions.begin() as session:
            cached_renders.remember(session, **entry, object_key=progress["key"], job_id=job_id)
