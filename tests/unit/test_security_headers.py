"""Every answer carries the security headers: pages, their scripts, media, API bodies, errors, the docs.

The real app on a real database (no Ray); tests/e2e checks the same pages in Chromium, where any CSP
violation fails the test, and through the launched service.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from deployments.storage import S3Storage
from tests.unit.test_api import NAVY, api, call  # noqa: F401

SWATCH = "/media/SASTRE%202026-27/095T-0121.png"


def directives(policy: str) -> dict[str, list[str]]:
    return {name: values for name, *values in (part.split() for part in policy.split(";"))}


@pytest.mark.parametrize("method, path, body, status", [
    ("GET", "/", None, 200),
    ("GET", "/admin", None, 200),
    ("GET", "/static/shop.js", None, 200),
    ("GET", SWATCH, None, 200),
    ("GET", "/catalog", None, 200),
    ("POST", "/generate", NAVY, 202),
    ("GET", "/jobs/no-such-job", None, 404),
    ("POST", "/generate", {"family_id": "lana-fria"}, 422),
    ("GET", "/admin/generations", None, 401),
    ("GET", "/openapi.json", None, 200),
])
def test_pages_media_and_api_answers_carry_the_headers(api, method, path, body, status):  # noqa: F811
    response = call(api, method, path, json=body)
    assert response.status_code == status, response.text
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    policy = directives(response.headers["content-security-policy"])
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]  # no inline script, no other origin
    assert policy["default-src"] == ["'self'"] and policy["object-src"] == ["'none'"]
    assert "http://testserver" in policy["img-src"]  # where this service's media URLs point


def test_a_cors_preflight_carries_them_too(api):  # noqa: F811
    response = call(api, "OPTIONS", "/generate", headers={"Origin": "http://localhost:3000",
                                                           "Access-Control-Request-Method": "POST"})
    assert response.status_code == 200 and response.headers["x-frame-options"] == "DENY"


def test_the_docs_page_runs_swagger_ui_without_inline_script(api):  # noqa: F811
    page = call(api, "GET", "/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = directives(page.headers["content-security-policy"])
    assert policy["script-src"] == ["'self'", "https://cdn.jsdelivr.net"] and policy["frame-ancestors"] == ["'none'"]
    assert "<script>" not in page.text and 'src="/static/docs.js"' in page.text
    starter = call(api, "GET", "/static/docs.js")
    assert starter.status_code == 200 and "SwaggerUIBundle(" in starter.text and "/openapi.json" in starter.text


def test_media_from_a_bucket_is_allowed_by_the_pages_policy(api):  # noqa: F811
    """Presigned S3 URLs (no public base URL) point at the endpoint: the pages must be allowed to show them."""
    bucket = S3Storage(bucket="media", endpoint_url="https://acct.r2.cloudflarestorage.com", region="auto",
                       access_key_id="id", secret_access_key="secret")
    page = call(replace(api, storage=bucket), "GET", "/")
    img = directives(page.headers["content-security-policy"])["img-src"]
    assert "https://acct.r2.cloudflarestorage.com" in img and "http://testserver" not in img
