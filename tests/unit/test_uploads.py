"""Upload validation: decoding decides, metadata goes, size caps hold while the body streams."""

from __future__ import annotations

import asyncio
import io

import httpx
import numpy as np
import pytest
from fastapi import FastAPI, HTTPException, Request
from PIL import Image

from catalog.data import load_catalog
from deployments.storage import LocalStorage
from deployments.swatch_size import SWATCH_MAX_SIDE
from serve_app.deps import Services
from serve_app.settings import Settings
from serve_app.uploads.service import read_file_field, sanitize_image
from tests.servers import uvicorn_serving
from tests.upload_files import (
    REFUSED_IMAGES,
    STRIPES,
    image_bytes,
    jpeg_with_gps,
    png_declaring,
    rotated_jpeg,
    striped_photo,
)

MAX_PIXELS = 25_000_000


@pytest.mark.parametrize("fmt,ext,content_type", [("JPEG", "jpg", "image/jpeg"), ("PNG", "png", "image/png"),
                                                  ("WEBP", "webp", "image/webp")])
def test_accepted_formats_are_reencoded_in_kind(fmt, ext, content_type):
    clean = sanitize_image(image_bytes(fmt), MAX_PIXELS)
    assert (clean.extension, clean.content_type, clean.width, clean.height) == (ext, content_type, 64, 48)
    with Image.open(io.BytesIO(clean.data)) as image:
        assert image.format == fmt and image.size == (64, 48)


def test_exif_and_gps_are_stripped_and_orientation_applied():
    source = jpeg_with_gps()
    assert b"PhoneMaker" in source
    clean = sanitize_image(source, MAX_PIXELS)
    assert b"Exif" not in clean.data and b"PhoneMaker" not in clean.data
    with Image.open(io.BytesIO(clean.data)) as image:
        assert not image.getexif() and not image.getexif().get_ifd(0x8825)
    upright = sanitize_image(rotated_jpeg(), MAX_PIXELS)
    assert (upright.width, upright.height) == (32, 64)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_a_large_photo_is_stored_at_swatch_size_in_its_own_colour(fmt):
    """A 4000x3000 photo is kept at 1024x768, what the preview and the IP-Adapter can use, and its
    mean colour (the cloth the shopper chose) survives the downscaling."""
    clean = sanitize_image(striped_photo(fmt, (4000, 3000), quality=95), MAX_PIXELS)
    assert (clean.width, clean.height) == (SWATCH_MAX_SIDE, 768)
    with Image.open(io.BytesIO(clean.data)) as image:
        assert image.format == fmt and image.size == (SWATCH_MAX_SIDE, 768)
        mean = np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)
    assert np.abs(mean - np.mean(STRIPES, axis=0)).max() < 4, mean


def test_a_large_turned_jpeg_is_downscaled_and_stored_upright():
    """Stored 3000x1500 with its left half red, EXIF orientation 6 (turn 90° clockwise to show)."""
    clean = sanitize_image(striped_photo("JPEG", (3000, 1500), stripe_px=1500, orientation=6), MAX_PIXELS)
    assert (clean.width, clean.height) == (512, SWATCH_MAX_SIDE)
    with Image.open(io.BytesIO(clean.data)) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    top, bottom = pixels[:400].reshape(-1, 3).mean(axis=0), pixels[-400:].reshape(-1, 3).mean(axis=0)
    assert np.abs(top - STRIPES[0]).max() < 4 and np.abs(bottom - STRIPES[1]).max() < 4, (top, bottom)


REFUSALS = [
    *((case, data, status, message) for case, data, _, status, message in REFUSED_IMAGES),
    ("6000x5000 PNG", png_declaring(6000, 5000), 422, "too many pixels"),  # 30 M pixels: just over MAX_PIXELS
    ("JPEG+PHP polyglot", image_bytes("JPEG") + b"<?php system($_GET['c']); ?>", 422, "polyglot"),
]


