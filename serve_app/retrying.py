"""What is worth trying again, and for how long: the retry policies, declared where each retry is made.

Retries are values (tenacity's `AsyncRetrying`), not hand-written loops: a call site names what it
retries (a predicate on the exception), how long it keeps at it (tries, or until it works) and how it
waits (`Backoff`); `retrying` applies them, logs each retry, and raises the last failure as it is.

The predicates are allow-lists of failures that a later try can cure: a database or store that did
not answer, a Ray replica that died or is not there yet, a stage that timed out. Anything else is
raised at once: a missing object (`ObjectMissing`, `LookupError`), a refusal (a 4xx `StorageError`),
a bad value or a programming error (`ValueError`, `TypeError`, `AttributeError`, …) gives the same
answer however often it is asked.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from ray.exceptions import NodeDiedError, ObjectLostError, RayActorError, RayTaskError, WorkerCrashedError
from ray.exceptions import OutOfMemoryError as RayOutOfMemoryError
from ray.serve.exceptions import (BackPressureError, DeploymentUnavailableError, RayServeException,
                                  ReplicaUnavailableError)
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_never
from tenacity.wait import wait_base

from deployments.stages import StageTimeout
from deployments.storage import StorageUnavailable

# A replica that died (and its objects with it), was killed for memory, or is not up yet, and a
# deployment whose queue is full: Serve starts or frees a replica, so a later request finds one.
REPLICA_GONE = (RayActorError, ObjectLostError, WorkerCrashedError, NodeDiedError, RayOutOfMemoryError,
                ReplicaUnavailableError, DeploymentUnavailableError, BackPressureError)


def database_unavailable(exc: BaseException) -> bool:
    """The database did not answer: a refused, dropped or closed connection, a server shutting down, a
    statement cancelled by its timeout. The SQL itself is not in doubt, so the same call can succeed
    once the database is back (SQLAlchemy's wrappers and psycopg's own errors alike)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError))


def connection_lost(exc: BaseException) -> bool:
    """A held connection (a LISTEN) is gone: the database went away, or an idle probe got no answer in time."""
    return database_unavailable(exc) or isinstance(exc, (TimeoutError, ConnectionError))


def replica_unavailable(exc: BaseException) -> bool:
    """A Ray Serve stage could not be reached, or its replica (or one whose response it was passed) died
    while it worked."""
    return isinstance(unwrapped(exc), REPLICA_GONE)


def worth_rendering_again(exc: BaseException) -> bool:
    """A cut attempt's failure that another attempt can cure: a replica gone, a stage or call past its
    timeout, the store or the database not answering. A missing swatch is no failure (the generator falls
    back), and a refusal or a bug fails the cut at once."""
    exc = unwrapped(exc)
    return (replica_unavailable(exc) or isinstance(exc, (StageTimeout, TimeoutError, StorageUnavailable))
            or database_unavailable(exc))


def unwrapped(exc: BaseException) -> BaseException:
    """The failure beneath Ray's and Serve's wrappers: a replica's own exception inside a `RayTaskError`,
    and the `ActorDiedError` that Serve reports as a `RayServeException` caused by it when a request's
    upstream response (the generator's image, passed to the finisher) died with its replica."""
    for _ in range(8):  # wrappers nest a level or two; never follow a chain for ever
        if isinstance(exc, RayTaskError) and isinstance(exc.cause, BaseException):
            exc = exc.cause
        elif type(exc) is RayServeException and exc.__cause__ is not None:
            exc = exc.__cause__
        else:
            break
    return exc


@dataclass(frozen=True)
class Backoff(wait_base):
    """Exponential backoff: `first` seconds after the first failure, doubling after each, never more than
    `cap` (`Backoff(s, cap=s)` waits a steady `s`). A tenacity wait, and a schedule for SQL to look up."""

    first: float
    cap: float = math.inf

    def delay(self, failures: int) -> float:
        """The wait after `failures` failures in a row."""
        doublings = min(failures - 1, 64)  # far past any cap, and no float overflow however long it runs
        return min(self.first * 2 ** doublings, self.cap)

    def schedule(self) -> list[float]:
        """Every wait up to the first that reaches `cap` (which holds from then on): the whole policy as
        values, for a caller that picks the wait by failure count in one statement (the lease rescuer)."""
        if not math.isfinite(self.cap):
            raise ValueError("a schedule needs a finite cap")
        delays = [self.delay(1)]
        while 0 < delays[-1] < self.cap:
            delays.append(self.delay(len(delays) + 1))
        return delays

    def __call__(self, retry_state: RetryCallState) -> float:
        return self.delay(retry_state.attempt_number)


def retrying(what: str, *, retry_if: Callable[[BaseException], bool], backoff: Backoff, tries: int | None,
             log: logging.Logger) -> AsyncRetrying:
    """The policy of one call site: retry the failures `retry_if` accepts, waiting `backoff` between
    tries, for `tries` tries in all (None: until it works or the task is cancelled). A failure it does not
    accept, or the last one, is raised as it is (never tenacity's RetryError); each retry is logged as
    `what` failed, with the failure and the wait.

    Use it as `await retrying(…)(fn, *args)`, or `async for attempt in retrying(…): with attempt: …`
    where a try is more than one call."""
    return AsyncRetrying(retry=retry_if_exception(retry_if), wait=backoff,
                         stop=stop_never if tries is None else stop_after_attempt(tries), reraise=True,
                         before_sleep=_logged(what, log))


def _logged(what: str, log: logging.Logger) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome is not None else None
        log.warning("%s failed (try %d: %s: %s); trying again in %.1f s", what, state.attempt_number,
                    type(failure).__name__, str(failure)[:300], state.upcoming_sleep)
    return before_sleep
