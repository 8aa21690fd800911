"""Alembic environment: the URL comes from the caller (db.migrate) or SASTRE_DATABASE_URL."""

import os

from alembic import context
from sqlalchemy import create_engine

from db.engine import sqlalchemy_url
from db.models import Base

url = context.config.get_main_option("sqlalchemy.url") or os.environ.get("SASTRE_DATABASE_URL")
if not url:
    raise RuntimeError("no database URL: run migrations through `python -m serve_app.cli prepare`")

if context.is_offline_mode():
    context.configure(url=sqlalchemy_url(url), target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    with create_engine(sqlalchemy_url(url)).connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata)
        with context.begin_transaction():
            context.run_migrations()
