"""Catalog management: families and colors as admins see them, and the swatch every color needs."""

from __future__ import annotations

from fastapi import HTTPException
from sqlalchemy.orm import Session

from catalog.loader import color_swatch_key
from catalog.swatches import render_swatch
from db import catalog as fabrics
from db.models import Color, FabricFamily
from serve_app.admin.fabrics.schemas import ColorAdminOut, FamilyAdminOut
from serve_app.catalog.service import swatch_url
from serve_app.deps import Services


def color_out(services: Services, family: FabricFamily, color: Color) -> ColorAdminOut:
    return ColorAdminOut(color_id=color.color_id, family_id=family.family_id, name=color.name,
                         hex_value=color.hex_value, swatch_code=color.swatch_code,
                         swatch_url=swatch_url(services.storage, family, color), status=color.status)


def family_out(services: Services, family: FabricFamily) -> FamilyAdminOut:
    return FamilyAdminOut(family_id=family.family_id, display_name=family.display_name, collection=family.collection,
                          status=family.status, created_at=family.created_at, updated_at=family.updated_at,
                          colors=[color_out(services, family, c) for c in family.colors])


def find_family(session: Session, family_id: str) -> FabricFamily:
    family = fabrics.get_family(session, family_id)
    if family is None:
        raise HTTPException(404, f"fabric family {family_id} not found")
    return family


def find_color(session: Session, color_id: str) -> tuple[FabricFamily, Color]:
    found = fabrics.get_color(session, color_id)
    if found is None:
        raise HTTPException(404, f"color {color_id} not found")
    return found


def refuse_nulls(changes: dict, fields: tuple[str, ...]) -> None:
    """A PATCH may leave a required field out, never set it to null."""
    for name, value in changes.items():
        if value is None and name in fields:
            raise HTTPException(422, f"{name} cannot be null")


def check_swatch_url(services: Services, url: str | None) -> None:
    if url is not None and services.storage.key_for_url(url) is None:
        raise HTTPException(422, "swatch_url must be a URL of this service's storage")


def ensure_swatch(services: Services, family: FabricFamily, color: Color) -> None:
    """A new color gets a sample woven swatch in its hex color unless one is already stored."""
    key = color_swatch_key(family, color)
    if key and not color.swatch_url and not services.storage.exists(key):
        services.storage.put(key, render_swatch(color.hex_value, color.swatch_code), "image/png")
