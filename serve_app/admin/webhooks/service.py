"""Webhook management: register, list, change, rotate, delete, and the deliveries each endpoint got.

A URL is checked when registered or changed as it will be when sent to: http(s), and in production https
to public addresses only (a name is resolved now too, so a typo pointing inside is a 422, not a silent
run of refused attempts). The deliverer checks the resolved address again at every attempt: DNS moves.
The secret is made here and shown once; the database keeps it, as it must to sign.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import socket

from fastapi import HTTPException

from db import webhooks
from db.models import WebhookEndpoint
from serve_app.admin.webhooks.schemas import (AttemptOut, DeliveryOut, DeliveryPage, WebhookCreated, WebhookIn,
                                              WebhookOut, WebhookPatch, WebhookSecret)
from serve_app.deps import Services
from serve_app.jobqueue.outbound import DestinationRefused, destination, resolve

ROTATION_OVERLAP_SECONDS = 24 * 3600  # long enough for a shop to deploy its new secret


def new_secret() -> str:
    """Standard Webhooks' form: `whsec_` and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def check_url(url: str, production: bool) -> None:
    try:
        target = destination(url, production)
        if production:
            asyncio.run(resolve(target, production))
    except DestinationRefused as refused:
        raise HTTPException(422, f"url refused: {refused}") from None
    except socket.gaierror:
        raise HTTPException(422, f"url refused: {target.host} does not resolve") from None


def endpoint_out(endpoint: WebhookEndpoint) -> WebhookOut:
    return WebhookOut(id=endpoint.id, url=endpoint.url, events=endpoint.events, description=endpoint.description,
                      enabled=endpoint.enabled, created_at=endpoint.created_at, updated_at=endpoint.updated_at,
                      previous_secret_until=endpoint.previous_secret_until)


def register(services: Services, body: WebhookIn) -> WebhookCreated:
    check_url(body.url, services.settings.environment == "production")
    secret = new_secret()
    with services.sessions.begin() as session:
        endpoint = webhooks.add_endpoint(session, url=body.url, events=sorted(set(body.events)),
                                         description=body.description, secret=secret)
        session.refresh(endpoint)
        return WebhookCreated(**endpoint_out(endpoint).model_dump(), secret=secret)


def endpoints(services: Services) -> list[WebhookOut]:
    with services.sessions() as session:
        return [endpoint_out(endpoint) for endpoint in webhooks.list_endpoints(session)]


def change(services: Services, endpoint_id: int, body: WebhookPatch) -> WebhookOut:
    fields = body.model_dump(exclude_none=True)
    if "url" in fields:
        check_url(fields["url"], services.settings.environment == "production")
    if "events" in fields:
        fields["events"] = sorted(set(fields["events"]))
    with services.sessions.begin() as session:
        return endpoint_out(_found(webhooks.update_endpoint(session, endpoint_id, **fields), endpoint_id))


def rotate(services: Services, endpoint_id: int) -> WebhookSecret:
    secret = new_secret()
    with services.sessions.begin() as session:
        _found(webhooks.rotate_secret(session, endpoint_id, secret, ROTATION_OVERLAP_SECONDS), endpoint_id)
    return WebhookSecret(secret=secret)


def remove(services: Services, endpoint_id: int) -> None:
    with services.sessions.begin() as session:
        if not webhooks.delete_endpoint(session, endpoint_id):
            raise HTTPException(404, f"webhook {endpoint_id} not found")


def deliveries(services: Services, endpoint_id: int, before: int | None, limit: int) -> DeliveryPage:
    with services.sessions() as session:
        _found(webhooks.get_endpoint(session, endpoint_id), endpoint_id)
        rows = webhooks.list_deliveries(session, endpoint_id, before=before, limit=limit + 1)
    page = rows[:limit]
    return DeliveryPage(items=[DeliveryOut(
        id=delivery.id, message_id=delivery.message_id, event_type=delivery.event_type, job_id=delivery.job_id,
        cut=delivery.cut, created_at=delivery.created_at, status=delivery.status,
        next_attempt_at=delivery.due_at if delivery.status == "pending" else None, delivered_at=delivery.delivered_at,
        attempts=[AttemptOut(started_at=a.started_at, status_code=a.status_code, latency_ms=a.latency_ms, error=a.error)
                  for a in attempts]) for delivery, attempts in page],
        next_before=page[-1][0].id if len(rows) > limit else None)


def redeliver(services: Services, endpoint_id: int, delivery_id: int) -> None:
    with services.sessions.begin() as session:
        outcome = webhooks.redeliver(session, endpoint_id, delivery_id)
    if outcome is None:
        raise HTTPException(404, f"delivery {delivery_id} of webhook {endpoint_id} not found")
    if outcome == "sending":
        raise HTTPException(409, "an attempt at this delivery is in flight; redeliver once it has an outcome")


def _found(endpoint: WebhookEndpoint | None, endpoint_id: int) -> WebhookEndpoint:
    if endpoint is None:
        raise HTTPException(404, f"webhook {endpoint_id} not found")
    return endpoint
