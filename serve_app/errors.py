"""How the API answers when it cannot do what was asked: one JSON shape, `{"detail": ...}`.

The error body's schema and status-code table for route declarations, and the handlers that turn a
lost or overloaded database into a 503 the client can retry, and anything unexpected into a plain 500.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg.errors import QueryCanceled
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from deployments import metrics

logger = logging.getLogger("sastre.api")


class ErrorBody(BaseModel):
    detail: str | list = Field(description="what was wrong, readable by a person")


def error_responses(*codes: int) -> dict:
    """The OpenAPI `responses` entry for routes that may answer these codes with an ErrorBody."""
    return {code: {"model": ErrorBody} for code in codes}


RATE_LIMITED = {429: {"model": ErrorBody, "description": "this client's rate limit is spent; retry after "
                                                        "`Retry-After` seconds"}}


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(OperationalError, database_unavailable)
    app.add_exception_handler(InterfaceError, database_unavailable)
    app.add_exception_handler(PoolTimeout, database_busy)
    app.add_exception_handler(Exception, internal_error)


async def database_unavailable(request: Request, exc: DBAPIError) -> JSONResponse:
    """A lost database is the client's cue to retry, not a 500 with a traceback."""
    if isinstance(exc.orig, QueryCanceled):
        return await database_busy(request, exc)
    logger.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc.__class__.__name__)
    metrics.refused("database_unavailable")
    return JSONResponse({"detail": "database unavailable, retry shortly"}, status_code=503, headers={"Retry-After": "2"})


async def database_busy(request: Request, exc: Exception) -> JSONResponse:
    """No pooled connection in time, or a statement past its timeout: overload, so retry a little later."""
    logger.warning("database busy on %s %s: %s", request.method, request.url.path, exc.__class__.__name__)
    metrics.refused("database_busy")
    return JSONResponse({"detail": "service busy, retry shortly"}, status_code=503, headers={"Retry-After": "2"})


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    """Anything unexpected: logged with its traceback here, a plain JSON 500 for the client."""
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error"}, status_code=500)
