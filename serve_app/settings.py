"""Service settings: environment variables prefixed `SASTRE_`, an optional `.env`, embedded defaults.

Nothing needs to be set for a local run. The app builder reads settings once, in the driver, and hands
the resolved values to every deployment, so all replicas agree on them.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from deployments.model_sources import ModelSources
from serve_app.edge.ratelimit import parse_limits


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SASTRE_", env_file=".env", extra="ignore")

    environment: Literal["local", "production"] = "local"
    data_dir: Path = Field(default=Path(".sastre"), description="embedded database, local storage, generated secrets")
    database_url: str | None = Field(default=None, description="PostgreSQL URL; unset starts the embedded server")

    storage_backend: Literal["local", "s3"] = "local"
    public_base_url: str = Field(default="http://127.0.0.1:8000", description="where browsers reach this service")
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = Field(default=None, description="R2: https://<account>.r2.cloudflarestorage.com")
    s3_region: str | None = Field(default=None, description="R2: auto")
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_public_base_url: str | None = Field(default=None, description="public bucket URL; unset = presigned URLs")
    s3_presign_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)

    upload_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    upload_max_pixels: int = Field(default=25_000_000, ge=1, le=80_000_000,
                                   description="kept well under Pillow's decompression-bomb limit (89 MP)")
    upload_ttl_hours: float = Field(default=24, gt=0)
    upload_decode_slots: int = Field(default=2, ge=1, le=64, description="uploads one ingress replica decodes at "
                                     "once (each may hold ~100 MB while a 25 MP PNG decodes); past it: 503 + "
                                     "Retry-After")
    body_max_bytes: int = Field(default=64 * 1024, ge=1024, description="request bodies of every route but the "
                                "uploads: larger is a 413 before the route parses it (serve_app/edge/body_limit.py)")

    model_profile: Literal["pretrained", "tiny-random", "full-random", "auto"] = "auto"
    base_model: str = ModelSources.base
    controlnet_model: str = ModelSources.controlnet
    ip_adapter_model: str = ModelSources.ip_adapter
    vae_model: str = Field(default=ModelSources.vae, description="fp16-safe VAE; empty = the base model's")
    image_size: int = Field(default=512, ge=64, le=1024, multiple_of=64)
    num_inference_steps: int = Field(default=1, ge=1, le=4)
    max_batch_size: int = Field(default=8, ge=1, le=64, description="most cuts one generator call makes, across "
                                "jobs; a GPU replica captures a CUDA graph for 1, 2, 4, ... up to it")
    batch_wait_seconds: float = Field(default=0.01, ge=0, le=1, description="how long a generator batch waits for "
                                      "more cuts before it runs")
    generator_cpu_threads: int = Field(default=0, ge=0, description="torch threads of a generator replica that runs "
                                       "on the CPU; 0: every core of its machine")
    control_detector: Literal["canny"] = "canny"
    watermark_text: str = "SASTRE"
    render_cache: bool = Field(default=True, description="serve a cut whose every input matches a completed one "
                               "from its stored image; always off with model_profile auto (serve_app/jobqueue/render_cache.py)")
    render_cache_version: str = Field(default="1", description="part of every render-cache key: change it after "
                                      "replacing weights in place (same hub id or directory) or code that changes "
                                      "pixels, and no earlier entry is reused")
    catalog_seed: int = Field(default=1000, ge=0, le=2**31 - 1 - 16, description="the seed of the catalog's default "
                              "views: POST /admin/renders/prewarm renders every active color x cut at it, and a shop "
                              "asking for one cut at this seed gets the pre-rendered image at once")

    jwt_secret: SecretStr | None = Field(default=None, description="admin token signing key; required in production")
    jwt_lifetime_minutes: int = Field(default=60, ge=1, le=24 * 60)
    login_failures_per_address: int = Field(default=10, ge=1, description="failed admin logins one client address "
                                            "may make within the window, whatever the usernames; then 429")
    login_window_minutes: float = Field(default=15, gt=0, description="how long a failed login counts (for the "
                                        "address limit and a username's delay); older ones are deleted")
    login_workers: int = Field(default=1, ge=1, le=16, description="threads of an ingress replica that check "
                               "passwords (bcrypt), apart from the route threads")
    login_queue: int = Field(default=8, ge=0, le=1024, description="logins an ingress replica lets wait for a "
                             "password thread (or serve a username's delay); past it: 429 with Retry-After")

    cors_origins: list[str] = Field(default_factory=lambda: ["http://localhost:3000", "http://127.0.0.1:3000"])

    rate_limit_generate: str = Field(default="30/minute", description="POST /generate per client, e.g. 30/minute;500/hour")
    rate_limit_upload: str = Field(default="10/minute", description="POST /upload-swatch per client")
    rate_limit_storage: str = Field(default="memory://", description="memory:// counts per replica; "
                                    "redis://host:6379/0 shares the counts between replicas")
    trusted_proxies: list[str] = Field(default_factory=list, description="addresses or networks whose "
                                       "X-Forwarded-For names the client")

    job_max_attempts: int = Field(default=3, ge=1)
    lease_seconds: float = Field(default=30.0, gt=0)
    poll_seconds: float = Field(default=2.0, gt=0)
    runner_concurrency: int = Field(default=16, ge=1, description="jobs one runner works on at once")
    runner_batch_jobs: int = Field(
        default=8, ge=1, description="batch-lane jobs (prewarm: one cut each) one runner works on at once, at "
        "most runner_concurrency - 1; the rest is kept for shoppers' jobs, which are claimed first, so a "
        "shopper's cut waits behind at most this many batch cuts at the generator: one generator batch while "
        "it is <= max_batch_size")
    runner_paused: bool = Field(default=False, description="runners claim no jobs and ask for no generators: "
                                "POST /generate still accepts jobs, which wait (durable) for runners that are "
                                "not paused; for maintenance, and for `make bench-api` to measure the API alone")
    cut_attempts: int = Field(default=4, ge=1, description="tries per cut before the job fails")
    cut_retry_seconds: float = Field(default=1.0, ge=0, description="first retry delay; doubles each time")
    max_pending_jobs: int = Field(default=1000, ge=1, description="backlog above which POST /generate answers 429")
    max_unfinished_jobs_per_client: int = Field(
        default=100, ge=1, description="pending and processing jobs one client (its address, as the rate limits "
        "see it) may have; past it POST /generate answers 429 + Retry-After, so no client fills the backlog alone")
    backlog_recount_seconds: float = Field(default=1.0, ge=0, description="how old an ingress replica's backlog "
                                           "count may get before it recounts in the background; 0: on every POST")
    job_retention_days: float = Field(default=30, gt=0, description="a completed or canceled job and its renders "
                                      "are deleted this long after it finished, unless an admin keeps it")
    failed_job_retention_days: float = Field(default=14, gt=0, description="a failed job (and its swatch copy and "
                                             "any renders) is deleted this long after it failed")
    render_cache_retention_days: float = Field(default=30, gt=0, description="a render-cache entry is deleted this "
                                               "long after its last hit; its image goes once no job names it")
    prune_interval_seconds: float = Field(default=300, gt=0, description="how often each runner deletes what aged out")
    prune_batch_size: int = Field(default=500, ge=1, le=10_000, description="rows per prune transaction")
    idempotency_ttl_hours: float = Field(default=24, gt=0, description="an Idempotency-Key replays its job this long")
    shutdown_grace_seconds: float = Field(default=15.0, ge=0, description="runner: finish jobs in hand, then release")
    stage_timeout_seconds: float = Field(
        default=300.0, gt=0, description="bound on each stage call (preprocess, generate, finish) of a cut attempt; "
        "covers a replica that is still loading its weights. A timeout fails the attempt, which is retried")
    fault_stall_file: str | None = Field(
        default=None, description="fault injection for tests, refused in production: while this file exists, "
        "every generator model call hangs, as a stuck CUDA call would")

    @model_validator(mode="after")
    def _no_fault_injection_in_production(self) -> Settings:
        if self.environment == "production" and self.fault_stall_file:
            raise ValueError("SASTRE_FAULT_STALL_FILE is a test-only fault injection; it is refused in production")
        return self

    ingress_threads: int = Field(default=16, ge=1, le=256, description="threads an ingress replica runs route code "
                                 "on; its database pool holds exactly as many connections")
    ingress_proxy: Literal["haproxy", "serve"] = Field(
        default="haproxy", description="what takes HTTP in front of the ingress replicas in a local run: the "
        "HAProxy that ray[serve] installs (2.5-3.5x the requests per core of Serve's proxy on the dev VM), or "
        "Serve's default proxy. HAProxy's stats and metrics frontends listen on every interface, so a local run "
        "uses it only inside its loopback-only network namespace (else Serve's proxy, with a warning). A "
        "cluster sets RAY_SERVE_ENABLE_HA_PROXY on its nodes instead")
    ingress_connections: int = Field(default=16, ge=1, le=256, description="connections of an ingress replica's "
                                     "asyncio pool, which the hot routes (POST /generate, GET /jobs/{id}) await on "
                                     "the event loop; each holds one only for its round trip")
    db_pool_timeout_seconds: float = Field(default=5.0, gt=0, description="longest wait for a pooled connection; "
                                           "then 503 + Retry-After (none is expected: pools fit their threads)")
    db_statement_timeout_seconds: float = Field(default=10.0, gt=0, description="a statement running or waiting for "
                                                "a lock longer is cancelled: 503 + Retry-After, or a runner retry")

    events_keepalive_seconds: float = Field(default=15.0, gt=0, description="an idle event stream "
                                            "(GET /jobs/{id}/events) sends a `: keep-alive` comment this often")
    events_stream_seconds: float = Field(default=300.0, gt=0, description="an event stream closes after this "
                                         "long; the client resumes with Last-Event-ID (EventSource does so by "
                                         "itself). Keep it under the proxy's request_timeout_s, if one is set")

    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=10, description="a webhook attempt (resolve, "
                                           "connect, send, read the status line) that takes longer fails and is retried")
    webhook_retry_seconds: list[float] = Field(
        default_factory=lambda: [30, 120, 600, 3600, 6 * 3600, 12 * 3600, 24 * 3600, 24 * 3600],
        min_length=1, description="the delays before each retry of a webhook delivery that failed (the first "
        "attempt is at once): 9 attempts over about 2.8 days by default; then the delivery is failed (an admin "
        "can redeliver it)")
    webhook_lease_seconds: float = Field(default=60.0, gt=0, description="a claimed webhook delivery is due again "
                                         "this long after its claim if its deliverer never reported (killed "
                                         "mid-send); must exceed webhook_timeout_seconds")
    webhook_poll_seconds: float = Field(default=1.0, gt=0, description="how often each runner looks for due "
                                        "webhook deliveries")
    webhook_concurrency: int = Field(default=8, ge=1, le=64, description="webhook attempts one runner makes at once")
    webhook_egress_socket: str | None = Field(default=None, description="set by `make run` in its private network "
                                              "namespace: a Unix socket through which webhooks reach the host's "
                                              "loopback (serve_app/isolation.py)")

    health_max_age_seconds: float = Field(default=2.0, ge=0, description="GET /health answers from a report "
                                          "at most this old (its `Age` header), so a flood of it never reaches the "
                                          "deployments' request slots; 0: every request waits for a fresh check")
    unhealthy_after_seconds: float = Field(default=30.0, gt=0, description="a replica's check_health fails once "
                                           "a dependency it probes (database, storage) has been failing this long, "
                                           "and a runner's once its claim loop has not moved for this long (plus "
                                           "poll_seconds): Serve then replaces it. Shorter blips are ridden out")

    metrics_export_port: int = Field(default=8080, ge=1, le=65535, description="local run: where Ray's Prometheus "
                                     "endpoint (/metrics on 127.0.0.1) exports Serve's metrics and ours")

    @field_validator("rate_limit_generate", "rate_limit_upload")
    @classmethod
    def _parses_as_limits(cls, value: str) -> str:
        parse_limits(value)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for proxy in value:
            ipaddress.ip_network(proxy, strict=False)
        return value

    @property
    def media_base_url(self) -> str:
        return self.public_base_url.rstrip("/") + "/media"

    @property
    def storage_root(self) -> Path:
        return self.data_dir / "storage"

    def model_sources(self) -> ModelSources:
        """Where the generator loads pretrained weights from (workers do not read settings themselves)."""
        return ModelSources(base=self.base_model, controlnet=self.controlnet_model, ip_adapter=self.ip_adapter_model,
                            vae=self.vae_model)

    def storage_config(self) -> dict:
        """What a worker needs to open the same storage (workers do not read settings themselves)."""
        if self.storage_backend == "s3":
            if not self.s3_bucket:
                raise ValueError("SASTRE_S3_BUCKET is required with SASTRE_STORAGE_BACKEND=s3")
            secret = self.s3_secret_access_key.get_secret_value() if self.s3_secret_access_key else None
            return {"backend": "s3", "bucket": self.s3_bucket, "endpoint_url": self.s3_endpoint_url,
                    "region": self.s3_region, "public_base_url": self.s3_public_base_url,
                    "access_key_id": self.s3_access_key_id, "secret_access_key": secret,
                    "presign_seconds": self.s3_presign_seconds}
        return {"backend": "local", "root": str(self.storage_root.resolve()), "public_base_url": self.media_base_url}
