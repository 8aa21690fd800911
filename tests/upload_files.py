"""Hostile and ordinary upload files, made in memory (shared by unit and integration tests)."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

from PIL import Image


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (64, 48), color=(30, 40, 90), **save) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt, **save)
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    """A photo-like JPEG cut off part-way through its pixel data (headers intact)."""
    import numpy as np

    noise = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    return data[: len(data) * 6 // 10]


def jpeg_with_gps() -> bytes:
    image = Image.new("RGB", (64, 48), (120, 80, 40))
    exif = image.getexif()
    exif[0x010F] = "PhoneMaker"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (40.0, 26.0, 46.0), "W", (79.0, 58.0, 56.0)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def rotated_jpeg() -> bytes:
    """64x32 pixels stored, with EXIF orientation 6 (display rotated 90°: 32x64)."""
    image = Image.new("RGB", (64, 32), (200, 10, 10))
    exif = image.getexif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` pixels, with almost no pixel data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def png_zip_polyglot() -> bytes:
    """A valid PNG that is also a ZIP archive (the archive appended after IEND)."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("payload.html", "<script>alert(1)</script>")
    return image_bytes("PNG") + archive.getvalue()


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script></svg>'


STRIPES = ((200, 40, 40), (40, 60, 180))  # a two-colour cloth: its mean colour is their average


def striped_photo(fmt: str, size: tuple[int, int], stripe_px: int = 3, orientation: int | None = None,
                  **save) -> bytes:
    """A photo-sized picture of vertical two-colour stripes (the first one STRIPES[0]), optionally with an
    EXIF orientation."""
    import numpy as np

    width, height = size
    stripe = (np.arange(width) // stripe_px % 2).astype(bool)
    row = np.where(stripe[:, None], np.array(STRIPES[1], np.uint8), np.array(STRIPES[0], np.uint8))
    image = Image.fromarray(np.ascontiguousarray(np.broadcast_to(row, (height, width, 3))), "RGB")
    if orientation is not None:
        exif = image.getexif()
        exif[0x0112] = orientation
        save["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


# What the decoder refuses, so both `sanitize_image` and POST /upload-swatch answer it the same way:
# (what it is, its bytes, the file name a client would send, the status, words of the detail).
REFUSED_IMAGES = [
    ("empty", b"", "empty.png", 422, "empty"),
    ("text named .png", b"hello, I am a text file" * 10, "swatch.png", 415, "not an image"),
    ("GIF", image_bytes("GIF"), "swatch.gif", 415, "unsupported image type GIF"),
    ("SVG", SVG, "swatch.svg", 415, "not an image"),
    ("truncated JPEG", truncated_jpeg(), "cut.jpg", 422, "truncated"),
    ("30000x30000 PNG", png_declaring(30000, 30000), "bomb.png", 422, "too many pixels"),
    ("PNG+ZIP polyglot", png_zip_polyglot(), "poly.png", 422, "polyglot"),
]
