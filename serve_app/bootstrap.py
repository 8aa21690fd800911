"""Getting a database and catalog ready: used by `make run` (the CLI), the app builder and tests."""

from __future__ import annotations

import logging

from catalog.data import CatalogData, load_catalog
from catalog.loader import sync_catalog
from catalog.swatches import render_swatch, swatch_key
from db.engine import embedded_database_url, make_engine, make_sessionmaker
from db.migrate import upgrade
from deployments.storage import S3Storage, Storage, open_storage
from serve_app.admin.auth.service import MIN_PRODUCTION_SECRET_BYTES, local_secret
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


def put_catalog_swatches(storage: Storage, catalog: CatalogData) -> int:
    """Store each sample swatch that is missing; returns how many were written."""
    written = 0
    for family in catalog.families:
        for color in family.colors:
            key = swatch_key(catalog.collection, color.swatch_code)
            if not storage.exists(key):
                storage.put(key, render_swatch(color.hex_value, color.swatch_code), "image/png")
                written += 1
    return written


def prepare(settings: Settings, database_url: str | None = None) -> str:
    """Migrate, load the sample catalog and its swatches; idempotent. Returns the database URL."""
    url = database_url or resolve_database_url(settings)
    upgrade(url)
    catalog = load_catalog()
    engine = make_engine(url, pool_size=1)
    try:
        with make_sessionmaker(engine).begin() as session:
            result = sync_catalog(session, catalog)
    finally:
        engine.dispose()
    storage = open_storage(settings.storage_config())
    if isinstance(storage, S3Storage):
        storage.ensure_upload_expiry(days=max(1, round(settings.upload_ttl_hours / 24)))
    swatches = put_catalog_swatches(storage, catalog)
    logger.info("catalog ready: %d families and %d colors added, %d swatches stored",
                result.families_added, result.colors_added, swatches)
    return url
