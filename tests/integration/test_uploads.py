"""Swatch uploads and swatch_url handling over HTTP, against the running service (local storage)."""

from __future__ import annotations

import io
import json
import os
import time
from datetime import datetime, timedelta, timezone

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from db.models import GenerationJob
from tests.integration.test_service import NAVY, _wait
from tests.upload_files import REFUSED_IMAGES, STRIPES, image_bytes, jpeg_with_gps, striped_photo

pytestmark = pytest.mark.integration


def _upload(client: httpx.Client, data: bytes, name: str = "swatch.png", declared: str = "image/png") -> httpx.Response:
    return client.post("/upload-swatch", files={"file": (name, data, declared)})


def _rows(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(GenerationJob))


def test_upload_returns_an_expiring_url_of_ours_and_the_swatch_drives_a_job(service):
    with service.client() as client:
        response = _upload(client, image_bytes("PNG", color=(200, 30, 30)), name="red.jpg", declared="image/jpeg")
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["swatch_url"].startswith(f"{service.base_url}/media/temp-uploads/")
        assert body["swatch_url"].endswith(".png")  # decided by decoding, not by the name or declared type
        fetched = client.get(body["swatch_url"])
        assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
        job = client.post("/generate", json={**NAVY, "cuts": ["recto"], "swatch_url": body["swatch_url"]})
        assert job.status_code == 202, job.text
        final, _ = _wait(client, job.json()["job_id"])
    assert final["status"] == "completed" and final["swatch_url"] == body["swatch_url"]
    assert final["progress"][0]["ip_adapter_fallback"] is False
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(hours=23, minutes=59) < expires - datetime.now(timezone.utc) <= timedelta(hours=24)


def test_a_job_s_previews_keep_working_after_every_upload_expired(service):
    """Its `preview_url` names the job, whose own copy of the swatch outlives `temp-uploads/`."""
    with service.client() as client:
        upload = _upload(client, image_bytes("PNG", color=(30, 120, 60)))
        assert upload.status_code == 201, upload.text
        accepted = client.post("/generate", json={**NAVY, "cuts": ["recto"], "swatch_url": upload.json()["swatch_url"]})
        assert accepted.status_code == 202, accepted.text
        job_id, preview_url = accepted.json()["job_id"], accepted.json()["preview_urls"]["recto"]
        assert preview_url == f"/preview?job_id={job_id}&cut=recto"
        for stored in service.uploads.glob("*"):  # what expiry does: everything under temp-uploads/ is gone
            stored.unlink()

        preview = client.get(preview_url)
        polled = client.get(f"/jobs/{job_id}").json()

    assert preview.status_code == 200, preview.text
    assert preview.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(preview.content)) as image:
        assert image.format == "JPEG" and image.size == (512, 512)
    assert polled["progress"][0]["preview_url"] == preview_url


def test_gps_metadata_never_reaches_storage(service):
    with service.client() as client:
        response = _upload(client, jpeg_with_gps(), name="IMG_0001.jpg", declared="image/jpeg")
        assert response.status_code == 201, response.text
        stored = client.get(response.json()["swatch_url"]).content
    assert b"Exif" not in stored and b"PhoneMaker" not in stored
    with Image.open(io.BytesIO(stored)) as image:
        assert image.format == "JPEG" and not image.getexif().get_ifd(0x8825)


BAD_UPLOADS = [*REFUSED_IMAGES, ("6 MB", os.urandom(6 * 1024 * 1024), "big.jpg", 413, "too large")]


@pytest.mark.parametrize("case,data,name,status,message", BAD_UPLOADS, ids=[c[0] for c in BAD_UPLOADS])
def test_bad_uploads_are_refused_and_nothing_is_stored(service, case, data, name, status, message):
    before = service.stored_uploads()
    with service.client() as client:
        response = _upload(client, data, name=name)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert service.stored_uploads() == before


def test_50_mb_streamed_body_is_refused(service):
    before = service.stored_uploads()

    def body():
        yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="huge.png"\r\n\r\n'
        for _ in range(800):
            yield b"\x00" * 65536
        yield b"\r\n--B--\r\n"

    with service.client() as client:
        response = client.post("/upload-swatch", content=body(), headers={"content-type": "multipart/form-data; boundary=B"})
    assert response.status_code == 413 and "too large" in response.json()["detail"]
    assert service.stored_uploads() == before


