"""Generation history: every job, filtered and paged, a retry for failed ones, and keeping a job from
ageing out (admin token required)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status

from db import jobs
from serve_app.admin.generations.schemas import AdminJobOut, GenerationPage
from serve_app.admin.generations.service import admin_job, decode_cursor, encode_cursor
from serve_app.deps import Services, ServicesDep, current_admin
from serve_app.errors import error_responses
from serve_app.generation.service import find_job
from serve_app.edge.routing import StorableTextRoute

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(current_admin)],
                   responses=error_responses(401), route_class=StorableTextRoute)


@router.get("/generations", response_model=GenerationPage, responses=error_responses(422))
def list_generations(
    services: ServicesDep,
    status_filter: Annotated[str | None, Query(alias="status", pattern="^(pending|processing|completed|failed|canceled|expired)$")] = None,
    family_id: str | None = None,
    color_id: str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> GenerationPage:
    """Jobs newest first, filtered; follow `next_cursor` for older pages (stable under new inserts)."""
    before = decode_cursor(cursor) if cursor is not None else None
    with services.sessions() as session:
        rows = jobs.list_jobs(session, status=status_filter, family_id=family_id, color_id=color_id,
                              created_from=created_from, created_to=created_to, before=before, limit=limit + 1)
    page = rows[:limit]
    return GenerationPage(items=[admin_job(job, services.storage) for job in page],
                          next_cursor=encode_cursor(page[-1]) if len(rows) > limit else None)


@router.get("/generations/{job_id}", response_model=AdminJobOut, responses=error_responses(404))
def get_generation(job_id: str, services: ServicesDep) -> AdminJobOut:
    return admin_job(find_job(services, job_id), services.storage)


@router.post("/generations/{job_id}/retry", status_code=status.HTTP_202_ACCEPTED, response_model=AdminJobOut,
             responses=error_responses(404, 409))
def retry_generation(job_id: str, services: ServicesDep) -> AdminJobOut:
    """Queue a failed job again with a fresh attempt budget; cuts it already finished are kept."""
    with services.sessions.begin() as session:
        outcome = jobs.retry_failed_job(session, job_id)
        if outcome is None:
            raise HTTPException(404, f"job {job_id} not found")
        if outcome != "retried":
            raise HTTPException(409, f"only failed jobs can be retried; this one is {outcome}")
        job = jobs.get_job(session, job_id)
    return admin_job(job, services.storage)


@router.post("/generations/{job_id}/keep", response_model=AdminJobOut, responses=error_responses(404))
def keep_generation(job_id: str, services: ServicesDep) -> AdminJobOut:
    """Keep the job and its renders indefinitely (an order's proof): it never ages out, whatever its
    status. Idempotent."""
    return _set_kept(services, job_id, True)


@router.delete("/generations/{job_id}/keep", response_model=AdminJobOut, responses=error_responses(404))
def release_generation(job_id: str, services: ServicesDep) -> AdminJobOut:
    """Let a kept job age out again, counted from when it finished (so an old one goes at the next prune)."""
    return _set_kept(services, job_id, False)


def _set_kept(services: Services, job_id: str, kept: bool) -> AdminJobOut:
    with services.sessions.begin() as session:
        job = jobs.keep_job(session, job_id, kept)
    if job is None:
        raise HTTPException(404, f"job {job_id} not found")
    return admin_job(job, services.storage)
