"""What the shop may offer: the active families and colors in the database, the cuts in the catalog."""

from __future__ import annotations

from catalog.loader import color_swatch_key
from db.fabrics import active_families
from db.models import Color, FabricFamily
from deployments.storage import Storage
from serve_app.catalog.schemas import CatalogOut, ColorOut, CutOut, FamilyOut
from serve_app.deps import Services


def swatch_url(storage: Storage, family: FabricFamily, color: Color) -> str | None:
    """The color's swatch as a URL made now from its key (a presigned URL stored earlier would expire)."""
    key = color_swatch_key(family, color)
    if key is None:
        return None
    url = storage.url_for(key)
    # A replaced swatch may keep its key (the same code and type): the version makes its URL new. A
    # presigned URL is new on every call already, and a query of its own must stay as signed.
    return f"{url}?v={color.swatch_version}" if color.swatch_version and "?" not in url else url


def shop_catalog(services: Services) -> CatalogOut:
    with services.sessions() as session:
        families = [
            FamilyOut(
                family_id=family.family_id,
                display_name=family.display_name,
                colors=[
                    ColorOut(color_id=c.color_id, name=c.name, hex_value=c.hex_value, swatch_code=c.swatch_code,
                             swatch_url=swatch_url(services.storage, family, c))
                    for c in family.colors if c.status == "active"
                ],
            )
            for family in active_families(session)
        ]
    cuts = [CutOut(cut_id=c.cut_id, display_name=c.display_name) for c in services.catalog.cuts]
    return CatalogOut(families=families, cuts=cuts)
