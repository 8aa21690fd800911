"""The FastAPI application, assembled from the feature slices' routers.

One factory for every process that serves HTTP: an Ingress replica, or plain uvicorn in benchmarks.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from serve_app.admin.auth import routes as admin_auth
from serve_app.admin.fabrics import routes as admin_fabrics
from serve_app.admin.generations import routes as admin_generations
from serve_app.admin.renders import routes as admin_renders
from serve_app.admin.webhooks import routes as admin_webhooks
from serve_app.edge.body_limit import BodyLimit, upload_routes
from serve_app.catalog import routes as catalog
from serve_app.client import mount_client
from serve_app.deps import Services
from serve_app.errors import add_error_handlers
from serve_app.generation import routes as generation
from serve_app.health import routes as health
from serve_app.preview import routes as preview
from serve_app.edge.security_headers import SecurityHeaders, origin_of
from serve_app.uploads import routes as uploads

FEATURES = (catalog, preview, generation, uploads, health, admin_auth, admin_fabrics, admin_generations,
            admin_renders, admin_webhooks)


def create_app(services: Services) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if app.state.services.events is not None:  # the job event hub, made by the first stream
            await app.state.services.events.close()

    app = FastAPI(
        title="Sastre",
        version="0.1.0",
        description="Renders tailored suits from fabric swatches. Create a job with POST /generate, then follow "
                    "GET /jobs/{job_id}/events (server-sent events) or poll GET /jobs/{job_id} (every ~2 s) until "
                    "it is completed. Admin routes need a bearer token from POST /admin/login.",
        lifespan=lifespan,
        docs_url=None,  # served by mount_client: Swagger UI without inline script
    )
    app.state.services = services
    for feature in FEATURES:
        app.include_router(feature.router)
    mount_client(app)
    add_error_handlers(app)
    app.add_middleware(RouteThreads, threads=services.settings.ingress_threads)
    app.add_middleware(BodyLimit, max_bytes=services.settings.body_max_bytes, uncapped=upload_routes(
        route for feature in FEATURES for route in feature.router.routes))
    app.add_middleware(
        CORSMiddleware, allow_origins=services.settings.cors_origins, allow_methods=["GET", "POST", "PATCH", "DELETE"],
        allow_headers=["*"],
    )
    # Outermost, so CORS answers carry the headers too. A storage URL names where media is served from.
    app.add_middleware(SecurityHeaders, media_origins=[origin_of(services.storage.url_for("generated/probe.jpg"))])
    return app


def freeze_startup_heap() -> None:
    """Put everything a serving process allocated before its first request (Ray, FastAPI, SQLAlchemy and
    pydantic's modules, the app) out of the garbage collector's reach, as CPython's `gc.freeze` docs
    advise. Requests allocate enough to trigger collections, and each full one walked those ~200,000
    long-lived objects: measured under plain uvicorn, POST /generate gained about a fifth in throughput
    and /livez's p99 fell from ~200 ms to ~50 ms once the heap was frozen."""
    gc.collect()
    gc.freeze()


class RouteThreads:
    """Keeps the threads that run sync route code (AnyIO's default limiter) at `ingress_threads`, the
    size of the database pool, so no route waits for a connection.

    Ray Serve sets that limiter to the deployment's `max_ongoing_requests` (1000 for the ingress) when a
    replica starts or is reconfigured: left so, 1000 threads would share the pool. Requests beyond the
    threads wait for one in the replica, as they would in Serve's queue.
    """

    def __init__(self, app: ASGIApp, threads: int) -> None:
        self.app, self.threads = app, threads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = to_thread.current_default_thread_limiter()
        if limiter.total_tokens != self.threads:
            limiter.total_tokens = self.threads
        await self.app(scope, receive, send)
