"""Bodies of webhook management: endpoints, their secrets (shown once) and their deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field

from serve_app.jobqueue.webhooks import EVENTS

Event = Literal[EVENTS]
Url = Annotated[str, Field(min_length=1, max_length=2048, examples=["https://shop.example/hooks/sastre"],
                           description="where events are POSTed: https in production, to a public address")]
Events = Annotated[list[Event], Field(min_length=1, max_length=len(EVENTS), description="the event types sent there")]
Description = Annotated[str, Field(max_length=200, description="for the admins: whose server this is")]
# Ids as the columns hold them (integer, bigint): a larger one is a 422, not a database error.
WebhookId = Annotated[int, Path(ge=1, le=2**31 - 1)]
DeliveryId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Before = Annotated[int | None, Query(ge=1, le=2**63 - 1, description="deliveries older than this one")]
Limit = Annotated[int, Query(ge=1, le=100)]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: Url
    events: Events = Field(default=["job.completed", "job.failed", "job.canceled", "job.expired"])
    description: Description = ""


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: Url | None = None
    events: Events | None = None
    description: Description | None = None
    enabled: bool | None = Field(default=None, description="false: nothing is sent (events of its type are not "
                                 "even recorded for it) until it is enabled again")


class WebhookOut(BaseModel):
    id: int
    url: str
    events: list[str]
    description: str
    enabled: bool
    created_at: datetime
    updated_at: datetime
    previous_secret_until: datetime | None = Field(description="after a rotation, the replaced secret also signs "
                                                   "until then")


class WebhookSecret(BaseModel):
    secret: str = Field(description="the signing secret (whsec_...): shown only in this answer, store it now",
                        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])


class WebhookCreated(WebhookOut, WebhookSecret):
    pass


class AttemptOut(BaseModel):
    started_at: datetime
    status_code: int | None = Field(description="the receiver's answer; none: no answer (see error)")
    latency_ms: int | None
    error: str | None = Field(description="why it did not count as delivered; none: delivered, or still in flight")


class DeliveryOut(BaseModel):
    id: int
    message_id: str = Field(description="the webhook-id header: the same on every attempt and redelivery")
    event_type: str
    job_id: str
    cut: str | None
    created_at: datetime
    status: Literal["pending", "sending", "delivered", "failed"]
    next_attempt_at: datetime | None = Field(description="pending: when it is tried next")
    delivered_at: datetime | None
    attempts: list[AttemptOut]


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_before: int | None = Field(description="pass as `before` for older deliveries; none: no more")
