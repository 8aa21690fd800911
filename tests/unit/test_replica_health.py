"""What the replicas' check_health rests on (deployments/replica_health.py), on a real database behind a
proxy the test cuts: a blip is forgiven for the grace period, a probe never hangs the check, a stuck
claim loop shows in its heartbeat. And the runner's answer to a stage's full queue: resend, bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from functools import partial

import pytest
from ray.serve.exceptions import BackPressureError

from catalog.data import load_catalog
from db.engine import make_engine, make_sessionmaker, ping_pool
from deployments.rendering import busy_stage_retry
from deployments.replica_health import DependencyDown, DependencyProbe, LoopHeartbeat, LoopStalled
from serve_app.jobqueue.worker import JobWorker
from tests.database_faults import DatabaseProxy
from tests.fake_clock import Clock


@pytest.fixture
def proxy(database_url: str) -> Iterator[DatabaseProxy]:
    proxy = DatabaseProxy(database_url)
    yield proxy
    proxy.close()


@pytest.fixture
def proxied_sessions(proxy: DatabaseProxy):
    engine = make_engine(proxy.url, pool_size=1, max_overflow=0, pool_timeout=1)
    yield make_sessionmaker(engine)
    engine.dispose()


def test_a_database_blip_shorter_than_the_grace_never_fails_the_check(proxy, proxied_sessions):
    clock = Clock()
    probe = DependencyProbe("database", partial(ping_pool, proxied_sessions), grace_s=30, timeout_s=2, clock=clock)

    async def scenario() -> list[str]:
        seen = []

        async def check_at(t: float) -> None:
            clock.now = 1000.0 + t
            try:
                await probe.check()
                seen.append(f"{t:g}: ok")
            except DependencyDown:
                seen.append(f"{t:g}: down")

        await check_at(0)
        proxy.set_mode("refuse")
        for t in (5, 20, 34.9):  # failing since 5: inside the grace until 35
            await check_at(t)
        proxy.set_mode("forward")
        await check_at(36)  # it answers again: the failures are forgotten
        proxy.set_mode("refuse")
        for t in (40, 69, 70, 80):  # a new run of failures from 40, down from 70 on
            await check_at(t)
        proxy.set_mode("forward")
        await check_at(81)
        return seen

    assert asyncio.run(scenario()) == ["0: ok", "5: ok", "20: ok", "34.9: ok", "36: ok", "40: ok", "69: ok",
                                       "70: down", "80: down", "81: ok"]
    assert probe.failing_since is None


def test_a_database_that_never_answers_costs_the_check_its_bound_and_one_probe(proxy, proxied_sessions):
    clock = Clock()
    probe = DependencyProbe("database", partial(ping_pool, proxied_sessions), grace_s=10, timeout_s=0.5, clock=clock)

    async def scenario() -> tuple[list[float], int]:
        await probe.check()
        connections_before = proxy.connections
        proxy.set_mode("stall")
        took = []
        for t in (1, 5):
            clock.now = 1000.0 + t
            started = time.monotonic()
            await probe.check()  # within the grace: no error, but it took its bound, not the hang
            took.append(time.monotonic() - started)
        clock.now = 1011.0
        with pytest.raises(DependencyDown, match=r"database has been failing for 10 s .*TimeoutError"):
            await probe.check()
        return took, proxy.connections - connections_before

    took, connections = asyncio.run(scenario())
    assert all(0.4 < seconds < 1.5 for seconds in took), took
    # Three checks during the stall, one probe: the hung one is waited for again, never joined by another.
    assert connections == 1
    proxy.set_mode("forward")  # the hung connect fails; the next probe reconnects

    async def recovered() -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                await probe.check()
                if probe.failing_since is None:
                    return
            except DependencyDown:
                pass
            assert time.monotonic() < deadline, "the probe never answered again"
            await asyncio.sleep(0.1)

    asyncio.run(recovered())


def test_a_heartbeat_is_stale_only_past_its_bound():
    clock = Clock()
    heartbeat = LoopHeartbeat(clock)
    clock.now += 32
    heartbeat.check(32)  # exactly at the bound: still moving
    clock.now += 0.5
    with pytest.raises(LoopStalled, match="last moved 32 s ago"):
        heartbeat.check(32)
    heartbeat.beat()
    heartbeat.check(32)


def test_the_claim_loop_beats_while_it_moves_and_goes_stale_when_the_database_hangs(sessions, proxy, proxied_sessions):
    # `sessions` empties the tables: nothing is pending, so nothing is rendered and the loop only looks
    # for work, as an idle runner does.
    runner = JobWorker(proxied_sessions, proxy.url, load_catalog(), renderer=None, poll_seconds=0.05)

    async def scenario() -> tuple[float, float]:
        loop = asyncio.create_task(runner.run_forever())
        try:
            await asyncio.sleep(1.0)
            moving = runner.loop_heartbeat.age()
            runner.loop_heartbeat.check(0.5)
            proxy.set_mode("stall")  # its next round waits on a connection that never answers
            await asyncio.sleep(1.5)
            stuck = runner.loop_heartbeat.age()
            with pytest.raises(LoopStalled):
                runner.loop_heartbeat.check(0.5)
            return moving, stuck
        finally:
            proxy.set_mode("forward")  # the hung round fails, and the loop can stop
            runner.stop()
            await asyncio.wait_for(loop, 30)

    moving, stuck = asyncio.run(scenario())
    assert moving < 0.5 and stuck > 1.0, (moving, stuck)


def test_a_full_stage_queue_is_resent_for_up_to_its_bound_and_nothing_else_is_retried():
    calls = {"busy": 0, "broken": 0}

    async def busy_twice() -> str:
        calls["busy"] += 1
        if calls["busy"] <= 2:
            raise BackPressureError(num_queued_requests=64, max_queued_requests=64)
        return "rendered"

    async def broken() -> str:
        calls["broken"] += 1
        raise ValueError("a bug, not a busy stage")

    async def always_busy() -> str:
        raise BackPressureError(num_queued_requests=1, max_queued_requests=1)

    assert asyncio.run(busy_stage_retry(60)(busy_twice)) == "rendered" and calls["busy"] == 3
    with pytest.raises(ValueError):
        asyncio.run(busy_stage_retry(60)(broken))
    assert calls["broken"] == 1
    started = time.monotonic()
    with pytest.raises(BackPressureError):  # past the bound the refusal itself fails the cut attempt
        asyncio.run(busy_stage_retry(0.5)(always_busy))
    assert time.monotonic() - started < 2.5
