"""Webhooks: register shop servers for job events, rotate their secrets, see and redo their deliveries
(admin token required). Contract for receivers: README, "Webhooks"."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response, status

from serve_app.admin.webhooks.schemas import (Before, DeliveryId, DeliveryPage, Limit, WebhookCreated, WebhookId, WebhookIn,
                                              WebhookOut, WebhookPatch, WebhookSecret)
from serve_app.admin.webhooks.service import change, deliveries, endpoints, redeliver, register, remove, rotate
from serve_app.deps import ServicesDep, current_admin
from serve_app.edge.routing import StorableTextRoute
from serve_app.errors import error_responses

router = APIRouter(prefix="/admin/webhooks", tags=["admin"], dependencies=[Depends(current_admin)],
                   responses=error_responses(401), route_class=StorableTextRoute)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WebhookCreated, responses=error_responses(422))
def register_webhook(body: WebhookIn, services: ServicesDep) -> WebhookCreated:
    """Send the chosen events of every job to `url`. The answer carries the signing secret: the only time
    it is shown."""
    return register(services, body)


@router.get("", response_model=list[WebhookOut])
def list_webhooks(services: ServicesDep) -> list[WebhookOut]:
    return endpoints(services)


@router.patch("/{webhook_id}", response_model=WebhookOut, responses=error_responses(404, 422))
def change_webhook(webhook_id: WebhookId, body: WebhookPatch, services: ServicesDep) -> WebhookOut:
    """Change the URL, events or description, or disable (`enabled: false`) and enable again."""
    return change(services, webhook_id, body)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(404))
def delete_webhook(webhook_id: WebhookId, services: ServicesDep) -> Response:
    """Remove the endpoint and its delivery history (disable it instead to keep the history)."""
    remove(services, webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{webhook_id}/rotate", response_model=WebhookSecret, responses=error_responses(404))
def rotate_secret(webhook_id: WebhookId, services: ServicesDep) -> WebhookSecret:
    """A new signing secret, shown only now. For 24 hours messages carry a second signature made with the
    replaced one, so the receiver can switch without dropping any."""
    return rotate(services, webhook_id)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryPage, responses=error_responses(404))
def list_deliveries(webhook_id: WebhookId, services: ServicesDep, before: Before = None,
                    limit: Limit = 20) -> DeliveryPage:
    """Newest first, each with every attempt (status code, latency, error)."""
    return deliveries(services, webhook_id, before, limit)


@router.post("/{webhook_id}/deliveries/{delivery_id}/redeliver", status_code=status.HTTP_202_ACCEPTED,
             responses=error_responses(404, 409))
def redeliver_delivery(webhook_id: WebhookId, delivery_id: DeliveryId, services: ServicesDep) -> Response:
    """Send it again now, with the same webhook-id and a fresh retry schedule."""
    redeliver(services, webhook_id, delivery_id)
    return Response(status_code=status.HTTP_202_ACCEPTED)
