"""The service over HTTP, like a shop's front end uses it, on real Ray Serve and PostgreSQL."""

from __future__ import annotations

import hashlib
import io
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image
from sqlalchemy import delete, func, select

from db.models import GenerationJob, RenderCacheEntry
from tests.integration.conftest import IMAGE_SIZE

pytestmark = pytest.mark.integration

NAVY = {"family_id": "lana-fria", "color_id": "lana-fria-azul-marino"}


def _rows(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(GenerationJob))


def _wait(client: httpx.Client, job_id: str, timeout: float = 120) -> tuple[dict, list[str]]:
    """Poll a job until it is final; returns the final body and the statuses seen, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/jobs/{job_id}").json()
        if not seen or seen[-1] != body["status"]:
            seen.append(body["status"])
        if body["status"] in ("completed", "failed", "canceled"):
            return body, seen
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} not finished after {timeout}s: {seen}")


def _jpeg(client: httpx.Client, url: str) -> bytes:
    response = client.get(url)
    assert response.status_code == 200, url
    assert response.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.format == "JPEG"
        assert image.size == (IMAGE_SIZE, IMAGE_SIZE)
    return response.content


def test_health_reports_database_storage_and_every_deployment(service):
    body = service.client().get("/health").json()
    assert body["status"] == "ok"
    assert body["database"] == {"ok": True} and body["storage"] == {"ok": True}
    assert set(body["deployments"]) == {"JobRunner", "ControlNetPreprocessor", "SdxlTurboGenerator", "Finisher"}
    assert all(d["ok"] for d in body["deployments"].values())
    assert body["model_profile"] == "tiny-random"


def test_catalog_lists_families_colors_and_reachable_swatches(service):
    with service.client() as client:
        catalog = client.get("/catalog").json()
        assert len(catalog["families"]) >= 3
        assert {c["cut_id"] for c in catalog["cuts"]} == {"recto", "cruzado"}
        color = catalog["families"][0]["colors"][0]
        assert set(color) == {"color_id", "name", "hex_value", "swatch_code", "swatch_url"}
        swatch = client.get(color["swatch_url"])
    assert swatch.status_code == 200 and swatch.headers["content-type"] == "image/png"


def test_two_cut_job_goes_pending_processing_completed(service):
    with service.client() as client:
        started = time.monotonic()
        response = client.post("/generate", json={**NAVY, "cuts": ["recto", "cruzado"], "seed": 1234})
        post_seconds = time.monotonic() - started
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert accepted["status"] == "pending" and accepted["seed"] == 1234
        body, seen = _wait(client, accepted["job_id"])
        images = [_jpeg(client, url) for url in body["result_urls"]]
    assert post_seconds < 2  # returns without waiting for any model
    assert seen[-1] == "completed" and "processing" in seen
    assert seen == [s for s in ("pending", "processing", "completed") if s in seen]
    assert body["cuts"] == ["recto", "cruzado"] and body["seeds"] == [1234, 1235]
    assert [url.rsplit("/", 1)[1] for url in body["result_urls"]] == ["recto.jpg", "cruzado.jpg"]
    assert "/generated/lana-fria/lana-fria-azul-marino/" in body["result_urls"][0]
    assert body["job_id"] not in body["result_urls"][0] and body["job_id"].replace("-", "") not in body["result_urls"][0]
    assert [p["status"] for p in body["progress"]] == ["completed", "completed"]
    assert [p["url"] for p in body["progress"]] == body["result_urls"]
    assert body["progress"][0]["ip_adapter_fallback"] is False
    assert body["attempts"] == 1 and body["error_message"] is None
    assert body["started_at"] <= body["completed_at"]
    assert images[0] != images[1]


def test_ten_concurrent_jobs_all_complete_with_distinct_results(service):
    def submit(seed: int) -> str:
        with service.client() as client:
            response = client.post("/generate", json={**NAVY, "cuts": ["recto", "cruzado"], "seed": seed})
            assert response.status_code == 202, response.text
            return response.json()["job_id"]

    with ThreadPoolExecutor(10) as pool:
        job_ids = list(pool.map(submit, range(100, 1100, 100)))
    assert len(set(job_ids)) == 10
    with service.client() as client:
        finals = [_wait(client, job_id)[0] for job_id in job_ids]
        digests = {hashlib.sha256(_jpeg(client, url)).hexdigest() for body in finals for url in body["result_urls"]}
    assert [body["status"] for body in finals] == ["completed"] * 10
    urls = [url for body in finals for url in body["result_urls"]]
    assert len(set(urls)) == 20 and len(digests) == 20


def test_same_seed_gives_the_same_image_whatever_the_batch(service, service_engine):
    """The generator batches concurrent cuts; a cut's pixels must not depend on its batch mates."""
    with service.client() as client:
        alone = client.post("/generate", json={**NAVY, "cuts": ["recto"], "seed": 77}).json()["job_id"]
        alone_body = _wait(client, alone)[0]
        with service_engine.begin() as conn:  # else the render cache would answer the crowd's recto at seed 77
            conn.execute(delete(RenderCacheEntry))
        crowd = [client.post("/generate", json={**NAVY, "cuts": ["recto", "cruzado"], "seed": s}).json()["job_id"]
                 for s in (77, 5, 6, 7)]
        crowd_bodies = [_wait(client, j)[0] for j in crowd]
        assert crowd_bodies[0]["progress"][0]["cached"] is False  # rendered, in a batch
        first = Image.open(io.BytesIO(_jpeg(client, alone_body["result_urls"][0])))
        again = Image.open(io.BytesIO(_jpeg(client, crowd_bodies[0]["result_urls"][0])))
    import numpy as np

    diff = np.abs(np.asarray(first).astype(int) - np.asarray(again).astype(int))
    assert diff.mean() < 0.5  # equal up to JPEG re-encoding of at most one-grey-level differences


