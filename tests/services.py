"""The launched services test modules run against, and how they share them.

Starting the application costs a minute on the 2-core machine, so modules whose settings match share
one: a `ServiceSpec` names the settings a shared service gets beyond every test service's base (a
fresh database, a data directory, the tiny-random model). The session's `Services` keeps the last
shared service idle, to hand on to the next module with the same spec, and ends it before it starts
any other, so two services never compete for the CPUs and memory unasked. A module that needs
settings of its own (its own database server, a fault proxy, a dashboard) launches through
`Services.own` or `Services.own_side_by_side`, which end the idle one first too. Every test service
stops the fast way (`graceful=False`): its whole process session killed, its temporary folders removed.

`order_by_service` (called from tests/conftest.py) runs each spec's modules one after another, so each
shared service starts once per session.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve_app.launcher import Launch, Launched, serve, start
from tests.conftest import fresh_database

IMAGE_SIZE = 128
# Tests drive the service from one address far faster than a customer would: no per-client limits.
UNLIMITED = {"rate_limit_generate": "1000000/minute", "rate_limit_upload": "1000000/minute",
             "max_unfinished_jobs_per_client": 1_000_000}


@dataclass(frozen=True)
class ServiceSpec:
    """A shared service: its `settings` beyond the base, `options` for `serve_app.launcher.start`, and
    the `fixture` modules ask for it by (how `order_by_service` finds the modules that share it)."""

    name: str
    fixture: str
    settings: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


# The service most modules talk to: small images, a quick runner, a 2 s statement timeout, no per-client limits.
MAIN = ServiceSpec("main", "service", {"image_size": IMAGE_SIZE, "poll_seconds": 0.5,
                                       "db_statement_timeout_seconds": 2, **UNLIMITED})
SHARED = (MAIN,)


@dataclass
class Service:
    base_url: str
    data_dir: Path
    database_url: str
    launched: Launched

    @property
    def uploads(self) -> Path:
        return self.data_dir / "storage" / "temp-uploads"

    def stored_uploads(self) -> set[str]:
        return {p.name for p in self.uploads.glob("*")} if self.uploads.exists() else set()

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30, **kwargs)


class Services:
    """At most one idle shared service at a time, on the session's database server."""

    def __init__(self, server_url: str, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.server_url = server_url
        self.tmp_path_factory = tmp_path_factory
        self.idle: tuple[ServiceSpec, Service, ExitStack] | None = None

    def shared(self, spec: ServiceSpec) -> Service:
        """The idle service if it was started from `spec`, else a new one (the idle one ended first),
        with a database of its own."""
        if self.idle is not None and self.idle[0] == spec:
            return self.idle[1]
        self.end_idle()
        root = self.tmp_path_factory.mktemp(f"service-{spec.name}")
        with ExitStack() as stack:
            database_url = stack.enter_context(fresh_database(self.server_url))
            settings = {"database_url": database_url, "data_dir": str(root / "data"), "model_profile": "tiny-random",
                        **spec.settings}
            launched = stack.enter_context(serve(root, settings, graceful=False, **spec.options))
            service = Service(launched.base_url, root / "data", database_url, launched)
            self.idle = (spec, service, stack.pop_all())
        return service

    def end_idle(self) -> None:
        """End the idle shared service, then drop its database."""
        if self.idle is not None:
            _, _, stack = self.idle
            self.idle = None
            stack.close()

    @contextmanager
    def own(self, workdir: Path, settings: dict, **options: Any) -> Iterator[Launched]:
        """A service for one module alone (`serve_app.launcher.start`'s arguments), ended when it is done."""
        self.end_idle()
        with serve(workdir, settings, graceful=False, **options) as launched:
            yield launched

    @contextmanager
    def own_side_by_side(self, *runs: tuple[Path, dict, dict[str, Any]]) -> Iterator[list[Launched]]:
        """Services that run at the same time, each (workdir, settings, options) as for `own`: started
        together, so they boot in parallel, and ended when the module is done."""
        self.end_idle()
        launches: list[Launch] = []
        try:
            for workdir, settings, options in runs:
                launches.append(start(workdir, settings, **options))
            yield [launch.ready() for launch in launches]
        finally:
            for launch in launches:
                launch.stop(graceful=False)


def order_by_service(items: list[pytest.Item]) -> None:
    """Unit tests first; then, spec by spec, the modules that share a service (API tests before browser
    tests, which look at the catalog as a shopper sees it); then the modules with services of their own.
    Modules stay whole and otherwise in collection order."""
    modules: dict[Path, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.path, []).append(item)

    def rank(path: Path) -> tuple[int, ...]:
        if "unit" in path.parts:
            return (0,)
        used = {name for item in modules[path] for name in item.fixturenames}
        for n, spec in enumerate(SHARED):
            if spec.fixture in used:
                return (1, n, "e2e" in path.parts)
        return (2,)

    items[:] = [item for path in sorted(modules, key=rank) for item in modules[path]]
