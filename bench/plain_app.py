"""The same FastAPI app and routes under plain uvicorn (no Ray), for bench/api_load.py's baseline.

Usage: python bench/plain_app.py PORT  (settings from SASTRE_* like the service)."""

from __future__ import annotations

import sys

import uvicorn

from catalog.data import load_catalog
from deployments.storage import open_storage
from serve_app.bootstrap import resolve_jwt_secret
from serve_app.deps import Services, ingress_sessions
from serve_app.settings import Settings
from serve_app.web import create_app, freeze_startup_heap

if __name__ == "__main__":
    settings = Settings()
    services = Services(settings=settings, sessions=ingress_sessions(settings, settings.database_url),
                        storage=open_storage(settings.storage_config()), catalog=load_catalog(),
                        jwt_secret=resolve_jwt_secret(settings))
    app = create_app(services)
    freeze_startup_heap()  # as an Ingress replica does
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
