"""The public HTTP API (FastAPI), served by the Ingress deployment.

Routes are plain FastAPI functions that reach the service's parts through one dependency,
`get_services`, so the same app runs under Ray Serve or plain uvicorn.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import mimetypes
import os
import secrets
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Annotated, Awaitable, Callable

from anyio import to_thread
from fastapi import APIRouter, Depends, Header, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from catalog.data import CatalogData
from catalog.loader import color_swatch_key
from db import jobs
from db.catalog import active_families, find_active_color
from db.engine import ping
from db.models import GenerationJob
from deployments.storage import UPLOAD_PREFIX, LocalStorage, ObjectMissing, Storage, StorageError
from serve_app.backpressure import BacklogGate
from serve_app.job_inputs import forget_swatch, own_swatch
from serve_app.ratelimit import RateLimits, rate_limited
from serve_app.routing import StorableTextRoute
from serve_app.schemas import (
    CatalogOut,
    ColorOut,
    CutOut,
    CutProgress,
    ErrorBody,
    FamilyOut,
    GenerateAccepted,
    GenerateRequest,
    JobOut,
    UploadOut,
)
from serve_app.settings import Settings
from serve_app.uploads import read_file_field, sanitize_image

logger = logging.getLogger("sastre.api")


@dataclass
class Services:
    settings: Settings
    sessions: sessionmaker[Session]
    storage: Storage
    catalog: CatalogData
    # name -> coroutine returning a description of that deployment's health (raises when unhealthy)
    deployment_checks: dict[str, Callable[[], Awaitable[dict]]] = field(default_factory=dict)
    backlog: BacklogGate | None = None
    jwt_secret: str | None = None  # admin routes answer 401 to everything without one
    rate_limits: RateLimits | None = None

    def __post_init__(self) -> None:
        if self.backlog is None:
            self.backlog = BacklogGate(self.settings.max_pending_jobs)
        if self.rate_limits is None:
            settings = self.settings
            self.rate_limits = RateLimits({"generate": settings.rate_limit_generate, "upload": settings.rate_limit_upload},
                                          settings.rate_limit_storage, settings.trusted_proxies)


router = APIRouter(route_class=StorableTextRoute)


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def _errors(*codes: int) -> dict:
    return {code: {"model": ErrorBody} for code in codes}


@router.get("/catalog", response_model=CatalogOut, tags=["catalog"], responses=_errors(503))
def get_catalog(services: ServicesDep) -> CatalogOut:
    """Active fabric families with their active colors and swatch URLs, and the cuts on offer."""
    with services.sessions() as session:
        families = active_families(session)
        out = [
            FamilyOut(
                family_id=family.family_id,
                display_name=family.display_name,
                colors=[
                    ColorOut(color_id=c.color_id, name=c.name, hex_value=c.hex_value, swatch_code=c.swatch_code,
                             swatch_url=_swatch_url(services.storage, family, c))
                    for c in family.colors if c.status == "active"
                ],
            )
            for family in families
        ]
    cuts = [CutOut(cut_id=c.cut_id, display_name=c.display_name) for c in services.catalog.cuts]
    return CatalogOut(families=out, cuts=cuts)


def _swatch_url(storage: Storage, family, color) -> str | None:
    if color.swatch_url:
        return color.swatch_url
    key = color_swatch_key(family, color)
    return storage.url_for(key) if key else None


def _resolve_swatch(services: Services, url: str, collection: str | None) -> str:
    """Map a client's swatch_url back to a key of ours, or refuse it. Nothing is ever fetched."""
    key = services.storage.key_for_url(url)
    allowed = key is not None and (key.startswith(UPLOAD_PREFIX) or (collection and key.startswith(collection + "/")))
    if not allowed:
        raise HTTPException(422, "swatch_url must be a swatch URL issued by this service (an upload or a catalog swatch)")
    modified = services.storage.modified_at(key)
    if modified is None:
        raise HTTPException(422, "swatch_url refers to a swatch that does not exist or has expired")
    ttl = timedelta(hours=services.settings.upload_ttl_hours)
    if key.startswith(UPLOAD_PREFIX) and modified + ttl < datetime.now(timezone.utc):
        raise HTTPException(422, "swatch_url refers to an upload that has expired: upload the swatch again")
    return key