def test_a_large_photo_is_stored_at_swatch_size_and_renders(service):
    with service.client() as client:
        response = _upload(client, striped_photo("JPEG", (4000, 3000), quality=95), name="IMG_2001.jpg",
                           declared="image/jpeg")
        assert response.status_code == 201, response.text
        stored = client.get(response.json()["swatch_url"]).content
        job = client.post("/generate", json={**NAVY, "cuts": ["recto"], "swatch_url": response.json()["swatch_url"]})
        final, _ = _wait(client, job.json()["job_id"])
    with Image.open(io.BytesIO(stored)) as image:
        assert image.format == "JPEG" and image.size == (1024, 768)
        mean = np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)
    assert np.abs(mean - np.mean(STRIPES, axis=0)).max() < 4, mean
    assert final["status"] == "completed" and final["progress"][0]["ip_adapter_fallback"] is False


def test_a_json_body_over_64_kib_is_a_413_through_the_service_and_writes_nothing(service, service_engine):
    """Through the proxy and the ingress replica: declared and chunked alike, before the route parses it."""
    body = json.dumps({**NAVY, "cuts": ["recto"], "padding": "x" * (80 * 1024)}).encode()
    before = _rows(service_engine)
    with service.client() as client:
        declared = client.post("/generate", content=body, headers={"content-type": "application/json"})
        chunked = client.post("/generate", content=(body[i:i + 8192] for i in range(0, len(body), 8192)),
                              headers={"content-type": "application/json"})
    assert declared.status_code == chunked.status_code == 413, (declared.text, chunked.text)
    assert declared.json() == chunked.json() == {"detail": "request body too large: the limit is 64 KiB"}
    assert _rows(service_engine) == before


def test_a_swatch_unreadable_at_run_time_falls_back_to_ip_scale_zero(service):
    with service.client() as client:
        url = _upload(client, image_bytes("PNG")).json()["swatch_url"]
        (service.uploads / url.rsplit("/", 1)[1]).write_bytes(b"corrupted after upload")
        job = client.post("/generate", json={**NAVY, "cuts": ["recto", "cruzado"], "swatch_url": url}).json()
        final, _ = _wait(client, job["job_id"])
    assert final["status"] == "completed"
    assert [p["ip_adapter_fallback"] for p in final["progress"]] == [True, True]


def _ssrf_cases(service, client) -> list[tuple[str, str]]:
    upload = _upload(client, image_bytes("PNG")).json()["swatch_url"]
    expired = _upload(client, image_bytes("PNG")).json()["swatch_url"]
    old = time.time() - 25 * 3600
    os.utime(service.uploads / expired.rsplit("/", 1)[1], (old, old))
    done = client.post("/generate", json={**NAVY, "cuts": ["recto"]}).json()["job_id"]
    generated = _wait(client, done)[0]["result_urls"][0]
    name = upload.rsplit("/", 1)[1]
    base = service.base_url
    return [
        ("another host", f"http://evil.example/media/temp-uploads/{name}"),
        ("file scheme", "file:///etc/passwd"),
        ("loopback elsewhere", f"http://127.0.0.1/media/temp-uploads/{name}"),
        ("metadata service", "http://169.254.169.254/latest/meta-data/iam/security-credentials/"),
        ("our result, not a swatch", generated),
        ("dot-dot", f"{base}/media/temp-uploads/../generated/x.jpg"),
        ("encoded dot-dot", f"{base}/media/temp-uploads/%2e%2e/%2e%2e/etc/passwd"),
        ("query smuggling", f"{upload}?next=http://169.254.169.254/"),
        ("never uploaded", f"{base}/media/temp-uploads/00000000-0000-0000-0000-000000000000.png"),
        ("expired upload", expired),
    ]


def test_swatch_urls_we_did_not_issue_are_refused_and_nothing_is_written(service, service_engine):
    with service.client() as client:
        cases = _ssrf_cases(service, client)
        before = _rows(service_engine)
        for case, url in cases:
            response = client.post("/generate", json={**NAVY, "cuts": ["recto"], "swatch_url": url})
            assert response.status_code == 422, (case, response.text)
            detail = response.json()["detail"]
            assert "issued by this service" in detail or "expired" in detail or "does not exist" in detail, (case, detail)
        assert _rows(service_engine) == before
        # The catalog's own swatch URLs are accepted.
        catalog_swatch = client.get("/catalog").json()["families"][0]["colors"][1]["swatch_url"]
        accepted = client.post("/generate", json={**NAVY, "cuts": ["recto"], "swatch_url": catalog_swatch})
    assert accepted.status_code == 202
