"""The service's metrics on Ray's real Prometheus endpoint: scraped before and after real work on the
local cluster, each moves by exactly what happened (deployments/metrics.py names them).

One cluster for the module, with its own database (so the backlog is only this module's), an upload
rate limit of one a minute, a backlog limit of one pending job, and Ray reporting every second.
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, update

from db import jobs
from db.engine import make_engine, make_sessionmaker
from db.models import GenerationJob
from serve_app.launcher import Launched
from tests.conftest import fresh_database
from tests.integration.conftest import IMAGE_SIZE
from tests.integration.test_service import NAVY
from tests.services import Services

# The module's cluster starts inside its first test's time; on a busy shared machine that alone can take minutes.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPORT_INTERVAL_MS = 1000  # Ray's default is 10 s; the test polls, bounded by METRICS_TIMEOUT
METRICS_TIMEOUT = 60
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "sastre_dashboard.json"

Samples = Counter  # (series name, frozenset of (label, value)) -> value, summed over replicas


@pytest.fixture(scope="module")
def metered(services: Services, server_url: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Launched, str]]:
    root = tmp_path_factory.mktemp("metered")
    with fresh_database(server_url) as url, pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_metrics_report_interval_ms", str(REPORT_INTERVAL_MS))
        settings = {"database_url": url, "data_dir": str(root / "data"), "model_profile": "tiny-random",
                    "image_size": IMAGE_SIZE, "poll_seconds": 0.5, "max_pending_jobs": 1, "backlog_recount_seconds": 0,
                    "rate_limit_generate": "1000/minute", "rate_limit_upload": "1/minute"}
        with services.own(root, settings, startup_timeout=480) as launched:  # a shared 2-core machine can be slow
            yield launched, url


def scrape(url: str) -> Samples:
    """Our and Serve's samples on the endpoint, summed over the tags Ray and Serve add (replica, ...)."""
    text = "\n".join(line for line in httpx.get(url, timeout=10).text.splitlines()
                     if line.startswith(("ray_sastre_", "ray_serve_")))  # Ray's own thousand lines aside
    samples: Samples = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset((k, v) for k, v in sample.labels.items()
                               if k in ("outcome", "stage", "cache", "reason", "route", "le"))
            samples[sample.name, labels] += sample.value
    return samples


def series(name: str, **labels: str) -> tuple[str, frozenset]:
    return name, frozenset(labels.items())


def moved(url: str, before: Samples, expected: dict[tuple[str, frozenset], float],
          done: Callable[[Samples], bool] = lambda _: True) -> Samples:
    """Scrape until every `expected` series has moved by its amount (Ray exports with a delay), or time out;
    then the caller asserts, so a failure shows every series that did not move as it should."""
    deadline = time.monotonic() + METRICS_TIMEOUT
    while True:
        after = scrape(url)
        if all(after[key] - before[key] == amount for key, amount in expected.items()) and done(after):
            return after
        if time.monotonic() > deadline:
            return after
        time.sleep(0.5)


def deltas(before: Samples, after: Samples, keys) -> dict:
    return {key: after[key] - before[key] for key in keys}