def _own_swatch(services: Services, key: str | None, job_id: str) -> str | None:
    try:
        return own_swatch(services.storage, key, job_id)
    except ObjectMissing:
        raise HTTPException(422, "swatch_url refers to a swatch that does not exist or has expired") from None
    except StorageError:
        logger.exception("copying swatch %s for job %s failed", key, job_id)
        raise HTTPException(503, "storage unavailable, retry shortly", headers={"Retry-After": "5"}) from None


MULTIPART_BODY = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary",
                                "description": "JPEG, PNG or WebP, at most 5 MB"}}}}}},
}


RATE_LIMITED = {429: {"model": ErrorBody, "description": "this client's rate limit is spent; retry after "
                                                        "`Retry-After` seconds"}}


@router.post("/upload-swatch", status_code=status.HTTP_201_CREATED, response_model=UploadOut, tags=["jobs"],
             responses={**_errors(400, 413, 415, 422, 503), **RATE_LIMITED}, openapi_extra=MULTIPART_BODY,
             dependencies=[rate_limited("upload")])
async def upload_swatch(request: Request, services: ServicesDep) -> UploadOut:
    """Store a customer's swatch photo for use as `swatch_url`; it expires after 24 hours.

    The type is decided by decoding the bytes (JPEG, PNG, WebP); the stored copy is re-encoded without
    metadata (EXIF, GPS, ICC, text chunks). Bodies over the size limit are refused as they stream in.
    """
    settings = services.settings
    data = await read_file_field(request, "file", settings.upload_max_bytes)
    clean = await asyncio.to_thread(sanitize_image, data, settings.upload_max_pixels)
    key = f"{UPLOAD_PREFIX}{uuid.uuid4()}.{clean.extension}"
    try:
        url = await asyncio.to_thread(services.storage.put, key, clean.data, clean.content_type)
    except StorageError:
        logger.exception("storing upload %s failed", key)
        raise HTTPException(503, "storage unavailable, retry shortly") from None
    expires_at = datetime.now(timezone.utc) + timedelta(hours=settings.upload_ttl_hours)
    return UploadOut(swatch_url=url, expires_at=expires_at)


def _fingerprint(body: GenerateRequest) -> str:
    """The whole request as it decides the result: every field of the body (cuts in their order, seed,
    swatch_url, family, color), so a reused key with any change is a 409, never a stale replay."""
    return hashlib.sha256(json.dumps(body.model_dump(), sort_keys=True).encode()).hexdigest()


def _replay(job: GenerationJob, fingerprint: str) -> JSONResponse:
    """The answer to a repeated Idempotency-Key: the same job, or 409 if the body differs."""
    if job.request_hash != fingerprint:
        raise HTTPException(409, "this Idempotency-Key was already used with a different request body")
    accepted = GenerateAccepted(job_id=job.job_id, status=job.status, seed=job.seed, status_url=f"/jobs/{job.job_id}")
    return JSONResponse(accepted.model_dump(), status_code=202, headers={"Idempotent-Replayed": "true"})


@router.post("/generate", status_code=status.HTTP_202_ACCEPTED, response_model=GenerateAccepted, tags=["jobs"],
             responses={**_errors(409, 422, 503),
                        429: {"model": ErrorBody, "description": "backlog full, or this client's rate limit is "
                                                                 "spent; retry after `Retry-After` seconds"}},
             dependencies=[rate_limited("generate")])
def create_generation(
    body: GenerateRequest,
    services: ServicesDep,
    idempotency_key: Annotated[str | None, Header(max_length=255, description="retries with the same key and "
                                                  "body return the same job for 24 hours")] = None,
):
    """Validate against the catalog and queue one job; returns at once with the job id to poll."""
    unknown = [cut for cut in body.cuts if services.catalog.cut(cut) is None]
    if unknown:
        known = ", ".join(c.cut_id for c in services.catalog.cuts)
        raise HTTPException(422, f"unknown cut(s): {', '.join(unknown)}; known cuts: {known}")
    fingerprint = _fingerprint(body)
    try:
        return _create(body, services, idempotency_key, fingerprint)
    except IntegrityError:
        # A concurrent request with the same key won the race; answer as its replay.
        with services.sessions() as session:
            job = jobs.find_by_idempotency_key(session, idempotency_key)
        if job is None:
            raise
        return _replay(job, fingerprint)


