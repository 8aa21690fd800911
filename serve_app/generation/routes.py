"""The job routes: create a job, read it (the hottest route: every front end polls it), follow it as
server-sent events, cancel it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, status
from fastapi.responses import Response

from serve_app.deps import ServicesDep, get_services
from serve_app.errors import ErrorBody, error_responses
from serve_app.generation.events import EventStreamResponse, open_stream
from serve_app.generation.schemas import GenerateAccepted, GenerateRequest, JobOut
from serve_app.generation.service import accept_job, cancel, job_out, read_job
from serve_app.edge.ratelimit import rate_limited
from serve_app.edge.routing import StorableTextRoute

router = APIRouter(tags=["jobs"], route_class=StorableTextRoute)

IdempotencyKey = Annotated[str | None, Header(max_length=255, description="retries with the same key and body "
                                                                          "return the same job for 24 hours")]
CancelAfter = Annotated[str | None, Header(max_length=32, description="a deadline as a duration (`15s`, `1m30s`, "
                                                                      "`2h`) or seconds: as `deadline_seconds`")]
LastEventId = Annotated[str | None, Header(max_length=32, description="the `id` of the last event received: a "
                                                                      "reconnecting stream sends only newer states")]


@router.post("/generate", status_code=status.HTTP_202_ACCEPTED, response_model=GenerateAccepted,
             responses={**error_responses(409, 422, 503),
                        429: {"model": ErrorBody, "description": "backlog full, this client has its cap of unfinished "
                                                                 "jobs, or its rate limit is "
                                                                 "spent; retry after `Retry-After` seconds"}},
             dependencies=[rate_limited("generate")])
async def create_generation(body: GenerateRequest, request: Request,
                            idempotency_key: IdempotencyKey = None, cancel_after: CancelAfter = None) -> Response:
    """Validate against the catalog and queue one job; returns at once with the job id to poll.

    Async like GET /jobs/{job_id}: the database is awaited on the event loop, no thread hop."""
    services = get_services(request)
    return await accept_job(services, body, idempotency_key, services.rate_limits.client(request), cancel_after)


@router.get("/jobs/{job_id}", responses={200: {"model": JobOut}, **error_responses(404, 503)})
async def get_job(job_id: str, request: Request) -> Response:
    """One job by its id: status, per-cut progress, seeds and, once completed, one URL per cut in order.

    One indexed lookup, serialized once.
    """
    return await read_job(get_services(request), job_id)


@router.get("/jobs/{job_id}/events", response_class=EventStreamResponse, status_code=200,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`event: job`, `id: <version>`, `data: <the body of GET /jobs/{job_id}>` "
                                            "at once and on every change (while pending, also when its "
                                            "`queue_position` changes: the same id, a new place); `: keep-alive` "
                                            "comments while idle; "
                                            "closed after a final (completed, failed, canceled or expired) state"},
                       204: {"description": "`Last-Event-ID` is already the job's final state: nothing more to send"},
                       **error_responses(404, 503)})
async def job_events(job_id: str, request: Request, last_event_id: LastEventId = None) -> Response:
    """Follow a job live (server-sent events) instead of polling GET /jobs/{job_id}.

    Async, and no dependency runs on a thread: an open stream holds neither a route thread nor a
    pooled database connection (the process's one LISTEN connection wakes it)."""
    return await open_stream(get_services(request), job_id, last_event_id)


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, responses=error_responses(404, 409, 503))
def cancel_job(job_id: str, services: ServicesDep) -> JobOut:
    """Cancel a job: a pending one at once; a processing one stops at its next cut boundary
    (the response then still says `processing`, poll for `canceled`); a finished one answers 409."""
    return job_out(cancel(services, job_id), services.storage)
