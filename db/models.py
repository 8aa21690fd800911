"""SQLAlchemy models: the catalog tables and the durable job queue.

Column names follow the original backend's schema so existing front ends and reports keep working;
the queue columns (attempts, lease, progress) are additions, never renames.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, String, Text, func, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class FabricFamily(Base):
    __tablename__ = "fabric_families"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    family_id: Mapped[str] = mapped_column(String, unique=True, nullable=False)
    display_name: Mapped[str] = mapped_column(String, nullable=False)
    fabric: Mapped[str] = mapped_column(String, nullable=False)  # English, for the prompt: "Donegal tweed"
    collection: Mapped[str | None] = mapped_column(String)
    status: Mapped[str] = mapped_column(String, nullable=False, default="active", server_default="active")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    colors: Mapped[list[Color]] = relationship(back_populates="family", order_by="Color.id")


class Color(Base):
    __tablename__ = "colors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fabric_family_id: Mapped[int] = mapped_column(ForeignKey("fabric_families.id"), nullable=False)
    color_id: Mapped[str] = mapped_column(String, unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String, nullable=False)
    english: Mapped[str] = mapped_column(String, nullable=False)  # English, for the prompt: "navy blue"
    hex_value: Mapped[str] = mapped_column(String, nullable=False)
    swatch_code: Mapped[str | None] = mapped_column(String)
    # The seed's URL override, no longer written: a URL goes stale (presigned ones expire), so start-up
    # moves one left by an older version into `swatch_key`, which is read instead.
    swatch_url: Mapped[str | None] = mapped_column(String)
    # The swatch an admin stored for this color, in the collection's folder; None: the seed layout,
    # `{collection}/{swatch_code}.png`.
    swatch_key: Mapped[str | None] = mapped_column(String)
    # Bumped on every swatch an admin stores: its URL carries `?v=` so no cache shows the one it replaced.
    swatch_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    status: Mapped[str] = mapped_column(String, nullable=False, default="active", server_default="active")

    family: Mapped[FabricFamily] = relationship(back_populates="colors")


class GenerationJob(Base):
    __tablename__ = "generation_jobs"
    __table_args__ = (
        Index("ix_generation_jobs_pending", "next_attempt_at", "created_at", postgresql_where=text("status = 'pending'")),
        Index("ix_generation_jobs_leases", "lease_expires_at", postgresql_where=text("status = 'processing'")),
        # Fair share: each client's oldest due job (the claim) and its unfinished count (POST /generate's cap).
        Index("ix_generation_jobs_pending_by_client", "client", "next_attempt_at", "created_at", "id",
              postgresql_where=text("status = 'pending'")),
        Index("ix_generation_jobs_unfinished_by_client", "client",
              postgresql_where=text("status IN ('pending', 'processing')")),
        # Ageing: finished jobs oldest first, and whether any row still names a result object.
        Index("ix_generation_jobs_finished", "completed_at",
              postgresql_where=text("status IN ('completed', 'failed', 'canceled', 'expired') AND NOT kept")),
        # The sweep that expires pending jobs whose deadline passed.
        Index("ix_generation_jobs_deadlines", "deadline_at",
              postgresql_where=text("status = 'pending' AND deadline_at IS NOT NULL")),
        Index("ix_generation_jobs_result_keys", text("jsonb_path_query_array(cut_progress, '$.*.key')"),
              postgresql_using="gin"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(String, unique=True, nullable=False)
    status: Mapped[str] = mapped_column(String, nullable=False)
    family_id: Mapped[str] = mapped_column(String, nullable=False)
    color_id: Mapped[str] = mapped_column(String, nullable=False)
    cuts: Mapped[list] = mapped_column(JSON, nullable=False)
    seed: Mapped[int | None] = mapped_column(Integer)
    swatch_url: Mapped[str | None] = mapped_column(String)
    # The original schema's column, kept for its readers (reports, SQL, rows the original backend wrote);
    # the API builds URLs from the keys in `cut_progress` at read time, so presigned URLs are always fresh.
    result_urls: Mapped[list | None] = mapped_column(JSON)
    error_message: Mapped[str | None] = mapped_column(Text)  # public: a code and a sentence (db/job_failures.py)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    # Queue bookkeeping (not in the original schema).
    swatch_key: Mapped[str | None] = mapped_column(String)
    # The SHA-256 of the swatch's bytes, worked out once: by the ingress for an uploaded swatch (as it
    # takes the job's copy), by prewarm for the catalog swatch it queues; None leaves it to the runner.
    swatch_digest: Mapped[str | None] = mapped_column(String)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=3, server_default="3")
    lease_owner: Mapped[str | None] = mapped_column(String)
    lease_token: Mapped[str | None] = mapped_column(String)  # new on every claim: fences that attempt's writes
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    idempotency_key: Mapped[str | None] = mapped_column(String, unique=True)
    request_hash: Mapped[str | None] = mapped_column(String)  # fingerprint of the body sent with the key
    cut_progress: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict, server_default="{}")
    cancel_requested: Mapped[bool] = mapped_column(nullable=False, default=False, server_default="false")
    # The random name of the job's results in storage, drawn at insert: a result key never carries the job
    # id (a capability), and every attempt of the job writes the same keys.
    result_token: Mapped[str] = mapped_column(String, nullable=False,
                                              server_default=text("replace(gen_random_uuid()::text, '-', '')"))
    error_detail: Mapped[str | None] = mapped_column(Text)  # the raw reason of a failure: logs and admins only
    # Who queued it, as the rate limits see the caller ('' for rows written without one: one client).
    client: Mapped[str] = mapped_column(String, nullable=False, default="", server_default="")
    kept: Mapped[bool] = mapped_column(nullable=False, default=False, server_default="false")  # never ages out
    # Not finished by then: the job ends `expired` (never rendered, or stopped at its next cut boundary).
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # `interactive` (a shopper's) is claimed before `batch` (prewarm), of which a runner holds only a few.
    lane: Mapped[str] = mapped_column(String, nullable=False, default="interactive", server_default="interactive")


class QueuePosition(Base):
    """Where a pending job stands in the claim order, as the last runner tick worked it out (db/queue_positions.py):
    read by GET /jobs/{id} with the job, so a poll never ranks the queue itself."""

    __tablename__ = "queue_positions"

    job_id: Mapped[str] = mapped_column(String, primary_key=True)
    ahead: Mapped[int] = mapped_column(Integer, nullable=False)  # jobs the runners will claim before it
    estimated_start_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # None: no recent pace


class AdminUser(Base):
    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String, unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String, nullable=False)
    is_active: Mapped[bool] = mapped_column(nullable=False, default=True, server_default="true")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    # In every token as `ver`; a password change or a deactivation bumps it, so older tokens are refused.
    token_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")


class AdminLoginFailure(Base):
    __tablename__ = "admin_login_failures"
    __table_args__ = (
        Index("ix_admin_login_failures_username", "username", "failed_at"),
        Index("ix_admin_login_failures_address", "address", "failed_at"),
        Index("ix_admin_login_failures_pair", "username", "address", "failed_at"),
        Index("ix_admin_login_failures_failed_at", "failed_at"),  # pruning
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String, nullable=False)
    address: Mapped[str] = mapped_column(String, nullable=False)
    failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class RenderCacheEntry(Base):
    """A completed cut's stored image, keyed by the hash of every input that decides its pixels."""

    __tablename__ = "render_cache"
    __table_args__ = (
        Index("ix_render_cache_color", "color_id"),
        Index("ix_render_cache_family", "family_id"),
        Index("ix_render_cache_used_at", "used_at"),
        Index("ix_render_cache_object_key", "object_key"),
    )

    key_hash: Mapped[str] = mapped_column(String, primary_key=True)
    family_id: Mapped[str] = mapped_column(String, nullable=False)
    color_id: Mapped[str] = mapped_column(String, nullable=False)
    cut: Mapped[str] = mapped_column(String, nullable=False)
    seed: Mapped[int] = mapped_column(Integer, nullable=False)
    swatch_sha256: Mapped[str] = mapped_column(String, nullable=False)
    template_sha256: Mapped[str] = mapped_column(String, nullable=False)
    prompt: Mapped[str] = mapped_column(Text, nullable=False)
    model: Mapped[str] = mapped_column(Text, nullable=False)  # profile, weight sources, render version
    image_size: Mapped[int] = mapped_column(Integer, nullable=False)
    steps: Mapped[int] = mapped_column(Integer, nullable=False)
    detector: Mapped[str] = mapped_column(String, nullable=False)
    watermark: Mapped[str] = mapped_column(String, nullable=False)
    object_key: Mapped[str] = mapped_column(String, nullable=False)  # the cut that made the entry; hits point here
    job_id: Mapped[str] = mapped_column(String, nullable=False)  # that cut's job
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    # Its last hit (or creation): an entry ages from here, so what is still asked for stays.
    used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class WebhookEndpoint(Base):
    """A shop server an admin registered: the job events it subscribes to are signed with its secret and
    sent there (db/migrations/versions/0013_webhooks.py writes them)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String, nullable=False)
    events: Mapped[list[str]] = mapped_column(ARRAY(String), nullable=False)
    description: Mapped[str] = mapped_column(String, nullable=False, default="", server_default="")
    # Signing keys are needed in the clear to sign; shown to the admin once, when made.
    secret: Mapped[str] = mapped_column(String, nullable=False)
    # After a rotation the replaced secret signs too (a second signature) until then, so receivers can switch.
    previous_secret: Mapped[str | None] = mapped_column(String)
    previous_secret_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    enabled: Mapped[bool] = mapped_column(nullable=False, default=True, server_default="true")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class WebhookDelivery(Base):
    """One event for one endpoint: the outbox row a trigger writes with the job's final state, claimed by
    a deliverer under a lease (`due_at` is the lease's end while `sending`), retried until delivered or
    its schedule is spent. Ages out with its job."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "due_at", postgresql_where=text("status IN ('pending', 'sending')")),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_job", "job_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False)
    message_id: Mapped[str] = mapped_column(String, nullable=False)  # `webhook-id`: the same on every attempt
    event_type: Mapped[str] = mapped_column(String, nullable=False)
    job_id: Mapped[str] = mapped_column(ForeignKey("generation_jobs.job_id", ondelete="CASCADE"), nullable=False)
    cut: Mapped[str | None] = mapped_column(String)  # cut.completed: which cut
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    status: Mapped[str] = mapped_column(String, nullable=False, default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")  # this schedule's
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    lease_owner: Mapped[str | None] = mapped_column(String)
    lease_token: Mapped[str | None] = mapped_column(String)  # new on every claim: fences that attempt's outcome
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookAttempt(Base):
    """One try at a delivery. Written when claimed, so an attempt whose deliverer died shows too."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
