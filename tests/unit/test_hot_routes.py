"""The two hot routes (POST /generate, GET /jobs/{id}) on the asyncio engine: what each costs the
database, and that folding the catalog check into the INSERT kept every answer it used to give."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import event, select, text
from sqlalchemy.exc import DBAPIError

from catalog.data import load_catalog
from catalog.loader import color_swatch_key, sync_catalog
from db import jobs
from db.fabrics import color_swatch_key_sql
from db.engine import LoopEngines, make_async_engine
from db.models import Color, FabricFamily
from deployments.storage import LocalStorage
from serve_app.jobqueue.backpressure import BacklogGate
from serve_app.bootstrap import put_catalog_swatches
from serve_app.deps import Services, hot_engines
from serve_app.settings import Settings
from serve_app.web import create_app
from tests.unit.test_api import call

NAVY = {"family_id": "lana-fria", "color_id": "lana-fria-azul-marino", "cuts": ["recto", "cruzado"], "seed": 11}


@pytest.fixture
def counted(sessions, database_url, tmp_path):
    """The app with its hot engines counting the statements they send (SELECT 1 pings excluded)."""
    catalog = load_catalog()
    with sessions.begin() as s:
        sync_catalog(s, catalog)
    storage = LocalStorage(tmp_path, "http://testserver/media")
    put_catalog_swatches(storage, catalog)
    settings = Settings(data_dir=tmp_path)
    statements: list[str] = []
    engines = hot_engines(settings, database_url)

    def counting():
        engine = engines._make()
        event.listen(engine.sync_engine, "before_cursor_execute",
                     lambda conn, cursor, statement, *args: statements.append(statement))
        return engine

    services = Services(settings=settings, sessions=sessions, storage=storage, catalog=catalog,
                        backlog=BacklogGate(settings.max_pending_jobs, ttl_seconds=60), hot_engines=LoopEngines(counting))
    return services, statements


def test_a_post_is_one_statement_and_a_poll_is_one_statement(counted, sessions):
    services, statements = counted
    call(services, "POST", "/generate", json=NAVY)  # the replica's first request also counts its backlog
    statements.clear()
    created = call(services, "POST", "/generate", json=NAVY)
    assert created.status_code == 202, created.text
    assert len(statements) == 1 and statements[0].lstrip().startswith("WITH job AS"), statements
    statements.clear()
    polled = call(services, "GET", created.json()["status_url"])
    assert polled.status_code == 200 and len(statements) == 1, statements

    body = polled.json()
    assert (body["job_id"], body["status"], body["cuts"], body["seeds"]) == (
        created.json()["job_id"], "pending", ["recto", "cruzado"], [11, 12])
    assert [p["status"] for p in body["progress"]] == ["pending", "pending"]
    with sessions() as s:
        job = jobs.get_job(s, created.json()["job_id"])
        family, color = s.execute(select(FabricFamily, Color).join(Color.family)
                                  .where(Color.color_id == NAVY["color_id"])).one()
        # the catalog swatch was read by the INSERT itself
        assert job.swatch_key == color_swatch_key(family, color) and job.swatch_key
        assert job.cut_progress == {}  # the seeds above are the job's plan (seed + place), not stored per cut
        assert job.swatch_digest is None  # a catalog color's swatch: the runner digests it when it plans the job


def test_back_to_back_requests_cost_one_database_round_trip_each(counted, tmp_path):
    """Counted on the wire (libpq's protocol trace): one ReadyForQuery per round trip, pings included."""
    services, _ = counted
    trace = tmp_path / "pq-trace.txt"
    engines = services.hot_engines

    def tracing():
        engine = engines._make()
        sink = trace.open("a")
        event.listen(engine.sync_engine, "connect",
                     lambda dbapi_connection, record: dbapi_connection._connection.pgconn.trace(sink.fileno()))
        return engine

    services.hot_engines = LoopEngines(tracing)

    def round_trips() -> int:
        return sum("\tB\t" in line and "ReadyForQuery" in line for line in trace.read_text().splitlines())

    async def go() -> list[int]:
        transport = httpx.ASGITransport(app=create_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            job_id = (await client.post("/generate", json=NAVY)).json()["job_id"]  # connects, counts the backlog
            costs = []
            for method, path, body in [("GET", f"/jobs/{job_id}", None), ("POST", "/generate", NAVY),
                                       ("GET", f"/jobs/{job_id}", None)]:
                before = round_trips()
                assert (await client.request(method, path, json=body)).status_code < 300
                costs.append(round_trips() - before)
            return costs

    assert asyncio.run(go()) == [1, 1, 1]


async def _backend_pid(engine) -> int:
    async with engine.connect() as conn:
        return await conn.scalar(text("SELECT pg_backend_pid()"))


def test_a_connection_the_server_dropped_while_idle_is_replaced_before_a_request_sees_it(database_url):
    import psycopg

    async def go() -> None:
        engine = make_async_engine(database_url, 1, pool_timeout=5, ping_after_idle=0.2)
        try:
            first = await _backend_pid(engine)
            assert await _backend_pid(engine) == first  # reused at once, no ping
            with psycopg.connect(database_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (first,))
            await asyncio.sleep(0.3)
            second = await _backend_pid(engine)  # pinged after idling: replaced, no error
            assert second != first
            # A connection used a moment ago is not pinged: a drop shows as that request's disconnect
            # error, and the pool is renewed for the next one.
            with psycopg.connect(database_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (second,))
            with pytest.raises(DBAPIError) as dropped:
                await _backend_pid(engine)
            assert dropped.value.connection_invalidated
            assert await _backend_pid(engine) not in (first, second)
        finally:
            await engine.dispose()

    asyncio.run(go())


@pytest.mark.parametrize(("family_id", "color_id", "says"), [
    ("no-such-family", "lana-fria-azul-marino", "unknown or inactive fabric family: no-such-family"),
    ("lana-fria", "no-such-color", "unknown or inactive color no-such-color in family lana-fria"),
    ("lana-fria", "tweed-burdeos", "unknown or inactive color tweed-burdeos in family lana-fria"),  # another family's
    ("lana-fria", "inactive", "unknown or inactive color lana-fria-azul-marino in family lana-fria"),
    ("inactive", "lana-fria-azul-marino", "unknown or inactive fabric family: lana-fria"),
])
def test_an_unknown_or_inactive_family_or_color_is_a_422_that_writes_nothing(counted, sessions, family_id,
                                                                              color_id, says):
    services, _ = counted
    if "inactive" in (family_id, color_id):
        with sessions.begin() as s:
            if color_id == "inactive":
                s.scalars(select(Color).where(Color.color_id == "lana-fria-azul-marino")).one().status = "inactive"
            else:
                s.scalars(select(FabricFamily).where(FabricFamily.family_id == "lana-fria")).one().status = "inactive"
        family_id, color_id = "lana-fria", "lana-fria-azul-marino"
    refused = call(services, "POST", "/generate", json={**NAVY, "family_id": family_id, "color_id": color_id})
    assert refused.status_code == 422 and refused.json() == {"detail": says}
    with sessions() as s:
        assert s.query(jobs.GenerationJob).count() == 0


def test_the_sql_swatch_key_is_the_catalog_swatch_key_of_every_color(sessions):
    with sessions.begin() as s:
        sync_catalog(s, load_catalog())
        colors = s.scalars(select(Color)).all()
        colors[0].swatch_key = "la-coleccion/own-photo.webp"  # stored by an admin
        colors[1].swatch_code = None  # no seed-layout file and no stored photo
        colors[2].swatch_key = ""
    with sessions() as s:
        rows = s.execute(select(FabricFamily, Color, color_swatch_key_sql()).join(Color.family)).all()
    assert len(rows) == len(colors) > 3
    assert [key for _, _, key in rows] == [color_swatch_key(family, color) for family, color, _ in rows]
    assert {None, "la-coleccion/own-photo.webp"} <= {key for _, _, key in rows}


def test_a_post_wakes_the_runners_with_its_job_id(counted, database_url):
    import psycopg

    services, _ = counted
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {jobs.NOTIFY_CHANNEL}")
        created = call(services, "POST", "/generate", json=NAVY)
        woken = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert created.status_code == 202 and woken == [created.json()["job_id"]]
