"""Bodies of the catalog pre-render."""

from __future__ import annotations

from pydantic import BaseModel, Field


class PrewarmJob(BaseModel):
    job_id: str
    family_id: str
    color_id: str
    cut: str


class PrewarmOut(BaseModel):
    seed: int = Field(description="the catalog seed (SASTRE_CATALOG_SEED): a shop's default view of a cut is "
                      "POST /generate with that cut alone and this seed")
    combinations: int = Field(description="active colors with a readable swatch, times the catalog's cuts")
    cached: int = Field(description="combinations already in the render cache: nothing to do")
    in_flight: int = Field(description="combinations a job is already rendering (an earlier pre-render)")
    enqueued: list[PrewarmJob] = Field(description="one job per missing combination, queued now")
    without_swatch: list[str] = Field(description="active colors whose swatch cannot be read: not pre-rendered")
