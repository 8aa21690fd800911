"""Admin routes under /admin: login, fabric families and colors, generation history.

Every route except login depends on `current_admin`, so a missing, malformed, expired or foreign
token — or the token of a deleted user — is a 401 before any work is done.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from sqlalchemy.orm import Session

from catalog.loader import color_swatch_key
from catalog.swatches import render_swatch
from db import catalog as fabrics
from db import jobs
from db.models import AdminUser, Color, FabricFamily, GenerationJob
from serve_app.admin_schemas import (
    AdminJobOut,
    ColorAdminOut,
    ColorIn,
    ColorPatch,
    FamilyAdminOut,
    FamilyIn,
    FamilyPatch,
    GenerationPage,
    TokenOut,
)
from serve_app.api import Services, ServicesDep, _errors, _swatch_url, health_report, job_out
from serve_app.auth import AuthError, PasswordTooLong, Throttled, authenticate, issue_token, user_for_token
from serve_app.routing import StorableTextRoute
from serve_app.schemas import ErrorBody

oauth2 = OAuth2PasswordBearer(tokenUrl="/admin/login")
UNAUTHORIZED = HTTPException(401, "invalid or expired credentials", headers={"WWW-Authenticate": "Bearer"})


def current_admin(token: Annotated[str, Depends(oauth2)], services: ServicesDep) -> AdminUser:
    with services.sessions() as session:
        try:
            return user_for_token(session, token, services.jwt_secret)
        except AuthError:
            raise UNAUTHORIZED from None


login_router = APIRouter(prefix="/admin", tags=["admin"], route_class=StorableTextRoute)
router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(current_admin)],
                   responses=_errors(401), route_class=StorableTextRoute)


@login_router.post("/login", response_model=TokenOut,
                   responses={**_errors(401, 422), 429: {"model": ErrorBody, "description": "too many failures"}})
def login(form: Annotated[OAuth2PasswordRequestForm, Depends()], request: Request, services: ServicesDep) -> TokenOut:
    """OAuth2 password flow: a bearer JWT (HS256) for an admin user. Five failures in 15 minutes for a
    username from one client address lock that pair out with 429; other clients are not affected."""
    address = services.rate_limits.client(request)  # the trusted-proxy-aware client address
    try:
        user = authenticate(services.sessions, form.username, form.password, address)
    except PasswordTooLong as exc:
        raise HTTPException(422, str(exc)) from None
    except Throttled:
        raise HTTPException(429, "too many failed logins; try again later", headers={"Retry-After": "900"}) from None
    except AuthError:  # the failure was committed before the password was checked
        raise UNAUTHORIZED from None
    lifetime = timedelta(minutes=services.settings.jwt_lifetime_minutes)
    return TokenOut(access_token=issue_token(user, services.jwt_secret, lifetime),
                    expires_in=int(lifetime.total_seconds()))


# -- fabric families ------------------------------------------------------------------------------
def _color_out(services: Services, family: FabricFamily, color: Color) -> ColorAdminOut:
    return ColorAdminOut(color_id=color.color_id, family_id=family.family_id, name=color.name,
                         hex_value=color.hex_value, swatch_code=color.swatch_code,
                         swatch_url=_swatch_url(services.storage, family, color), status=color.status)


def _family_out(services: Services, family: FabricFamily) -> FamilyAdminOut:
    return FamilyAdminOut(family_id=family.family_id, display_name=family.display_name, collection=family.collection,
                          status=family.status, created_at=family.created_at, updated_at=family.updated_at,
                          colors=[_color_out(services, family, c) for c in family.colors])


def _family(session: Session, family_id: str) -> FabricFamily:
    family = fabrics.get_family(session, family_id)
    if family is None:
        raise HTTPException(404, f"fabric family {family_id} not found")
    return family


@router.get("/fabrics", response_model=list[FamilyAdminOut])
def list_fabrics(services: ServicesDep) -> list[FamilyAdminOut]:
    """Every family, active or not, with all its colors."""
    with services.sessions() as session:
        families = fabrics.list_families(session)
        return [_family_out(services, f) for f in families]


@router.post("/fabrics", status_code=201, response_model=FamilyAdminOut, responses=_errors(409, 422))
def create_fabric(body: FamilyIn, services: ServicesDep) -> FamilyAdminOut:
    with services.sessions.begin() as session:
        if fabrics.family_exists(session, body.family_id):
            raise HTTPException(409, f"fabric family {body.family_id} already exists")
        fabrics.add_family(session, family_id=body.family_id, display_name=body.display_name, status=body.status,
                           collection=body.collection or services.catalog.collection)
        return _family_out(services, _family(session, body.family_id))


@router.patch("/fabrics/{family_id}", response_model=FamilyAdminOut, responses=_errors(404, 422))
def update_fabric(family_id: str, body: FamilyPatch, services: ServicesDep) -> FamilyAdminOut:
    with services.sessions.begin() as session:
        family = _family(session, family_id)
        changes = body.model_dump(exclude_unset=True)
        for name, value in changes.items():
            if value is None:
                raise HTTPException(422, f"{name} cannot be null")
        fabrics.update_family(session, family, changes)
        return _family_out(services, family)


@router.delete("/fabrics/{family_id}", status_code=204, responses=_errors(404))
def delete_fabric(family_id: str, services: ServicesDep) -> Response:
    """Remove a family and its colors. Jobs keep their family and color ids, so history stays readable."""
    with services.sessions.begin() as session:
        fabrics.delete_family(session, _family(session, family_id))
    return Response(status_code=204)


# -- colors --------------------------------------------------------------------------------------
def _check_swatch_url(services: Services, url: str | None) -> None:
    if url is not None and services.storage.key_for_url(url) is None:
        raise HTTPException(422, "swatch_url must be a URL of this service's storage")


def _ensure_swatch(services: Services, family: FabricFamily, color: Color) -> None:
    """A new color gets a sample woven swatch in its hex color unless one is already stored."""
    key = color_swatch_key(family, color)
    if key and not color.swatch_url and not services.storage.exists(key):
        services.storage.put(key, render_swatch(color.hex_value, color.swatch_code), "image/png")


@router.get("/fabrics/{family_id}/colors", response_model=list[ColorAdminOut], responses=_errors(404))
def list_colors(family_id: str, services: ServicesDep) -> list[ColorAdminOut]:
    with services.sessions() as session:
        family = _family(session, family_id)
        return [_color_out(services, family, c) for c in family.colors]


@router.post("/fabrics/{family_id}/colors", status_code=201, response_model=ColorAdminOut,
             responses=_errors(404, 409, 422))
def create_color(family_id: str, body: ColorIn, services: ServicesDep) -> ColorAdminOut:
    _check_swatch_url(services, body.swatch_url)
    with services.sessions.begin() as session:
        family = _family(session, family_id)
        if fabrics.color_exists(session, body.color_id):
            raise HTTPException(409, f"color {body.color_id} already exists")
        color = fabrics.add_color(session, family, **body.model_dump())
        _ensure_swatch(services, family, color)
        return _color_out(services, family, color)


def _color(session: Session, color_id: str) -> tuple[FabricFamily, Color]:
    found = fabrics.get_color(session, color_id)
    if found is None:
        raise HTTPException(404, f"color {color_id} not found")
    return found


@router.patch("/colors/{color_id}", response_model=ColorAdminOut, responses=_errors(404, 422))
def update_color(color_id: str, body: ColorPatch, services: ServicesDep) -> ColorAdminOut:
    changes = body.model_dump(exclude_unset=True)
    _check_swatch_url(services, changes.get("swatch_url"))
    with services.sessions.begin() as session:
        family, color = _color(session, color_id)
        for name, value in changes.items():
            if value is None and name in ("name", "hex_value", "status"):
                raise HTTPException(422, f"{name} cannot be null")
        fabrics.update_color(session, color, changes)
        _ensure_swatch(services, family, color)
        return _color_out(services, family, color)


@router.delete("/colors/{color_id}", status_code=204, responses=_errors(404))
def delete_color(color_id: str, services: ServicesDep) -> Response:
    with services.sessions.begin() as session:
        _, color = _color(session, color_id)
        fabrics.delete_color(session, color)
    return Response(status_code=204)


# -- generation history ----------------------------------------------------------------------------
def _admin_job(job: GenerationJob, services: Services) -> AdminJobOut:
    return AdminJobOut(**job_out(job, services.storage).model_dump(), max_attempts=job.max_attempts,
                       lease_owner=job.lease_owner, lease_expires_at=job.lease_expires_at,
                       idempotency_key=job.idempotency_key, cancel_requested=job.cancel_requested)


def _encode_cursor(job: GenerationJob) -> str:
    return base64.urlsafe_b64encode(json.dumps([job.created_at.isoformat(), job.id]).encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        created, job_pk = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(created), int(job_pk)
    except (ValueError, TypeError, binascii.Error):
        raise HTTPException(422, "invalid cursor") from None


@router.get("/generations", response_model=GenerationPage, responses=_errors(422))
def list_generations(
    services: ServicesDep,
    status_filter: Annotated[str | None, Query(alias="status", pattern="^(pending|processing|completed|failed|canceled)$")] = None,
    family_id: str | None = None,
    color_id: str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> GenerationPage:
    """Jobs newest first, filtered; follow `next_cursor` for older pages (stable under new inserts)."""
    before = _decode_cursor(cursor) if cursor is not None else None
    with services.sessions() as session:
        rows = jobs.list_jobs(session, status=status_filter, family_id=family_id, color_id=color_id,
                              created_from=created_from, created_to=created_to, before=before, limit=limit + 1)
    page = rows[:limit]
    return GenerationPage(items=[_admin_job(job, services) for job in page],
                          next_cursor=_encode_cursor(page[-1]) if len(rows) > limit else None)


@router.get("/generations/{job_id}", response_model=AdminJobOut, responses=_errors(404))
def get_generation(job_id: str, services: ServicesDep) -> AdminJobOut:
    with services.sessions() as session:
        job = jobs.get_job(session, job_id)
    if job is None:
        raise HTTPException(404, f"job {job_id} not found")
    return _admin_job(job, services)


@router.post("/generations/{job_id}/retry", status_code=status.HTTP_202_ACCEPTED, response_model=AdminJobOut,
             responses=_errors(404, 409))
def retry_generation(job_id: str, services: ServicesDep) -> AdminJobOut:
    """Queue a failed job again with a fresh attempt budget; cuts it already finished are kept."""
    with services.sessions.begin() as session:
        outcome = jobs.retry_failed_job(session, job_id)
        if outcome is None:
            raise HTTPException(404, f"job {job_id} not found")
        if outcome != "retried":
            raise HTTPException(409, f"only failed jobs can be retried; this one is {outcome}")
        job = jobs.get_job(session, job_id)
    return _admin_job(job, services)


# -- operations ------------------------------------------------------------------------------------
@router.get("/health", tags=["ops"])
async def detailed_health(request: Request, services: ServicesDep) -> JSONResponse:
    """GET /health with its details: each part's error, the job runner's owner and the jobs in its
    hands, the model actually loaded, this ingress replica's host, pid, threads and pool, and who the
    rate limits take the caller for (`client`: check it behind a proxy)."""
    report = await health_report(services)
    report["ingress"]["client"] = services.rate_limits.client(request)
    return JSONResponse(report)
