"""Instant preview: a cut drawn in the swatch's cloth from the cut's template, on the CPU, in milliseconds.

No model runs here. The swatch becomes a small tile at cloth scale (a swatch photo shows ~10 cm of
cloth; a jacket is ~70 cm tall), mirrored so its edges never show a seam; each cloth region of the
template samples that tile along its own grain; the template's shading map (light falloff, folds,
shadows, seams and outlines, already antialiased) multiplies it; shirt, buttons and backdrop are
fixed colours under the same shading. Everything that does not depend on the swatch is prepared
once per (cut, size), so a cold preview costs one decode of a downscaled swatch, one gather, one
multiply-add and one JPEG encode.

The class is plain (no Ray, no database, no HTTP): a caller hands it swatch bytes and template
bytes. Results are cached by (swatch content hash, cut, size) in a bounded LRU, and so are the
swatch tiles (by content hash) and the prepared templates (by cut, size and template bytes).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import threading
from dataclasses import dataclass

import numpy as np
from cachetools import LRUCache, cached
from PIL import Image, ImageFilter

from deployments import metrics
from deployments.digests import swatch_digest

LEGEND_KEY = "sastre-regions"  # the regions PNG's text chunk naming each label (catalog/templates.py)
SWATCH_FORMATS = {"JPEG", "PNG", "WEBP"}
SWATCH_SPAN_CM = 10.0  # cloth shown across a swatch image's shorter side
JACKET_CM = 70.0  # a jacket's height, which the template draws over this fraction of its canvas:
JACKET_FRACTION = 0.86
BACKGROUND = (247, 246, 243)  # a light studio backdrop
SHIRT = (242, 242, 240)
BUTTON = (52, 40, 33)  # dark horn, which sits well on every cloth in the catalog
JPEG_QUALITY = 88


class UnreadableSwatch(ValueError):
    """The swatch bytes are not a JPEG, PNG or WebP image Pillow can decode."""


@dataclass(frozen=True)
class CutTemplate:
    """A cut's preview assets, as shipped in `catalog/templates/` (`CutSpec.regions_png()` etc.)."""

    cut: str
    regions_png: bytes
    shading_png: bytes


@dataclass(frozen=True)
class PreparedTemplate:
    """A template resolved at one output size: everything a preview needs that the swatch does not change.

    `texture_index` says, per pixel, which texel of the mirrored tile (flattened) the cloth shows there;
    a preview is then `tile[texture_index] * cloth_gain + fixed`.
    """

    size: int
    labels: np.ndarray  # (size, size) uint8, the majority label of each pixel
    names: tuple[str, ...]  # label index -> region name
    shading: np.ndarray  # (size, size) float32 in [0, 1]
    cloth_gain: np.ndarray  # (size, size, 1) float32: cloth coverage times shading
    fixed: np.ndarray  # (size, size, 3) float32: shirt, buttons and backdrop under their shading
    texture_index: np.ndarray  # (size, size) intp into the flattened (2T, 2T) mirrored tile
    tile_size: int  # T

    def mask(self, *names: str) -> np.ndarray:
        """Where the named regions are, as a boolean image (tests and callers read regions by name)."""
        return np.isin(self.labels, [self.names.index(n) for n in names])


def tile_size(size: int) -> int:
    """Pixels one swatch spans in a preview of `size`: cloth scale, so a pattern repeats as on the garment."""
    return max(4, round(size * JACKET_FRACTION / JACKET_CM * SWATCH_SPAN_CM))


def decode_tile(swatch: bytes, tile: int) -> np.ndarray:
    """The swatch as a (2T, 2T, 3) uint8 mirrored tile, its lighting flattened.

    JPEGs decode straight at 1/2..1/8 scale (`draft`), which is most of why a 1600x1200 photo costs
    a few milliseconds. Uneven light in a photo would repeat as blotches across the jacket, so the
    tile is divided by its own low-frequency picture and brought back to its mean colour; the mean
    colour is what the shopper chose and is kept. Mirroring each copy makes every edge meet itself.
    """
    try:
        with Image.open(io.BytesIO(swatch)) as image:
            if image.format not in SWATCH_FORMATS:
                raise UnreadableSwatch(f"swatch is {image.format}, not JPEG, PNG or WebP")
            image.draft("RGB", (tile, tile))
            rgb = image.convert("RGB")
    except (OSError, Image.DecompressionBombError) as exc:
        raise UnreadableSwatch(f"swatch cannot be decoded: {exc}") from exc
    side = min(rgb.size)
    left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
    # A slight blur takes out weave finer than two texels, which would shimmer as moiré where a
    # region samples the tile at an angle (lapels, sleeves).
    square = rgb.resize((tile, tile), Image.BOX, box=(left, top, left + side, top + side)).filter(
        ImageFilter.GaussianBlur(0.6))
    pixels = np.asarray(square, dtype=np.float32)
    low = np.asarray(square.resize((3, 3), Image.BOX).resize((tile, tile), Image.BILINEAR), dtype=np.float32)
    flat = pixels * (pixels.reshape(-1, 3).mean(axis=0) / np.maximum(low, 1.0))
    texels = np.clip(flat + 0.5, 0, 255).astype(np.uint8)
    top_row = np.concatenate([texels, texels[:, ::-1]], axis=1)
    return np.ascontiguousarray(np.concatenate([top_row, top_row[::-1]], axis=0))


