"""The catalog pre-render: every active color x cut rendered at the catalog seed, so a shop's default
views are served from the render cache at once.

Each missing combination is its own one-cut job at `catalog_seed` (in a job of several cuts, cut i gets
seed + i, so a shop asking for one cut would miss): a shop's default view of a cut is
`POST /generate {family_id, color_id, cuts: [cut], seed: catalog_seed}`. Combinations already cached, or
already queued by an earlier pre-render that has not finished, are not queued again. The jobs are
ordinary jobs, shown in the generation history, and wait in the backlog like any other (they are not
refused by the backlog gate: an admin asked for them).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException

from catalog.loader import color_swatch_key
from catalog.prompts import build_prompt
from db import catalog as fabrics
from db import jobs, render_cache
from serve_app.admin.renders.schemas import PrewarmJob, PrewarmOut
from serve_app.deps import Services
from serve_app.render_cache import CutInputs, RenderSettings, cache_entry, sha256, swatch_digest


@dataclass(frozen=True)
class Combination:
    family_id: str
    color_id: str
    cut: str
    swatch_key: str
    key_hash: str


def prewarm(services: Services) -> PrewarmOut:
    """Queue a job for each catalog combination the render cache lacks; 409 when the cache is off."""
    render = RenderSettings.of(services.settings)
    if render is None:
        raise HTTPException(409, "the render cache is off (SASTRE_RENDER_CACHE=false, or model profile auto): "
                                 "pre-rendered views could not be reused")
    seed = services.settings.catalog_seed
    with services.sessions() as session:
        colors = [(family, color, color_swatch_key(family, color)) for family in fabrics.active_families(session)
                  for color in family.colors if color.status == "active"]
    templates = {cut.cut_id: (cut.prompt, sha256(cut.template_png())) for cut in services.catalog.cuts}
    combinations, without_swatch = [], []
    for family, color, swatch_key in colors:
        digest = swatch_digest(services.storage, swatch_key)
        if digest is None:
            without_swatch.append(color.color_id)
            continue
        for cut, (cut_prompt, template) in templates.items():
            inputs = CutInputs(family.family_id, color.color_id, cut, seed,
                               build_prompt(cut_prompt, family.fabric, color.english), template, digest)
            combinations.append(Combination(family.family_id, color.color_id, cut, swatch_key,
                                            cache_entry(inputs, render)["key_hash"]))
    with services.sessions.begin() as session:
        cached = render_cache.cached_keys(session, [c.key_hash for c in combinations])
        in_flight = render_cache.catalog_renders_in_flight(session, seed)
        missing = [c for c in combinations if c.key_hash not in cached and (c.color_id, c.cut) not in in_flight]
        enqueued = [
            PrewarmJob(job_id=jobs.create_job(session, family_id=c.family_id, color_id=c.color_id, cuts=[c.cut],
                                              seed=seed, swatch_url=None, swatch_key=c.swatch_key,
                                              max_attempts=services.settings.job_max_attempts).job_id,
                       family_id=c.family_id, color_id=c.color_id, cut=c.cut)
            for c in missing
        ]
    return PrewarmOut(seed=seed, combinations=len(combinations), cached=len(cached),
                      in_flight=len(combinations) - len(cached) - len(missing), enqueued=enqueued,
                      without_swatch=without_swatch)
