"""Catalog queries and changes: fabric families and their colors.

Routes and the runner call these by name; the SQL lives here.
"""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, selectinload

from db.models import Color, FabricFamily


def find_family_and_color(session: Session, family_id: str, color_id: str) -> tuple[FabricFamily | None, Color | None]:
    """The family and the color a job names, whatever their status (a queued job still renders a color
    deactivated after it was accepted); None for one that was deleted."""
    family = session.scalars(select(FabricFamily).where(FabricFamily.family_id == family_id)).one_or_none()
    color = session.scalars(select(Color).where(Color.color_id == color_id)).one_or_none()
    return family, color