def read_legend(regions: Image.Image) -> list[dict]:
    try:
        return json.loads(regions.text[LEGEND_KEY])
    except KeyError as exc:
        raise ValueError(f"regions image has no {LEGEND_KEY!r} legend: not a template from catalog/templates.py") from exc


def prepare_template(template: CutTemplate, size: int) -> PreparedTemplate:
    """Resolve a template at `size`: region coverages (antialiased), shading, and the texture lookup.

    Each cloth region samples the tile along its grain (a lapel along its front edge, the collar
    across), so a check or a herringbone turns where the cloth does; that costs nothing per
    preview because the rotation is folded into `texture_index` here.
    """
    with Image.open(io.BytesIO(template.regions_png)) as regions_image:
        legend = read_legend(regions_image)
        labels_full = np.asarray(regions_image.convert("L"))
    with Image.open(io.BytesIO(template.shading_png)) as shading_image:
        shading = np.asarray(shading_image.convert("L").resize((size, size), Image.BOX if shading_image.width >= size
                                                                 else Image.BICUBIC), dtype=np.float32) / 255
    coverage = np.stack([
        np.asarray(Image.fromarray((labels_full == index).astype(np.uint8) * 255).resize((size, size), Image.BOX),
                   dtype=np.float32) / 255
        for index in range(len(legend))
    ])
    labels = coverage.argmax(axis=0).astype(np.uint8)
    kinds = [region["kind"] for region in legend]
    cloth = coverage[[i for i, kind in enumerate(kinds) if kind == "cloth"]].sum(axis=0)
    colours = {"background": BACKGROUND, "shirt": SHIRT, "button": BUTTON}
    fixed = sum(coverage[i][..., None] * np.array(colours[kind], dtype=np.float32)
                for i, kind in enumerate(kinds) if kind != "cloth")
    tile = tile_size(size)
    period = 2 * tile
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    texture_index = np.zeros((size, size), dtype=np.intp)
    for index, region in enumerate(legend):
        if region["kind"] != "cloth":
            continue
        theta = math.radians(region["grain"])
        u = xx * math.cos(theta) - yy * math.sin(theta)
        v = xx * math.sin(theta) + yy * math.cos(theta)
        lookup = (np.floor(v).astype(np.intp) % period) * period + np.floor(u).astype(np.intp) % period
        texture_index = np.where(labels == index, lookup, texture_index)
    prepared = PreparedTemplate(
        size=size, labels=labels, names=tuple(region["name"] for region in legend), shading=shading,
        cloth_gain=(cloth * shading)[..., None].astype(np.float32), fixed=(fixed * shading[..., None]).astype(np.float32),
        texture_index=texture_index, tile_size=tile)
    for array in (prepared.labels, prepared.shading, prepared.cloth_gain, prepared.fixed, prepared.texture_index):
        array.setflags(write=False)
    return prepared


class PreviewRenderer:
    """Renders and caches previews; one instance per process, shared by its threads."""

    def __init__(self, cache_size: int = 256, tile_cache_size: int = 256, template_cache_size: int = 8) -> None:
        """Bounds in entries: a preview is ~30 KB of JPEG, a 512 px tile ~50 KB, a prepared 512 px template
        ~8 MB (so callers should allow only a few sizes). Each cache reports `cache_info()`."""
        self.previews = cached(LRUCache(cache_size), key=lambda digest, swatch, template, size: (digest, template.cut, size),
                               lock=threading.Lock(), info=True)(self._render)
        self.tiles = cached(LRUCache(tile_cache_size), key=lambda digest, swatch, tile: (digest, tile),
                            lock=threading.Lock(), info=True)(lambda digest, swatch, tile: decode_tile(swatch, tile))
        self.templates = cached(LRUCache(template_cache_size), key=_template_key, lock=threading.Lock(),
                                info=True)(prepare_template)
        self.cache_counters = metrics.CacheCounters({"preview": self.previews, "preview_tile": self.tiles,
                                                     "preview_template": self.templates})

    def template(self, template: CutTemplate, size: int = 512) -> PreparedTemplate:
        """The template prepared at `size`, cached per (cut, size, template content)."""
        return self.templates(template, size)

    def render(self, swatch: bytes, template: CutTemplate, size: int = 512, digest: str | None = None) -> bytes:
        """The preview JPEG of `template`'s cut in `swatch`'s cloth, `size` x `size` pixels. `digest` is the
        swatch's (`deployments.digests`), when the caller knows it: the cache keys on it, hashing nothing.

        Raises `UnreadableSwatch` for bytes that are not a JPEG, PNG or WebP image.
        """
        preview = self.previews(digest or swatch_digest(swatch), swatch, template, size)
        self.cache_counters.publish()
        return preview

    def _render(self, digest: str, swatch: bytes, template: CutTemplate, size: int) -> bytes:
        prepared = self.template(template, size)
        return compose(self.tiles(digest, swatch, prepared.tile_size), prepared)


def _template_key(template: CutTemplate, size: int) -> tuple:
    return template.cut, size, hashlib.sha256(template.regions_png + template.shading_png).digest()


def compose(tile: np.ndarray, prepared: PreparedTemplate) -> bytes:
    """Cloth texels times the shading, plus the fixed colours, encoded as a JPEG."""
    cloth = tile.reshape(-1, 3)[prepared.texture_index].astype(np.float32)
    cloth *= prepared.cloth_gain
    cloth += prepared.fixed
    np.clip(cloth, 0, 255, out=cloth)
    buffer = io.BytesIO()
    Image.fromarray(cloth.astype(np.uint8), "RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()
