"""What a replica's `check_health` rests on: bounded probes of its dependencies, judged over a grace
period, and a heartbeat for a loop that must keep moving.

Serve calls `check_health` every `health_check_period_s` and replaces a replica after three failed
checks in a row; a check slower than `health_check_timeout_s` fails. So a check must answer quickly
whatever its dependency does, and must not fail for a blip: replacing a replica costs its work in
hand (a runner's jobs, a generator's loaded weights) and fixes nothing the database or the bucket did.

- `DependencyProbe` runs a cheap blocking call (one database round trip, a bucket HEAD) on a thread of
  its own, waits at most `PROBE_SECONDS` for it, and never starts a second while one still hangs.
  A failure is forgiven until the dependency has been failing for `grace_s` (the setting
  `SASTRE_UNHEALTHY_AFTER_SECONDS`); from then on the check fails until one probe answers again.
- `LoopHeartbeat` is stamped by a loop each time round; a stamp older than its bound means the loop
  is stuck (a call that never returns), which a still-running task alone would not show.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

logger = logging.getLogger("ray.serve")

# Explicit on every deployment: Serve's defaults (10 s, 30 s) leave a dead replica in rotation for a
# minute or more. Three failed checks 5 s apart replace a replica ~15 s after its check starts failing.
HEALTH_CHECK = {"health_check_period_s": 5, "health_check_timeout_s": 10}

# How long one probe may take: well inside `health_check_timeout_s`, with room for two probes at once.
PROBE_SECONDS = 3.0
# A database probe runs one at a time, so it needs one connection: pools add it to what their threads
# need, so the probe never waits behind work, nor work behind it.
PROBE_CONNECTIONS = 1


class DependencyDown(RuntimeError):
    """A dependency has been failing for longer than the grace period: the replica is unhealthy."""


class LoopStalled(RuntimeError):
    """A loop's heartbeat is older than its bound: the loop is stuck."""


class DependencyProbe:
    """One dependency, probed by a cheap blocking call, failing the check only past a grace period."""

    def __init__(self, name: str, call: Callable[[], object], *, grace_s: float, timeout_s: float = PROBE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.call = call
        self.grace_s = grace_s
        self.timeout_s = timeout_s
        self.clock = clock
        self.failing_since: float | None = None  # when the current run of failures began; None while it answers
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"probe-{name}")
        self._probe: Future | None = None

    async def check(self) -> None:
        """Probe once; raise `DependencyDown` when the dependency has been failing for `grace_s` or more."""
        try:
            await self._answer()
        except Exception as exc:
            self.failed(exc)
        else:
            self.answered()

    def answered(self) -> None:
        if self.failing_since is not None:
            logger.info("%s answers again after %.0f s", self.name, self.clock() - self.failing_since)
        self.failing_since = None

    def failed(self, error: Exception) -> None:
        """Record a failed probe; raise once the failures have lasted the grace period."""
        now = self.clock()
        if self.failing_since is None:
            self.failing_since = now
        failing_for = now - self.failing_since
        reason = f"{type(error).__name__}: {error}"[:300]
        if failing_for >= self.grace_s:
            raise DependencyDown(f"{self.name} has been failing for {failing_for:.0f} s "
                                 f"(grace {self.grace_s:g} s): {reason}") from error
        logger.warning("%s probe failed (%s); unhealthy if it still fails %.0f s from now", self.name, reason,
                       self.grace_s - failing_for)

    async def _answer(self) -> None:
        """The probe's answer within `timeout_s`. A probe still hanging from an earlier check is waited for
        again rather than joined by a second one, so a dependency that never answers holds one thread."""
        if self._probe is None or self._probe.done():
            self._probe = self._thread.submit(self.call)
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self._probe)), self.timeout_s)
        except TimeoutError:
            raise TimeoutError(f"no answer within {self.timeout_s:g} s") from None


class LoopHeartbeat:
    """When a loop last went round. Stamped at construction, so a loop that never starts goes stale too."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.at = clock()

    def beat(self) -> None:
        self.at = self.clock()

    def age(self) -> float:
        return self.clock() - self.at

    def check(self, stale_after_s: float) -> None:
        """Raise `LoopStalled` when the last beat is older than `stale_after_s`."""
        age = self.age()
        if age > stale_after_s:
            raise LoopStalled(f"the loop last moved {age:.0f} s ago (bound {stale_after_s:g} s): it is stuck")
