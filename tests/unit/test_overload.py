"""The app under plain uvicorn (no Ray proxy queueing in front of it) when the database cannot keep up:
300 concurrent clients, pools far smaller than the clients, a table locked past the statement
timeout. Overload is a 503 with Retry-After and a JSON body, never a 500."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import httpx
from sqlalchemy import create_engine

from catalog.data import load_catalog
from catalog.loader import sync_catalog
from db.engine import LoopEngines, make_async_engine, make_sessionmaker, sqlalchemy_url
from deployments.replica_health import PROBE_CONNECTIONS
from deployments.storage import LocalStorage
from serve_app.deps import Services
from serve_app.settings import Settings
from tests.database_faults import TableLock
from tests.load_clients import poll_and_post
from tests.servers import uvicorn_serving

NAVY = {"family_id": "lana-fria", "color_id": "lana-fria-azul-marino", "cuts": ["recto"]}
CLIENTS = 300




def services_for(sessions, tmp_path, pooled_sessions, hot_engines=None, **settings) -> Services:
    catalog = load_catalog()
    with sessions.begin() as s:
        sync_catalog(s, catalog)
    settings = Settings(data_dir=tmp_path, rate_limit_generate="1000000/minute", max_pending_jobs=1_000_000,
                        **settings)
    return Services(settings=settings, sessions=pooled_sessions, storage=LocalStorage(tmp_path, "http://t/media"),
                    catalog=catalog, hot_engines=hot_engines)


def for_seconds(seconds: float) -> Callable[[], bool]:
    end = time.monotonic() + seconds
    return lambda: time.monotonic() >= end


def assert_overload_is_503_with_retry_after(results) -> Counter:
    statuses = Counter(status for status, _, _ in results)
    assert not {s for s in statuses if s >= 500 or s == 0} - {503}, statuses
    for status, retry_after, text in results:
        if status == 503:
            assert retry_after and int(retry_after) > 0, text
            assert "retry" in httpx.Response(503, text=text).json()["detail"]
    return statuses


def test_300_clients_on_a_pool_smaller_than_the_threads_get_no_500(sessions, database_url, tmp_path):
    # 2 connections for 40 route threads, given up on after 50 ms: the pool runs dry at once. The same for
    # the asyncio pool of the hot routes (POST /generate, GET /jobs/{id}).
    engine = create_engine(sqlalchemy_url(database_url), pool_size=2, max_overflow=0, pool_timeout=0.05)
    starved = LoopEngines(lambda: make_async_engine(database_url, pool_size=2, pool_timeout=0.05))
    services = services_for(sessions, tmp_path, make_sessionmaker(engine), starved, ingress_threads=40)
    with uvicorn_serving(services, backlog=CLIENTS * 2, timeout_keep_alive=30) as base_url:
        job_ids = [httpx.post(f"{base_url}/generate", json=NAVY).json()["job_id"] for _ in range(5)]
        results = asyncio.run(poll_and_post(base_url, job_ids, NAVY, for_seconds(4), clients=CLIENTS))
    engine.dispose()
    statuses = assert_overload_is_503_with_retry_after(results)
    assert statuses[503] > 0 and statuses[200] > 0, statuses  # it did run dry, and it still served


def test_300_clients_on_the_sized_pool_while_a_lock_outlasts_the_statement_timeout(sessions, database_url, tmp_path):
    from serve_app.deps import ingress_sessions

    settings = Settings(ingress_threads=8, db_statement_timeout_seconds=0.5, db_pool_timeout_seconds=5)
    pooled = ingress_sessions(settings, database_url)
    services = services_for(sessions, tmp_path, pooled, ingress_threads=8, db_statement_timeout_seconds=0.5)
    with uvicorn_serving(services, backlog=CLIENTS * 2, timeout_keep_alive=30) as base_url:
        job_ids = [httpx.post(f"{base_url}/generate", json=NAVY).json()["job_id"] for _ in range(5)]
        lock = TableLock(database_url, "generation_jobs", after=1, hold=2).start()
        results = asyncio.run(poll_and_post(base_url, job_ids, NAVY, lambda: lock.over_for(1), clients=CLIENTS))
        lock.join()
    engine = pooled.kw["bind"]
    assert engine.pool.size() == 8 + PROBE_CONNECTIONS and engine.pool.overflow() <= 0  # the threads' and the probe's
    engine.dispose()
    statuses = assert_overload_is_503_with_retry_after(results)
    assert statuses[503] > 0 and statuses[200] > 0 and statuses[202] > 0, statuses
