"""A whole job with S3Storage: boto3 against an S3-compatible server on 127.0.0.1 (moto), presigned URLs."""

from __future__ import annotations

import io
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import pytest
from PIL import Image

from tests.conftest import fresh_database
from tests.integration.conftest import IMAGE_SIZE, UNLIMITED
from tests.integration.test_service import NAVY, _wait
from tests.services import Services
from tests.upload_files import image_bytes

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3_service(services: Services, server_url, s3_server, tmp_path_factory) -> Iterator[tuple[str, str]]:
    """A second service with its own database, so the first one's runner never takes its jobs."""
    with fresh_database(server_url) as database_url:
        yield from _s3_service(services, database_url, s3_server, tmp_path_factory)


def _s3_service(services: Services, database_url, s3_server, tmp_path_factory) -> Iterator[tuple[str, str]]:
    bucket = s3_server.new_bucket()
    root = tmp_path_factory.mktemp("s3-service")
    settings = {"database_url": database_url, "data_dir": str(root / "data"), "model_profile": "tiny-random",
                "image_size": IMAGE_SIZE, "poll_seconds": 0.5, "storage_backend": "s3", "s3_bucket": bucket,
                "s3_endpoint_url": s3_server.endpoint_url, "s3_region": "us-east-1",
                "s3_access_key_id": "testing", "s3_secret_access_key": "testing", **UNLIMITED}
    with services.own(root, settings) as launched:
        yield launched.base_url, bucket


def test_upload_job_and_results_live_in_the_bucket(s3_service, s3_server):
    base_url, bucket = s3_service
    s3 = s3_server.client()
    with httpx.Client(base_url=base_url, timeout=30) as client:
        assert client.get("/health").json()["storage"] == {"ok": True}
        upload = client.post("/upload-swatch", files={"file": ("s.webp", image_bytes("WEBP"), "image/webp")})
        assert upload.status_code == 201, upload.text
        swatch_url = upload.json()["swatch_url"]
        assert swatch_url.startswith(f"{s3_server.endpoint_url}/{bucket}/temp-uploads/") and "X-Amz-Signature" in swatch_url
        job = client.post("/generate", json={**NAVY, "cuts": ["recto", "cruzado"], "swatch_url": swatch_url})
        assert job.status_code == 202, job.text
        final, _ = _wait(client, job.json()["job_id"])
        catalog_url = client.get("/catalog").json()["families"][0]["colors"][0]["swatch_url"]
    assert final["status"] == "completed", final
    assert [p["ip_adapter_fallback"] for p in final["progress"]] == [False, False]

    keys = {obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    job_id = final["job_id"]
    result_keys = [urlparse(url).path.split(f"/{bucket}/", 1)[1] for url in final["result_urls"]]
    assert [key.rsplit("/", 1)[1] for key in result_keys] == ["recto.jpg", "cruzado.jpg"]
    assert all(key.startswith("generated/lana-fria/lana-fria-azul-marino/") and job_id not in key for key in result_keys)
    expected = set(result_keys)
    assert expected <= keys
    assert any(k.startswith("temp-uploads/") and k.endswith(".webp") for k in keys)
    assert "SASTRE 2026-27/095T-0121.png" in keys  # catalog swatches were put into the configured storage
    for key in expected:
        assert s3.head_object(Bucket=bucket, Key=key)["ContentType"] == "image/jpeg"
    for url, key in zip(final["result_urls"], result_keys):
        response = httpx.get(url)
        assert response.status_code == 200
        assert response.content == s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        with Image.open(io.BytesIO(response.content)) as image:
            assert image.format == "JPEG" and image.size == (IMAGE_SIZE, IMAGE_SIZE)
    assert httpx.get(catalog_url).status_code == 200
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert any(r["Filter"] == {"Prefix": "temp-uploads/"} and r["Expiration"] == {"Days": 1} for r in rules)
