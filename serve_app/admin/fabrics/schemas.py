"""Bodies of catalog management: fabric families and their colors."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Identifier = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$", description="lowercase letters, digits and dashes")
Status = Literal["active", "inactive"]
Hex = Field(pattern=r"^#[0-9A-Fa-f]{6}$", examples=["#1F2A44"])


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
