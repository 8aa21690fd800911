"""Thin Ray Serve wrappers for the ingress and the job runner (the logic is in the feature slices and runner.py)."""

from __future__ import annotations

import asyncio
import logging

from ray import serve
from ray.serve.handle import DeploymentHandle

from catalog.data import load_catalog
from db.engine import make_engine, make_sessionmaker
from deployments.rendering import RenderChain
from deployments.storage import open_storage
from fastapi import FastAPI
from serve_app.deps import Services, ingress_sessions
from serve_app.autoscaling import IDLE, RUNNER_AUTOSCALING, backlog_stats
from serve_app.render_cache import RenderSettings
from serve_app.runner import JobRunner, database_connections
from serve_app.settings import Settings
from serve_app.web import create_app, freeze_startup_heap

logger = logging.getLogger("ray.serve")


# An open event stream (GET /jobs/{id}/events) holds one of these slots for its whole life, so the bound
# leaves room for ~1000 streams beside the ordinary requests; streams take no route thread and no pooled
# connection, and ordinary route code still runs on `ingress_threads` threads (see web.RouteThreads).
@serve.deployment(
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=1000,
    autoscaling_config={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 50},
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

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve calls this after __init__: the app is built with this replica's services."""
        app = create_app(self.services)
        freeze_startup_heap()
        return app


# A fixed count written as min = max: Serve collects `record_autoscaling_stats` only from deployments
# that autoscale, and the backlog policy (serve_app/autoscaling.py) reads it to size the generator.
@serve.deployment(
    name="JobRunner",
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=8,
    autoscaling_config=RUNNER_AUTOSCALING,
    graceful_shutdown_timeout_s=30,
)
class JobRunnerDeployment:
    """Runs the claim loop in the replica's event loop from construction until shutdown.

    More replicas are safe (claims use SKIP LOCKED); one keeps a small machine's CPU for the workers.
    """

    def __init__(self, settings: dict, database_url: str, storage: dict, preprocessor: DeploymentHandle,
                 generator: DeploymentHandle, finisher: DeploymentHandle) -> None:
        config = Settings(**settings)
        renderer = RenderChain.on_serve(preprocessor, generator, finisher, config.control_detector, config.image_size,
                                        stage_timeout_s=config.stage_timeout_seconds)
        # A connection for each of the runner's database threads, so lease renewals never wait for one.
        engine = make_engine(database_url, pool_size=database_connections(config.runner_concurrency), max_overflow=0,
                             pool_timeout=config.db_pool_timeout_seconds,
                             statement_timeout=config.db_statement_timeout_seconds)
        self.runner = JobRunner(
            make_sessionmaker(engine), database_url, load_catalog(), renderer,
            concurrency=config.runner_concurrency, lease_seconds=config.lease_seconds,
            poll_seconds=config.poll_seconds, storage=open_storage(storage),
            upload_ttl_seconds=config.upload_ttl_hours * 3600, cut_attempts=config.cut_attempts,
            cut_retry_seconds=config.cut_retry_seconds, render=RenderSettings.of(config), paused=config.runner_paused,
        )
        self.grace_seconds = config.shutdown_grace_seconds
        self.task = asyncio.get_running_loop().create_task(self.runner.run_forever())

    def status(self) -> dict:
        return {"owner": self.runner.owner, "active_jobs": sorted(self.runner.active), "paused": self.runner.paused}

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve calls this every few seconds and hands the numbers to the backlog policy, which sizes the
        generator from them: the backlog lives in PostgreSQL, where Serve's request counts cannot see it.
        A paused runner renders nothing, so it asks for no generators whatever waits."""
        return backlog_stats(IDLE if self.runner.paused else await self.runner.backlog())

    def check_health(self) -> None:
        if self.task.done():
            raise RuntimeError(f"runner loop stopped: {self.task.exception()!r}")

    async def __del__(self) -> None:
        """Serve calls this on scale-down or redeploy (SIGTERM): finish or release the jobs in hand."""
        await self.runner.shutdown(self.task, self.grace_seconds)
