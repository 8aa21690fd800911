"""Catalog queries and changes: fabric families and their colors.

Routes and the runner call these by name; the SQL lives here.
"""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import ColumnElement, and_, case, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session, selectinload

from db.models import Color, FabricFamily

Row = TypeVar("Row", FabricFamily, Color)


def find_family_and_color(session: Session, family_id: str, color_id: str) -> tuple[FabricFamily | None, Color | None]:
    """The family and the color a job names, whatever their status (a queued job still renders a color
    deactivated after it was accepted); None for one that was deleted."""
    family = session.scalars(select(FabricFamily).where(FabricFamily.family_id == family_id)).one_or_none()
    color = session.scalars(select(Color).where(Color.color_id == color_id)).one_or_none()
    return family, color


def find_families_and_colors(session: Session, family_ids, color_ids) -> tuple[dict[str, FabricFamily], dict[str, Color]]:
    """`find_family_and_color` for many jobs at once, in two queries whatever their number (the runner
    plans every job it claims in the claim's transaction); deleted ones are absent."""
    families = session.scalars(select(FabricFamily).where(FabricFamily.family_id.in_(set(family_ids))))
    colors = session.scalars(select(Color).where(Color.color_id.in_(set(color_ids))))
    return {f.family_id: f for f in families}, {c.color_id: c for c in colors}


def list_families(session: Session) -> list[FabricFamily]:
    """Every family, active or not, with all its colors loaded."""
    return list(session.scalars(select(FabricFamily).options(selectinload(FabricFamily.colors))
                                .order_by(FabricFamily.id)))


def get_family(session: Session, family_id: str) -> FabricFamily | None:
    return session.scalar(select(FabricFamily).where(FabricFamily.family_id == family_id)
                          .options(selectinload(FabricFamily.colors)))


def family_exists(session: Session, family_id: str) -> bool:
    return session.scalar(select(FabricFamily.id).where(FabricFamily.family_id == family_id)) is not None


def _inserted(session: Session, row: Row) -> Row:
    """`row` added and flushed, so the caller reads its id and server defaults at once."""
    session.add(row)
    session.flush()
    return row


def _changed(session: Session, row: Row, changes: dict) -> None:
    """`changes` (column name -> value) written to `row` and flushed."""
    for name, value in changes.items():
        setattr(row, name, value)
    session.flush()


def add_family(session: Session, **fields) -> FabricFamily:
    return _inserted(session, FabricFamily(**fields))


def update_family(session: Session, family: FabricFamily, changes: dict) -> None:
    _changed(session, family, {**changes, "updated_at": func.now()})
    session.refresh(family)  # updated_at is the server's now()


def delete_family(session: Session, family: FabricFamily) -> None:
    """A family goes with its colors; jobs keep their family and color ids, so history stays readable."""
    session.execute(delete(Color).where(Color.fabric_family_id == family.id))
    session.delete(family)


def get_color(session: Session, color_id: str) -> tuple[FabricFamily, Color] | None:
    row = session.execute(select(FabricFamily, Color).join(Color, Color.fabric_family_id == FabricFamily.id)
                          .where(Color.color_id == color_id)).one_or_none()
    return (row[0], row[1]) if row else None


def color_exists(session: Session, color_id: str) -> bool:
    return session.scalar(select(Color.id).where(Color.color_id == color_id)) is not None


def add_color(session: Session, family: FabricFamily, **fields) -> Color:
    return _inserted(session, Color(fabric_family_id=family.id, **fields))


def update_color(session: Session, color: Color, changes: dict) -> None:
    _changed(session, color, changes)


def swatch_in_use(session: Session, key: str) -> bool:
    """Whether any color shows the swatch at `key`: as the one an admin stored, or as the seed
    layout's `{collection}/{swatch_code}.png` of a color that has none stored."""
    seed_layout = func.concat(FabricFamily.collection, "/", Color.swatch_code, ".png")
    return session.scalar(
        select(Color.id).join(FabricFamily, Color.fabric_family_id == FabricFamily.id)
        .where(or_(Color.swatch_key == key, and_(Color.swatch_key.is_(None), seed_layout == key))).limit(1)
    ) is not None


def colors_with_swatch_urls(session: Session) -> list[tuple[FabricFamily, Color]]:
    """Colors whose swatch an older version recorded as a URL and that have no storage key yet."""
    rows = session.execute(select(FabricFamily, Color).join(Color, Color.fabric_family_id == FabricFamily.id)
                           .where(Color.swatch_url.is_not(None), Color.swatch_key.is_(None)))
    return [(family, color) for family, color in rows]


def colors_with_stored_swatches(session: Session) -> set[str]:
    """The colors whose swatch an admin stored (they need no sample)."""
    return set(session.scalars(select(Color.color_id).where(Color.swatch_key.is_not(None))))


def delete_color(session: Session, color: Color) -> None:
    session.delete(color)


def color_ids(session: Session) -> set[str]:
    return set(session.scalars(select(Color.color_id)))


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


def color_swatch_key_sql() -> ColumnElement[str | None]:
    """`catalog.loader.color_swatch_key` as SQL over `colors` and `fabric_families`, so POST /generate
    reads a color's swatch in the same statement that queues the job (a test keeps the two equal for
    every color): the swatch an admin stored, else the seed layout `{collection}/{swatch_code}.png`."""
    seed_layout = func.concat(FabricFamily.collection, "/", Color.swatch_code, ".png")
    has_seed_layout = and_(func.coalesce(Color.swatch_code, "") != "", func.coalesce(FabricFamily.collection, "") != "")
    return func.coalesce(func.nullif(Color.swatch_key, ""), case((has_seed_layout, seed_layout), else_=None))


async def active_collection(conn: AsyncConnection, family_id: str, color_id: str) -> tuple[bool, bool, str | None]:
    """For POST /generate: whether the family is active, whether the color is active in it, and the
    family's collection (where its catalog swatches live), in one round trip."""
    row = (await conn.execute(
        select(FabricFamily.collection, Color.id.is_not(None))
        .outerjoin(Color, and_(Color.fabric_family_id == FabricFamily.id, Color.color_id == color_id,
                               Color.status == "active"))
        .where(FabricFamily.family_id == family_id, FabricFamily.status == "active")
    )).one_or_none()
    return (False, False, None) if row is None else (True, bool(row[1]), row[0])
