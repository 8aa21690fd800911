"""A job owns its swatch from the moment it is accepted: upload expiry never changes a queued job.

The real API (FastAPI app, no Ray), the real runner and upload sweeper, on PostgreSQL and local
storage, with an upload TTL of one second.
"""

from __future__ import annotations

import time

import pytest

from db import jobs
from deployments.digests import swatch_digest
from deployments.generation import CutGenerator
from deployments.storage import LocalStorage
from serve_app.deps import Services
from serve_app.jobqueue.worker import JobWorker
from serve_app.settings import Settings
from tests.in_process import ADMIN_SECRET, admin_headers, catalog_services, job_worker, render_chain, run_job
from tests.unit.test_api import call
from tests.upload_files import image_bytes

TTL_SECONDS = 1.0
NAVY = {"family_id": "lana-fria", "color_id": "lana-fria-azul-marino", "cuts": ["recto"], "seed": 3}


@pytest.fixture
def service(sessions, database_url, tmp_path, model):
    storage = LocalStorage(tmp_path, "http://testserver/media")
    settings = Settings(data_dir=tmp_path, upload_ttl_hours=TTL_SECONDS / 3600)
    services = catalog_services(sessions, storage, settings, jwt_secret=ADMIN_SECRET)
    chain = render_chain(CutGenerator(model, storage), storage)
    runner = job_worker(sessions, database_url, services.catalog, chain, storage=storage,
                        upload_ttl_seconds=settings.upload_ttl_hours * 3600, cut_attempts=1)
    return services, runner, storage, admin_headers(sessions)


def _accept_with_upload(services: Services) -> tuple[str, str]:
    upload = call(services, "POST", "/upload-swatch", files={"file": ("s.png", image_bytes("PNG"), "image/png")})
    assert upload.status_code == 201, upload.text
    swatch_url = upload.json()["swatch_url"]
    accepted = call(services, "POST", "/generate", json={**NAVY, "swatch_url": swatch_url})
    assert accepted.status_code == 202, accepted.text
    return accepted.json()["job_id"], services.storage.key_for_url(swatch_url)


def _expire_uploads(runner: JobWorker, storage: LocalStorage, upload_key: str) -> None:
    """Let the TTL pass and run the runner's sweep, as it does every few minutes."""
    time.sleep(TTL_SECONDS + 0.2)
    runner._next_sweep = 0.0  # due now
    runner._housekeeping()
    assert not storage.exists(upload_key), "the sweep should have expired the upload"


def test_a_pending_job_keeps_its_swatch_after_the_upload_expires(service, sessions):
    services, runner, storage, _ = service
    job_id, upload_key = _accept_with_upload(services)
    _expire_uploads(runner, storage, upload_key)

    job = run_job(runner, sessions, job_id)
    assert job.status == "completed", job.error_message
    assert job.cut_progress["recto"]["ip_adapter_fallback"] is False  # rendered from the customer's swatch
    assert job.swatch_key == f"jobs/{job_id}/swatch.png"
    assert job.swatch_digest == swatch_digest(storage.get(job.swatch_key))  # digested once, when accepted
    assert storage.exists(job.swatch_key)  # the copy lives as long as the job: its previews draw it


def test_a_job_s_previews_draw_its_own_swatch_after_the_upload_expired(service, sessions):
    services, runner, storage, _ = service
    job_id, upload_key = _accept_with_upload(services)
    preview_url = call(services, "GET", f"/jobs/{job_id}").json()["progress"][0]["preview_url"]
    assert preview_url == f"/preview?job_id={job_id}&cut=recto"  # not the upload's URL, which expires
    before = call(services, "GET", preview_url)
    _expire_uploads(runner, storage, upload_key)

    after = call(services, "GET", preview_url)
    assert after.status_code == 200, after.text
    assert after.headers["content-type"] == "image/jpeg" and after.content == before.content
    with sessions() as s:
        digest = jobs.get_job(s, job_id).swatch_digest
    assert after.headers["etag"].startswith(f'"{digest[:32]}-')  # the swatch's identity is the row's digest


def test_a_canceled_pending_job_keeps_its_copy_until_it_ages_out(service, sessions):
    services, _, storage, _ = service
    job_id, _ = _accept_with_upload(services)
    with sessions() as s:
        owned = jobs.get_job(s, job_id).swatch_key
    assert storage.exists(owned)
    assert call(services, "POST", f"/jobs/{job_id}/cancel").status_code == 200
    assert storage.exists(owned)  # its previews still draw it; the prune deletes it with the row
    named = call(services, "POST", "/generate", json={**NAVY, "swatch_url": storage.url_for(owned)})
    assert named.status_code == 422  # a job's copy is not a swatch a client may name


def test_a_failed_job_retried_after_the_upload_expired_renders_from_its_own_copy(service, sessions):
    services, runner, storage, admin = service
    healthy = runner.renderer

    class Down:
        async def render(self, task):
            raise RuntimeError("generator replica unavailable")

    runner.renderer = Down()
    job_id, upload_key = _accept_with_upload(services)
    assert run_job(runner, sessions, job_id).status == "failed"
    _expire_uploads(runner, storage, upload_key)
    with sessions() as s:
        assert storage.exists(jobs.get_job(s, job_id).swatch_key)  # a failed job keeps its copy for a retry

    retried = call(services, "POST", f"/admin/generations/{job_id}/retry", headers=admin)
    assert retried.status_code == 202, retried.text
    runner.renderer = healthy
    job = run_job(runner, sessions, job_id)
    assert job.status == "completed", job.error_message
    assert job.cut_progress["recto"]["ip_adapter_fallback"] is False
