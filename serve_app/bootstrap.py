"""Getting a database and catalog ready: used by `make run` (the CLI), the app builder and tests."""

from __future__ import annotations

import logging
from collections.abc import Collection

from sqlalchemy.orm import Session, sessionmaker

from catalog.data import CatalogData, load_catalog
from catalog.loader import sync_catalog
from catalog.swatches import render_swatch, swatch_key
from db import fabrics
from db.engine import embedded_database_url, make_engine, make_sessionmaker
from db.migrate import upgrade
from deployments.storage import S3Storage, Storage, open_storage
from serve_app.admin.auth.service import MIN_PRODUCTION_SECRET_BYTES, local_secret
from serve_app.admin.fabrics.service import SwatchChange, adopt_swatch
from serve_app.settings import Settings

logger = logging.getLogger("sastre.bootstrap")


def resolve_database_url(settings: Settings) -> str:
    """The configured URL, or the embedded server under the data directory (started if needed)."""
    if settings.database_url:
        return settings.database_url
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return embedded_database_url(settings.data_dir.resolve())


def resolve_jwt_secret(settings: Settings) -> str:
    """The admin token key: from settings; for a local run generated once under the data directory.

    A production deployment without SASTRE_JWT_SECRET refuses to start rather than invent one per node,
    and so does one whose secret is shorter than 32 bytes (guessable offline from any token).
    """
    production = settings.environment == "production"
    if settings.jwt_secret is not None:
        secret = settings.jwt_secret.get_secret_value()
        if production and len(secret.encode()) < MIN_PRODUCTION_SECRET_BYTES:
            raise RuntimeError(f"SASTRE_JWT_SECRET must be at least {MIN_PRODUCTION_SECRET_BYTES} bytes when "
                               "SASTRE_ENVIRONMENT=production (e.g. `openssl rand -base64 48`)")
        return secret
    if production:
        raise RuntimeError("SASTRE_JWT_SECRET must be set when SASTRE_ENVIRONMENT=production")
    return local_secret(settings.data_dir.resolve())


def put_catalog_swatches(storage: Storage, catalog: CatalogData, replaced: Collection[str] = ()) -> int:
    """Store each sample swatch that is missing, but for the colors in `replaced` (an admin stored their
    swatch, and a sample would only be an orphan); returns how many were written."""
    written = 0
    for family in catalog.families:
        for color in family.colors:
            if color.color_id in replaced:
                continue
            key = swatch_key(catalog.collection, color.swatch_code)
            if not storage.exists(key):
                storage.put(key, render_swatch(color.hex_value, color.swatch_code), "image/png")
                written += 1
    return written


def adopt_swatch_urls(sessions: sessionmaker[Session], storage: Storage, collection: str) -> int:
    """Give each color whose swatch an older version recorded as a URL its storage key instead, copied
    into the collection's folder if it was an upload; returns how many were adopted.

    A URL that is not (any more) one of this storage's objects is left as it was and logged: the color
    shows its collection file, if any, until an admin stores a swatch for it.
    """
    adopted = 0
    with SwatchChange(storage, collection) as change, sessions.begin() as session:
        for family, color in fabrics.colors_with_swatch_urls(session):
            key = storage.key_for_url(color.swatch_url)
            if key is None or not storage.exists(key):
                logger.warning("color %s: swatch_url %s is not an object of this storage; store its swatch with "
                               "PUT /admin/colors/%s/swatch", color.color_id, color.swatch_url, color.color_id)
                continue
            adopt_swatch(session, change, family, color, key)
            adopted += 1
    return adopted


def prepare(settings: Settings, database_url: str | None = None) -> str:
    """Migrate, load the sample catalog and its swatches; idempotent. Returns the database URL."""
    url = database_url or resolve_database_url(settings)
    upgrade(url)
    catalog = load_catalog()
    storage = open_storage(settings.storage_config())
    engine = make_engine(url, pool_size=1)
    try:
        sessions = make_sessionmaker(engine)
        with sessions.begin() as session:
            result = sync_catalog(session, catalog)
        adopted = adopt_swatch_urls(sessions, storage, catalog.collection)
        with sessions() as session:
            replaced = fabrics.colors_with_stored_swatches(session)
    finally:
        engine.dispose()
    if isinstance(storage, S3Storage):
        storage.ensure_upload_expiry(days=max(1, round(settings.upload_ttl_hours / 24)))
    swatches = put_catalog_swatches(storage, catalog, replaced)
    logger.info("catalog ready: %d families and %d colors added, %d swatches stored, %d swatch URLs adopted",
                result.families_added, result.colors_added, swatches, adopted)
    return url
