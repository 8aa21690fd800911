"""Catalog pre-render: queue the renders that make a shop's default views instant (admin token required)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from serve_app.admin.renders.schemas import PrewarmOut
from serve_app.admin.renders.service import prewarm
from serve_app.deps import ServicesDep, current_admin
from serve_app.errors import error_responses
from serve_app.edge.routing import StorableTextRoute

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(current_admin)],
                   responses=error_responses(401), route_class=StorableTextRoute)


@router.post("/renders/prewarm", status_code=202, response_model=PrewarmOut, responses=error_responses(409))
def prewarm_catalog(services: ServicesDep) -> PrewarmOut:
    """Render every active color x cut at the catalog seed unless the render cache has it or a job is on it.

    Answers at once with the queued jobs; follow them like any job (GET /jobs/{job_id})."""
    return prewarm(services)
