"""Bodies of the admin API (catalog management and generation history)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from serve_app.schemas import JobOut

Identifier = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$", description="lowercase letters, digits and dashes")
Status = Literal["active", "inactive"]
Hex = Field(pattern=r"^#[0-9A-Fa-f]{6}$", examples=["#1F2A44"])


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds")


class ColorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    color_id: str = Identifier
    name: str = Field(min_length=1, max_length=100)
    hex_value: str = Hex
    swatch_code: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    swatch_url: str | None = Field(default=None, max_length=2048, description="must be a URL of our storage")
    status: Status = "active"


class ColorPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=100)
    hex_value: str | None = Field(default=None, pattern=r"^#[0-9A-Fa-f]{6}$")
    swatch_code: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    swatch_url: str | None = Field(default=None, max_length=2048)
    status: Status | None = None


class ColorAdminOut(BaseModel):
    color_id: str
    family_id: str
    name: str
    hex_value: str
    swatch_code: str | None
    swatch_url: str | None
    status: str


class FamilyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    family_id: str = Identifier
    display_name: str = Field(min_length=1, max_length=200)
    collection: str | None = Field(default=None, min_length=1, max_length=100, pattern=r"^[^/\\\x00]+$",
                                   description="storage folder of its swatches; default: the catalog's")
    status: Status = "active"


class FamilyPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    display_name: str | None = Field(default=None, min_length=1, max_length=200)
    status: Status | None = None


class FamilyAdminOut(BaseModel):
    family_id: str
    display_name: str
    collection: str | None
    status: str
    created_at: datetime
    updated_at: datetime
    colors: list[ColorAdminOut]


class AdminJobOut(JobOut):
    max_attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    idempotency_key: str | None
    cancel_requested: bool


class GenerationPage(BaseModel):
    items: list[AdminJobOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next (older) page; null at the end")
