"""The body cap, through a real uvicorn on a loopback port and a real database: a body over 64 KiB is a
413 with a JSON detail before any route parses it or counts it against a rate limit, whether it
declares its length or streams chunked; the uploads keep their own, larger cap."""

from __future__ import annotations

import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from catalog.data import load_catalog
from catalog.loader import sync_catalog
from db.models import GenerationJob
from deployments.storage import LocalStorage
from serve_app.edge.body_limit import upload_routes
from serve_app.deps import Services
from serve_app.settings import Settings
from serve_app.web import FEATURES
from tests.servers import uvicorn_serving

NAVY = {"family_id": "lana-fria", "color_id": "lana-fria-azul-marino", "cuts": ["recto"]}
CAP = 64 * 1024


@pytest.fixture
def base_url(sessions, tmp_path):
    catalog = load_catalog()
    with sessions.begin() as s:
        sync_catalog(s, catalog)
    settings = Settings(data_dir=tmp_path, rate_limit_generate="2/minute")
    services = Services(settings=settings, sessions=sessions, storage=LocalStorage(tmp_path, "http://t/media"),
                        catalog=catalog, jwt_secret="x" * 32)
    with uvicorn_serving(services) as url:
        yield url


def _jobs(sessions) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(GenerationJob))


def _oversized_generate_body() -> bytes:
    """A POST /generate body that is valid JSON and 80 KiB long (a padded field the route ignores)."""
    return json.dumps({**NAVY, "padding": "x" * (80 * 1024)}).encode()


def _chunked(data: bytes, chunk: int = 8 * 1024):
    """`data` as a stream: httpx sends it chunked, with no Content-Length."""
    for start in range(0, len(data), chunk):
        yield data[start:start + chunk]


def test_a_declared_oversized_body_is_a_413_and_writes_nothing(base_url, sessions):
    with httpx.Client(base_url=base_url) as client:
        refused = client.post("/generate", content=_oversized_generate_body(),
                              headers={"content-type": "application/json"})
    assert refused.status_code == 413
    assert refused.json() == {"detail": "request body too large: the limit is 64 KiB"}
    assert _jobs(sessions) == 0


def test_a_chunked_oversized_body_is_refused_as_it_streams_and_spends_no_rate_limit(base_url, sessions):
    """Three oversized POSTs under a 2/minute limit, then two good ones: the 413s counted for nothing."""
    with httpx.Client(base_url=base_url) as client:
        refused = [client.post("/generate", content=_chunked(_oversized_generate_body()),
                               headers={"content-type": "application/json"}) for _ in range(3)]
        accepted = [client.post("/generate", json=NAVY) for _ in range(2)]
        over = client.post("/generate", json=NAVY)
    for response in refused:
        assert response.request.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in response.request.headers
        assert response.status_code == 413, response.text
        assert response.json() == {"detail": "request body too large: the limit is 64 KiB"}
    assert [response.status_code for response in accepted] == [202, 202]
    assert over.status_code == 429  # the limit itself still holds
    assert _jobs(sessions) == 2


def test_a_body_at_the_cap_is_parsed_as_usual(base_url, sessions):
    body = json.dumps({**NAVY, "seed": 7}).encode()
    body += b" " * (CAP - len(body))  # JSON allows trailing whitespace
    with httpx.Client(base_url=base_url) as client:
        declared = client.post("/generate", content=body, headers={"content-type": "application/json"})
        streamed = client.post("/generate", content=_chunked(body), headers={"content-type": "application/json"})
    assert declared.status_code == streamed.status_code == 202, (declared.text, streamed.text)
    assert _jobs(sessions) == 2


def test_a_form_body_over_the_cap_is_refused_before_any_login_is_tried(base_url):
    form = b"username=admin&password=" + b"x" * (100 * 1024)
    with httpx.Client(base_url=base_url) as client:
        declared = client.post("/admin/login", content=form,
                               headers={"content-type": "application/x-www-form-urlencoded"})
        streamed = client.post("/admin/login", content=_chunked(form),
                               headers={"content-type": "application/x-www-form-urlencoded"})
    assert declared.status_code == streamed.status_code == 413
    assert "64 KiB" in declared.json()["detail"] and "64 KiB" in streamed.json()["detail"]


def test_uploads_keep_their_own_larger_cap(base_url):
    noise = np.random.default_rng(3).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    assert len(buffer.getvalue()) > 2 * CAP
    with httpx.Client(base_url=base_url) as client:
        stored = client.post("/upload-swatch", files={"file": ("noise.png", buffer.getvalue(), "image/png")})
    assert stored.status_code == 201, stored.text


def test_only_the_two_uploads_stream_past_the_cap():
    routes = upload_routes(route for feature in FEATURES for route in feature.router.routes)
    assert {(route.path, *route.methods) for route in routes} == {
        ("/upload-swatch", "POST"), ("/admin/colors/{color_id}/swatch", "PUT")}
