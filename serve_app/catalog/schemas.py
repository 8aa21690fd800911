"""The public catalog's bodies (field names kept from the original backend)."""

from __future__ import annotations

from pydantic import BaseModel


class ColorOut(BaseModel):
    color_id: str
    name: str
    hex_value: str
    swatch_code: str | None
    swatch_url: str | None


class FamilyOut(BaseModel):
    family_id: str
    display_name: str
    colors: list[ColorOut]


class CutOut(BaseModel):
    cut_id: str
    display_name: str


class CatalogOut(BaseModel):
    families: list[FamilyOut]
    cuts: list[CutOut]
