"""Liveness, public health, and the admins' detailed health."""

from __future__ import annotations

import math

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from serve_app.deps import ServicesDep, current_admin
from serve_app.errors import error_responses
from serve_app.health.service import health_report, public_view
from serve_app.edge.routing import StorableTextRoute

router = APIRouter(tags=["ops"], route_class=StorableTextRoute)


@router.get("/livez")
def liveness() -> dict:
    """The process answers; checks nothing else (for liveness probes, and as the proxy's latency floor)."""
    return {"ok": True}


@router.get("/health", responses={503: {"description": "a part is down"}})
async def health(services: ServicesDep) -> JSONResponse:
    """Ok or not per part (database, storage, each deployment) and the model profile actually serving;
    503 when any part is down. The details are behind the admin token, at GET /admin/health.

    Answered from a report at most `health_max_age_seconds` old (its age in seconds is the `Age`
    header), so a flood of /health costs the deployments one check per that interval, not one each."""
    report, age = await services.health.latest(lambda: health_report(services))
    return JSONResponse(public_view(report), status_code=200 if report["status"] == "ok" else 503,
                        headers={"Age": str(math.floor(age))})


@router.get("/admin/health", tags=["admin"], dependencies=[Depends(current_admin)], responses=error_responses(401))
async def detailed_health(request: Request, services: ServicesDep) -> JSONResponse:
    """GET /health with its details: each part's error, the job runner's owner and the jobs in its
    hands, the model actually loaded, this ingress replica's host, pid, threads and pool, and who the
    rate limits take the caller for (`client`: check it behind a proxy)."""
    report = await health_report(services)
    report["ingress"]["client"] = services.rate_limits.client(request)
    return JSONResponse(report)
