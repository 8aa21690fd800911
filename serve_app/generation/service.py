"""Accepting, presenting and canceling jobs: everything the job routes do besides HTTP.

A job is accepted by one statement (the catalog check, the INSERT and the runners' wake-up together,
see `jobs.create_job`), after the job's own swatch copy and its digest when it names a swatch
(`serve_app/jobqueue/swatches.py`): it either exists afterwards with everything it needs, or nothing
was written (a copy made for a job that was then refused is deleted). Every fact about its cuts that
the bodies show (seeds, previews) comes from the job's plan (`serve_app/jobqueue/plans.py`). The
backlog gate answers from a count kept in the background.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import uuid
from datetime import timedelta

from fastapi import HTTPException
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.concurrency import run_in_threadpool

from db import jobs
from db.fabrics import active_collection
from db.queue_positions import QueuePlace
from db.models import GenerationJob
from deployments import metrics
from deployments.storage import ObjectMissing, Storage, StorageError
from serve_app.deps import Services
from serve_app.generation.deadlines import deadline_seconds
from serve_app.generation.schemas import CutProgress, GenerateAccepted, GenerateRequest, JobOut
from serve_app.jobqueue.plans import plan_cuts
from serve_app.jobqueue.swatches import OwnedSwatch, SwatchRefused, forget_swatch, own_swatch, resolve_swatch

logger = logging.getLogger("sastre.api")

CLIENT_CAP_RETRY_SECONDS = 10  # a one-cut job takes a second or two on a GPU: some of the client's will be done


def fingerprint(body: GenerateRequest) -> str:
    """The whole request as it decides the result: every field of the body (cuts in their order, seed,
    swatch_url, family, color), so a reused key with any change is a 409, never a stale replay."""
    return hashlib.sha256(json.dumps(body.model_dump(), sort_keys=True).encode()).hexdigest()


async def accept_job(services: Services, body: GenerateRequest, idempotency_key: str | None,
                     client: str = "", cancel_after: str | None = None) -> Response:
    """Queue one job for `body` on behalf of `client` (a 202 with its body serialized once), or answer a
    repeated Idempotency-Key with the job it made. `cancel_after` is the `Cancel-After` header."""
    deadline = deadline_seconds(body.deadline_seconds, cancel_after)
    unknown = [cut for cut in body.cuts if services.catalog.cut(cut) is None]
    if unknown:
        known = ", ".join(c.cut_id for c in services.catalog.cuts)
        raise HTTPException(422, f"unknown cut(s): {', '.join(unknown)}; known cuts: {known}")
    request_hash = fingerprint(body) if idempotency_key else None  # only a key's replays compare bodies
    ttl_seconds = services.settings.idempotency_ttl_hours * 3600
    if idempotency_key:
        async with services.hot.connect() as conn:
            existing = await jobs.read_job_by_idempotency_key(conn, idempotency_key, ttl_seconds)
        if existing is not None:
            return _replay(existing, request_hash)
    if await services.backlog.is_full(services.hot):  # before taking a connection: a count may need one
        metrics.refused("backlog_full")
        raise HTTPException(429, "too many jobs waiting; retry shortly", headers={"Retry-After": "5"})
    async with services.hot.connect() as conn:
        try:
            return await _create(services, conn, body, idempotency_key, request_hash, client, deadline)
        except IntegrityError:
            # A concurrent request with the same key won the race; answer as its replay.
            job = await jobs.read_job_by_idempotency_key(conn, idempotency_key, ttl_seconds)
            if job is None:
                raise
            return _replay(job, request_hash)


def _replay(job: Row, request_hash: str | None) -> Response:
    """The answer to a repeated Idempotency-Key: the same job, or 409 if the body differs."""
    if job.request_hash != request_hash:
        raise HTTPException(409, "this Idempotency-Key was already used with a different request body")
    return _json(accepted(job), 202, headers={"Idempotent-Replayed": "true"})


def accepted(job: Row) -> GenerateAccepted:
    """The 202's body: where to poll, and each cut's instant preview while the render is queued."""
    return GenerateAccepted(job_id=job.job_id, status=job.status, seed=job.seed, status_url=f"/jobs/{job.job_id}",
                            preview_urls={plan.cut: plan.preview_url for plan in plan_cuts(job)})


def _json(body: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A body serialized once, by pydantic, straight to bytes (no dict, no second validation by FastAPI)."""
    return Response(body.model_dump_json(), status_code=status_code, headers=headers, media_type="application/json")


