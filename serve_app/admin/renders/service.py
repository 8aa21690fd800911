"""The catalog pre-render: every active color x cut rendered at the catalog seed, so a shop's default
views are served from the render cache at once.

Each missing combination is its own one-cut job at `catalog_seed` (in a job of several cuts, cut i gets
seed + i, so a shop asking for one cut would miss): a shop's default view of a cut is
`POST /generate {family_id, color_id, cuts: [cut], seed: catalog_seed}`. Combinations already cached, or
already queued by an earlier pre-render that has not finished, are not queued again. The jobs are
ordinary jobs, shown in the generation history, in the `batch` lane: runners claim shoppers' jobs first
and hold only `runner_batch_jobs` of these at once, so a large pre-render never delays a shopper by more
than those few cuts (they are not refused by the backlog gate: an admin asked for them).
"""

from __future__ import annotations

import uuid

from fastapi import HTTPException

from catalog.loader import color_swatch_key
from db import cached_renders, fabrics, jobs
from serve_app.admin.renders.schemas import PrewarmJob, PrewarmOut
from serve_app.deps import Services
from serve_app.jobqueue.plans import DraftJob, PromptWords, plan_cuts
from serve_app.jobqueue.render_cache import RenderSettings
from serve_app.jobqueue.swatches import catalog_swatch_digest


def prewarm(services: Services) -> PrewarmOut:
    """Queue a job for each catalog combination the render cache lacks; 409 when the cache is off.

    Each combination is planned as the job it would be (`plan_cuts`, the runner's plan), so its cache key
    is the one that job's cut will look up; the swatch digest worked out here is stored on the job."""
    render = RenderSettings.of(services.settings)
    if render is None:
        raise HTTPException(409, "the render cache is off (SASTRE_RENDER_CACHE=false, or model profile auto): "
                                 "pre-rendered views could not be reused")
    seed = services.settings.catalog_seed
    with services.sessions() as session:
        colors = [(family, color, color_swatch_key(family, color)) for family in fabrics.active_families(session)
                  for color in family.colors if color.status == "active"]
    drafts, without_swatch = [], []
    for family, color, swatch_key in colors:
        digest = catalog_swatch_digest(services.storage, swatch_key)
        if digest is None:
            without_swatch.append(color.color_id)
            continue
        words = PromptWords(family.fabric, color.english)
        for cut in services.catalog.cuts:
            draft = DraftJob(str(uuid.uuid4()), family.family_id, color.color_id, (cut.cut_id,), seed, uuid.uuid4().hex,
                             digest)
            [plan] = plan_cuts(draft, services.catalog, words, render)
            drafts.append((draft, swatch_key, plan.cache_key))
    with services.sessions.begin() as session:
        cached = cached_renders.cached_keys(session, [key for _, _, key in drafts])
        in_flight = cached_renders.catalog_renders_in_flight(session, seed)
        missing = [(draft, swatch_key) for draft, swatch_key, key in drafts
                   if key not in cached and (draft.color_id, draft.cuts[0]) not in in_flight]
        enqueued = []
        for draft, swatch_key in missing:
            queued = jobs.create_job(session, job_id=draft.job_id, result_token=draft.result_token,
                                     family_id=draft.family_id, color_id=draft.color_id, cuts=list(draft.cuts),
                                     seed=seed, swatch_key=swatch_key, swatch_digest=draft.swatch_digest,
                                     max_attempts=services.settings.job_max_attempts, lane="batch")
            if queued is not None:  # None: an admin retired the color meanwhile
                enqueued.append(PrewarmJob(job_id=queued.job_id, family_id=draft.family_id, color_id=draft.color_id,
                                           cut=draft.cuts[0]))
    return PrewarmOut(seed=seed, combinations=len(drafts), cached=len(cached),
                      in_flight=len(drafts) - len(cached) - len(missing), enqueued=enqueued,
                      without_swatch=without_swatch)
