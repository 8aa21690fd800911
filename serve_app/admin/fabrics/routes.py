"""Fabric families and their colors: list, create, change, delete (admin token required)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from db import fabrics
from db import cached_renders
from serve_app.admin.fabrics import service
from serve_app.admin.fabrics.schemas import (
    ColorAdminOut,
    ColorIn,
    ColorPatch,
    FamilyAdminOut,
    FamilyIn,
    FamilyPatch,
)
from serve_app.admin.fabrics.service import color_out, family_out, find_color, find_family, refuse_nulls
from serve_app.deps import ServicesDep, current_admin
from serve_app.errors import error_responses
from serve_app.edge.routing import StorableTextRoute
from serve_app.edge.body_limit import MULTIPART_BODY
from serve_app.uploads.service import clean_upload, read_file_field

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
        fabrics.add_family(session, family_id=body.family_id, display_name=body.display_name,
                           fabric=body.fabric, status=body.status,
                           collection=body.collection or services.catalog.collection)
        return family_out(services, find_family(session, body.family_id))


@router.patch("/fabrics/{family_id}", response_model=FamilyAdminOut, responses=error_responses(404, 422))
def update_fabric(family_id: str, body: FamilyPatch, services: ServicesDep) -> FamilyAdminOut:
    changes = body.model_dump(exclude_unset=True)
    with services.sessions.begin() as session:
        family = find_family(session, family_id)
        refuse_nulls(changes, tuple(changes))
        fabrics.update_family(session, family, changes)
        if "fabric" in changes:  # the prompt's fabric words: the family's old renders never hit again
            cached_renders.forget_family(session, family_id)
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
             responses=error_responses(404, 409, 422, 503))
def create_color(family_id: str, body: ColorIn, services: ServicesDep) -> ColorAdminOut:
    """Add a color. A `swatch_url` (an upload, say) is copied into the collection's folder, so the
    catalog never shows a swatch that expires; without one a sample is woven in `hex_value`."""
    return service.create_color(services, family_id, body)


@router.patch("/colors/{color_id}", response_model=ColorAdminOut, responses=error_responses(404, 422, 503))
def update_color(color_id: str, body: ColorPatch, services: ServicesDep) -> ColorAdminOut:
    """Edit a color; a new `swatch_url` is copied into the collection as on create, null returns it to
    the collection's `{swatch_code}.png`."""
    return service.update_color(services, color_id, body)


@router.put("/colors/{color_id}/swatch", response_model=ColorAdminOut, openapi_extra=MULTIPART_BODY,
            responses=error_responses(400, 404, 413, 415, 422, 503))
async def put_color_swatch(color_id: str, request: Request, services: ServicesDep) -> ColorAdminOut:
    """Store a swatch photo as the color's catalog swatch, `{collection}/{swatch_code}.{ext}` (under its
    color id when it has no swatch code); checked and cleaned as `POST /upload-swatch` does, never expires."""
    settings = services.settings
    data = await read_file_field(request, "file", settings.upload_max_bytes)
    clean = await clean_upload(services, data)
    return await asyncio.to_thread(service.replace_color_swatch, services, color_id, clean)


@router.delete("/colors/{color_id}", status_code=204, responses=error_responses(404))
def delete_color(color_id: str, services: ServicesDep) -> Response:
    with services.sessions.begin() as session:
        _, color = find_color(session, color_id)
        fabrics.delete_color(session, color)
    return Response(status_code=204)