def _wait_final(client: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/jobs/{job_id}").json()
        if body["status"] in ("completed", "failed", "canceled"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not finished after {timeout}s")


def test_a_repeated_job_is_counted_as_render_cache_hits_and_never_reaches_the_generator(metered):
    launched, _ = metered
    body = {**NAVY, "cuts": ["recto", "cruzado"], "seed": 8}
    start = scrape(launched.metrics_url)
    with httpx.Client(base_url=launched.base_url, timeout=30) as client:
        first = client.post("/generate", json=body).json()["job_id"]
        assert _wait_final(client, first)["status"] == "completed"
        rendered = {series("ray_sastre_cache_misses_total", cache="render"): 2,
                    series("ray_sastre_stage_seconds_count", stage="generate"): 2}
        # Every count of the first job has landed, its completion too: the runner and the generator
        # export on their own schedules, so one landing says nothing of the other.
        first_counts = {**rendered, series("ray_sastre_jobs_finished_total", outcome="completed"): 1}
        before = moved(launched.metrics_url, start, first_counts)
        assert deltas(start, before, list(first_counts)) == first_counts
        second = client.post("/generate", json=body).json()["job_id"]
        job = _wait_final(client, second)
    assert job["status"] == "completed" and [p["cached"] for p in job["progress"]] == [True, True]
    expected = {series("ray_sastre_cache_hits_total", cache="render"): 2,
                series("ray_sastre_jobs_finished_total", outcome="completed"): 1}
    after = moved(launched.metrics_url, before, expected)
    assert deltas(before, after, expected) == expected
    assert deltas(before, after, list(rendered)) == {name: 0 for name in rendered}


def test_a_two_cut_job_moves_the_job_stage_batch_and_cache_metrics_by_what_it_did(metered):
    launched, _ = metered
    before = scrape(launched.metrics_url)
    with httpx.Client(base_url=launched.base_url, timeout=30) as client:
        response = client.post("/generate", json={**NAVY, "cuts": ["recto", "cruzado"], "seed": 7})
        assert response.status_code == 202, response.text
        assert _wait_final(client, response.json()["job_id"])["status"] == "completed"

    expected = {
        series("ray_sastre_jobs_created_total"): 1,
        series("ray_sastre_jobs_finished_total", outcome="completed"): 1,
        series("ray_sastre_job_latency_seconds_count"): 1,
        series("ray_sastre_job_queue_wait_seconds_count"): 1,
        **{series("ray_sastre_stage_seconds_count", stage=stage): 2 for stage in ("preprocess", "generate", "finish")},
        series("ray_sastre_generator_batch_size_sum"): 2,  # every cut in exactly one batch
    }
    caches = ("control_map", "prompt_embedding", "swatch_embedding")
    lookups = {cache: 2 for cache in caches}  # one lookup per cut in each

    def looked_up(samples: Samples) -> dict:
        return {cache: sum(samples[series(f"ray_sastre_cache_{kind}_total", cache=cache)]
                           - before[series(f"ray_sastre_cache_{kind}_total", cache=cache)] for kind in ("hits", "misses"))
                for cache in caches}

    after = moved(launched.metrics_url, before, expected, lambda samples: looked_up(samples) == lookups)
    assert deltas(before, after, expected) == expected
    assert looked_up(after) == lookups
    # The two cuts meet in one batch or arrive in two; the batch-size sum above pins the exact total (2).
    assert 1 <= after[series("ray_sastre_generator_batch_size_count")] - before[series("ray_sastre_generator_batch_size_count")] <= 2
    # Nothing else finished, and the catalog swatch was there: no failure, no fallback.
    assert deltas(before, after, [series("ray_sastre_jobs_finished_total", outcome="failed"),
                                  series("ray_sastre_ip_adapter_fallbacks_total")]) == {
        series("ray_sastre_jobs_finished_total", outcome="failed"): 0, series("ray_sastre_ip_adapter_fallbacks_total"): 0}
    # The latency histograms hold real durations: positive, and within the job's whole life.
    latency = after[series("ray_sastre_job_latency_seconds_sum")] - before[series("ray_sastre_job_latency_seconds_sum")]
    generate = (after[series("ray_sastre_stage_seconds_sum", stage="generate")]
                - before[series("ray_sastre_stage_seconds_sum", stage="generate")])
    assert 0 < generate and 0 < latency < 120


def test_a_waiting_job_shows_in_the_backlog_gauges_refuses_new_jobs_and_leaves_when_canceled(metered):
    launched, url = metered
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine).begin() as session:  # due in an hour: it waits, no runner claims it
            job = jobs.create_job(session, family_id=NAVY["family_id"], color_id=NAVY["color_id"],
                                  cuts=["recto", "cruzado"], seed=1, swatch_url=None, swatch_key=None)
            session.execute(update(GenerationJob).where(GenerationJob.job_id == job.job_id)
                            .values(next_attempt_at=func.now() + timedelta(hours=1)))
            job_id = job.job_id
    finally:
        engine.dispose()
    backlog = {series("ray_sastre_backlog_pending_jobs"): 1, series("ray_sastre_backlog_pending_cuts"): 2,
               series("ray_sastre_backlog_cuts_in_flight"): 0}
    zero = Counter()
    waiting = moved(launched.metrics_url, zero, backlog,
                    lambda s: s[series("ray_sastre_backlog_oldest_pending_seconds")] > 0)
    assert deltas(zero, waiting, backlog) == backlog
    assert waiting[series("ray_sastre_backlog_oldest_pending_seconds")] > 0

    with httpx.Client(base_url=launched.base_url, timeout=30) as client:
        refused = client.post("/generate", json={**NAVY, "cuts": ["recto"]})  # the backlog limit is 1
        assert refused.status_code == 429 and "too many jobs waiting" in refused.json()["detail"]
        assert client.post(f"/jobs/{job_id}/cancel").json()["status"] == "canceled"

    expected = {series("ray_sastre_refused_total", reason="backlog_full"): 1,
                series("ray_sastre_jobs_finished_total", outcome="canceled"): 1}
    drained = {series("ray_sastre_backlog_pending_jobs"): 0, series("ray_sastre_backlog_pending_cuts"): 0}
    after = moved(launched.metrics_url, waiting, expected,
                  lambda s: all(s[key] == value for key, value in drained.items()))
    assert deltas(waiting, after, expected) == expected
    assert {key: after[key] for key in drained} == drained
    assert after[series("ray_sastre_backlog_oldest_pending_seconds")] == 0


def test_a_client_over_its_rate_limit_moves_the_rate_limit_counter_once_per_refusal(metered):
    launched, _ = metered
    before = scrape(launched.metrics_url)
    swatch = io.BytesIO()
    Image.new("RGB", (32, 32), (20, 30, 90)).save(swatch, format="PNG")
    with httpx.Client(base_url=launched.base_url, timeout=30) as client:
        def upload() -> httpx.Response:
            return client.post("/upload-swatch", files={"file": ("navy.png", swatch.getvalue(), "image/png")})

        assert upload().status_code == 201  # the limit is one a minute
        refused = upload()
    assert refused.status_code == 429 and refused.json()["detail"].startswith("too many requests")
    expected = {series("ray_sastre_rate_limited_total", route="upload"): 1,
                series("ray_sastre_rate_limited_total", route="generate"): 0}
    after = moved(launched.metrics_url, before, expected)
    assert deltas(before, after, expected) == expected


def test_the_dashboard_names_only_series_this_endpoint_exports(metered):
    """Serve's series that the dashboard queries (listed beside it) are what this Ray really exports."""
    launched, _ = metered
    listed = json.loads(DASHBOARD.with_name("serve_metrics.json").read_text())["metrics"]
    exported = {name for name, _ in scrape(launched.metrics_url)}
    assert set(listed) - exported == set()
