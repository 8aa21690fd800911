"""S3 storage on the real application (Ray Serve over HTTP, boto3 against moto on 127.0.0.1): a whole
job with presigned URLs, then storage faults and a stuck generator.

The service reaches its bucket through a TCP proxy on 127.0.0.1 that forwards (the whole-job test),
or can answer swatch reads with a 503 or accept them and never answer; its stage timeout is short (5 s), its S3 client's timeouts are
boto3's (60 s), longer than that. A fault-injection file (refused in production) makes every
generator model call hang, as a stuck CUDA call would.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from PIL import Image
from sqlalchemy.orm import sessionmaker

from db import jobs
from db.engine import make_engine, make_sessionmaker
from serve_app.launcher import Launched
from tests.conftest import fresh_database
from tests.integration.test_service import NAVY, _wait
from tests.services import Services
from tests.storage_faults import FaultProxy, MotoServer
from tests.upload_files import image_bytes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STAGE_TIMEOUT = 5
IMAGE_SIZE = 64
GENERATOR = "ServeReplica:sastre:SdxlTurboGenerator"


@dataclass
class FaultyStore:
    launched: Launched
    sessions: sessionmaker
    moto: MotoServer
    proxy: FaultProxy
    bucket: str
    stall_file: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.launched.base_url, timeout=30)

    def attempt(self, job_id: str) -> int:
        """The attempt the job's (single) cut is on; each earlier one failed."""
        with self.sessions() as session:
            job = jobs.get_job(session, job_id)
        assert job.status in ("pending", "processing"), (job.status, job.error_message)
        return max((entry.get("attempt", 0) for entry in job.cut_progress.values()), default=0)

    def until_attempt(self, job_id: str, attempt: int, timeout: float) -> float:
        """Seconds until the job's cut is on `attempt`."""
        started = time.monotonic()
        while self.attempt(job_id) < attempt:
            assert time.monotonic() - started < timeout, f"job {job_id} not on attempt {attempt} after {timeout} s"
            time.sleep(0.05)
        return time.monotonic() - started

    def generator(self, timeout: float = 180, other_than: int | None = None) -> int:
        """The PID of the single generator replica (one other than `other_than`, if given)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.launched.processes(GENERATOR)
            if len(pids) == 1 and pids[0] != other_than:
                return pids[0]
            time.sleep(0.2)
        raise AssertionError(f"no single new generator replica: {self.launched.processes(GENERATOR)}")


@pytest.fixture(scope="module")
def store(services: Services, server_url, tmp_path_factory) -> Iterator[FaultyStore]:
    moto = MotoServer()
    proxy = FaultProxy(moto.port)
    bucket = "faulty-store"
    moto.client().create_bucket(Bucket=bucket)
    root = tmp_path_factory.mktemp("stage-faults")
    stall_file = root / "stall-the-generator"
    with fresh_database(server_url) as database_url:
        engine = make_engine(database_url)
        settings = {"database_url": database_url, "data_dir": str(root / "data"), "model_profile": "tiny-random",
                    "image_size": IMAGE_SIZE, "poll_seconds": 0.5, "storage_backend": "s3", "s3_bucket": bucket,
                    "s3_endpoint_url": proxy.endpoint_url, "s3_region": "us-east-1", "s3_access_key_id": "testing",
                    "s3_secret_access_key": "testing", "stage_timeout_seconds": STAGE_TIMEOUT, "cut_attempts": 12,
                    "cut_retry_seconds": 0.5, "fault_stall_file": str(stall_file)}
        try:
            with services.own(root, settings) as launched:
                yield FaultyStore(launched, make_sessionmaker(engine), moto, proxy, bucket, stall_file)
        finally:
            engine.dispose()
            proxy.close()
            moto.stop()


def _submit(client: httpx.Client, color_id: str = NAVY["color_id"]) -> str:
    response = client.post("/generate", json={**NAVY, "color_id": color_id, "cuts": ["recto"]})
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def test_upload_job_and_results_live_in_the_bucket(store):
    s3, bucket, endpoint = store.moto.client(), store.bucket, store.proxy.endpoint_url
    with store.client() as client:
        assert client.get("/health").json()["storage"] == {"ok": True}
        upload = client.post("/upload-swatch", files={"file": ("s.webp", image_bytes("WEBP"), "image/webp")})
        assert upload.status_code == 201, upload.text
        swatch_url = upload.json()["swatch_url"]
        assert swatch_url.startswith(f"{endpoint}/{bucket}/temp-uploads/") and "X-Amz-Signature" in swatch_url
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


def test_a_5xx_on_swatch_reads_is_retried_and_never_degrades_the_job(store):
    with store.client() as client:
        store.proxy.set_mode("fail-reads")
        try:
            job_id = _submit(client)
            store.until_attempt(job_id, 2, timeout=60)  # the first attempt met the 503s and failed
        finally:
            store.proxy.set_mode("forward")
        final, _ = _wait(client, job_id)
    assert final["status"] == "completed", final
    assert final["progress"][0]["ip_adapter_fallback"] is False  # rendered from the swatch, once it could be read


def test_a_deleted_swatch_falls_back_and_is_flagged(store):
    key = "SASTRE 2026-27/095T-0154.png"  # lana-fria-negro's catalog swatch
    s3 = store.moto.client()
    kept = s3.get_object(Bucket=store.bucket, Key=key)["Body"].read()
    s3.delete_object(Bucket=store.bucket, Key=key)
    try:
        with store.client() as client:
            final, _ = _wait(client, _submit(client, "lana-fria-negro"))
    finally:
        s3.put_object(Bucket=store.bucket, Key=key, Body=kept, ContentType="image/png")
    assert final["status"] == "completed", final
    assert final["progress"][0]["ip_adapter_fallback"] is True


def test_a_swatch_read_that_never_answers_times_out_and_the_retry_completes(store):
    generator = store.generator()
    with store.client() as client:
        store.proxy.set_mode("stall-reads")
        try:
            # A color no earlier test rendered here: the generator holds no embedding of its swatch, so it reads it.
            job_id = _submit(client, "lana-fria-gris-carbon")
            first_attempt = store.until_attempt(job_id, 2, timeout=60)
            assert store.proxy.stalled >= 1
        finally:
            store.proxy.set_mode("forward")  # the hang is gone
        final, _ = _wait(client, job_id)
    assert first_attempt < STAGE_TIMEOUT + 5, f"the stalled attempt held the job {first_attempt:.1f} s"
    assert final["status"] == "completed", final
    assert final["progress"][0]["ip_adapter_fallback"] is False
    # A stalled store is not a stuck replica: its model stayed free, so Serve kept it.
    assert store.launched.processes(GENERATOR) == [generator]


def test_a_stuck_model_call_fails_the_health_check_and_serve_replaces_the_replica(store):
    stuck = store.generator()
    with store.client() as client:
        store.stall_file.touch()
        try:
            job_id = _submit(client)
            first_attempt = store.until_attempt(job_id, 2, timeout=60)
            health = client.get("/health").json()["deployments"]["SdxlTurboGenerator"]
            replacement = store.generator(other_than=stuck)
        finally:
            store.stall_file.unlink()
        final, _ = _wait(client, job_id, timeout=180)
    assert first_attempt < STAGE_TIMEOUT + 5, f"the stuck attempt held the job {first_attempt:.1f} s"
    assert health["ok"] is False, health  # its check_health failed while the model call hung
    assert replacement != stuck
    assert final["status"] == "completed", final
