"""The FastAPI application: public and admin routes, error handlers, CORS.

One factory for every process that serves HTTP: an Ingress replica, or plain uvicorn in benchmarks.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from serve_app import admin_api, api
from serve_app.api import Services

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
    app.add_exception_handler(OperationalError, database_unavailable)
    app.add_exception_handler(InterfaceError, database_unavailable)
    app.add_exception_handler(Exception, internal_error)
    app.add_middleware(
        CORSMiddleware, allow_origins=services.settings.cors_origins, allow_methods=["GET", "POST", "PATCH", "DELETE"],
        allow_headers=["*"],
    )
    return app


async def database_unavailable(request: Request, exc: DBAPIError) -> JSONResponse:
    """A lost database is the client's cue to retry, not a 500 with a traceback."""
    logger.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc.__class__.__name__)
    return JSONResponse({"detail": "database unavailable, retry shortly"}, status_code=503, headers={"Retry-After": "2"})


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    """Anything unexpected: logged with its traceback here, a plain JSON 500 for the client."""
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error"}, status_code=500)