def _create(body: GenerateRequest, services: Services, idempotency_key: str | None, fingerprint: str):
    with services.sessions.begin() as session:
        if idempotency_key:
            jobs.free_expired_idempotency_key(session, idempotency_key, services.settings.idempotency_ttl_hours * 3600)
            existing = jobs.find_by_idempotency_key(session, idempotency_key)
            if existing is not None:
                return _replay(existing, fingerprint)
        if services.backlog.is_full(session):
            raise HTTPException(429, "too many jobs waiting; retry shortly", headers={"Retry-After": "5"})
        family, color = find_active_color(session, body.family_id, body.color_id)
        if family is None:
            raise HTTPException(422, f"unknown or inactive fabric family: {body.family_id}")
        if color is None:
            raise HTTPException(422, f"unknown or inactive color {body.color_id} in family {body.family_id}")
        if body.swatch_url:
            swatch_key = _resolve_swatch(services, body.swatch_url, family.collection)
        elif color.swatch_url:
            swatch_key = services.storage.key_for_url(color.swatch_url)
        else:
            swatch_key = color_swatch_key(family, color)
        seed = body.seed if body.seed is not None else secrets.randbelow(2**31 - 16)
        job_id = str(uuid.uuid4())
        swatch_key = _own_swatch(services, swatch_key, job_id)
        try:
            job = jobs.create_job(
                session, job_id=job_id, family_id=family.family_id, color_id=color.color_id, cuts=body.cuts,
                seed=seed, swatch_url=body.swatch_url, swatch_key=swatch_key,
                max_attempts=services.settings.job_max_attempts, idempotency_key=idempotency_key,
                request_hash=fingerprint if idempotency_key else None,
            )
        except BaseException:
            forget_swatch(services.storage, job_id, swatch_key)  # nothing half-written stays behind
            raise
    return GenerateAccepted(job_id=job.job_id, status=job.status, seed=seed, status_url=f"/jobs/{job.job_id}")


def job_out(job: GenerationJob, storage: Storage) -> JobOut:
    """The API view of a row. URLs are made from the stored keys at read time, so presigned URLs are fresh."""
    seeds = [job.seed + index for index in range(len(job.cuts))] if job.seed is not None else []
    progress = []
    for index, cut in enumerate(job.cuts):
        entry = job.cut_progress.get(cut, {})
        url = storage.url_for(entry["key"]) if entry.get("key") else entry.get("url")
        progress.append(CutProgress(cut=cut, status=entry.get("status", "pending"),
                                    seed=entry.get("seed", seeds[index] if seeds else 0), url=url,
                                    ip_adapter_fallback=entry.get("ip_adapter_fallback")))
    result_urls = [p.url for p in progress] if job.status == "completed" and all(p.url for p in progress) else job.result_urls
    return JobOut(
        job_id=job.job_id, status=job.status, family_id=job.family_id, color_id=job.color_id, cuts=job.cuts,
        seed=job.seed, seeds=seeds, swatch_url=job.swatch_url, result_urls=result_urls, progress=progress,
        error_message=job.error_message, attempts=job.attempts, created_at=job.created_at,
        updated_at=job.updated_at, started_at=job.started_at, completed_at=job.completed_at,
    )


