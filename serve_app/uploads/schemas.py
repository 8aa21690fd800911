"""The upload's body, as OpenAPI describes it (the route reads it as a stream), and its answer."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class UploadOut(BaseModel):
    swatch_url: str = Field(description="pass it as swatch_url to POST /generate")
    expires_at: datetime = Field(description="the upload is deleted after this time")


MULTIPART_BODY = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary",
                                "description": "JPEG, PNG or WebP, at most 5 MB"}}}}}},
}
