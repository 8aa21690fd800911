"""The client is the client in every topology a local run ships (issue 22, parts 1 and 10).

Each service here runs as `make run` runs it on a host: in a loopback-only namespace of its own,
behind the bridge to the host's 127.0.0.1 (`isolate=True`), one with HAProxy in front of the ingress
(the default) and one with Serve's own proxy, side by side. Callers on distinct loopback addresses must
each get their own rate-limit budget; a caller must not name itself with X-Forwarded-For; a trusted
load balancer (127.0.0.9 here, `SASTRE_TRUSTED_PROXIES`) names its clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest

from db.engine import make_engine, make_sessionmaker
from serve_app.admin.auth.service import create_user
from serve_app.isolation import can_isolate, only_loopback
from serve_app.launcher import Launched
from tests.conftest import fresh_database
from tests.services import Services

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (only_loopback() or can_isolate()), reason="no network namespaces here"),
]

NAVY = {"family_id": "lana-fria", "color_id": "lana-fria-azul-marino", "cuts": ["recto"]}
LOAD_BALANCER = "127.0.0.9"
PROXIES = ("haproxy", "serve")
PASSWORD = "identity-admin-password"


@dataclass
class Bridged:
    launched: Launched
    proxy: str
    token: str

    def client(self, address: str) -> httpx.Client:
        """A caller on `address` (127.0.0.N), talking to the bridge on the host's 127.0.0.1."""
        return httpx.Client(base_url=self.launched.base_url, timeout=30,
                            transport=httpx.HTTPTransport(local_address=address))

    def seen_as(self, address: str, forwarded_for: str | None = None) -> str:
        """Who the service takes a caller on `address` for (GET /admin/health, `ingress.client`)."""
        headers = {"Authorization": f"Bearer {self.token}"}
        if forwarded_for is not None:
            headers["X-Forwarded-For"] = forwarded_for
        with self.client(address) as client:
            response = client.get("/admin/health", headers=headers)
        assert response.status_code == 200, response.text
        return response.json()["ingress"]["client"]

    def generate(self, address: str, forwarded_for: str | None = None) -> int:
        headers = {"X-Forwarded-For": forwarded_for} if forwarded_for is not None else {}
        with self.client(address) as client:
            response = client.post("/generate", json=NAVY, headers=headers)
        assert response.status_code in (202, 429), response.text
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1 and response.json()["detail"]
        return response.status_code


def bridge(launched: Launched, proxy: str, database_url: str) -> Bridged:
    """The service's admin account and token, once it is shown to run behind `proxy`."""
    # the path `make run` takes: a namespace behind the bridge, and the proxy asked for in it
    assert bool(launched.processes("haproxy")) == (proxy == "haproxy")
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine).begin() as session:
            create_user(session, "identity-admin", PASSWORD)
    finally:
        engine.dispose()
    with httpx.Client(base_url=launched.base_url, timeout=30) as client:
        token = client.post("/admin/login", data={"username": "identity-admin",
                                                  "password": PASSWORD}).json()["access_token"]
    return Bridged(launched, proxy, token)


@pytest.fixture(scope="module")
def by_proxy(services: Services, server_url, tmp_path_factory) -> Iterator[dict[str, Bridged]]:
    """One service behind each proxy, each with a database of its own, started side by side."""
    with ExitStack() as stack:
        databases = {proxy: stack.enter_context(fresh_database(server_url)) for proxy in PROXIES}
        runs = []
        for proxy in PROXIES:
            root = tmp_path_factory.mktemp(f"identity-{proxy}")
            settings = {"database_url": databases[proxy], "data_dir": str(root / "data"),
                        "model_profile": "tiny-random", "image_size": 128, "ingress_proxy": proxy,
                        "runner_paused": True, "rate_limit_generate": "3/minute", "trusted_proxies": [LOAD_BALANCER]}
            runs.append((root, settings, {"isolate": True}))
        launched = stack.enter_context(services.own_side_by_side(*runs))
        yield {proxy: bridge(one, proxy, databases[proxy]) for proxy, one in zip(PROXIES, launched)}


@pytest.fixture(scope="module", params=PROXIES)
def bridged(request, by_proxy: dict[str, Bridged]) -> Bridged:
    return by_proxy[request.param]


def test_each_caller_has_its_own_budget_and_one_over_it_leaves_the_others_theirs(bridged):
    callers = [f"127.0.0.{n}" for n in range(21, 27)]
    first_three = {address: [bridged.generate(address) for _ in range(3)] for address in callers}
    assert first_three == {address: [202, 202, 202] for address in callers}  # today: 3 x 202 in all, then 429
    assert bridged.generate("127.0.0.21") == 429
    assert bridged.generate("127.0.0.27") == 202  # another caller still has its budget
    assert bridged.seen_as("127.0.0.30") == "127.0.0.30"  # today: 127.0.0.1, the bridge


def test_a_caller_cannot_name_itself_with_x_forwarded_for(bridged):
    for _ in range(3):
        bridged.generate("127.0.0.41")
    assert bridged.generate("127.0.0.41", forwarded_for="198.51.100.1") == 429  # still itself, still spent
    assert bridged.seen_as("127.0.0.42", forwarded_for="198.51.100.2") == "127.0.0.42"
    # the host's own 127.0.0.1 is a caller like any other, not a proxy of ours
    assert bridged.seen_as("127.0.0.1", forwarded_for="198.51.100.3") == "127.0.0.1"


def test_a_trusted_load_balancer_names_its_clients_and_only_the_hop_it_added_counts(bridged):
    assert bridged.seen_as(LOAD_BALANCER, forwarded_for="203.0.113.7") == "203.0.113.7"
    # a client-written hop left of the load balancer's proves nothing
    assert bridged.seen_as(LOAD_BALANCER, forwarded_for="198.51.100.9, 203.0.113.8") == "203.0.113.8"
    assert [bridged.generate(LOAD_BALANCER, forwarded_for="203.0.113.7") for _ in range(4)] == [202, 202, 202, 429]
    assert bridged.generate(LOAD_BALANCER, forwarded_for="203.0.113.8") == 202


def test_a_flood_of_health_answers_from_a_report_a_few_seconds_old(bridged):
    async def flood() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=bridged.launched.base_url, timeout=60, limits=limits) as client:
            return await asyncio.gather(*(client.get("/health") for _ in range(200)))

    answers = asyncio.run(flood())
    assert [r.status_code for r in answers] == [200] * 200
    assert max(int(r.headers["Age"]) for r in answers) <= 2
