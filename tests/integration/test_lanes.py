"""Priority lanes through the launched service: a shopper's job posted while a 200-cut pre-render runs
is claimed at once and waits behind at most one generator batch of it; the pre-render still completes.

The pre-render's jobs are written as `POST /admin/renders/prewarm` writes them (one-cut `batch`-lane
jobs, `jobs.create_job`), 200 of them with distinct seeds so the render cache cannot shorten the work.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from db import jobs
from db.engine import make_sessionmaker
from serve_app.settings import Settings

pytestmark = pytest.mark.integration

PRERENDER_CUTS = 200
BATCH_JOBS = Settings.model_fields["runner_batch_jobs"].default  # the service runs the defaults here
NAVY = {"family_id": "lana-fria", "color_id": "lana-fria-azul-marino"}


def test_a_shoppers_job_overtakes_a_200_cut_prerender_which_still_completes(service, service_engine):
    sessions = make_sessionmaker(service_engine)
    with sessions.begin() as session:
        batch = [jobs.create_job(session, **NAVY, cuts=[("recto", "cruzado")[i % 2]], seed=900_000 + i,
                                 lane="batch").job_id for i in range(PRERENDER_CUTS)]
    jobs_done = text("SELECT count(*) FROM generation_jobs WHERE job_id = ANY(:ids) AND status = 'completed'")
    with service.client() as client:
        deadline = time.monotonic() + 120
        with service_engine.connect() as conn:  # the pre-render is under way, at its steady pace
            while conn.execute(jobs_done, {"ids": batch}).scalar() < 2 * BATCH_JOBS:
                assert time.monotonic() < deadline, "the pre-render did not start"
                time.sleep(0.1)
        shopper = client.post("/generate", json={**NAVY, "cuts": ["recto"], "seed": 123}).json()["job_id"]
        deadline = time.monotonic() + 60
        while client.get(f"/jobs/{shopper}").json()["status"] != "completed":
            assert time.monotonic() < deadline, "the shopper's job did not complete"
            time.sleep(0.05)
        deadline = time.monotonic() + 300
        with service_engine.connect() as conn:
            while conn.execute(jobs_done, {"ids": batch}).scalar() < PRERENDER_CUTS:
                assert time.monotonic() < deadline, "the pre-render did not complete"
                time.sleep(0.5)
    with sessions() as session:
        mine = jobs.get_job(session, shopper)
        prerender = jobs.get_jobs(session, batch)
    # Beside the shopper's cut at the generator: batch jobs the runner held when it claimed the shopper's
    # job (claimed no later, not yet done then), at most one generator batch. Without lanes: all 16 slots.
    beside = [job for job in prerender if job.started_at <= mine.started_at < job.completed_at]
    assert len(beside) <= BATCH_JOBS, f"{len(beside)} batch cuts were in hand when the shopper's job was claimed"
    assert (mine.started_at - mine.created_at).total_seconds() < 1.0  # claimed at once: room is kept for it
    overtaken = sum(job.started_at > mine.completed_at for job in prerender)
    assert overtaken >= PRERENDER_CUTS // 4, f"only {overtaken} pre-render cuts started after the shopper's job"
    assert all(job.status == "completed" and job.attempts == 1 for job in prerender)
