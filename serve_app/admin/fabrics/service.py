"""Catalog management: families and colors as admins see them, and the swatch every color needs.

A catalog color's swatch lives in its collection's folder, `{collection}/{swatch_code}.{ext}` (a color
without a swatch code is filed under its color id), for as long as the catalog does: a photo an admin
gives, uploaded here or earlier through `POST /upload-swatch`, is stored there, never left in the
expiring `temp-uploads/`. The row keeps the storage key; URLs are made fresh when presented.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fastapi import HTTPException
from sqlalchemy.orm import Session

from catalog.loader import color_swatch_key
from catalog.swatches import render_swatch, swatch_key
from db import fabrics
from db import cached_renders
from db.models import Color, FabricFamily
from deployments.storage import ObjectMissing, Storage, StorageError
from serve_app.admin.fabrics.schemas import ColorAdminOut, ColorIn, ColorPatch, FamilyAdminOut
from serve_app.catalog.service import swatch_url
from serve_app.deps import Services
from serve_app.uploads.service import FORMATS, CleanImage

logger = logging.getLogger("sastre.admin")

SWATCH_EXTENSIONS = {extension for extension, _, _ in FORMATS.values()}


def color_out(services: Services, family: FabricFamily, color: Color) -> ColorAdminOut:
    return ColorAdminOut(color_id=color.color_id, family_id=family.family_id, name=color.name,
                         english=color.english, hex_value=color.hex_value, swatch_code=color.swatch_code,
                         swatch_url=swatch_url(services.storage, family, color), status=color.status)


def family_out(services: Services, family: FabricFamily) -> FamilyAdminOut:
    return FamilyAdminOut(family_id=family.family_id, display_name=family.display_name,
                          fabric=family.fabric, collection=family.collection, status=family.status,
                          created_at=family.created_at, updated_at=family.updated_at,
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


def swatch_source(services: Services, url: str) -> str:
    """The key of an admin's `swatch_url`: one of our objects, an image, and there; else a 422."""
    key = services.storage.key_for_url(url)
    if key is None:
        raise HTTPException(422, "swatch_url must be a URL of this service's storage")
    if posixpath.splitext(key)[1].lstrip(".") not in SWATCH_EXTENSIONS:
        raise HTTPException(422, "swatch_url must name a swatch image (an upload or a catalog swatch)")
    with storage_errors():
        if not services.storage.exists(key):
            raise HTTPException(422, "swatch_url refers to a swatch that does not exist or has expired")
    return key


@contextmanager
def storage_errors() -> Iterator[None]:
    """A swatch that vanished under us is the client's 422; a store that does not answer is a 503."""
    try:
        yield
    except ObjectMissing:
        raise HTTPException(422, "swatch_url refers to a swatch that does not exist or has expired") from None
    except StorageError:
        logger.exception("storage failed during a catalog swatch change")
        raise HTTPException(503, "storage unavailable, retry shortly") from None


class SwatchChange:
    """The storage side of one catalog edit, kept in step with its transaction.

    Enter it around the transaction: objects the edit created are removed if the edit is not committed
    (nothing half-written stays behind), and objects it replaced are removed once it is (no orphans).
    `collection` is the folder for a family that names none (rows made outside this service).
    """

    def __init__(self, storage: Storage, collection: str) -> None:
        self.storage = storage
        self.collection = collection
        self.created: list[str] = []
        self.replaced: list[str] = []

    def __enter__(self) -> SwatchChange:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        for key in self.created if exc_type else self.replaced:
            try:
                self.storage.delete(key)
            except StorageError:
                logger.warning("could not delete swatch %s; it is left over", key, exc_info=True)

    def store(self, key: str, write: Callable[[], object]) -> None:
        existed = self.storage.exists(key)
        write()
        if not existed:
            self.created.append(key)

    def own_key(self, family: FabricFamily, color: Color, extension: str) -> str:
        """Where this color's own swatch of this type goes: the seed's layout."""
        return swatch_key(family.collection or self.collection, color.swatch_code or color.color_id, extension)


def put_swatch(session: Session, change: SwatchChange, family: FabricFamily, color: Color, image: CleanImage) -> None:
    """Store an admin's swatch photo as the color's catalog swatch."""
    key = change.own_key(family, color, image.extension)
    change.store(key, lambda: change.storage.put(key, image.data, image.content_type))
    _record_swatch(session, change, family, color, key)


