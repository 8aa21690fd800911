"""The service's parts in this process, without Ray, set up once for every unit test that needs them.

What the service's start does (the shipped catalog synced into the database, its swatches put into
storage), an admin's bearer token, the runner's render chain over the tiny model, a `JobWorker` at the
tests' pace, and the loop that runs a worker until a job has what a test waits for, then stops it.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from catalog.data import CatalogData, load_catalog
from catalog.loader import sync_catalog
from db import admin_users, jobs
from db.models import GenerationJob
from deployments.finishing import JpegFinisher
from deployments.generation import CutGenerator
from deployments.preprocessing import ControlMapper
from deployments.rendering import RenderChain
from deployments.storage import Storage
from serve_app.admin.auth.service import hash_password, issue_token
from serve_app.bootstrap import put_catalog_swatches
from serve_app.deps import Services
from serve_app.jobqueue.worker import CutRenderer, JobWorker
from serve_app.settings import Settings

ADMIN_SECRET = "a-test-secret-that-is-long-enough-for-hs256"
IMAGE_SIZE = 64  # the tiny model renders a cut in well under a second on a CPU at this size


def catalog_services(sessions: sessionmaker[Session], storage: Storage, settings: Settings, **parts) -> Services:
    """The app's `Services` on `storage`, after what the service's start does: the shipped catalog synced
    into the database and its swatches put into storage. `parts` are further `Services` fields."""
    catalog = load_catalog()
    with sessions.begin() as session:
        sync_catalog(session, catalog)
    put_catalog_swatches(storage, catalog)
    return Services(settings=settings, sessions=sessions, storage=storage, catalog=catalog, **parts)


@functools.cache
def _admin_password_hash() -> str:
    """Hashed once per process: a bcrypt hash costs ~0.25 s, and most tests only need a token."""
    return hash_password("a long enough password")


def admin_headers(sessions: sessionmaker[Session]) -> dict[str, str]:
    """A new admin user and the Authorization header of a token for it, signed with `ADMIN_SECRET`
    (give the app `jwt_secret=ADMIN_SECRET`). The logins' own tests create users the app's way."""
    with sessions.begin() as session:
        user = admin_users.add_user(session, "ops-admin", _admin_password_hash())
        token = issue_token(user, ADMIN_SECRET, timedelta(minutes=5))
    return {"Authorization": f"Bearer {token}"}


def render_chain(generator: CutGenerator, results: Storage, *, stage_timeout_s: float = 60) -> RenderChain:
    """The runner's render chain in this process at the tests' image size: `generator` (the tiny model's
    `CutGenerator`, or a stand-in that watches or breaks that stage), images finished into `results`."""
    return RenderChain.in_process(ControlMapper(), generator, JpegFinisher(results), "canny", IMAGE_SIZE,
                                  stage_timeout_s=stage_timeout_s)


def job_worker(sessions: sessionmaker[Session], database_url: str, catalog: CatalogData, renderer: CutRenderer,
               **options) -> JobWorker:
    """A `JobWorker` at the tests' pace (two cuts at once, a 10 s lease, a 0.2 s poll); `options` are
    further `JobWorker` arguments, or replace those."""
    pace = {"concurrency": 2, "lease_seconds": 10, "poll_seconds": 0.2}
    return JobWorker(sessions, database_url, catalog, renderer, **{**pace, **options})


def finished(job: GenerationJob) -> bool:
    return job.status in ("completed", "failed")


async def wait_for_job(sessions: sessionmaker[Session], job_id: str, done: Callable[[GenerationJob], bool],
                       timeout: float) -> GenerationJob:
    """The job's row once `done(row)` holds; fails the test, showing the row, after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with sessions() as session:
            job = jobs.get_job(session, job_id)
        if done(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s; the job is {job.status}: {job.cut_progress}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def running(runner: JobWorker) -> AsyncIterator[JobWorker]:
    """`runner`'s loop running for the body of the `async with`, then stopped and waited for (so its
    errors surface in the test)."""
    task = asyncio.create_task(runner.run_forever())
    try:
        yield runner
    finally:
        runner.stop()
        await task


def run_jobs(runner: JobWorker, sessions: sessionmaker[Session], job_ids: list[str],
             timeout: float = 60) -> list[GenerationJob]:
    """Run `runner` until every one of the jobs has completed or failed, then stop it; their rows."""
    async def until_finished() -> list[GenerationJob]:
        async with running(runner):
            return [await wait_for_job(sessions, job_id, finished, timeout) for job_id in job_ids]
    return asyncio.run(until_finished())


def run_job(runner: JobWorker, sessions: sessionmaker[Session], job_id: str, timeout: float = 60) -> GenerationJob:
    """Run `runner` until the job has completed or failed, then stop it; the job's row."""
    return run_jobs(runner, sessions, [job_id], timeout)[0]
