"""The retry policies: which real failures are worth another try, and how a policy tries, waits and gives up.

The exceptions are the ones the parts really raise: PostgreSQL refusing, dropping and cancelling (through
SQLAlchemy and through psycopg), a store that refuses connections or has no such bucket (moto), a stage
past its bound, and Ray's own exception classes built as Ray builds them.
"""

from __future__ import annotations

import asyncio
import logging
import time

import psycopg
import pytest
from ray.exceptions import (ActorDiedError, ActorUnavailableError, OwnerDiedError, RayTaskError,
                            WorkerCrashedError)
from ray.serve._private.common import DeploymentID
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, RayServeException, ReplicaUnavailableError
from sqlalchemy import text
from sqlalchemy.exc import OperationalError, ProgrammingError

from catalog.data import load_catalog
from db.engine import make_engine, make_sessionmaker
from deployments.stages import StageTimeout, bounded
from deployments.storage import LocalStorage, ObjectMissing, S3Storage, StorageError, StorageUnavailable
from serve_app.jobqueue.worker import JobWorker, NotInCatalog
from serve_app.launcher import free_port
from serve_app.retrying import (Backoff, connection_lost, database_unavailable, replica_unavailable, retrying,
                                worth_rendering_again)

NOWHERE = "postgresql://postgres@127.0.0.1:9/nowhere"  # nothing listens on port 9: connection refused
log = logging.getLogger("sastre.test-retrying")


def _raised(fn) -> BaseException:
    try:
        fn()
    except BaseException as exc:
        return exc
    raise AssertionError(f"{fn} raised nothing")


# -- the predicates, on real failures ------------------------------------------------------------------
def test_a_database_that_refuses_drops_or_cancels_is_unavailable(engine, database_url):
    refused = _raised(lambda: make_engine(NOWHERE).connect())
    refused_raw = _raised(lambda: psycopg.connect(NOWHERE, connect_timeout=2))
    with engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        dropped = _raised(lambda: conn.execute(text("SELECT 1")))
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL statement_timeout = 50"))
        cancelled = _raised(lambda: conn.execute(text("SELECT pg_sleep(2)")))

    assert isinstance(refused, OperationalError) and isinstance(refused_raw, psycopg.OperationalError)
    assert dropped.connection_invalidated  # SQLAlchemy saw the connection die under the statement
    assert isinstance(cancelled.orig, psycopg.errors.QueryCanceled)
    for exc in (refused, refused_raw, dropped, cancelled):
        assert database_unavailable(exc) and connection_lost(exc) and worth_rendering_again(exc), exc


def test_a_bad_statement_is_not_an_unavailable_database(engine, database_url):
    with engine.connect() as conn:
        bad = _raised(lambda: conn.execute(text("SELECT * FROM no_such_table")))
    with psycopg.connect(database_url, autocommit=True) as conn:
        bad_listen = _raised(lambda: conn.execute("LISTEN 1nochannel"))
    assert isinstance(bad, ProgrammingError) and isinstance(bad_listen, psycopg.ProgrammingError)
    for exc in (bad, bad_listen):
        assert not database_unavailable(exc) and not connection_lost(exc) and not worth_rendering_again(exc)


def test_an_idle_probe_that_gets_no_answer_is_a_lost_connection():
    async def probe() -> None:
        async with asyncio.timeout(0.01):
            await asyncio.sleep(1)  # the SELECT 1 that never comes back

    timed_out = _raised(lambda: asyncio.run(probe()))
    assert isinstance(timed_out, TimeoutError) and connection_lost(timed_out)
    assert not connection_lost(ValueError("not a connection's failure"))


def _upstream_died() -> RayServeException:
    """As Serve's router reports it (`Router._make_upstream_crash_error`, Ray 2.60): the finisher's request
    failed because its argument, the generator's response, died with the generator's replica."""
    try:
        raise RayServeException("Request to deployment 'Finisher' failed because an upstream actor died before "
                                "finishing a dependent task.") from ActorDiedError()
    except RayServeException as exc:
        return exc