BAD_REQUESTS = [
    ({"family_id": "nope", "color_id": "lana-fria-azul-marino", "cuts": ["recto"]}, 422, "fabric family"),
    ({**NAVY, "color_id": "nope"}, 422, "color"),
    ({"family_id": "lino", "color_id": "lana-fria-azul-marino", "cuts": ["recto"]}, 422, "color"),
    ({**NAVY, "cuts": ["chaleco"]}, 422, "unknown cut"),
    ({**NAVY, "cuts": []}, 422, "at least 1"),
    ({**NAVY, "cuts": ["recto", "recto"]}, 422, "repeated cuts"),
    ({**NAVY, "cuts": ["recto"], "seed": -1}, 422, "greater than or equal"),
    ({"color_id": "lana-fria-azul-marino", "cuts": ["recto"]}, 422, "Field required"),
    ({**NAVY, "cuts": ["recto"], "swatch_url": "http://169.254.169.254/latest/meta-data"}, 422, "issued by this service"),
    ({**NAVY, "cuts": ["recto"], "swatch_url": "file:///etc/passwd"}, 422, "issued by this service"),
    ({**NAVY, "cuts": ["recto"], "swatch_url": ""}, 422, "at least 1 character"),
]


@pytest.mark.parametrize("payload,status,message", BAD_REQUESTS)
def test_bad_requests_get_a_json_4xx_and_write_nothing(service, service_engine, payload, status, message):
    before = _rows(service_engine)
    with service.client() as client:
        response = client.post("/generate", json=payload)
    assert response.status_code == status
    assert message in str(response.json()["detail"])
    assert _rows(service_engine) == before


def test_malformed_json_and_unknown_job(service, service_engine):
    before = _rows(service_engine)
    with service.client() as client:
        broken = client.post("/generate", content=b"{not json", headers={"content-type": "application/json"})
        missing = client.get("/jobs/00000000-0000-0000-0000-000000000000")
    assert broken.status_code == 422 and "detail" in broken.json()
    assert missing.status_code == 404 and "not found" in missing.json()["detail"]
    assert _rows(service_engine) == before


def test_openapi_documents_every_route_with_its_errors(service):
    with service.client() as client:
        spec = client.get("/openapi.json").json()
        assert client.get("/docs").status_code == 200
    paths = spec["paths"]
    assert {"/catalog", "/generate", "/jobs/{job_id}", "/health"} <= set(paths)
    assert {"422", "503"} <= set(paths["/generate"]["post"]["responses"])
    assert "404" in paths["/jobs/{job_id}"]["get"]["responses"]


def test_cors_allows_configured_front_end_origins_only(service):
    with service.client() as client:
        ok = client.options("/generate", headers={"Origin": "http://localhost:3000",
                                                  "Access-Control-Request-Method": "POST"})
        evil = client.options("/generate", headers={"Origin": "http://evil.example",
                                                    "Access-Control-Request-Method": "POST"})
    assert ok.headers.get("access-control-allow-origin") == "http://localhost:3000"
    assert "access-control-allow-origin" not in evil.headers
