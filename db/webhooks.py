"""Webhook endpoints and their outbox: the queries behind /admin/webhooks and the deliverer.

The outbox rows (`webhook_deliveries`) are written by triggers in the transaction of the job's final
state (db/migrations/versions/0013_webhooks.py), never here. A delivery is claimed like a job
(`FOR UPDATE SKIP LOCKED`) under a lease: `due_at` is the lease's end while it is `sending`, so one whose
deliverer died is simply due again once the lease lapses, and every claim carries a new `lease_token`
that fences the outcome that claim records. Every claim writes its attempt row at once, so an attempt
that never reported back (its deliverer killed mid-send) is listed too, and the next claim marks it.

Functions take a Session and never commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Row, String, cast, delete, func, insert, select, update
from sqlalchemy.orm import Session

from db.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint

NO_OUTCOME = "no outcome: the deliverer stopped mid-send; retried once its lease lapsed"


@dataclass(frozen=True)
class Claim:
    """One claimed delivery with what its attempt needs: where to, the secrets to sign with (the
    previous one only while its overlap lasts) and the event."""

    delivery_id: int
    lease_token: str
    attempt_id: int
    attempts: int  # in this schedule, this one included
    message_id: str
    event_type: str
    job_id: str
    cut: str | None
    created_at: datetime
    url: str
    secrets: tuple[str, ...]


def add_endpoint(session: Session, *, url: str, events: Sequence[str], description: str, secret: str) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(url=url, events=list(events), description=description, secret=secret)
    session.add(endpoint)
    session.flush()
    return endpoint


def list_endpoints(session: Session) -> list[WebhookEndpoint]:
    return list(session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id)))


def get_endpoint(session: Session, endpoint_id: int) -> WebhookEndpoint | None:
    return session.get(WebhookEndpoint, endpoint_id)


def update_endpoint(session: Session, endpoint_id: int, **fields) -> WebhookEndpoint | None:
    """Change url, events, description or enabled; None for an unknown endpoint."""
    endpoint = session.get(WebhookEndpoint, endpoint_id, with_for_update=True)
    if endpoint is None:
        return None
    for name, value in fields.items():
        setattr(endpoint, name, list(value) if name == "events" else value)
    endpoint.updated_at = func.now()
    session.flush()
    session.refresh(endpoint)
    return endpoint


def rotate_secret(session: Session, endpoint_id: int, secret: str, overlap_seconds: float) -> WebhookEndpoint | None:
    """Sign with `secret` from now on, and with the replaced one too for `overlap_seconds`."""
    endpoint = session.get(WebhookEndpoint, endpoint_id, with_for_update=True)
    if endpoint is None:
        return None
    endpoint.previous_secret, endpoint.secret = endpoint.secret, secret
    endpoint.previous_secret_until = func.now() + func.make_interval(0, 0, 0, 0, 0, 0, overlap_seconds)
    endpoint.updated_at = func.now()
    session.flush()
    session.refresh(endpoint)
    return endpoint


def delete_endpoint(session: Session, endpoint_id: int) -> bool:
    """The endpoint and its deliveries (cascade); False for an unknown one."""
    return session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)).rowcount > 0


def list_deliveries(session: Session, endpoint_id: int, *, before: int | None, limit: int
                    ) -> list[tuple[WebhookDelivery, list[WebhookAttempt]]]:
    """An endpoint's deliveries newest first (ids below `before`), each with its attempts oldest first."""
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    if before is not None:
        query = query.where(WebhookDelivery.id < before)
    deliveries = list(session.scalars(query.order_by(WebhookDelivery.id.desc()).limit(limit)))
    attempts: dict[int, list[WebhookAttempt]] = {delivery.id: [] for delivery in deliveries}
    for attempt in session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(list(attempts)))
                                   .order_by(WebhookAttempt.id)):
        attempts[attempt.delivery_id].append(attempt)
    return [(delivery, attempts[delivery.id]) for delivery in deliveries]


