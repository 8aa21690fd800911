"""A job owns its swatch from the moment it is accepted: upload expiry never changes a queued job.

The real API (FastAPI app, no Ray), the real runner and upload sweeper, on PostgreSQL and local
storage, with an upload TTL of one second.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from catalog.data import load_catalog
from catalog.loader import sync_catalog
from db import jobs
from deployments.finishing import Finisher
from deployments.generation import CutGenerator, SdxlTurboModel
from deployments.preprocessing import ControlMapper
from deployments.rendering import RenderChain
from deployments.storage import LocalStorage
from serve_app.deps import Services
from serve_app.admin.auth.service import create_user, issue_token
from serve_app.bootstrap import put_catalog_swatches
from serve_app.runner import JobRunner
from serve_app.settings import Settings
from tests.unit.test_api import call
from tests.upload_files import image_bytes

TTL_SECONDS = 1.0
NAVY = {"family_id": "lana-fria", "color_id": "lana-fria-azul-marino", "cuts": ["recto"], "seed": 3}
SECRET = "a-test-secret-that-is-long-enough-for-hs256"


@pytest.fixture(scope="module")
def model() -> SdxlTurboModel:
    return SdxlTurboModel.from_profile("tiny-random", device="cpu")


@pytest.fixture
def service(sessions, database_url, tmp_path, model):
    catalog = load_catalog()
    with sessions.begin() as s:
        sync_catalog(s, catalog)
        token = issue_token(create_user(s, "ops-admin", "a long enough password"), SECRET, timedelta(minutes=5))
    storage = LocalStorage(tmp_path, "http://testserver/media")
    put_catalog_swatches(storage, catalog)
    settings = Settings(data_dir=tmp_path, upload_ttl_hours=TTL_SECONDS / 3600)
    services = Services(settings=settings, sessions=sessions, storage=storage, catalog=catalog, jwt_secret=SECRET)
    renderer = RenderChain.in_process(ControlMapper(), CutGenerator(model, storage), Finisher(storage), "canny", 64,
                                      stage_timeout_s=60)
    runner = JobRunner(sessions, database_url, catalog, renderer, concurrency=2, lease_seconds=10, poll_seconds=0.2,
                       storage=storage, upload_ttl_seconds=settings.upload_ttl_hours * 3600, cut_attempts=1)
    return services, runner, storage, token


def _run(runner: JobRunner, sessions, job_id: str, timeout: float = 60):
    async def go():
        task = asyncio.create_task(runner.run_forever())
        try:
            async with asyncio.timeout(timeout):
                while True:
                    with sessions() as s:
                        job = jobs.get_job(s, job_id)
                    if job.status in ("completed", "failed"):
                        return job
                    await asyncio.sleep(0.05)
        finally:
            runner.stop()
            await task
    return asyncio.run(go())


def _accept_with_upload(services: Services) -> tuple[str, str]:
    upload = call(services, "POST", "/upload-swatch", files={"file": ("s.png", image_bytes("PNG"), "image/png")})
    assert upload.status_code == 201, upload.text
    swatch_url = upload.json()["swatch_url"]
    accepted = call(services, "POST", "/generate", json={**NAVY, "swatch_url": swatch_url})
    assert accepted.status_code == 202, accepted.text
    return accepted.json()["job_id"], services.storage.key_for_url(swatch_url)


def _expire_uploads(runner: JobRunner, storage: LocalStorage, upload_key: str) -> None:
    """Let the TTL pass and run the runner's sweep, as it does every few minutes."""
    time.sleep(TTL_SECONDS + 0.2)
    runner._next_sweep = 0.0  # due now
    runner._housekeeping()
    assert not storage.exists(upload_key), "the sweep should have expired the upload"


def test_a_pending_job_keeps_its_swatch_after_the_upload_expires(service, sessions):
    services, runner, storage, _ = service
    job_id, upload_key = _accept_with_upload(services)
    _expire_uploads(runner, storage, upload_key)

    job = _run(runner, sessions, job_id)
    assert job.status == "completed", job.error_message
    assert job.cut_progress["recto"]["ip_adapter_fallback"] is False  # rendered from the customer's swatch
    assert job.swatch_key == f"jobs/{job_id}/swatch.png"
    assert not storage.exists(job.swatch_key)  # retention: the job's copy goes once it has completed


def test_a_canceled_pending_job_drops_its_copy(service, sessions):
    services, _, storage, _ = service
    job_id, _ = _accept_with_upload(services)
    with sessions() as s:
        owned = jobs.get_job(s, job_id).swatch_key
    assert storage.exists(owned)
    assert call(services, "POST", f"/jobs/{job_id}/cancel").status_code == 200
    assert not storage.exists(owned)
    named = call(services, "POST", "/generate", json={**NAVY, "swatch_url": storage.url_for(owned)})
    assert named.status_code == 422  # a job's copy is not a swatch a client may name


def test_a_failed_job_retried_after_the_upload_expired_renders_from_its_own_copy(service, sessions):
    services, runner, storage, token = service
    healthy = runner.renderer

    class Down:
        async def render(self, task):
            raise RuntimeError("generator replica unavailable")

    runner.renderer = Down()
    job_id, upload_key = _accept_with_upload(services)
    assert _run(runner, sessions, job_id).status == "failed"
    _expire_uploads(runner, storage, upload_key)
    with sessions() as s:
        assert storage.exists(jobs.get_job(s, job_id).swatch_key)  # a failed job keeps its copy for a retry

    retried = call(services, "POST", f"/admin/generations/{job_id}/retry", headers={"Authorization": f"Bearer {token}"})
    assert retried.status_code == 202, retried.text
    runner.renderer = healthy
    job = _run(runner, sessions, job_id)
    assert job.status == "completed", job.error_message
    assert job.cut_progress["recto"]["ip_adapter_fallback"] is False


def test_what_names_a_swatch_s_content_without_reading_it():
    """A job's own copy is written once under its own key; a catalog swatch changes only with its version."""
    from serve_app.job_inputs import swatch_version

    catalog_key = "SASTRE 2026-27/095T-0121.png"
    assert swatch_version("job-1", "jobs/job-1/swatch.png", catalog_key, 3) == "own-copy"
    assert swatch_version("job-1", catalog_key, catalog_key, 3) == "color-v3"
    assert swatch_version("job-1", catalog_key, catalog_key, 4) != swatch_version("job-1", catalog_key, catalog_key, 3)
    assert swatch_version("job-1", "jobs/job-2/swatch.png", catalog_key, 3) is None  # another job's copy: no promise
    assert swatch_version("job-1", "SASTRE 2026-27/other.png", catalog_key, 3) is None
    assert swatch_version("job-1", None, catalog_key, 3) is None
