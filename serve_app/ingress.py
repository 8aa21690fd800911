"""The Ingress deployment: a thin Ray Serve wrapper that builds this replica's services and serves the API."""

from __future__ import annotations

import asyncio
from functools import partial

from ray import serve
from ray.serve.handle import DeploymentHandle

from catalog.data import load_catalog
from db.engine import ping_pool
from deployments.replica_health import HEALTH_CHECK, DependencyProbe
from deployments.storage import open_storage
from fastapi import FastAPI
from serve_app.deps import Services, ingress_sessions
from serve_app.settings import Settings
from serve_app.web import create_app, freeze_startup_heap


# An open event stream (GET /jobs/{id}/events) holds one of these slots for its whole life, so the bound
# leaves room for ~1000 streams beside the ordinary requests; streams take no route thread and no pooled
# connection, and ordinary route code still runs on `ingress_threads` threads (see web.RouteThreads).
# Past those slots at most 100 requests wait per replica (or per proxy, behind Serve's proxy); the next
# is answered 503 with Retry-After at once, not queued until it times out (docs/OPERATIONS.md).
@serve.deployment(
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=1000,
    max_queued_requests=100,
    backpressure_config={"status_code": 503, "retry_after_s": 2},
    autoscaling_config={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 50},
    **HEALTH_CHECK,
)
@serve.ingress()
class Ingress:
    def __init__(self, settings: dict, database_url: str, storage: dict, jwt_secret: str, runner: DeploymentHandle,
                 preprocessor: DeploymentHandle, generator: DeploymentHandle, finisher: DeploymentHandle) -> None:
        config = Settings(**settings)
        handles = {"JobRunner": runner, "ControlNetPreprocessor": preprocessor, "SdxlTurboGenerator": generator,
                   "Finisher": finisher}
        # What each deployment reports beyond passing its own check_health.
        details = {"JobRunner": "status", "SdxlTurboGenerator": "describe"}

        def checker(name: str, handle: DeploymentHandle):
            async def check() -> dict:
                await handle.check_health.remote()
                method = details.get(name)
                return await getattr(handle, method).remote() if method else {}
            return check

        self.services = Services(
            settings=config,
            sessions=ingress_sessions(config, database_url),
            storage=open_storage(storage),
            catalog=load_catalog(),
            deployment_checks={name: checker(name, handle) for name, handle in handles.items()},
            jwt_secret=jwt_secret,
        )
        grace = config.unhealthy_after_seconds
        self.probes = (DependencyProbe("database", partial(ping_pool, self.services.sessions), grace_s=grace),
                       DependencyProbe("storage", self.services.storage.check, grace_s=grace))

    async def check_health(self) -> None:
        """Serve's probe: the database and the bucket answer this replica (each within its bound), or have
        been failing for less than `unhealthy_after_seconds`, so a blip never costs the replica."""
        await asyncio.gather(*(probe.check() for probe in self.probes))

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve calls this after __init__: the app is built with this replica's services."""
        app = create_app(self.services)
        freeze_startup_heap()
        return app
