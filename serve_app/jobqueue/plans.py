"""A job's cuts, planned once: every fact about a cut that follows from its job is worked out here.

A cut's seed (the job's seed + the cut's place), where its result goes, where its instant preview is,
and, for the runner and prewarm, its prompt, template and swatch digests and render-cache key: each
reader (the 202 body, `GET /jobs/{id}`, the event stream, the runner, prewarm, the render cache) takes
them from `plan_cuts` instead of working them out again, so no two readers can disagree.

A plan without prompt words is what the readers that show a job need: seeds, preview and result keys.
The runner and prewarm plan with the job's fabric words (the database's, when the attempt starts, so an
admin's edit shows in the next job) and the service's render settings, which fill in the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence
from urllib.parse import urlencode

from catalog.data import CatalogData
from catalog.prompts import build_prompt
from serve_app.jobqueue.render_cache import CutInputs, RenderSettings, cache_entry


class PlannedJob(Protocol):
    """What planning reads of a job: a row (ORM object or plain row) or a job about to be inserted."""

    job_id: str
    family_id: str
    color_id: str
    cuts: Sequence[str]
    seed: int | None
    result_token: str
    swatch_url: str | None
    swatch_digest: str | None


@dataclass(frozen=True)
class PromptWords:
    """The English words of the job's fabric and color, as the prompt uses them."""

    fabric: str
    color: str


@dataclass(frozen=True)
class DraftJob:
    """A job before its insert (prewarm plans it to know whether it is needed)."""

    job_id: str
    family_id: str
    color_id: str
    cuts: tuple[str, ...]
    seed: int
    result_token: str
    swatch_digest: str | None
    swatch_url: str | None = None


@dataclass(frozen=True)
class CutPlan:
    """One cut of one job, as every reader sees it."""

    cut: str
    seed: int | None  # None only on a row the original backend wrote without a seed
    result_key: str
    preview_url: str
    # With prompt words (the runner's and prewarm's plans):
    prompt: str | None = None
    template_digest: str | None = None
    swatch_digest: str | None = None  # None: the swatch is unknown or unreadable (IP scale 0, no cache)
    # The render-cache entry's columns, `key_hash` included; None: neither looked up nor remembered.
    cache_entry: dict | None = field(default=None, hash=False)

    @property
    def cache_key(self) -> str | None:
        return self.cache_entry["key_hash"] if self.cache_entry is not None else None


class CutNotInCatalog(LookupError):
    """A cut of the job left the catalog after the job was accepted."""


def result_key(family_id: str, color_id: str, result_token: str, cut: str) -> str:
    """`generated/{family}/{color}/{result_token}/{cut}.jpg`: the job's random token, drawn when it was
    accepted, so a retry overwrites the same object, yet the key (handed to other jobs by render-cache
    hits) tells no one the job id, which would read and cancel the job."""
    return f"generated/{family_id}/{color_id}/{result_token}/{cut}.jpg"


def preview_url(job: PlannedJob, cut: str) -> str:
    """Where a front end gets a cut's instant preview: a catalog color's, or, for a job that named its own
    swatch, the job's (drawn from the job's copy, so it outlives the upload)."""
    query = {"job_id": job.job_id} if job.swatch_url else {"color_id": job.color_id}
    return f"/preview?{urlencode({**query, 'cut': cut})}"


def plan_cuts(job: PlannedJob, catalog: CatalogData | None = None, words: PromptWords | None = None,
              render: RenderSettings | None = None, swatch_digest: str | None = None) -> tuple[CutPlan, ...]:
    """The job's cuts in order. With `catalog` and `words`, each plan carries its prompt and digests, and
    with `render` (the cache is on) and a swatch digest, its render-cache entry. `swatch_digest` stands
    in for the job's own when it has none (the runner's, read from the catalog swatch).

    Raises `CutNotInCatalog` when a cut to be rendered is no longer in the catalog."""
    digest = job.swatch_digest or swatch_digest
    plans = []
    for index, cut in enumerate(job.cuts):
        seed = job.seed + index if job.seed is not None else None
        public = {"cut": cut, "seed": seed, "preview_url": preview_url(job, cut),
                  "result_key": result_key(job.family_id, job.color_id, job.result_token, cut)}
        if catalog is None or words is None:
            plans.append(CutPlan(**public))
            continue
        spec = catalog.cut(cut)
        if spec is None:
            raise CutNotInCatalog(f"cut {cut!r} is no longer in the catalog")
        prompt = build_prompt(spec.prompt, words.fabric, words.color)
        entry = None
        if render is not None and digest is not None and seed is not None:
            entry = cache_entry(CutInputs(job.family_id, job.color_id, cut, seed, prompt, spec.template_digest, digest),
                                render)
        plans.append(CutPlan(**public, prompt=prompt, template_digest=spec.template_digest, swatch_digest=digest,
                             cache_entry=entry))
    return tuple(plans)
