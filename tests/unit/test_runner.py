"""The JobRunner's loop on a real database, with the workers in-process (no Ray)."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from catalog.data import load_catalog
from catalog.loader import sync_catalog
from db import jobs
from db.engine import make_sessionmaker
from deployments.finishing import Finisher
from deployments.generation import SdxlTurboModel
from deployments.preprocessing import ControlMapper
from deployments.storage import LocalStorage
from serve_app.bootstrap import put_catalog_swatches
from serve_app.renderers import LocalCutRenderer
from serve_app.runner import JobRunner


@pytest.fixture(scope="module")
def model() -> SdxlTurboModel:
    return SdxlTurboModel.from_profile("tiny-random", device="cpu")


@pytest.fixture
def runner(sessions, database_url, tmp_path, model):
    catalog = load_catalog()
    with sessions.begin() as s:
        sync_catalog(s, catalog)
    storage = LocalStorage(tmp_path, "http://127.0.0.1:8000/media")
    put_catalog_swatches(storage, catalog)
    renderer = LocalCutRenderer(ControlMapper(), model, Finisher(storage), storage, "canny", 64)
    return JobRunner(sessions, database_url, catalog, renderer, concurrency=2, lease_seconds=10, poll_seconds=0.2), storage


def _create(sessions, cuts, color="lana-fria-azul-marino", swatch_key="SASTRE 2026-27/095T-0121.png") -> str:
    with sessions.begin() as s:
        return jobs.create_job(s, family_id="lana-fria", color_id=color, cuts=cuts, seed=7, swatch_url=None,
                               swatch_key=swatch_key).job_id


async def _drain(runner: JobRunner, sessions, job_ids: list[str], timeout: float = 60) -> None:
    task = asyncio.create_task(runner.run_forever())
    try:
        async with asyncio.timeout(timeout):
            while True:
                with sessions() as s:
                    if all(jobs.get_job(s, j).status in ("completed", "failed") for j in job_ids):
                        return
                await asyncio.sleep(0.1)
    finally:
        runner.stop()
        await task


def test_runner_completes_jobs_in_cut_order_with_progress(runner, sessions):
    runner, storage = runner
    ids = [_create(sessions, ["cruzado", "recto"]), _create(sessions, ["recto"]), _create(sessions, ["recto"])]
    asyncio.run(_drain(runner, sessions, ids))
    with sessions() as s:
        first = jobs.get_job(s, ids[0])
        others = [jobs.get_job(s, j) for j in ids[1:]]
    assert first.status == "completed" and first.lease_owner is None and first.attempts == 1
    assert [u.rsplit("/", 1)[1] for u in first.result_urls] == ["cruzado.jpg", "recto.jpg"]
    assert first.result_urls[0].endswith(f"generated/lana-fria/lana-fria-azul-marino/{ids[0]}/cruzado.jpg")
    assert first.cut_progress["cruzado"]["status"] == "completed" and first.cut_progress["cruzado"]["seed"] == 7
    assert first.cut_progress["recto"]["seed"] == 8 and not first.cut_progress["recto"]["ip_adapter_fallback"]
    assert all(o.status == "completed" for o in others)
    key = storage.key_for_url(first.result_urls[1])
    with Image.open(io.BytesIO(storage.get(key))) as image:
        assert image.format == "JPEG" and image.size == (64, 64)
    assert not runner.active


def test_missing_swatch_completes_with_fallback_recorded(runner, sessions):
    runner, _ = runner
    job_id = _create(sessions, ["recto"], swatch_key="temp-uploads/gone.png")
    asyncio.run(_drain(runner, sessions, [job_id]))
    with sessions() as s:
        job = jobs.get_job(s, job_id)
    assert job.status == "completed"
    assert job.cut_progress["recto"]["ip_adapter_fallback"] is True


def test_job_for_a_removed_color_fails_with_a_clear_error(runner, sessions):
    runner, _ = runner
    job_id = _create(sessions, ["recto"], color="no-such-color")
    asyncio.run(_drain(runner, sessions, [job_id]))
    with sessions() as s:
        job = jobs.get_job(s, job_id)
    assert job.status == "failed"
    assert "no longer in the catalog" in job.error_message
