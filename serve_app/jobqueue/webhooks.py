"""Delivering webhooks: the runner side's loop that sends the outbox's due deliveries, signed the
Standard Webhooks way, and records every attempt.

Each round claims due deliveries under a lease (db/webhooks.py), sends them concurrently and records
each outcome, fenced by its claim: a deliverer killed mid-send leaves its deliveries to be claimed
again once the lease lapses, by whichever runner comes first. Delivery is at least once; the
`webhook-id` (the event's message id) is the same on every attempt and every redelivery, so a receiver
drops duplicates by it. A failed attempt (no 2xx in time) is retried after the next delay of
`retry_seconds`; past the last one the delivery is failed, and an admin may redeliver it.

The body is the event in Standard Webhooks' envelope, `{"type", "timestamp", "data"}` (plus `"cut"` for
`cut.completed`): `timestamp` is when the event happened, `data` the job as GET /jobs/{job_id} shows it
when the attempt is made (final events: its final state; result URLs fresh, as presigned ones expire).
`present` makes that view: it is the job route's own presenter, handed in by the app's assembly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook

from db import jobs, webhooks
from db.models import GenerationJob
from db.webhooks import Claim
from serve_app.jobqueue.outbound import DestinationRefused, post
from serve_app.settings import Settings

logger = logging.getLogger("sastre.webhooks")

EVENTS = ("job.completed", "job.failed", "job.canceled", "job.expired", "cut.completed")
JobPresenter = Callable[[GenerationJob], dict]  # a job row -> the body of GET /jobs/{job_id}, as JSON values


@dataclass(frozen=True)
class DeliveryPolicy:
    """How deliveries are made and retried: one value, read from the settings once."""

    timeout_seconds: float
    retry_seconds: tuple[float, ...]
    lease_seconds: float
    poll_seconds: float
    concurrency: int
    production: bool
    egress_socket: str | None = None

    def __post_init__(self) -> None:
        if self.lease_seconds <= self.timeout_seconds:
            raise ValueError("webhook_lease_seconds must exceed webhook_timeout_seconds, or a slow attempt's "
                             "delivery would be claimed again while it is still being sent")

    @classmethod
    def of(cls, settings: Settings) -> DeliveryPolicy:
        return cls(settings.webhook_timeout_seconds, tuple(settings.webhook_retry_seconds),
                   settings.webhook_lease_seconds, settings.webhook_poll_seconds, settings.webhook_concurrency,
                   settings.environment == "production", settings.webhook_egress_socket)

    def retry_in(self, attempts: int) -> float | None:
        """The delay after the `attempts`-th failed attempt of a schedule; None once it is spent."""
        return self.retry_seconds[attempts - 1] if attempts <= len(self.retry_seconds) else None


def message(claim: Claim, job: dict) -> bytes:
    """The signed bytes: the event's envelope around the job's view."""
    event = {"type": claim.event_type,
             "timestamp": claim.created_at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
             "data": job}
    if claim.cut is not None:
        event["cut"] = claim.cut
    return json.dumps(event, separators=(",", ":")).encode()


def signed_headers(claim: Claim, body: bytes, now: datetime) -> dict[str, str]:
    """Standard Webhooks' headers; one signature per live secret (two while a rotation overlaps)."""
    signatures = " ".join(Webhook(secret).sign(claim.message_id, now, body) for secret in claim.secrets)
    return {"webhook-id": claim.message_id, "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signatures}


class WebhookDeliverer:
    """Sends due deliveries until stopped. Plain: the JobRunner replica runs one beside its claim loop,
    and tests run it in-process (or in a subprocess they kill)."""

    def __init__(self, sessions: sessionmaker[Session], present: JobPresenter, policy: DeliveryPolicy,
                 owner: str | None = None) -> None:
        self.sessions, self.present, self.policy = sessions, present, policy
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:webhooks:{uuid.uuid4().hex[:8]}"
        self.stopping = asyncio.Event()

    async def run_forever(self) -> None:
        """Rounds back to back while there is work, else one every `poll_seconds`, until `stop()`; a
        round that fails (the database away) is logged and the next one tries again."""
        while not self.stopping.is_set():
            try:
                busy = await self.deliver_due() > 0
            except Exception:
                logger.exception("webhook delivery round failed")
                busy = False
            if not busy:
                try:
                    await asyncio.wait_for(self.stopping.wait(), self.policy.poll_seconds)
                except TimeoutError:
                    pass

    def stop(self) -> None:
        self.stopping.set()

    async def shutdown(self, task: asyncio.Task, grace_seconds: float) -> None:
        """Let the attempts in flight finish within `grace_seconds` (each is bounded by the timeout),
        then cancel: an unfinished one's delivery is sent again after its lease."""
        self.stop()
        try:
            await asyncio.wait_for(task, grace_seconds)
        except (TimeoutError, asyncio.CancelledError):
            pass

    async def deliver_due(self) -> int:
        """One round: claim up to `concurrency` due deliveries, send them at once; how many were claimed."""
        claimed = await asyncio.to_thread(self._claim)
        await asyncio.gather(*(self._attempt(claim, body) for claim, body in claimed))
        return len(claimed)

    def _claim(self) -> list[tuple[Claim, bytes]]:
        with self.sessions.begin() as session:
            claims = webhooks.claim_deliveries(session, self.owner, self.policy.concurrency, self.policy.lease_seconds)
            if not claims:
                return []
            rows = {job.job_id: job for job in jobs.get_jobs(session, {claim.job_id for claim in claims})}
            return [(claim, message(claim, self.present(rows[claim.job_id]))) for claim in claims]

    async def _attempt(self, claim: Claim, body: bytes) -> None:
        started = time.perf_counter()
        status_code, error = None, None
        try:
            headers = signed_headers(claim, body, datetime.now(timezone.utc))
            status_code = await post(claim.url, body, headers, timeout=self.policy.timeout_seconds,
                                     production=self.policy.production, egress_socket=self.policy.egress_socket)
            if not 200 <= status_code < 300:
                error = f"answered {status_code}" + (": redirects are not followed" if 300 <= status_code < 400 else "")
        except TimeoutError:
            error = f"no answer within {self.policy.timeout_seconds:g} s"
        except DestinationRefused as refused:
            error = f"refused: {refused}"
        except (OSError, ValueError) as failed:
            error = f"{type(failed).__name__}: {failed}"[:500]
        latency_ms = round((time.perf_counter() - started) * 1000)
        retry_in = None if error is None else self.policy.retry_in(claim.attempts)
        if error is not None:
            logger.info("webhook %s (%s, job %s) attempt %d failed: %s%s", claim.message_id, claim.event_type,
                        claim.job_id, claim.attempts, error,
                        f"; retry in {retry_in:g} s" if retry_in is not None else "; giving up")
        await asyncio.to_thread(self._record, claim, status_code, latency_ms, error, retry_in)

    def _record(self, claim: Claim, status_code: int | None, latency_ms: int, error: str | None,
                retry_in: float | None) -> None:
        with self.sessions.begin() as session:
            held = webhooks.record_attempt(session, claim, status_code=status_code, latency_ms=latency_ms, error=error,
                                           retry_in=retry_in)
        if not held:
            logger.warning("webhook %s: the lease of attempt %d lapsed before its outcome was recorded",
                           claim.message_id, claim.attempts)
