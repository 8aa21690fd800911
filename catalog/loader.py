"""Loading the shipped catalog into the database (reading it back is `db.fabrics`)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from catalog.data import CatalogData
from catalog.swatches import swatch_key
from db import fabrics
from db.models import Color, FabricFamily


@dataclass(frozen=True)
class SyncResult:
    families_added: int
    colors_added: int


def sync_catalog(session: Session, data: CatalogData) -> SyncResult:
    """Insert the families and colors that are missing; never touch existing rows.

    Running it again is a no-op, and edits made by admins (renames, new prompt words, deactivations)
    survive restarts. The file's prompt words (`fabric`, `english`) seed the columns of the same names;
    from then on the database is what the runner reads.
    """
    families = {f.family_id: f for f in fabrics.list_families(session)}
    known_colors = fabrics.color_ids(session)
    families_added = colors_added = 0
    for spec in data.families:
        family = families.get(spec.family_id)
        if family is None:
            family = FabricFamily(family_id=spec.family_id, display_name=spec.display_name, fabric=spec.fabric,
                                  collection=data.collection)
            session.add(family)
            families_added += 1
        for color in spec.colors:
            if color.color_id in known_colors:
                continue
            family.colors.append(Color(color_id=color.color_id, name=color.name, english=color.english,
                                       hex_value=color.hex_value, swatch_code=color.swatch_code))
            known_colors.add(color.color_id)
            colors_added += 1
    session.flush()
    return SyncResult(families_added, colors_added)


def color_swatch_key(family: FabricFamily, color: Color) -> str | None:
    """Where the color's swatch is stored: the one an admin stored, else the seed layout's file."""
    if color.swatch_key:
        return color.swatch_key
    if not color.swatch_code or not family.collection:
        return None
    return swatch_key(family.collection, color.swatch_code)
