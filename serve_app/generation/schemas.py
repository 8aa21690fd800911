"""Bodies of job creation and job status (field names kept from the original backend)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, field_validator

from serve_app.generation.deadlines import MAX_SECONDS, MIN_SECONDS


class GenerateRequest(BaseModel):
    family_id: str = Field(min_length=1, max_length=100, examples=["lana-fria"])
    color_id: str = Field(min_length=1, max_length=100, examples=["lana-fria-azul-marino"])
    cuts: list[str] = Field(min_length=1, max_length=16, examples=[["recto", "cruzado"]])
    swatch_url: str | None = Field(default=None, min_length=1, max_length=2048,
                                   description="a URL this service issued (catalog or uploaded swatch)")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1 - 16,
                             description="seed of the first cut; cut i uses seed + i")
    deadline_seconds: float | None = Field(
        default=None, ge=MIN_SECONDS, le=MAX_SECONDS, examples=[15],
        description="the job ends `expired` if not finished this many seconds after it is accepted: never "
                    "rendered if it had not started, stopped at the next cut boundary if it had (its finished "
                    "cuts stay available). The `Cancel-After` header says the same; given both, the earlier wins")

    @field_validator("cuts")
    @classmethod
    def no_repeats(cls, cuts: list[str]) -> list[str]:
        repeated = sorted({c for c in cuts if cuts.count(c) > 1})
        if repeated:
            raise ValueError(f"repeated cuts: {', '.join(repeated)}")
        return cuts


class GenerateAccepted(BaseModel):
    job_id: str
    status: str
    seed: int
    status_url: str
    preview_urls: dict[str, str] = Field(description="each cut's instant preview (GET /preview), ready at once")


class CutProgress(BaseModel):
    cut: str
    status: str
    seed: int
    url: str | None = None
    ip_adapter_fallback: bool | None = None
    cached: bool | None = Field(default=None, description="on a completed cut: true when its image came from the "
                                "render cache (an earlier cut with the very same inputs), false when rendered")
    preview_url: str | None = Field(default=None, description="the cut's instant preview until its render is in")


class JobOut(BaseModel):
    job_id: str
    status: str
    family_id: str
    color_id: str
    cuts: list[str]
    seed: int | None
    seeds: list[int]
    swatch_url: str | None
    result_urls: list[str] | None
    progress: list[CutProgress]
    error_message: str | None = Field(description="why the job failed (or is being retried): a stable code, a colon "
                                      "and a short sentence, e.g. `render_failed: the render failed; try again`")
    attempts: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    deadline_at: datetime | None = Field(default=None, description="when the job expires if not finished")
    queue_position: int | None = Field(default=None, description="while pending: the jobs the runners will "
                                       "start before this one (0: next), as ranked a second or two ago; null "
                                       "when not pending or more than 1000 jobs back")
    estimated_start_at: datetime | None = Field(default=None, description="while pending: when it should start, "
                                                "from the queue's pace over the last minutes; null without one")
