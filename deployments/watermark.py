"""The visible watermark on every delivered render.

Renders are previews for shoppers, not deliverables, so the mark is visible: a translucent diagonal
tiling of the brand plus a solid corner label that survives cropping of the centre.
"""

from __future__ import annotations

from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont


def _tile_size(width: int, height: int) -> int:
    return max(10, min(width, height) // 12)


def corner_label_box(size: tuple[int, int], text: str = "SASTRE") -> tuple[int, int, int, int]:
    """Where the solid corner label goes (x0, y0, x1, y1); tests and QA use it to check the mark."""
    width, height = size
    font = ImageFont.load_default(size=max(8, _tile_size(width, height) // 2))
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    pad = max(2, _tile_size(width, height) // 6)
    x1, y1 = width - pad, height - pad
    return (x1 - (right - left) - 2 * pad, y1 - (bottom - top) - 2 * pad, x1, y1)


@lru_cache(maxsize=8)
def _diagonal_tiling(width: int, height: int, text: str, opacity: int) -> Image.Image:
    """The translucent diagonal layer, the same for every image of one size: drawn once per size (drawing
    and rotating it was ~120 ms of each 512 px image's 170 ms in the finisher). Never modified."""
    size = _tile_size(width, height)
    tile = Image.new("RGBA", (width * 2, height * 2), (0, 0, 0, 0))
    draw = ImageDraw.Draw(tile)
    font = ImageFont.load_default(size=size)
    step_x, step_y = size * (len(text) + 3), size * 4
    for row, y in enumerate(range(0, tile.height, step_y)):
        for x in range(-step_x + (row % 2) * step_x // 2, tile.width, step_x):
            draw.text((x, y), text, font=font, fill=(255, 255, 255, opacity))
    tile = tile.rotate(30, resample=Image.BICUBIC)
    left, top = (tile.width - width) // 2, (tile.height - height) // 2
    return tile.crop((left, top, left + width, top + height))


def apply_watermark(image: Image.Image, text: str = "SASTRE", opacity: int = 72) -> Image.Image:
    """Return a copy of `image` (RGB) with `text` tiled diagonally and stamped in the lower-right corner."""
    base = image.convert("RGBA")
    width, height = base.size
    size = _tile_size(width, height)
    marked = Image.alpha_composite(base, _diagonal_tiling(width, height, text, opacity))

    x0, y0, x1, y1 = corner_label_box((width, height), text)
    label_font = ImageFont.load_default(size=max(8, size // 2))
    text_left, text_top, _, _ = ImageDraw.Draw(marked).textbbox((0, 0), text, font=label_font)
    pad = max(2, size // 6)
    draw = ImageDraw.Draw(marked)
    draw.rectangle((x0, y0, x1, y1), fill=(0, 0, 0, 255))
    draw.text((x0 + pad - text_left, y0 + pad - text_top), text, font=label_font, fill=(255, 255, 255, 255))
    return marked.convert("RGB")