def adopt_swatch(session: Session, change: SwatchChange, family: FabricFamily, color: Color, source: str) -> None:
    """Make the object at `source` the color's swatch: used where it is when it already lives in the
    family's collection folder, else copied there (an upload expires, a job's copy is deleted)."""
    if posixpath.dirname(source) == (family.collection or change.collection):
        key = source
    else:
        key = change.own_key(family, color, posixpath.splitext(source)[1].lstrip("."))
        change.store(key, lambda: change.storage.copy(source, key))
    _record_swatch(session, change, family, color, key)


def clear_swatch(session: Session, change: SwatchChange, family: FabricFamily, color: Color) -> None:
    """Back to the seed layout's swatch (woven anew if it is missing)."""
    _record_swatch(session, change, family, color, None)
    ensure_swatch(change, family, color)


def _record_swatch(session: Session, change: SwatchChange, family: FabricFamily, color: Color, key: str | None) -> None:
    """Point the color at `key`. Its previous swatch goes once committed if that was this color's own
    file (the same name, another type) and no color shows it any more."""
    previous = color_swatch_key(family, color)
    fabrics.update_color(session, color, {"swatch_key": key, "swatch_url": None,
                                          "swatch_version": color.swatch_version + 1})
    own_name = posixpath.splitext(change.own_key(family, color, "png"))[0]
    if (previous and previous != color_swatch_key(family, color) and posixpath.splitext(previous)[0] == own_name
            and not fabrics.swatch_in_use(session, previous)):
        change.replaced.append(previous)


def ensure_swatch(change: SwatchChange, family: FabricFamily, color: Color) -> None:
    """A color on the seed layout gets a sample woven swatch in its hex color unless one is stored."""
    key = color_swatch_key(family, color)
    if key and not color.swatch_key and not change.storage.exists(key):
        change.store(key, lambda: change.storage.put(key, render_swatch(color.hex_value, color.swatch_code),
                                                     "image/png"))


def create_color(services: Services, family_id: str, body: ColorIn) -> ColorAdminOut:
    """Add a color; a `swatch_url` is adopted into the collection, else a sample swatch is woven."""
    source = swatch_source(services, body.swatch_url) if body.swatch_url is not None else None
    with storage_errors(), SwatchChange(services.storage, services.catalog.collection) as change:
        with services.sessions.begin() as session:
            family = find_family(session, family_id)
            if fabrics.color_exists(session, body.color_id):
                raise HTTPException(409, f"color {body.color_id} already exists")
            color = fabrics.add_color(session, family, **body.model_dump(exclude={"swatch_url"}))
            if source is not None:
                adopt_swatch(session, change, family, color, source)
            else:
                ensure_swatch(change, family, color)
            return color_out(services, family, color)


def update_color(services: Services, color_id: str, body: ColorPatch) -> ColorAdminOut:
    """Change a color's fields; a `swatch_url` is adopted as for a new color, null returns to the sample."""
    changes = body.model_dump(exclude_unset=True)
    new_swatch = "swatch_url" in changes
    url = changes.pop("swatch_url", None)
    source = swatch_source(services, url) if url is not None else None
    with storage_errors(), SwatchChange(services.storage, services.catalog.collection) as change:
        with services.sessions.begin() as session:
            family, color = find_color(session, color_id)
            refuse_nulls(changes, ("name", "english", "hex_value", "status"))
            fabrics.update_color(session, color, changes)
            if "english" in changes or new_swatch:  # the prompt or the swatch changes: old renders never hit
                cached_renders.forget_color(session, color.color_id)
            if source is not None:
                adopt_swatch(session, change, family, color, source)
            elif new_swatch:
                clear_swatch(session, change, family, color)
            else:
                ensure_swatch(change, family, color)
            return color_out(services, family, color)


def replace_color_swatch(services: Services, color_id: str, image: CleanImage) -> ColorAdminOut:
    """Store an admin's photo as the color's catalog swatch, replacing the one it had."""
    with storage_errors(), SwatchChange(services.storage, services.catalog.collection) as change:
        with services.sessions.begin() as session:
            family, color = find_color(session, color_id)
            put_swatch(session, change, family, color, image)
            cached_renders.forget_color(session, color.color_id)
            return color_out(services, family, color)
