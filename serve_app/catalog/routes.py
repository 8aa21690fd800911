"""GET /catalog: what a shop's front end shows before anything is rendered."""

from __future__ import annotations

from fastapi import APIRouter

from serve_app.catalog.schemas import CatalogOut
from serve_app.catalog.service import shop_catalog
from serve_app.deps import ServicesDep
from serve_app.errors import error_responses
from serve_app.edge.routing import StorableTextRoute

router = APIRouter(tags=["catalog"], route_class=StorableTextRoute)


@router.get("/catalog", response_model=CatalogOut, responses=error_responses(503))
def get_catalog(services: ServicesDep) -> CatalogOut:
    """Active fabric families with their active colors and swatch URLs, and the cuts on offer."""
    return shop_catalog(services)
