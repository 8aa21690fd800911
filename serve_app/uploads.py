"""Customer swatch uploads: read the multipart body as a stream under a size cap, then decide by
decoding whether it is an image we take, and store only a re-encoded, metadata-free copy.

Nothing the client declares (content type, file name) is trusted; nothing is stored until the image
has been fully decoded and re-encoded.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from fastapi import HTTPException, Request
from PIL import Image, ImageOps, UnidentifiedImageError
from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

MULTIPART_OVERHEAD = 16 * 1024  # boundaries and part headers around the file


@dataclass(frozen=True)
class CleanImage:
    data: bytes
    extension: str
    content_type: str
    width: int
    height: int


# Decoded format → (extension, content type, Pillow save options). MPO is how Pillow names the
# multi-picture JPEGs many phones write; its first picture is an ordinary JPEG.
FORMATS = {
    "JPEG": ("jpg", "image/jpeg", {"format": "JPEG", "quality": 92}),
    "MPO": ("jpg", "image/jpeg", {"format": "JPEG", "quality": 92}),
    "PNG": ("png", "image/png", {"format": "PNG", "optimize": True}),
    "WEBP": ("webp", "image/webp", {"format": "WEBP", "quality": 92}),
}


class _FilePart:
    """python-multipart callbacks that keep only the named file field, and at most `limit` bytes of it."""

    def __init__(self, field: str, limit: int) -> None:
        self.field, self.limit = field, limit
        self.data = bytearray()
        self.found = False
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._in_field = False

    def on_part_begin(self) -> None:
        self._headers, self._in_field = {}, False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field, self._header_value = bytearray(), bytearray()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._in_field = options.get(b"name") == self.field.encode() and not self.found
        self.found = self.found or self._in_field

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_field:
            self.data += data[start:end]
            if len(self.data) > self.limit:
                raise HTTPException(413, f"file too large: the limit is {self.limit // (1024 * 1024)} MB")

    def callbacks(self) -> dict:
        return {name: getattr(self, name) for name in (
            "on_part_begin", "on_header_field", "on_header_value", "on_header_end", "on_headers_finished",
            "on_part_data")}


async def read_file_field(request: Request, field: str, max_bytes: int) -> bytes:
    """The bytes of multipart field `field`, refusing bodies over the cap as they stream in."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise HTTPException(415, f"send multipart/form-data with the image in a field named '{field}'")
    body_limit = max_bytes + MULTIPART_OVERHEAD
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > body_limit:
        raise HTTPException(413, f"file too large: the limit is {max_bytes // (1024 * 1024)} MB")
    part = _FilePart(field, max_bytes)
    parser = MultipartParser(options[b"boundary"], part.callbacks())
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > body_limit:
            raise HTTPException(413, f"file too large: the limit is {max_bytes // (1024 * 1024)} MB")
        parser.write(chunk)
    parser.finalize()
    if not part.found:
        raise HTTPException(422, f"missing the '{field}' field")
    return bytes(part.data)


def _trailing_bytes(data: bytes, image_format: str) -> bytes:
    """Bytes after the image's own end: where polyglot files hide a second payload."""
    if image_format == "PNG":
        end = data.rfind(b"IEND")
        return data[end + 8:] if end >= 0 else b""
    if image_format == "JPEG":
        end = data.rfind(b"\xff\xd9")
        return data[end + 2:] if end >= 0 else b""
    if image_format == "WEBP":
        size = int.from_bytes(data[4:8], "little") + 8
        return data[size + (size % 2):]
    return b""


def sanitize_image(data: bytes, max_pixels: int) -> CleanImage:
    """Decode `data` as JPEG, PNG or WebP and return a re-encoded copy without metadata, or refuse it."""
    if not data:
        raise HTTPException(422, "the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise HTTPException(422, f"image has too many pixels: at most {max_pixels} are accepted") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise HTTPException(415, "not an image we can read: upload a JPEG, PNG or WebP file") from None
    with image:
        if image.format not in FORMATS:
            raise HTTPException(415, f"unsupported image type {image.format}: upload a JPEG, PNG or WebP file")
        width, height = image.size
        if width * height > max_pixels:
            raise HTTPException(422, f"image has too many pixels ({width}x{height}): at most {max_pixels} are accepted")
        if image.format != "MPO" and _trailing_bytes(data, image.format).strip(b"\x00"):
            raise HTTPException(422, "the file carries extra data after the image (a polyglot file): upload a plain image")
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError):
            raise HTTPException(422, "the image is truncated or corrupt") from None
        extension, content_type, save = FORMATS[image.format]
        mode = "RGBA" if extension != "jpg" and upright.mode in ("RGBA", "LA", "PA") else "RGB"
        pixels = upright.convert(mode)
    # A new image from raw pixels carries no EXIF, ICC, XMP or text chunks from the upload.
    clean = Image.frombytes(mode, pixels.size, pixels.tobytes())
    buffer = io.BytesIO()
    clean.save(buffer, **save)
    return CleanImage(buffer.getvalue(), extension, content_type, *clean.size)
