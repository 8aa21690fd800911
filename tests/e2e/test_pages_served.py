"""The client's files as the ingress serves them, without a browser: every page and module it references
is there, with a type a browser accepts, and the admin API beside `/admin` is left alone."""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from serve_app.client import mount_client


def _client() -> TestClient:
    app = FastAPI()

    @app.post("/admin/login")
    def login() -> dict:
        return {"route": "admin api"}

    mount_client(app)
    return TestClient(app)


def test_pages_and_every_asset_they_load_are_served_with_browser_types():
    client = _client()
    seen, queue = set(), []
    for page in ("/", "/admin"):
        response = client.get(page)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        assert response.headers["cache-control"] == "no-cache"
        queue += re.findall(r'(?:src|href)="(/static/[^"]+)"', response.text)
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        response = client.get(path)
        assert response.status_code == 200, path
        if path.endswith(".js"):
            assert response.headers["content-type"].startswith("text/javascript"), path  # modules need a JS type
            queue += [f"/static/{name}" for name in re.findall(r'from "\./([^"]+)"', response.text)]
        elif path.endswith(".css"):
            assert response.headers["content-type"].startswith("text/css"), path
    assert {"/static/shop.js", "/static/admin.js", "/static/api.js", "/static/jobwatch.js", "/static/dom.js",
            "/static/style.css"} <= seen


def test_only_the_exact_admin_path_is_the_page():
    client = _client()
    assert client.post("/admin/login").json() == {"route": "admin api"}
    assert client.get("/admin/fabrics").status_code == 404  # the API's, not ours
    assert client.get("/static/../__init__.py").status_code == 404
