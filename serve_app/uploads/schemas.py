"""The upload's answer (its body, streamed past the body cap, is `MULTIPART_BODY` in serve_app/edge/body_limit.py)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class UploadOut(BaseModel):
    swatch_url: str = Field(description="pass it as swatch_url to POST /generate")
    expires_at: datetime = Field(description="the upload is deleted after this time")
