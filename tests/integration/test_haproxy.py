"""Two services behind HAProxy on one machine, side by side, as when two modules' services meet.

Behind HAProxy, Ray 2.60 forwards to a Serve proxy on a fixed port (8500) that it binds with SO_REUSEPORT:
two services in one network namespace both bound it, and the kernel handed one service's requests to
the other's application (a job POSTed to a test module's own service landed in the session service's
database). Each run gets its own port now (`serve_app.launcher.start`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import pytest

from serve_app.isolation import can_isolate, only_loopback
from serve_app.launcher import Launched, end_session
from tests.conftest import fresh_database
from tests.services import Services

pytestmark = [
    pytest.mark.integration,
    # A service uses HAProxy only inside a loopback-only namespace: this one (`make test`'s) or its own.
    pytest.mark.skipif(not (only_loopback() or can_isolate()), reason="no loopback-only network namespace here"),
]


def trivial_service(name: str, database_url: str, tmp_path_factory) -> tuple[Path, dict, dict]:
    """Ray's one-route app behind HAProxy, its route under /`name`, with a database of its own (a run for
    `Services.own_side_by_side`)."""
    root = tmp_path_factory.mktemp(f"haproxy-{name}")
    settings = {"database_url": database_url, "data_dir": str(root / "data"), "ingress_proxy": "haproxy"}
    return root, settings, {"import_path": "bench.trivial_app:app", "ready_path": f"/{name}/livez",
                            "app_options": {"route_prefix": f"/{name}"}}


def answers(launched: Launched, name: str, other: str) -> set[tuple[int, int]]:
    """Status codes of 20 pairs of requests: the service's own route, and the other's."""
    with httpx.Client(base_url=launched.base_url, timeout=10) as client:
        return {(client.get(f"/{name}/livez").status_code, client.get(f"/{other}/livez").status_code)
                for _ in range(20)}


def shared_listening_ports() -> dict[int, int]:
    """TCP ports with more than one listening socket in this network namespace (SO_REUSEPORT sharing)."""
    ports = Counter()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A":  # LISTEN
                ports[int(local.rsplit(":", 1)[1], 16)] += 1
    return {port: count for port, count in ports.items() if count > 1}


def test_services_behind_haproxy_keep_to_their_own_ports_and_routes(services: Services, server_url, tmp_path_factory):
    with fresh_database(server_url) as one_database, fresh_database(server_url) as two_database, \
            services.own_side_by_side(trivial_service("one", one_database, tmp_path_factory),
                                      trivial_service("two", two_database, tmp_path_factory)) as (one, two):
        assert one.processes("haproxy") and two.processes("haproxy"), "a service has no HAProxy in front of it"
        assert shared_listening_ports() == {}
        assert answers(two, "two", "one") == {(200, 404)}
        assert answers(one, "one", "two") == {(200, 404)}
        end_session(two.pid)
        assert answers(one, "one", "two") == {(200, 404)}  # the other one stopped; this one carries on
