"""Loading the shipped catalog into the database, and reading the active catalog back."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, select
from sqlalchemy.orm import Session, selectinload

from catalog.data import CatalogData
from catalog.swatches import swatch_key
from db.models import Color, FabricFamily


@dataclass(frozen=True)
class SyncResult:
    families_added: int
    colors_added: int


def sync_catalog(session: Session, data: CatalogData) -> SyncResult:
    """Insert the families and colors that are missing; never touch existing rows.

    Running it again is a no-op, and edits made by admins (renames, deactivations) survive restarts.
    """
    families = {f.family_id: f for f in session.scalars(select(FabricFamily).options(selectinload(FabricFamily.colors)))}
    known_colors = set(session.scalars(select(Color.color_id)))
    families_added = colors_added = 0
    for spec in data.families:
        family = families.get(spec.family_id)
        if family is None:
            family = FabricFamily(family_id=spec.family_id, display_name=spec.display_name, collection=data.collection)
            session.add(family)
            families_added += 1
        for color in spec.colors:
            if color.color_id in known_colors:
                continue
            family.colors.append(Color(color_id=color.color_id, name=color.name, hex_value=color.hex_value,
                                       swatch_code=color.swatch_code))
            known_colors.add(color.color_id)
            colors_added += 1
    session.flush()
    return SyncResult(families_added, colors_added)


def color_swatch_key(family: FabricFamily, color: Color) -> str | None:
    if not color.swatch_code or not family.collection:
        return None
    return swatch_key(family.collection, color.swatch_code)


def active_families(session: Session) -> list[FabricFamily]:
    """Active families with their colors loaded (callers filter colors by status)."""
    return list(
        session.scalars(
            select(FabricFamily)
            .where(FabricFamily.status == "active")
            .options(selectinload(FabricFamily.colors))
            .order_by(FabricFamily.id)
        )
    )


def find_active_color(session: Session, family_id: str, color_id: str) -> tuple[FabricFamily | None, Color | None]:
    """The family (if active) and the color (if active and in that family), in one round trip."""
    row = session.execute(
        select(FabricFamily, Color)
        .outerjoin(Color, and_(Color.fabric_family_id == FabricFamily.id, Color.color_id == color_id,
                               Color.status == "active"))
        .where(FabricFamily.family_id == family_id, FabricFamily.status == "active")
    ).one_or_none()
    return (row[0], row[1]) if row else (None, None)
