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

Where the inputs come from. The runner reads the swatch once per job, when it plans the job's cuts,
and hashes its bytes: exact content (an uploaded photo and a catalog file give the same key if they
are the same bytes, and an admin's replacement under the same key does not), no work on the POST
path, no column on the job row. A job whose swatch cannot be read has no key: it renders, at IP scale
0, and is not remembered; neither is a cut that fell back to IP scale 0 for any other reason.

Where the images live. A hit points at the original object, `generated/{family}/{color}/{job}/{cut}.jpg`
of the job that rendered it, and copies nothing: the hit costs two small queries and a storage
existence check, no storage write. A job's results are never deleted (a retry only re-renders cuts
that did not complete, and a completed cut is never overwritten), so the object outlives its row;
should it be gone anyway, the hit is dropped and the cut rendered. The entries are rows in
`render_cache` (`db/render_cache.py`); an admin's change of a color's swatch or words, or a family's
words, deletes the color's or family's entries (they could not hit again anyway: it is tidiness).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from sqlalchemy.orm import Session, sessionmaker

from catalog.data import CatalogData
from db import render_cache
from db.models import GenerationJob
from deployments import metrics
from deployments.rendering import CutTask
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


def swatch_digest(storage: Storage, key: str | None) -> str | None:
    """The SHA-256 of the swatch's bytes; None when there is none or it cannot be read (no cache then)."""
    if key is None:
        return None
    try:
        return sha256(storage.get(key))
    except StorageError as exc:
        logger.info("swatch %s unreadable (%s): its cuts are neither looked up nor remembered", key, exc)
        return None


class RenderCache:
    """The runner's side: plan a job's keys, look a cut up before rendering it, remember it after.

    `plan` and `lookup` block (database and storage), so the runner calls them on its database threads.
    """

    def __init__(self, sessions: sessionmaker[Session], storage: Storage, catalog: CatalogData,
                 render: RenderSettings) -> None:
        self.sessions = sessions
        self.storage = storage
        self.render = render
        self.templates = {cut.cut_id: sha256(cut.template_png()) for cut in catalog.cuts}
        self.planned: dict[str, dict[str, dict]] = {}  # job id -> cut -> cache entry (less its object)

    def keys(self, job: GenerationJob, tasks: list[CutTask]) -> dict[str, dict] | None:
        """The cache entry (less its object) of each of the job's cuts; reads the job's swatch once.
        None when the swatch cannot be read: its cuts are neither looked up nor remembered."""
        digest = swatch_digest(self.storage, job.swatch_key)
        if digest is None:
            return None
        return {
            task.cut: cache_entry(CutInputs(job.family_id, job.color_id, task.cut, task.seed, task.prompt,
                                            self.templates[task.cut], digest), self.render)
            for task in tasks
        }

    def plan(self, job_id: str, keys: dict[str, dict] | None) -> None:
        """Use `keys` (from `keys()`) for the job's lookups until `close`; None: no cache for this job."""
        if keys is None:
            self.planned.pop(job_id, None)
        else:
            self.planned[job_id] = keys

    def close(self, job_id: str) -> None:
        """The job's attempt is over here: forget its keys."""
        self.planned.pop(job_id, None)

    def lookup(self, task: CutTask) -> dict | None:
        """The progress entry of a completed cut with the task's inputs, or None: render it."""
        entry = self.planned.get(task.job_id, {}).get(task.cut)
        if entry is None:
            return None
        with self.sessions.begin() as session:
            hit = render_cache.find(session, entry["key_hash"])
            metrics.cache_looked_up("render", hit is not None)
            if hit is None:
                return None
            try:
                there = self.storage.exists(hit.object_key)
            except StorageError as exc:  # the cache only ever saves work: render rather than fail the cut
                logger.warning("render cache: storage unavailable (%s); rendering job %s cut %s", exc, task.job_id,
                               task.cut)
                return None
            if not there:
                logger.warning("render cache: %s is gone; rendering job %s cut %s again", hit.object_key,
                               task.job_id, task.cut)
                render_cache.forget(session, hit.key_hash)
                return None
            return {"status": "completed", "seed": task.seed, "url": self.storage.url_for(hit.object_key),
                    "key": hit.object_key, "ip_adapter_fallback": False, "cached": True,
                    "finished_at": datetime.now(timezone.utc).isoformat()}

    def remember(self, task: CutTask, progress: dict) -> None:
        """Keep a rendered cut for the next job with its inputs (never a fallback render)."""
        entry = self.planned.get(task.job_id, {}).get(task.cut)
        if entry is None or progress.get("ip_adapter_fallback"):
            return
        with self.sessions.begin() as session:
            render_cache.remember(session, **entry, object_key=progress["key"], job_id=task.job_id)
