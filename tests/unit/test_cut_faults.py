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
from db.job_failures import RENDER_FAILED
from deployments.generation import CutGenerator
from deployments.storage import S3Storage
from serve_app.bootstrap import put_catalog_swatches
from serve_app.jobqueue.worker import JobWorker
from tests.in_process import finished, job_worker, render_chain, run_job, running, wait_for_job
from tests.storage_faults import FaultProxy, MotoServer

SWATCH = "SASTRE 2026-27/095T-0121.png"  # lana-fria-azul-marino's catalog swatch
STAGE_TIMEOUT = 2.0


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


def _runner(sessions, database_url, model, swatches, results, cut_attempts=4) -> JobWorker:
    chain = render_chain(CutGenerator(model, swatches), results, stage_timeout_s=STAGE_TIMEOUT)
    return job_worker(sessions, database_url, load_catalog(), chain, cut_attempts=cut_attempts, cut_retry_seconds=0.1)


def _create(sessions) -> str:
    with sessions.begin() as s:
        return jobs.create_job(s, family_id="lana-fria", color_id="lana-fria-azul-marino", cuts=["recto"], seed=7,
                               swatch_url=None, swatch_key=SWATCH).job_id


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

    job = run_job(runner, sessions, job_id)
    assert swatches.outages == 1
    assert job.status == "completed", job.error_message
    assert job.cut_progress["recto"]["ip_adapter_fallback"] is False  # rendered from the swatch, not without it
    assert job.cut_progress["recto"]["attempt"] == 2  # the read during the outage failed that attempt


def test_a_deleted_swatch_falls_back_and_is_flagged(sessions, database_url, model, bucket, moto):
    direct, via_proxy = bucket
    moto.client().delete_object(Bucket=direct.bucket, Key=SWATCH)
    runner = _runner(sessions, database_url, model, via_proxy, direct)
    job_id = _create(sessions)

    job = run_job(runner, sessions, job_id)
    assert job.status == "completed"
    assert job.cut_progress["recto"]["ip_adapter_fallback"] is True
    assert job.cut_progress["recto"]["attempt"] == 1  # a missing swatch is not retried


async def _while_reads_stall(proxy: FaultProxy, sessions, job_id: str, done, timeout: float):
    """Seconds until `done(job)` holds while swatch reads through `proxy` hang, and the job then. Reads
    flow again afterwards, so the abandoned ones end and the runner can stop."""
    proxy.set_mode("stall-reads")
    try:
        started = time.monotonic()
        job = await wait_for_job(sessions, job_id, done, timeout)
        return time.monotonic() - started, job
    finally:
        proxy.set_mode("forward")


def _on_its_second_attempt(job) -> bool:
    return job.cut_progress.get("recto", {}).get("attempt", 0) >= 2


def test_a_swatch_read_that_never_answers_times_out_and_the_retry_completes(sessions, database_url, model, bucket,
                                                                            proxy):
    direct, via_proxy = bucket
    runner = _runner(sessions, database_url, model, via_proxy, direct)
    job_id = _create(sessions)

    async def go():
        async with running(runner):
            first_attempt, _ = await _while_reads_stall(proxy, sessions, job_id, _on_its_second_attempt, 30)
            return first_attempt, await wait_for_job(sessions, job_id, finished, 60)  # the hang is gone

    first_attempt, job = asyncio.run(go())
    assert proxy.stalled >= 1
    assert first_attempt < STAGE_TIMEOUT + 3, f"the stalled attempt took {first_attempt:.1f} s"
    assert job.status == "completed", job.error_message
    assert job.cut_progress["recto"]["ip_adapter_fallback"] is False


def test_a_stage_that_never_answers_fails_the_job_with_the_reason(sessions, database_url, model, bucket, proxy):
    direct, via_proxy = bucket
    runner = _runner(sessions, database_url, model, via_proxy, direct, cut_attempts=2)
    job_id = _create(sessions)

    async def go():
        async with running(runner):
            return await _while_reads_stall(proxy, sessions, job_id, finished, 30)

    elapsed, job = asyncio.run(go())
    assert job.status == "failed"
    assert job.error_message == RENDER_FAILED.message
    assert "cut recto failed 2 times" in job.error_detail
    assert f"StageTimeout: generate did not finish within {STAGE_TIMEOUT:g} s" in job.error_detail
    assert elapsed < 2 * STAGE_TIMEOUT + 5, f"the job stayed processing {elapsed:.1f} s"
