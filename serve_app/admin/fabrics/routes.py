"""Fabric families and their colors: list, create, change, delete (admin token required)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Response

from db import catalog as fabrics
from serve_app.admin.fabrics.schemas import (
    ColorAdminOut,
    ColorIn,
    ColorPatch,
    FamilyAdminOut,
    FamilyIn,
    FamilyPatch,
)
from serve_app.admin.fabrics.service import (
    check_swatch_url,
    color_out,
    ensure_swatch,
    family_out,
    find_color,
    find_family,
    refuse_nulls,
)
from serve_app.deps import ServicesDep, current_admin
from serve_app.errors import error_responses
from serve_app.routing import StorableTextRoute

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(current_admin)],
                   responses=error_responses(401), route_class=StorableTextRoute)


@router.get("/fabrics", response_model=list[FamilyAdminOut])
def list_fabrics(services: ServicesDep) -> list[FamilyAdminOut]:
    """Every family, active or not, with all its colors."""
    with services.sessions() as session:
        return [family_out(services, f) for f in fabrics.list_families(session)]


@router.post("/fabrics", status_code=201, response_model=FamilyAdminOut, responses=error_responses(409, 422))
def create_fabric(body: FamilyIn, services: ServicesDep) -> FamilyAdminOut:
    with services.sessions.begin() as session:
        if fabrics.family_exists(session, body.family_id):
            raise HTTPException(409, f"fabric family {body.family_id} already exists")
        fabrics.add_family(session, family_id=body.family_id, display_name=body.display_name, status=body.status,
                           collection=body.collection or services.catalog.collection)
        return family_out(services, find_family(session, body.family_id))


@router.patch("/fabrics/{family_id}", response_model=FamilyAdminOut, responses=error_responses(404, 422))
def update_fabric(family_id: str, body: FamilyPatch, services: ServicesDep) -> FamilyAdminOut:
    changes = body.model_dump(exclude_unset=True)
    with services.sessions.begin() as session:
        family = find_family(session, family_id)
        refuse_nulls(changes, tuple(changes))
        fabrics.update_family(session, family, changes)
        return family_out(services, family)


@router.delete("/fabrics/{family_id}", status_code=204, responses=error_responses(404))
def delete_fabric(family_id: str, services: ServicesDep) -> Response:
    """Remove a family and its colors. Jobs keep their family and color ids, so history stays readable."""
    with services.sessions.begin() as session:
        fabrics.delete_family(session, find_family(session, family_id))
    return Response(status_code=204)


@router.get("/fabrics/{family_id}/colors", response_model=list[ColorAdminOut], responses=error_responses(404))
def list_colors(family_id: str, services: ServicesDep) -> list[ColorAdminOut]:
    with services.sessions() as session:
        family = find_family(session, family_id)
        return [color_out(services, family, c) for c in family.colors]


@router.post("/fabrics/{family_id}/colors", status_code=201, response_model=ColorAdminOut,
             responses=error_responses(404, 409, 422))
def create_color(family_id: str, body: ColorIn, services: ServicesDep) -> ColorAdminOut:
    check_swatch_url(services, body.swatch_url)
    with services.sessions.begin() as session:
        family = find_family(session, family_id)
        if fabrics.color_exists(session, body.color_id):
            raise HTTPException(409, f"color {body.color_id} already exists")
        color = fabrics.add_color(session, family, **body.model_dump())
        ensure_swatch(services, family, color)
        return color_out(services, family, color)


@router.patch("/colors/{color_id}", response_model=ColorAdminOut, responses=error_responses(404, 422))
def update_color(color_id: str, body: ColorPatch, services: ServicesDep) -> ColorAdminOut:
    changes = body.model_dump(exclude_unset=True)
    check_swatch_url(services, changes.get("swatch_url"))
    with services.sessions.begin() as session:
        family, color = find_color(session, color_id)
        refuse_nulls(changes, ("name", "hex_value", "status"))
        fabrics.update_color(session, color, changes)
        ensure_swatch(services, family, color)
        return color_out(services, family, color)


@router.delete("/colors/{color_id}", status_code=204, responses=error_responses(404))
def delete_color(color_id: str, services: ServicesDep) -> Response:
    with services.sessions.begin() as session:
        _, color = find_color(session, color_id)
        fabrics.delete_color(session, color)
    return Response(status_code=204)
