"""Sample swatch images, woven deterministically from a color so every install has the same catalog."""

from __future__ import annotations

import functools
import hashlib
import io

import numpy as np
from PIL import Image


def swatch_key(collection: str, swatch_code: str, extension: str = "png") -> str:
    """Catalog swatches live under the collection's folder, as in the original bucket layout; the
    shipped samples are PNG, an admin's photo keeps the type it was decoded as."""
    return f"{collection}/{swatch_code}.{extension}"


@functools.lru_cache(maxsize=64)
def render_swatch(hex_value: str, swatch_code: str, size: int = 256) -> bytes:
    """A twill-like weave in `hex_value`: warp/weft stripes plus yarn noise seeded by the swatch code.

    Woven once per process: the bytes depend on the arguments alone, and an optimized PNG costs ~40 ms
    (every store that a catalog is put into, in tests every test's, would otherwise pay it again)."""
    base = np.array([int(hex_value[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float32)
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(swatch_code.encode()).digest()[:8], "big"))
    y, x = np.mgrid[0:size, 0:size]
    twill = ((x + y) // 3 % 4 < 2).astype(np.float32)  # diagonal wale of a 2/2 twill
    warp = np.sin(x * np.pi / 2.0) * 0.5 + 0.5
    weft = np.sin(y * np.pi / 2.0) * 0.5 + 0.5
    shade = 0.82 + 0.12 * twill + 0.04 * (warp * weft) + rng.normal(0, 0.035, (size, size))
    pixels = np.clip(base[None, None, :] * shade[..., None] + 6 * (1 - twill[..., None]), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def photo_swatch(hex_value: str, pattern: str = "herringbone", seed: int = 0, size: tuple[int, int] = (1600, 1200),
                 quality: int = 90) -> bytes:
    """A phone photo of a swatch, as a shopper uploads one: a woven pattern in `hex_value` under uneven light.

    `pattern` is "herringbone" (zig-zag twill, ~1 cm chevrons) or "plaid" (a two-tone check with a
    contrasting overcheck, ~5 cm repeat); the photo spans ~10 cm across its shorter side. Light falls
    off across the frame and JPEG artefacts come with it, as in a real photo.
    """
    width, height = size
    px_per_cm = min(size) / 10.0
    base = np.array([int(hex_value[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float32)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    wale = max(2.0, px_per_cm * 0.12)  # one twill line every ~1.2 mm
    if pattern == "herringbone":
        chevron = px_per_cm * 1.0
        direction = np.where((x // chevron) % 2 == 0, 1.0, -1.0)
        weave = 0.5 + 0.5 * np.sin((y + direction * (x % chevron)) * (2 * np.pi / wale))
        shade = 0.80 + 0.22 * weave - 0.10 * (np.abs((x % chevron) - chevron / 2) < 1.5)
        colour = base[None, None, :] * shade[..., None]
    elif pattern == "plaid":
        repeat = px_per_cm * 5.0
        band_x = ((x % repeat) < repeat * 0.45).astype(np.float32)
        band_y = ((y % repeat) < repeat * 0.45).astype(np.float32)
        dark = base * 0.55
        colour = base[None, None, :] + (dark - base)[None, None, :] * (0.5 * (band_x + band_y))[..., None]
        over = ((np.abs((x % repeat) - repeat * 0.72) < px_per_cm * 0.08)
                | (np.abs((y % repeat) - repeat * 0.72) < px_per_cm * 0.08))
        colour = np.where(over[..., None], np.array([196, 160, 72], dtype=np.float32), colour)
        twill = 0.92 + 0.08 * (0.5 + 0.5 * np.sin((x + y) * (2 * np.pi / wale)))
        colour = colour * twill[..., None]
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    light = 1.08 - 0.30 * (x / width) * 0.6 - 0.30 * (y / height) * 0.4  # a window to the upper left
    pixels = colour * light[..., None] + rng.normal(0, 4.0, (height, width, 1))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
