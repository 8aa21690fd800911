"""The JobRunner deployment: a thin Ray Serve wrapper that runs the queue worker's claim loop (worker.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

from pydantic import BaseModel
from ray import serve
from ray.serve.handle import DeploymentHandle

from catalog.data import load_catalog
from db.engine import make_engine, make_sessionmaker, ping_pool
from db.models import GenerationJob
from deployments.rendering import RenderChain
from deployments.replica_health import HEALTH_CHECK, PROBE_CONNECTIONS, DependencyProbe
from deployments.storage import Storage, open_storage
from serve_app.jobqueue.autoscaling import IDLE, RUNNER_AUTOSCALING, backlog_stats
from serve_app.jobqueue.render_cache import RenderSettings
from serve_app.jobqueue.retention import Lifetimes
from serve_app.jobqueue.webhooks import DeliveryPolicy, WebhookDeliverer
from serve_app.jobqueue.worker import JobWorker, database_connections
from serve_app.settings import Settings


# A fixed count written as min = max: Serve collects `record_autoscaling_stats` only from deployments
# that autoscale, and the backlog policy (serve_app/jobqueue/autoscaling.py) reads it to size the generator.
# Its callers are the ingress replicas' health reports and admin views: 8 waiting past the 8 in hand is
# plenty, and more means the runner has stopped answering, which a fast refusal says better than a wait.
@serve.deployment(
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=8,
    max_queued_requests=8,
    autoscaling_config=RUNNER_AUTOSCALING,
    graceful_shutdown_timeout_s=30,
    **HEALTH_CHECK,
)
class JobRunner:
    """Runs the claim loop in the replica's event loop from construction until shutdown.

    More replicas are safe (claims use SKIP LOCKED); one keeps a small machine's CPU for the workers.
    """

    def __init__(self, settings: dict, database_url: str, storage: dict, preprocessor: DeploymentHandle,
                 generator: DeploymentHandle, finisher: DeploymentHandle,
                 present_job: Callable[[GenerationJob, Storage], BaseModel]) -> None:
        """`present_job` is the job routes' presenter (GET /jobs/{job_id}'s body), which webhooks carry."""
        config = Settings(**settings)
        renderer = RenderChain.on_serve(preprocessor, generator, finisher, config.control_detector, config.image_size,
                                        stage_timeout_s=config.stage_timeout_seconds)
        # A connection for each of the runner's database threads, so lease renewals never wait for one,
        # and one for the health probe.
        engine = make_engine(database_url, pool_size=database_connections(config.runner_concurrency) + PROBE_CONNECTIONS,
                             max_overflow=0,
                             pool_timeout=config.db_pool_timeout_seconds,
                             statement_timeout=config.db_statement_timeout_seconds)
        self.runner = JobWorker(
            make_sessionmaker(engine), database_url, load_catalog(), renderer,
            concurrency=config.runner_concurrency, lease_seconds=config.lease_seconds,
            poll_seconds=config.poll_seconds, storage=open_storage(storage),
            upload_ttl_seconds=config.upload_ttl_hours * 3600, cut_attempts=config.cut_attempts,
            cut_retry_seconds=config.cut_retry_seconds, render=RenderSettings.of(config), paused=config.runner_paused,
            lifetimes=Lifetimes.of(config), prune_interval_seconds=config.prune_interval_seconds,
            batch_jobs=config.runner_batch_jobs,
        )
        self.grace_seconds = config.shutdown_grace_seconds
        self.database_probe = DependencyProbe("database", partial(ping_pool, self.runner.sessions),
                                              grace_s=config.unhealthy_after_seconds)
        # The loop goes round every poll_seconds when idle; a round that fails (the database away) is quick.
        self.loop_stale_after_s = config.unhealthy_after_seconds + config.poll_seconds
        self.task = asyncio.get_running_loop().create_task(self.runner.run_forever())
        # Webhooks on a pool of their own, so a slow receiver never holds a connection the jobs' leases need.
        webhook_sessions = make_sessionmaker(make_engine(
            database_url, pool_size=2, max_overflow=0, pool_timeout=config.db_pool_timeout_seconds,
            statement_timeout=config.db_statement_timeout_seconds))
        self.webhooks = WebhookDeliverer(
            webhook_sessions, lambda job: present_job(job, self.runner.storage).model_dump(mode="json"),
            DeliveryPolicy.of(config))
        self.webhooks_task = asyncio.get_running_loop().create_task(self.webhooks.run_forever())

    def status(self) -> dict:
        return {"owner": self.runner.owner, "active_jobs": sorted(self.runner.active), "paused": self.runner.paused}

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve calls this every few seconds and hands the numbers to the backlog policy, which sizes the
        generator from them: the backlog lives in PostgreSQL, where Serve's request counts cannot see it.
        A paused runner renders nothing, so it asks for no generators whatever waits."""
        return backlog_stats(IDLE if self.runner.paused else await self.runner.backlog())

    async def check_health(self) -> None:
        """Serve's probe: the claim loop runs and went round lately, and the runner's own pool reaches the
        database (or has failed to for less than `unhealthy_after_seconds`): this replica can still claim."""
        if self.task.done():
            raise RuntimeError(f"runner loop stopped: {self.task.exception()!r}")
        if self.webhooks_task.done():
            raise RuntimeError(f"webhook loop stopped: {self.webhooks_task.exception()!r}")
        self.runner.loop_heartbeat.check(self.loop_stale_after_s)
        await self.database_probe.check()

    async def __del__(self) -> None:
        """Serve calls this on scale-down or redeploy (SIGTERM): finish or release the jobs in hand."""
        await asyncio.gather(self.runner.shutdown(self.task, self.grace_seconds),
                             self.webhooks.shutdown(self.webhooks_task, self.grace_seconds))
