"""The FastAPI application: public and admin routes, error handlers, CORS.

One factory for every process that serves HTTP: an Ingress replica, or plain uvicorn in benchmarks.
"""

from __future__ import annotations

import logging

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from psycopg.errors import QueryCanceled
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from db.engine import make_engine, make_sessionmaker
from serve_app import admin_api, api
from serve_app.api import Services
from serve_app.settings import Settings

logger = logging.getLogger("sastre.api")


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="Sastre",
        version="0.1.0",
        description="Renders tailored suits from fabric swatches. Create a job with POST /generate, then poll "
                    "GET /jobs/{job_id} (every ~2 s) until it is completed. Admin routes need a bearer token "
                    "from POST /admin/login.",
    )
    app.state.services = services
    app.include_router(api.router)
    app.include_router(admin_api.login_router)
    app.include_router(admin_api.router)
    __import__("serve_app.client", fromlist=["mount_client"]).mount_client(app)
    app.add_exception_handler(OperationalError, database_unavailable)
    app.add_exception_handler(InterfaceError, database_unavailable)
    app.add_exception_handler(PoolTimeout, database_busy)
    app.add_exception_handler(Exception, internal_error)
    app.add_middleware(RouteThreads, threads=services.settings.ingress_threads)
    app.add_middleware(
        CORSMiddleware, allow_origins=services.settings.cors_origins, allow_methods=["GET", "POST", "PATCH", "DELETE"],
        allow_headers=["*"],
    )
    return app


class RouteThreads:
    """Keeps the threads that run sync route code (AnyIO's default limiter) at `ingress_threads`, the
    size of the database pool, so no route waits for a connection.

    Ray Serve sets that limiter to the deployment's `max_ongoing_requests` (200 for the ingress) when a
    replica starts or is reconfigured: left so, 200 threads would share the pool. Requests beyond the
    threads wait for one in the replica, as they would in Serve's queue.
    """

    def __init__(self, app: ASGIApp, threads: int) -> None:
        self.app, self.threads = app, threads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = to_thread.current_default_thread_limiter()
        if limiter.total_tokens != self.threads:
            limiter.total_tokens = self.threads
        await self.app(scope, receive, send)


def ingress_sessions(settings: Settings, database_url: str) -> sessionmaker[Session]:
    """Sessions for one HTTP process: a connection for each route thread (`ingress_threads`), so no
    request waits for one; each statement bounded by `db_statement_timeout_seconds`."""
    return make_sessionmaker(make_engine(
        database_url, pool_size=settings.ingress_threads, max_overflow=0, pool_timeout=settings.db_pool_timeout_seconds,
        statement_timeout=settings.db_statement_timeout_seconds,
    ))


async def database_unavailable(request: Request, exc: DBAPIError) -> JSONResponse:
    """A lost database is the client's cue to retry, not a 500 with a traceback."""
    if isinstance(exc.orig, QueryCanceled):
        return await database_busy(request, exc)
    logger.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc.__class__.__name__)
    return JSONResponse({"detail": "database unavailable, retry shortly"}, status_code=503, headers={"Retry-After": "2"})


async def database_busy(request: Request, exc: Exception) -> JSONResponse:
    """No pooled connection in time, or a statement past its timeout: overload, so retry a little later."""
    logger.warning("database busy on %s %s: %s", request.method, request.url.path, exc.__class__.__name__)
    return JSONResponse({"detail": "service busy, retry shortly"}, status_code=503, headers={"Retry-After": "2"})


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    """Anything unexpected: logged with its traceback here, a plain JSON 500 for the client."""
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error"}, status_code=500)