def redeliver(session: Session, endpoint_id: int, delivery_id: int) -> str | None:
    """Due now with a fresh retry schedule (same message id): 'redelivered', 'sending' (an attempt is in
    flight: nothing changed), or None for an unknown delivery."""
    delivery = session.scalar(select(WebhookDelivery).where(WebhookDelivery.id == delivery_id,
                                                            WebhookDelivery.endpoint_id == endpoint_id)
                              .with_for_update())
    if delivery is None:
        return None
    if delivery.status == "sending":
        return "sending"
    session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
                    .values(status="pending", attempts=0, due_at=func.now(), lease_owner=None, lease_token=None))
    return "redelivered"


def claim_deliveries(session: Session, owner: str, limit: int, lease_seconds: float) -> list[Claim]:
    """Due deliveries of enabled endpoints, oldest due first, each under a new lease and with its
    attempt row written; a delivery whose last claim never reported has that attempt marked."""
    due = (select(WebhookDelivery.id)
           .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
           .where(WebhookDelivery.status.in_(("pending", "sending")), WebhookDelivery.due_at <= func.now(),
                  WebhookEndpoint.enabled)
           .order_by(WebhookDelivery.due_at).limit(limit)
           .with_for_update(of=WebhookDelivery, skip_locked=True))
    claimed = session.execute(
        update(WebhookDelivery).where(WebhookDelivery.id.in_(due.scalar_subquery()))
        .values(status="sending", attempts=WebhookDelivery.attempts + 1, lease_owner=owner,
                lease_token=func.replace(cast(func.gen_random_uuid(), String), "-", ""),
                due_at=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, lease_seconds))
        .returning(WebhookDelivery.id, WebhookDelivery.lease_token, WebhookDelivery.attempts)
    ).all()
    if not claimed:
        return []
    ids = [row.id for row in claimed]
    session.execute(update(WebhookAttempt)
                    .where(WebhookAttempt.delivery_id.in_(ids), WebhookAttempt.status_code.is_(None),
                           WebhookAttempt.error.is_(None))
                    .values(error=NO_OUTCOME))
    attempt_ids = dict(session.execute(insert(WebhookAttempt).returning(WebhookAttempt.delivery_id, WebhookAttempt.id),
                                       [{"delivery_id": delivery_id} for delivery_id in ids]).all())
    leases = {row.id: row for row in claimed}
    return [_claim(row, leases[row.id], attempt_ids[row.id]) for row in session.execute(
        select(WebhookDelivery.id, WebhookDelivery.message_id, WebhookDelivery.event_type, WebhookDelivery.job_id,
               WebhookDelivery.cut, WebhookDelivery.created_at, WebhookEndpoint.url, WebhookEndpoint.secret,
               (WebhookEndpoint.previous_secret_until > func.now()).label("overlapping"),
               WebhookEndpoint.previous_secret)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookDelivery.id.in_(ids)).order_by(WebhookDelivery.id))]


def _claim(row: Row, lease: Row, attempt_id: int) -> Claim:
    secrets = (row.secret, row.previous_secret) if row.overlapping and row.previous_secret else (row.secret,)
    return Claim(row.id, lease.lease_token, attempt_id, lease.attempts, row.message_id, row.event_type, row.job_id,
                 row.cut, row.created_at, row.url, secrets)


def record_attempt(session: Session, claim: Claim, *, status_code: int | None, latency_ms: int, error: str | None,
                   retry_in: float | None) -> bool:
    """The attempt's outcome, and the delivery's next state: delivered (a 2xx), due again in `retry_in`
    seconds, or failed (None: its schedule is spent). The attempt is recorded whatever happened; the
    delivery changes only while this claim's lease holds (True)."""
    session.execute(update(WebhookAttempt).where(WebhookAttempt.id == claim.attempt_id)
                    .values(status_code=status_code, latency_ms=latency_ms, error=error))
    if error is None:
        outcome = {"status": "delivered", "delivered_at": func.now()}
    elif retry_in is not None:
        outcome = {"status": "pending", "due_at": func.now() + func.make_interval(0, 0, 0, 0, 0, 0, retry_in)}
    else:
        outcome = {"status": "failed"}
    return session.execute(
        update(WebhookDelivery).where(WebhookDelivery.id == claim.delivery_id,
                                      WebhookDelivery.lease_token == claim.lease_token,
                                      WebhookDelivery.status == "sending")
        .values(lease_owner=None, lease_token=None, **outcome)
    ).rowcount == 1
