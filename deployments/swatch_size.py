"""The size a swatch image is kept at, and getting a large photo down to it without decoding it whole.

The model and the preview look at little of a swatch: the IP-Adapter's image encoder (CLIP ViT-H)
resizes its shorter side to 224 px and crops the centre square; a 512 px preview tiles a 63 px square
of it (`deployments/preview.py`, `tile_size`); the shop's pages show it at 96 CSS px. A swatch is kept
at most `SWATCH_MAX_SIDE` px on its long side: its shorter side stays at or above 224 px up to a 4.5:1
aspect, and a thumbnail stays sharp on a 3x screen. Keeping more only costs: a 25 MP PNG took 3 s and
~450 MB to re-encode at full size, and every reader (preview, generator) decoded it whole again.

JPEGs decode straight at 1/2 to 1/8 scale (`Image.draft`); other formats decode whole, once, and are
then reduced by whole factors (`Image.reduce`, through `resize`'s `reducing_gap`) before the final
resampling, so no step after the decode works on the full-size picture.
"""

from __future__ import annotations

import io

from PIL import Image

SWATCH_MAX_SIDE = 1024


def fitted_size(size: tuple[int, int], max_side: int = SWATCH_MAX_SIDE) -> tuple[int, int]:
    """`size` scaled, aspect kept, so its long side is at most `max_side` (unchanged when it already is)."""
    width, height = size
    longest = max(width, height)
    if longest <= max_side:
        return size
    return max(1, round(width * max_side / longest)), max(1, round(height * max_side / longest))


def decode_reduced(image: Image.Image, max_side: int = SWATCH_MAX_SIDE) -> Image.Image:
    """Load an opened, not yet loaded image at the least resolution that still covers `max_side`.

    For a JPEG the decoder itself skips the detail (`draft`); any other format loads whole. The
    result may still exceed `max_side`: `downscaled` finishes the job.
    """
    image.draft(None, (max_side, max_side))
    image.load()
    return image


def downscaled(image: Image.Image, max_side: int = SWATCH_MAX_SIDE) -> Image.Image:
    """A loaded image with its long side cut to `max_side` (itself when it is within it).

    Area-averaging resampling: a swatch's mean colour, what the shopper chose, is kept."""
    size = fitted_size(image.size, max_side)
    if size == image.size:
        return image
    if image.mode not in ("RGB", "RGBA", "L", "LA"):  # palette, CMYK, 16-bit: resample in a plain mode
        image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def fit_swatch(data: bytes, max_side: int = SWATCH_MAX_SIDE) -> bytes:
    """Swatch bytes whose picture is at most `max_side` on its long side: `data` itself when it already
    is (or is no image: its reader falls back), else a downscaled lossless PNG of it.

    Swatches stored before uploads were downscaled can be 25 MP; a reader calls this on a thread of its
    own so that no model thread ever decodes one whole."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if max(image.size) <= max_side:
                return data
            small = downscaled(decode_reduced(image, max_side), max_side)
            buffer = io.BytesIO()
            small.save(buffer, format="PNG")
            return buffer.getvalue()
    except (OSError, ValueError, Image.DecompressionBombError):
        return data