@router.get("/jobs/{job_id}", tags=["jobs"], responses={200: {"model": JobOut}, **_errors(404, 503)})
def get_job(job_id: str, services: ServicesDep) -> JSONResponse:
    """One job by its id: status, per-cut progress, seeds and, once completed, one URL per cut in order.

    The hottest route (every front end polls it): one indexed lookup, serialized once.
    """
    with services.sessions() as session:
        job = jobs.get_job(session, job_id)
    if job is None:
        raise HTTPException(404, f"job {job_id} not found")
    return JSONResponse(job_out(job, services.storage).model_dump(mode="json"))


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, tags=["jobs"], responses=_errors(404, 409, 503))
def cancel_job(job_id: str, services: ServicesDep) -> JobOut:
    """Cancel a job: a pending one at once; a processing one stops at its next cut boundary
    (the response then still says `processing`, poll for `canceled`); a finished one answers 409."""
    with services.sessions.begin() as session:
        outcome = jobs.request_cancel(session, job_id)
    if outcome is None:
        raise HTTPException(404, f"job {job_id} not found")
    with services.sessions() as session:
        job = jobs.get_job(session, job_id)
    if outcome == "final":
        raise HTTPException(409, f"job {job_id} is already {job.status}")
    if outcome == "canceled":
        forget_swatch(services.storage, job_id, job.swatch_key)
    return job_out(job, services.storage)


@router.get("/media/{key:path}", tags=["media"], responses=_errors(404))
def get_media(key: str, services: ServicesDep) -> FileResponse:
    """Objects of the local storage backend (generated renders, swatches)."""
    storage = services.storage
    if not isinstance(storage, LocalStorage):
        raise HTTPException(404, "media is served by the object store")
    try:
        path = storage.path_for(key)
    except StorageError:
        raise HTTPException(404, "not found") from None
    if not path.is_file():
        raise HTTPException(404, "not found")
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "public, max-age=300"})


@router.get("/livez", tags=["ops"])
def liveness() -> dict:
    """The process answers; checks nothing else (for liveness probes, and as the proxy's latency floor)."""
    return {"ok": True}


async def health_report(services: Services) -> dict:
    """Every part's health with its details (errors, the runner's owner and jobs in hand, the model,
    this ingress replica's threads and pool): the admin view, GET /admin/health."""
    report: dict = {}

    def check_database() -> None:
        with services.sessions() as session:
            ping(session)

    for name, check in (("database", check_database), ("storage", services.storage.check)):
        try:
            await run_in_threadpool(check)  # the route threads, which the pool is sized for
            report[name] = {"ok": True}
        except Exception as exc:
            report[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    deployments = {}
    for name, check in services.deployment_checks.items():
        try:
            deployments[name] = {"ok": True, **(await asyncio.wait_for(check(), timeout=10))}
        except Exception as exc:
            deployments[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    report["deployments"] = deployments
    engine = services.sessions.kw["bind"]
    report["ingress"] = {"host": socket.gethostname(), "pid": os.getpid(),
                         "threads": to_thread.current_default_thread_limiter().total_tokens,
                         "pool": {"size": engine.pool.size(), "checked_out": engine.pool.checkedout()}}
    model = deployments.get("SdxlTurboGenerator", {})
    warnings = [model["note"]] if model.get("note") else []
    healthy = report["database"]["ok"] and report["storage"]["ok"] and all(d["ok"] for d in deployments.values())
    return {"status": "ok" if healthy else "degraded", "model_profile": model.get("profile"),
            "requested_profile": model.get("requested_profile"), "warnings": warnings, **report}


@router.get("/health", tags=["ops"], responses={503: {"description": "a part is down"}})
async def health(services: ServicesDep) -> JSONResponse:
    """Ok or not per part (database, storage, each deployment) and the model profile actually serving;
    503 when any part is down.

    Public, so it names no host, process or job (a job id is all it takes to read or cancel a job),
    and no error text: the details are behind the admin token, at GET /admin/health.
    """
    report = await health_report(services)
    warnings = []
    if report["warnings"]:
        warnings.append(f"model profile {report['requested_profile']} fell back to {report['model_profile']}: "
                        "images are NOT real renders")
    body = {"status": report["status"], "model_profile": report["model_profile"], "warnings": warnings,
            "database": {"ok": report["database"]["ok"]}, "storage": {"ok": report["storage"]["ok"]},
            "deployments": {name: {"ok": part["ok"]} for name, part in report["deployments"].items()}}
    return JSONResponse(body, status_code=200 if report["status"] == "ok" else 503)
