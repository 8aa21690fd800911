"""Swatch uploads: read the multipart body as a stream under a size cap, then decide by decoding
whether it is an image we take, and store only a re-encoded, metadata-free copy at the size a swatch
is used at (`deployments/swatch_size.py`: at most 1024 px on its long side).

Nothing the client declares (content type, file name) is trusted; nothing is stored until the image
has been fully decoded and re-encoded.
"""

from __future__ import annotations

import asyncio
import io
import logging
import uuid
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from fastapi import HTTPException, Request
from PIL import Image, ImageOps, UnidentifiedImageError
from python_multipart.multipart import parse_options_header
from starlette.types import Message, Receive

from deployments import metrics
from deployments.storage import UPLOAD_PREFIX, Storage, StorageError
from deployments.swatch_size import decode_reduced, downscaled
from serve_app.deps import Services
from serve_app.settings import Settings
from serve_app.uploads.schemas import UploadOut

logger = logging.getLogger("sastre.api")

MULTIPART_OVERHEAD = 16 * 1024  # boundaries, part headers and the few small fields around the file
MAX_FILES = 1  # the image
MAX_FIELDS = 8  # small fields a form may send besides it (ignored)
MAX_FIELD_BYTES = 1024  # each


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


class _CappedBody:
    """The request's receive channel, refusing the body once more than `limit` bytes have arrived.

    The multipart parser reads through it, so an oversized body is refused while it streams in.
    """

    def __init__(self, receive: Receive, limit: int, max_bytes: int) -> None:
        self.receive, self.limit, self.max_bytes = receive, limit, max_bytes
        self.received = 0

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                raise _too_large(self.max_bytes)
        return message


def _too_large(max_bytes: int) -> HTTPException:
    return HTTPException(413, f"file too large: the limit is {max_bytes // (1024 * 1024)} MB")


async def read_file_field(request: Request, field: str, max_bytes: int) -> bytes:
    """The bytes of multipart field `field`, refusing bodies over the cap as they stream in.

    Starlette's parser (python-multipart) does the parsing; a malformed body is its 400. Besides the
    file, a form may carry a few small fields, which are ignored.
    """
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise HTTPException(415, f"send multipart/form-data with the image in a field named '{field}'")
    body_limit = max_bytes + MULTIPART_OVERHEAD
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > body_limit:
        raise _too_large(max_bytes)
    capped = Request(request.scope, _CappedBody(request.receive, body_limit, max_bytes))
    form = await capped.form(max_files=MAX_FILES, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD_BYTES)
    try:
        part = form.get(field)
        if part is None:
            raise HTTPException(422, f"missing the '{field}' field")
        if isinstance(part, str):
            raise HTTPException(422, f"send the image as a file in the '{field}' field")
        return await part.read()
    finally:
        await form.close()


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
    """Decode `data` as JPEG, PNG or WebP and return a re-encoded, downscaled copy without metadata, or
    refuse it.

    The full-size picture is decoded once at most (a JPEG not even that: its decoder skips the detail)
    and shrunk before anything else touches it: rotating, converting and encoding work on the swatch
    as stored, not on the 25 MP a phone or a hostile client sends."""
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
            upright = ImageOps.exif_transpose(downscaled(decode_reduced(image)))
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


async def clean_upload(services: Services, data: bytes) -> CleanImage:
    """`sanitize_image` on a thread, in one of the replica's decode slots, or a 503 when all are taken.

    A full-size PNG still decodes whole (~75 MB for 25 MP) and takes a core for a second, so a burst of
    them would grow the replica's memory and starve its other routes; refused at once, the client
    retries after `Retry-After` while the replica serves everyone else."""
    if not services.upload_decodes.acquire(blocking=False):
        metrics.refused("upload_decodes_busy")
        raise HTTPException(503, "busy decoding other uploads, retry shortly", headers={"Retry-After": "1"})
    try:
        return await asyncio.to_thread(sanitize_image, data, services.settings.upload_max_pixels)
    finally:
        services.upload_decodes.release()


def store_upload(storage: Storage, settings: Settings, image: CleanImage) -> UploadOut:
    """Keep a clean image under `temp-uploads/` (it expires after `upload_ttl_hours`)."""
    key = f"{UPLOAD_PREFIX}{uuid.uuid4()}.{image.extension}"
    try:
        url = storage.put(key, image.data, image.content_type)
    except StorageError:
        logger.exception("storing upload %s failed", key)
        raise HTTPException(503, "storage unavailable, retry shortly") from None
    return UploadOut(swatch_url=url, expires_at=datetime.now(timezone.utc) + timedelta(hours=settings.upload_ttl_hours))
