"""GET /health answers from a report at most a few seconds old, so a flood of it never reaches the
deployments' request slots (issue 22, part 10)."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from catalog.data import load_catalog
from deployments.storage import LocalStorage
from serve_app.deps import Services
from serve_app.health.reports import HealthReports
from serve_app.settings import Settings
from serve_app.web import create_app
from tests.fake_clock import Clock

DEPLOYMENTS = ("JobRunner", "ControlNetPreprocessor", "SdxlTurboGenerator", "Finisher")


MAX_AGE = 2.0


@pytest.fixture
def counted(sessions, tmp_path) -> tuple[Services, Counter, dict, Clock]:
    """Services whose deployment checks count their calls and fail while `state["down"]` names them."""
    calls: Counter = Counter()
    state: dict = {"down": set()}
    clock = Clock(now=0.0)

    def checker(name: str):
        async def check() -> dict:
            calls[name] += 1
            await asyncio.sleep(0.05)  # a real check is a round trip to a replica: let requests pile up meanwhile
            if name in state["down"]:
                raise RuntimeError(f"{name} is down")
            return {"profile": "tiny-random"} if name == "SdxlTurboGenerator" else {}
        return check

    services = Services(settings=Settings(data_dir=tmp_path), sessions=sessions,
                        storage=LocalStorage(tmp_path, "http://testserver/media"), catalog=load_catalog(),
                        deployment_checks={name: checker(name) for name in DEPLOYMENTS},
                        health=HealthReports(MAX_AGE, clock=clock))
    return services, calls, state, clock


def test_a_flood_of_health_checks_each_deployment_once_and_a_stale_report_is_checked_again(counted):
    services, calls, state, clock = counted

    async def scenario() -> tuple[list[httpx.Response], Counter, httpx.Response, Counter, httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            flood = await asyncio.gather(*(client.get("/health") for _ in range(200)))
            after_flood = Counter(calls)
            state["down"].add("Finisher")
            clock.now = 0.9  # young: answered from the report, Finisher's fall unseen
            cached = await client.get("/health")
            clock.now = MAX_AGE + 0.5  # stale: the request waits for a fresh check
            fresh = await client.get("/health")
            return flood, after_flood, cached, Counter(calls), fresh

    flood, after_flood, cached, after_stale, fresh = asyncio.run(scenario())
    assert [r.status_code for r in flood] == [200] * 200
    assert after_flood == {name: 1 for name in DEPLOYMENTS}  # today's code: 200 calls of each
    assert {r.headers["Age"] for r in flood} == {"0"}
    assert cached.status_code == 200 and cached.json()["deployments"]["Finisher"] == {"ok": True}
    assert cached.headers["Age"] == "0"
    assert after_stale == {name: 2 for name in DEPLOYMENTS}
    assert fresh.status_code == 503 and fresh.json()["deployments"]["Finisher"] == {"ok": False}
    assert fresh.headers["Age"] == "0"


def test_past_half_its_age_a_report_is_checked_again_in_the_background_and_requests_do_not_wait(counted):
    services, calls, state, clock = counted

    async def scenario() -> tuple[httpx.Response, list[httpx.Response]]:
        transport = httpx.ASGITransport(app=create_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await client.get("/health")
            state["down"].add("JobRunner")
            clock.now = 1.2  # past half of MAX_AGE, not past it
            at_once = await client.get("/health")  # the old report; one check starts behind it
            later = []
            for _ in range(200):  # until the background check lands (the clock stands still meanwhile)
                later.append(await client.get("/health"))
                if later[-1].status_code == 503:
                    break
                await asyncio.sleep(0.02)
            return at_once, later

    at_once, later = asyncio.run(scenario())
    assert at_once.status_code == 200 and at_once.json()["deployments"]["JobRunner"] == {"ok": True}
    assert at_once.headers["Age"] == "1"
    assert later[-1].status_code == 503 and later[-1].json()["deployments"]["JobRunner"] == {"ok": False}
    assert later[-1].headers["Age"] == "0"
    assert calls == {name: 2 for name in DEPLOYMENTS}  # the requests while it ran started no other check