def test_a_replica_that_died_or_is_not_there_is_worth_rendering_again():
    gone = [ActorDiedError(), _upstream_died(), ActorUnavailableError("the actor is restarting", None),
            OwnerDiedError("ab" * 14, None, "control_ref"), WorkerCrashedError(),
            ReplicaUnavailableError("SdxlTurboGenerator#abc"),
            DeploymentUnavailableError(DeploymentID(name="SdxlTurboGenerator", app_name="sastre")),
            BackPressureError(num_queued_requests=8, max_queued_requests=8)]
    for exc in gone:
        assert replica_unavailable(exc) and worth_rendering_again(exc), exc
    assert not replica_unavailable(StorageUnavailable("a store is not a replica"))


def test_a_stage_past_its_bound_and_a_store_that_does_not_answer_are_worth_rendering_again():
    stalled = _raised(lambda: asyncio.run(bounded("generate", 0.01, asyncio.sleep(1))))
    no_store = S3Storage("bucket", endpoint_url=f"http://127.0.0.1:{free_port()}", region="us-east-1",
                         access_key_id="testing", secret_access_key="testing")
    refused = _raised(lambda: no_store.get("temp-uploads/x.png"))
    # What a replica's exception becomes on the caller's side: Ray's wrapper, an instance of the cause too.
    from_replica = RayTaskError("finish", "Traceback …", StorageUnavailable("a 503 on put")).as_instanceof_cause()
    assert isinstance(stalled, StageTimeout) and isinstance(refused, StorageUnavailable)
    for exc in (stalled, refused, from_replica):
        assert worth_rendering_again(exc), exc


def test_a_missing_object_a_refusal_or_a_bug_is_never_worth_rendering_again(tmp_path, s3_server):
    local = LocalStorage(tmp_path, "http://127.0.0.1:8000/media")
    no_bucket = S3Storage("no-such-bucket", endpoint_url=s3_server.endpoint_url, region="us-east-1",
                          access_key_id="testing", secret_access_key="testing")
    failures = [
        _raised(lambda: local.get("temp-uploads/gone.png")),  # ObjectMissing
        _raised(lambda: local.put("../escape.png", b"x", "image/png")),  # an invalid key: StorageError
        _raised(lambda: no_bucket.put("temp-uploads/x.png", b"x", "image/png")),  # a 404 NoSuchBucket
        NotInCatalog("fabric lana-fria/gone is no longer in the catalog"),  # a LookupError
        _raised(lambda: {}["recto"]),  # KeyError
        _raised(lambda: int("not a seed")),  # ValueError
        _raised(lambda: None + 1),  # TypeError
        _raised(lambda: None.render),  # AttributeError
        RayTaskError("generate", "Traceback …", ValueError("bad size")).as_instanceof_cause(),
        RayServeException("a Serve error with no replica's death beneath it"),
    ]
    assert [type(exc) for exc in failures[:3]] == [ObjectMissing, StorageError, StorageError]
    for exc in failures:
        assert not worth_rendering_again(exc), exc
        assert not database_unavailable(exc) and not replica_unavailable(exc)


# -- a policy at work ------------------------------------------------------------------------------------
class Failing:
    """A call that fails with `errors` in turn, then answers; records when it was called."""

    def __init__(self, *errors: Exception) -> None:
        self.errors, self.calls = list(errors), []

    async def __call__(self) -> str:
        self.calls.append(time.monotonic())
        if self.errors:
            raise self.errors.pop(0)
        return "rendered"


