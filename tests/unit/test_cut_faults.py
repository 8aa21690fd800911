"""A cut's storage faults on the runner's real loop: PostgreSQL, moto's S3 on 127.0.0.1 (stopped and
started again, or behind a proxy that stalls reads), the workers in-process.

A swatch that is really gone falls back to IP-Adapter scale 0 and says so; a store that does not
answer is a failed cut attempt, retried, and a stage that never returns is cut off by its timeout.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from catalog.data import load_catalog
from catalog.loader import sync_catalog
from db import jobs
from deployments.finishing import Finisher
from deployments.generation import CutGenerator, SdxlTurboModel
from deployments.preprocessing import ControlMapper
from deployments.rendering import RenderChain
from deployments.storage import S3Storage
from serve_app.bootstrap import put_catalog_swatches
from serve_app.runner import JobRunner
from tests.storage_faults import FaultProxy, MotoServer

SWATCH = "SASTRE 2026-27/095T-0121.png"  # lana-fria-azul-marino's catalog swatch
STAGE_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def model() -> SdxlTurboModel:
    return SdxlTurboModel.from_profile("tiny-random", device="cpu")


@pytest.fixture
def moto():
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def proxy(moto):
    proxy = FaultProxy(moto.port)
    yield proxy
    proxy.close()


def _storage(endpoint_url: str, bucket: str) -> S3Storage:
    return S3Storage(bucket, endpoint_url=endpoint_url, region="us-east-1", access_key_id="testing",
                     secret_access_key="testing")


@pytest.fixture
def bucket(moto, proxy, sessions):
    """A bucket with the catalog swatches; `via_proxy` is how the runner's workers reach it."""
    catalog = load_catalog()
    with sessions.begin() as s:
        sync_catalog(s, catalog)
    name = f"faults-{time.monotonic_ns()}"
    moto.client().create_bucket(Bucket=name)
    direct = _storage(moto.endpoint_url, name)
    put_catalog_swatches(direct, catalog)
    return direct, _storage(proxy.endpoint_url, name)


def _runner(sessions, database_url, model, swatches, results, cut_attempts=4) -> JobRunner:
    renderer = RenderChain.in_process(ControlMapper(), CutGenerator(model, swatches), Finisher(results), "canny", 64,
                                      stage_timeout_s=STAGE_TIMEOUT)
    return JobRunner(sessions, database_url, load_catalog(), renderer, concurrency=2, lease_seconds=10,
                     poll_seconds=0.2, cut_attempts=cut_attempts, cut_retry_seconds=0.1)


def _create(sessions) -> str:
    with sessions.begin() as s:
        return jobs.create_job(s, family_id="lana-fria", color_id="lana-fria-azul-marino", cuts=["recto"], seed=7,
                               swatch_url=None, swatch_key=SWATCH).job_id


def _job(sessions, job_id: str):
    with sessions() as s:
        return jobs.get_job(s, job_id)


async def _until(sessions, job_id: str, done, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = _job(sessions, job_id)
        if done(job):
            return job
        await asyncio.sleep(0.05)
    job = _job(sessions, job_id)
    raise AssertionError(f"timed out; the job is {job.status}: {job.cut_progress}")


async def _run_until_finished(runner, sessions, job_id: str):
    """Run the runner until the job has finished (or 60 s have passed), then stop it."""
    task = asyncio.create_task(runner.run_forever())
    try:
        return await _until(sessions, job_id, _finished, 60)
    finally:
        runner.stop()
        await task


def _finished(job) -> bool:
    return job.status in ("completed", "failed")


class StoreDownWhileReading:
    """The swatch store, stopped the moment a swatch is read and started again once that read failed."""

    def __init__(self, storage: S3Storage, moto: MotoServer) -> None:
        self.storage, self.moto, self.outages = storage, moto, 0

    def __getattr__(self, name):
        return getattr(self.storage, name)

    def get(self, key: str) -> bytes:
        if self.outages:
            return self.storage.get(key)
        self.outages += 1
        self.moto.stop()
        try:
            return self.storage.get(key)
        finally:
            self.moto.start()


def test_a_swatch_read_while_the_store_is_down_is_retried_not_degraded(sessions, database_url, model, bucket, moto):
    direct, _ = bucket
    swatches = StoreDownWhileReading(direct, moto)
    runner = _runner(sessions, database_url, model, swatches, direct)
    job_id = _create(sessions)

    job = asyncio.run(_run_until_finished(runner, sessions, job_id))
    assert swatches.outages == 1
    assert job.status == "completed", job.error_message
    assert job.cut_progress["recto"]["ip_adapter_fallback"] is False  # rendered from the swatch, not without it
    assert job.cut_progress["recto"]["attempt"] == 2  # the read during the outage failed that attempt


def test_a_deleted_swatch_falls_back_and_is_flagged(sessions, database_url, model, bucket, moto):
    direct, via_proxy = bucket
    moto.client().delete_object(Bucket=direct.bucket, Key=SWATCH)
    runner = _runner(sessions, database_url, model, via_proxy, direct)
    job_id = _create(sessions)

    job = asyncio.run(_run_until_finished(runner, sessions, job_id))
    assert job.status == "completed"
    assert job.cut_progress["recto"]["ip_adapter_fallback"] is True
    assert job.cut_progress["recto"]["attempt"] == 1  # a missing swatch is not retried


def test_a_swatch_read_that_never_answers_times_out_and_the_retry_completes(sessions, database_url, model, bucket,
                                                                            proxy):
    direct, via_proxy = bucket
    runner = _runner(sessions, database_url, model, via_proxy, direct)
    proxy.set_mode("stall-reads")
    job_id = _create(sessions)

    async def go():
        task = asyncio.create_task(runner.run_forever())
        try:
            started = time.monotonic()
            await _until(sessions, job_id, lambda j: j.cut_progress["recto"].get("attempt", 0) >= 2, 30)
            first_attempt = time.monotonic() - started
            proxy.set_mode("forward")  # the hang is gone
            return first_attempt, await _until(sessions, job_id, _finished, 60)
        finally:
            proxy.set_mode("forward")
            runner.stop()
            await task

    first_attempt, job = asyncio.run(go())
    assert proxy.stalled >= 1
    assert first_attempt < STAGE_TIMEOUT + 3, f"the stalled attempt took {first_attempt:.1f} s"
    assert job.status == "completed", job.error_message
    assert job.cut_progress["recto"]["ip_adapter_fallback"] is False


def test_a_stage_that_never_answers_fails_the_job_with_the_reason(sessions, database_url, model, bucket, proxy):
    direct, via_proxy = bucket
    runner = _runner(sessions, database_url, model, via_proxy, direct, cut_attempts=2)
    proxy.set_mode("stall-reads")
    job_id = _create(sessions)

    async def go():
        task = asyncio.create_task(runner.run_forever())
        try:
            started = time.monotonic()
            job = await _until(sessions, job_id, _finished, 30)
            return time.monotonic() - started, job
        finally:
            proxy.set_mode("forward")  # let the abandoned reads end
            runner.stop()
            await task

    elapsed, job = asyncio.run(go())
    assert job.status == "failed"
    assert "cut recto failed 2 times" in job.error_message
    assert f"StageTimeout: generate did not finish within {STAGE_TIMEOUT:g} s" in job.error_message
    assert elapsed < 2 * STAGE_TIMEOUT + 5, f"the job stayed processing {elapsed:.1f} s"
