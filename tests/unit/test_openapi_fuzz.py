"""Property-based fuzzing of the service's own OpenAPI schema (schemathesis): no request is a 5xx.

Every operation gets a bounded number of generated requests, valid and invalid, against the real
app on a real database, with an admin token so the admin routes are explored past authentication.
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from sqlalchemy.orm import sessionmaker

from catalog.data import load_catalog
from catalog.loader import sync_catalog
from deployments.storage import LocalStorage
from serve_app.deps import Services
from serve_app.admin.auth.service import create_user, issue_token
from serve_app.bootstrap import put_catalog_swatches
from serve_app.settings import Settings
from serve_app.web import create_app

SECRET = "fuzzing-signing-key-of-at-least-32-bytes"
EXAMPLES_PER_OPERATION = 30



def _services(sessions, storage: LocalStorage, catalog) -> Services:
    settings = Settings(data_dir=storage.root, rate_limit_generate="100000/minute", rate_limit_upload="100000/minute")
    return Services(settings=settings, sessions=sessions, storage=storage, catalog=catalog, jwt_secret=SECRET)


# The schema is read from the app at import time (schemathesis parametrizes over its operations);
# each test then points the same app at its fresh database (routes find their parts in app.state).
APP = create_app(_services(sessionmaker(), LocalStorage(Path(tempfile.gettempdir()), "http://testserver/media"),
                           load_catalog()))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture
def token(sessions, tmp_path) -> str:
    catalog = load_catalog()
    with sessions.begin() as s:
        sync_catalog(s, catalog)
        user = create_user(s, "fuzz-admin", "correct horse battery staple")
    storage = LocalStorage(tmp_path, "http://testserver/media")
    put_catalog_swatches(storage, catalog)
    APP.state.services = _services(sessions, storage, catalog)
    return issue_token(user, SECRET, timedelta(minutes=30))


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_request_gets_a_server_error(case, token):
    response = case.call(headers={"Authorization": f"Bearer {token}"})
    assert response.status_code < 500, f"{case.method} {case.formatted_path} → {response.status_code}: {response.text[:300]}"
