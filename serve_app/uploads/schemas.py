"""The upload's answer."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class UploadOut(BaseModel):
    swatch_url: str = Field(description="pass it as swatch_url to POST /generate")
    expires_at: datetime = Field(description="the upload is deleted after this time")
