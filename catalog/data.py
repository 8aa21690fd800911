"""The shipped catalog file (`fabrics.json`): fabric families, their colors, and the suit cuts."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

CATALOG_DIR = Path(__file__).parent
HEX_COLOR = re.compile(r"^#[0-9A-Fa-f]{6}$")


@dataclass(frozen=True)
class ColorSpec:
    color_id: str
    name: str
    english: str
    hex_value: str
    swatch_code: str


@dataclass(frozen=True)
class FamilySpec:
    family_id: str
    display_name: str
    fabric: str
    colors: tuple[ColorSpec, ...]


@dataclass(frozen=True)
class CutSpec:
    cut_id: str
    display_name: str
    prompt: str
    template: str  # the line drawing ControlNet's detector reads
    regions: str  # label image of the same geometry, for the instant preview
    shading: str  # its grayscale shading map

    def template_png(self) -> bytes:
        return self._template[0]

    @property
    def template_digest(self) -> str:
        """The template's SHA-256: what the control-map caches key it by, so no stage hashes it per cut."""
        return self._template[1]

    @cached_property
    def _template(self) -> tuple[bytes, str]:
        """Read and hashed once per process: the shipped templates do not change while it runs."""
        data = (CATALOG_DIR / self.template).read_bytes()
        return data, hashlib.sha256(data).hexdigest()

    def regions_png(self) -> bytes:
        return (CATALOG_DIR / self.regions).read_bytes()

    def shading_png(self) -> bytes:
        return (CATALOG_DIR / self.shading).read_bytes()


@dataclass(frozen=True)
class CatalogData:
    collection: str
    families: tuple[FamilySpec, ...]
    cuts: tuple[CutSpec, ...]

    def cut(self, cut_id: str) -> CutSpec | None:
        return next((cut for cut in self.cuts if cut.cut_id == cut_id), None)


def parse_catalog(raw: dict) -> CatalogData:
    """Validate and freeze catalog data; a malformed file fails loudly at start-up, not mid-request."""
    families = tuple(
        FamilySpec(f["family_id"], f["display_name"], f["fabric"], tuple(ColorSpec(**c) for c in f["colors"]))
        for f in raw["families"]
    )
    cuts = tuple(CutSpec(**c) for c in raw["cuts"])
    color_ids = [c.color_id for f in families for c in f.colors]
    for label, ids in (("family", [f.family_id for f in families]), ("color", color_ids), ("cut", [c.cut_id for c in cuts])):
        if len(ids) != len(set(ids)):
            raise ValueError(f"duplicate {label} ids in catalog")
    for color in (c for f in families for c in f.colors):
        if not HEX_COLOR.match(color.hex_value):
            raise ValueError(f"color {color.color_id}: hex_value must be #RRGGBB")
    return CatalogData(raw["collection"], families, cuts)


@lru_cache(maxsize=1)
def load_catalog(path: Path = CATALOG_DIR / "fabrics.json") -> CatalogData:
    return parse_catalog(json.loads(path.read_text(encoding="utf-8")))