@pytest.mark.parametrize("case,data,status,message", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals(case, data, status, message):
    with pytest.raises(HTTPException) as refused:
        sanitize_image(data, MAX_PIXELS)
    assert refused.value.status_code == status
    assert message in refused.value.detail


def _app(limit: int) -> FastAPI:
    app = FastAPI()

    @app.post("/upload")
    async def upload(request: Request) -> dict:
        return {"size": len(await read_file_field(request, "file", limit))}

    return app


def _multipart(payload_size: int, chunk: int = 64 * 1024):
    """A streamed multipart body (no Content-Length) and a counter of the bytes the server pulled."""
    sent = {"bytes": 0}

    async def body():
        head = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
        sent["bytes"] += len(head)
        yield head
        for _ in range(payload_size // chunk):
            sent["bytes"] += chunk
            yield b"\x00" * chunk
        yield b"\r\n--XyZ--\r\n"

    return body(), sent


def test_oversized_body_is_refused_while_streaming_not_after():
    async def scenario() -> tuple[int, int]:
        body, sent = _multipart(50 * 1024 * 1024)
        transport = httpx.ASGITransport(app=_app(5 * 1024 * 1024))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post("/upload", content=body,
                                         headers={"content-type": "multipart/form-data; boundary=XyZ"})
        return response.status_code, sent["bytes"]

    status, pulled = asyncio.run(scenario())
    assert status == 413
    assert pulled < 6 * 1024 * 1024  # stopped reading at the cap: 50 MB never reached the server


def test_declared_oversized_body_is_refused_before_reading():
    async def scenario():
        transport = httpx.ASGITransport(app=_app(1024 * 1024))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/upload", content=b"x" * (3 * 1024 * 1024),
                                     headers={"content-type": "multipart/form-data; boundary=XyZ"})

    response = asyncio.run(scenario())
    assert response.status_code == 413 and "too large" in response.json()["detail"]


def test_small_body_reads_only_the_file_field():
    async def scenario():
        transport = httpx.ASGITransport(app=_app(1024 * 1024))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            ok = await client.post("/upload", files={"file": ("a.png", b"12345", "image/png")}, data={"note": "x" * 100})
            wrong_field = await client.post("/upload", files={"image": ("a.png", b"12345", "image/png")})
            not_multipart = await client.post("/upload", json={"file": "x"})
        return ok, wrong_field, not_multipart

    ok, wrong_field, not_multipart = asyncio.run(scenario())
    assert ok.status_code == 200 and ok.json() == {"size": 5}
    assert wrong_field.status_code == 422 and "'file'" in wrong_field.json()["detail"]
    assert not_multipart.status_code == 415


@pytest.mark.parametrize("body,content_type", [
    (b"--B\r\n[]--B--\r\n", "multipart/form-data; boundary=B"),  # what the fuzzer found: a 500
    (b"--B\r\nContent-Disposition: form-data\r\n\r\nx\r\n--B--\r\n", "multipart/form-data; boundary=B"),
    (b"--B\r\n\r\n\r\n--B--\r\n", "multipart/form-data; boundary=B"),
    (b"garbage with no boundary at all", "multipart/form-data; boundary=B"),
    (b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\nab", "multipart/form-data; boundary=B"),
])
def test_malformed_multipart_is_a_4xx(body, content_type):
    async def scenario():
        transport = httpx.ASGITransport(app=_app(1024 * 1024), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/upload", content=body, headers={"content-type": content_type})

    response = asyncio.run(scenario())
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert "detail" in response.json()


def test_parts_and_fields_are_limited():
    files = [("file", ("a.png", b"12345", "image/png")), ("file2", ("b.png", b"12345", "image/png"))]

    async def scenario():
        transport = httpx.ASGITransport(app=_app(1024 * 1024), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            two_files = await client.post("/upload", files=files)
            many_fields = await client.post("/upload", files=files[:1], data={f"f{i}": "x" for i in range(50)})
            big_field = await client.post("/upload", files=files[:1], data={"note": "x" * 100_000})
            text_file = await client.post("/upload", files=[("other", ("b.png", b"1", "image/png"))],
                                          data={"file": "a text field, not a file"})
        return two_files, many_fields, big_field, text_file

    two_files, many_fields, big_field, text_file = asyncio.run(scenario())
    assert two_files.status_code == 400 and "Too many files" in two_files.json()["detail"]
    assert many_fields.status_code == 400 and "Too many fields" in many_fields.json()["detail"]
    assert big_field.status_code == 400 and "maximum size" in big_field.json()["detail"]
    assert text_file.status_code == 422 and "as a file" in text_file.json()["detail"]


def test_uploads_past_the_replica_s_decode_slots_are_a_503_with_retry_after(sessions, tmp_path):
    """Two slots, both taken (as by two 25 MP decodes in flight): the next upload is refused at once
    and nothing is stored; once a slot frees, the same upload is taken."""
    storage = LocalStorage(tmp_path, "http://t/media")
    services = Services(settings=Settings(data_dir=tmp_path, upload_decode_slots=2), sessions=sessions,
                        storage=storage, catalog=load_catalog())
    upload = {"file": ("swatch.png", image_bytes("PNG"), "image/png")}
    with uvicorn_serving(services) as base_url, httpx.Client(base_url=base_url) as client:
        assert services.upload_decodes.acquire(blocking=False) and services.upload_decodes.acquire(blocking=False)
        refused = client.post("/upload-swatch", files=upload)
        stored_meanwhile = list(tmp_path.rglob("*.png"))
        services.upload_decodes.release()
        taken = client.post("/upload-swatch", files=upload)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json() == {"detail": "busy decoding other uploads, retry shortly"}
    assert stored_meanwhile == []
    assert taken.status_code == 201, taken.text
    assert services.upload_decodes.acquire(blocking=False) and not services.upload_decodes.acquire(blocking=False)
