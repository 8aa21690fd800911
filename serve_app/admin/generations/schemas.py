"""Bodies of the generation history: a job with its queue bookkeeping, and a page of them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from serve_app.generation.schemas import JobOut


class AdminJobOut(JobOut):
    max_attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    idempotency_key: str | None
    cancel_requested: bool
    error_detail: str | None = Field(description="the raw reason behind `error_message` (exception text), for admins "
                                     "only")
    client: str = Field(description="who queued it, as the rate limits and the fair share see the caller")
    kept: bool = Field(description="kept by an admin: the job and its renders never age out")


class GenerationPage(BaseModel):
    items: list[AdminJobOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next (older) page; null at the end")
