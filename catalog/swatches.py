"""Sample swatch images, woven deterministically from a color so every install has the same catalog."""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image


def swatch_key(collection: str, swatch_code: str, extension: str = "png") -> str:
    """Catalog swatches live under the collection's folder, as in the original bucket layout; the
    shipped samples are PNG, an admin's photo keeps the type it was decoded as."""
    return f"{collection}/{swatch_code}.{extension}"


def render_swatch(hex_value: str, swatch_code: str, size: int = 256) -> bytes:
    """A twill-like weave in `hex_value`: warp/weft stripes plus yarn noise seeded by the swatch code."""
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