async def _create(services: Services, conn: AsyncConnection, body: GenerateRequest, idempotency_key: str | None,
                  request_hash: str | None, client: str, deadline: float | None) -> Response:
    """The INSERT (with the catalog check, the client's cap and the runners' wake-up) in one statement. A
    swatch_url first needs the family's collection and the storage (blocking, so on a thread): one more
    round trip. A refusal costs a query or two more, to say why."""
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31 - 16)
    job_id = str(uuid.uuid4())
    swatch = None  # None: the color's catalog swatch, read by the INSERT itself
    cap = services.settings.max_unfinished_jobs_per_client
    if body.swatch_url:
        collection = await _active_collection(conn, body)
        swatch = await run_in_threadpool(_resolve_and_own, services, body.swatch_url, collection, job_id)
    try:
        job = await conn.run_sync(
            jobs.create_job, job_id=job_id, family_id=body.family_id, color_id=body.color_id, cuts=body.cuts,
            seed=seed, swatch_url=body.swatch_url, swatch_key=swatch.key if swatch else None,
            swatch_digest=swatch.digest if swatch else None, max_attempts=services.settings.job_max_attempts,
            client=client, client_cap=cap, idempotency_key=idempotency_key, request_hash=request_hash,
            deadline_seconds=deadline,
        )
        if job is None:  # the family or color is unknown or inactive, or the client is at its cap: say which
            await _active_collection(conn, body)
            if await jobs.unfinished_jobs(conn, client, cap) >= cap:
                metrics.refused("client_cap")
                raise HTTPException(429, f"this client already has {cap} unfinished jobs; retry when some have "
                                    "finished", headers={"Retry-After": str(CLIENT_CAP_RETRY_SECONDS)})
            raise HTTPException(422, f"unknown or inactive color {body.color_id} in family {body.family_id}")
    except BaseException:
        if swatch is not None:  # nothing half-written stays behind
            await run_in_threadpool(forget_swatch, services.storage, job_id, swatch.key)
        raise
    metrics.job_created()
    return _json(accepted(job), 202)


async def _active_collection(conn: AsyncConnection, body: GenerateRequest) -> str | None:
    family_active, color_active, collection = await active_collection(conn, body.family_id, body.color_id)
    if not family_active:
        raise HTTPException(422, f"unknown or inactive fabric family: {body.family_id}")
    if not color_active:
        raise HTTPException(422, f"unknown or inactive color {body.color_id} in family {body.family_id}")
    return collection


def _resolve_and_own(services: Services, swatch_url: str, collection: str | None, job_id: str) -> OwnedSwatch:
    """The job's swatch from the client's URL: resolved, owned and digested (a 422 for a URL it may not use)."""
    try:
        key = resolve_swatch(services.storage, swatch_url, collection,
                             timedelta(hours=services.settings.upload_ttl_hours))
    except SwatchRefused as exc:
        raise HTTPException(422, str(exc)) from None
    try:
        return own_swatch(services.storage, key, job_id)
    except ObjectMissing:
        raise HTTPException(422, "swatch_url refers to a swatch that does not exist or has expired") from None
    except StorageError:
        logger.exception("copying swatch %s for job %s failed", key, job_id)
        raise HTTPException(503, "storage unavailable, retry shortly", headers={"Retry-After": "5"}) from None


def job_out(job: GenerationJob | Row, storage: Storage, place: QueuePlace | None = None) -> JobOut:
    """The API view of a row (an ORM object or a plain row with the same names), with its `place` in the
    queue while it is pending. URLs are made from the stored keys at read time, so presigned URLs are fresh."""
    waiting = place if job.status == "pending" else None
    plans = plan_cuts(job)
    seeds = [plan.seed for plan in plans if plan.seed is not None]
    progress = []
    for plan in plans:
        entry = job.cut_progress.get(plan.cut, {})
        url = storage.url_for(entry["key"]) if entry.get("key") else entry.get("url")
        progress.append(CutProgress(cut=plan.cut, status=entry.get("status", "pending"),
                                    seed=entry.get("seed", plan.seed or 0), url=url,
                                    ip_adapter_fallback=entry.get("ip_adapter_fallback"),
                                    cached=entry.get("cached", False) if entry.get("status") == "completed" else None,
                                    preview_url=plan.preview_url))
    # Fresh URLs from the keys; a row without them (written by the original backend, which kept only
    # result_urls) shows what it stored.
    result_urls = [p.url for p in progress] if job.status == "completed" and all(p.url for p in progress) else job.result_urls
    return JobOut(
        job_id=job.job_id, status=job.status, family_id=job.family_id, color_id=job.color_id, cuts=job.cuts,
        seed=job.seed, seeds=seeds, swatch_url=job.swatch_url, result_urls=result_urls, progress=progress,
        error_message=job.error_message, attempts=job.attempts, created_at=job.created_at,
        updated_at=job.updated_at, started_at=job.started_at, completed_at=job.completed_at,
        deadline_at=job.deadline_at, queue_position=waiting.ahead if waiting else None,
        estimated_start_at=waiting.estimated_start_at if waiting else None,
    )


async def read_job(services: Services, job_id: str) -> Response:
    """GET /jobs/{job_id}: one indexed lookup on the event loop, serialized once."""
    async with services.hot.connect() as conn:
        job = await jobs.read_job(conn, job_id)
    if job is None:
        raise HTTPException(404, f"job {job_id} not found")
    place = QueuePlace(job.ahead, job.estimated_start_at) if job.ahead is not None else None
    return _json(job_out(job, services.storage, place))


def find_job(services: Services, job_id: str) -> GenerationJob:
    with services.sessions() as session:
        job = jobs.get_job(session, job_id)
    if job is None:
        raise HTTPException(404, f"job {job_id} not found")
    return job


def cancel(services: Services, job_id: str) -> GenerationJob:
    """Cancel a pending job at once, or flag a processing one; a finished job is a 409."""
    with services.sessions.begin() as session:
        outcome = jobs.request_cancel(session, job_id)
    if outcome is None:
        raise HTTPException(404, f"job {job_id} not found")
    job = find_job(services, job_id)
    if outcome == "final":
        raise HTTPException(409, f"job {job_id} is already {job.status}")
    if outcome == "canceled":  # a pending job's final write is this one; a runner counts the others
        metrics.job_finished("canceled")
    return job
