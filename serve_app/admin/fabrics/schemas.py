"""Bodies of catalog management: fabric families and their colors."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Identifier = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$", description="lowercase letters, digits and dashes")
Status = Literal["active", "inactive"]
# A storage folder: no separators, and not "." or ".." (no storage key may hold those).
COLLECTION = r"^[^/\\\x00]*[^/\\\x00.][^/\\\x00]*$"
Hex = Field(pattern=r"^#[0-9A-Fa-f]{6}$", examples=["#1F2A44"])
# Prompt words go into the image prompt as they are: printable, no surrounding blanks, and short, since
# CLIP reads only 77 tokens and the cut's own words must still fit.
PROMPT_WORDS = r"^[^\x00-\x20\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\x9f])?$"
FabricWords = Annotated[str, Field(min_length=1, max_length=80, pattern=PROMPT_WORDS, examples=["Donegal tweed"],
                                   description="English words for the cloth, used in the image prompt")]
ColorWords = Annotated[str, Field(min_length=1, max_length=80, pattern=PROMPT_WORDS, examples=["navy blue"],
                                  description="English words for the color, used in the image prompt")]


class ColorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    color_id: str = Identifier
    name: str = Field(min_length=1, max_length=100)
    english: ColorWords
    hex_value: str = Hex
    swatch_code: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    swatch_url: str | None = Field(default=None, max_length=2048, description="must be a URL of our storage")
    status: Status = "active"


class ColorPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=100)
    english: ColorWords | None = None
    hex_value: str | None = Field(default=None, pattern=r"^#[0-9A-Fa-f]{6}$")
    swatch_code: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    swatch_url: str | None = Field(default=None, max_length=2048)
    status: Status | None = None


class ColorAdminOut(BaseModel):
    color_id: str
    family_id: str
    name: str
    english: str
    hex_value: str
    swatch_code: str | None
    swatch_url: str | None
    status: str


class FamilyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    family_id: str = Identifier
    display_name: str = Field(min_length=1, max_length=200)
    fabric: FabricWords
    collection: str | None = Field(default=None, min_length=1, max_length=100, pattern=COLLECTION,
                                   description="storage folder of its swatches; default: the catalog's")
    status: Status = "active"


class FamilyPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    display_name: str | None = Field(default=None, min_length=1, max_length=200)
    fabric: FabricWords | None = None
    status: Status | None = None


class FamilyAdminOut(BaseModel):
    family_id: str
    display_name: str
    fabric: str
    collection: str | None
    status: str
    created_at: datetime
    updated_at: datetime
    colors: list[ColorAdminOut]
