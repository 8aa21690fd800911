"""The client's files as the ingress serves them, without a browser: every page and module it references
is there, with a type a browser accepts, and the admin API beside `/admin` is left alone."""

from __future__ import annotations

import re

import pytest

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


@pytest.mark.integration
def test_the_launched_service_sends_the_security_headers_on_pages_media_and_api(service):
    """Through the ingress as `make run` launches it (HAProxy or Serve's proxy in front of the app)."""
    with service.client() as client:
        swatch = client.get("/catalog").json()["families"][0]["colors"][0]["swatch_url"]
        for path in ("/", "/admin", "/static/admin.js", swatch, "/catalog", "/jobs/no-such-job", "/docs"):
            response = client.get(path)
            assert response.status_code in (200, 404), path
            assert response.headers["x-content-type-options"] == "nosniff", path
            assert response.headers["x-frame-options"] == "DENY", path
            assert response.headers["referrer-policy"] == "no-referrer", path
            policy = {name: values for name, *values in (part.split() for part in
                                                          response.headers["content-security-policy"].split(";"))}
            assert policy["frame-ancestors"] == ["'none'"], path
            assert "'unsafe-inline'" not in policy["script-src"] and "'self'" in policy["script-src"], path


@pytest.mark.integration
def test_an_inline_script_is_refused_and_reported(visit, service):
    """The check every browser test ends with: a script injected inline is refused, and the refusal is seen."""
    page = visit.page
    page.goto("/")
    page.evaluate("""() => { const s = document.createElement("script"); s.textContent = "window.ran = true";
                             document.body.append(s); }""")
    page.wait_for_timeout(300)
    assert page.evaluate("() => window.ran === undefined")
    assert any("Content Security Policy" in text for text in visit.csp_violations)
    visit.csp_violations.clear()  # seen and expected: the fixture fails a test on any other