def test_a_transient_failure_is_retried_after_the_backoff_then_succeeds(caplog):
    call = Failing(StorageUnavailable("no answer"), ActorDiedError())
    policy = retrying("a cut", retry_if=worth_rendering_again, backoff=Backoff(0.05), tries=4, log=log)
    with caplog.at_level("WARNING", logger=log.name):
        assert asyncio.run(policy(call)) == "rendered"
    assert len(call.calls) == 3
    gaps = [later - earlier for earlier, later in zip(call.calls, call.calls[1:])]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # 0.05 s, then doubled
    assert [r.getMessage() for r in caplog.records] == [
        "a cut failed (try 1: StorageUnavailable: no answer); trying again in 0.1 s",
        "a cut failed (try 2: ActorDiedError: The actor died unexpectedly before finishing this task.); "
        "trying again in 0.1 s"]


@pytest.mark.parametrize("error", [ObjectMissing("no object 'jobs/j/swatch.png'"), ValueError("bad seed"),
                                   TypeError("render() takes 2 positional arguments"),
                                   StorageError("cannot write: AccessDenied")])
def test_a_failure_no_retry_can_cure_is_raised_at_once(error):
    call = Failing(error)
    policy = retrying("a cut", retry_if=worth_rendering_again, backoff=Backoff(0.05), tries=4, log=log)
    raised = _raised(lambda: asyncio.run(policy(call)))
    assert raised is error  # as it is: no RetryError around it
    assert len(call.calls) == 1


def test_a_policy_gives_up_after_its_tries_with_the_last_failure():
    call = Failing(*(StorageUnavailable(f"no answer {n}") for n in range(1, 10)))
    policy = retrying("a cut", retry_if=worth_rendering_again, backoff=Backoff(0.01), tries=3, log=log)
    raised = _raised(lambda: asyncio.run(policy(call)))
    assert isinstance(raised, StorageUnavailable) and str(raised) == "no answer 3"
    assert len(call.calls) == 3


def test_a_policy_without_a_limit_keeps_trying_until_it_is_cancelled():
    call = Failing(*(ConnectionError("refused") for _ in range(10_000)))
    policy = retrying("a LISTEN", retry_if=connection_lost, backoff=Backoff(0.01, cap=0.01), tries=None, log=log)

    async def for_a_while() -> None:
        await asyncio.wait_for(policy(call), timeout=0.5)

    assert isinstance(_raised(lambda: asyncio.run(for_a_while())), TimeoutError)
    assert len(call.calls) > 10


def test_backoff_doubles_up_to_its_cap_and_its_schedule_ends_there():
    backoff = Backoff(0.2, cap=5.0)
    assert [backoff.delay(n) for n in range(1, 8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert sum(backoff.delay(n) for n in range(1, 10)) == pytest.approx(26.2)  # the runner's 10 database tries
    assert backoff.delay(100_000) == 5.0  # no overflow, however long a policy without a limit runs
    assert Backoff(2.0, cap=300.0).schedule() == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0]
    assert Backoff(0.0, cap=5.0).schedule() == [0.0]
    with pytest.raises(ValueError):
        Backoff(1.0).schedule()


# -- a call site's declared policy ---------------------------------------------------------------------
def test_the_runner_rides_out_an_unavailable_database_but_not_a_bad_statement(sessions, database_url):
    worker = JobWorker(sessions, database_url, load_catalog(), renderer=None)
    worker.db_attempts = 3
    outage = make_sessionmaker(make_engine(NOWHERE))
    calls = {"bad": 0, "unavailable": 0}

    def run(sessionmaker, statement: str, name: str) -> None:
        calls[name] += 1
        with sessionmaker() as session:
            session.execute(text(statement))

    started = time.monotonic()
    unavailable = _raised(lambda: asyncio.run(worker._db(run, outage, "SELECT 1", "unavailable")))
    waited = time.monotonic() - started
    bad = _raised(lambda: asyncio.run(worker._db(run, sessions, "SELECT * FROM no_such_table", "bad")))
    assert isinstance(unavailable, OperationalError) and calls["unavailable"] == 3 and waited >= 0.2 + 0.4
    assert isinstance(bad, ProgrammingError) and calls["bad"] == 1
