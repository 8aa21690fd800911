"""The route dependencies: the service's parts (`Services`) and the signed-in admin.

Routes reach everything through these, so the same app runs under Ray Serve (an Ingress replica builds
`Services`) or plain uvicorn (benchmarks and unit tests build it themselves).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Annotated, Awaitable, Callable, Protocol

from fastapi import Depends, HTTPException, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session, sessionmaker

from catalog.data import CatalogData
from db.engine import LoopEngines, make_async_engine, make_engine, make_sessionmaker
from db.models import AdminUser
from deployments.preview import PreviewRenderer
from deployments.replica_health import PROBE_CONNECTIONS
from deployments.storage import Storage
from serve_app.admin.auth.password_pool import PasswordPool
from serve_app.admin.auth.service import AuthError, user_for_token
from serve_app.jobqueue.backpressure import BacklogGate
from serve_app.health.reports import HealthReports
from serve_app.edge.ratelimit import RateLimits
from serve_app.settings import Settings



class EventHub(Protocol):
    """The job event hub (`serve_app/generation/events.JobEvents`) as the services hold it: by this shape,
    not by import, since the hub's module reaches its services through this one."""

    async def close(self) -> None: ...


@dataclass
class Services:
    settings: Settings
    sessions: sessionmaker[Session]
    storage: Storage
    catalog: CatalogData
    # name -> coroutine returning a description of that deployment's health (raises when unhealthy)
    deployment_checks: dict[str, Callable[[], Awaitable[dict]]] = field(default_factory=dict)
    backlog: BacklogGate | None = None
    jwt_secret: str | None = None  # admin routes answer 401 to everything without one
    rate_limits: RateLimits | None = None
    passwords: PasswordPool | None = None  # this replica's bcrypt threads (admin logins)
    previews: PreviewRenderer = field(default_factory=PreviewRenderer)  # per replica, cached by swatch content
    upload_decodes: threading.BoundedSemaphore | None = None  # per replica: `upload_decode_slots` at once
    events: EventHub | None = None  # the job event hub; the first event stream makes one from `sessions`
    # The hot routes' asyncio engines (one per event loop); by default on `sessions`' database (see `hot_engines`).
    hot_engines: LoopEngines | None = None
    health: HealthReports | None = None  # the report GET /health answers from (per replica)

    def __post_init__(self) -> None:
        if self.backlog is None:
            self.backlog = BacklogGate(self.settings.max_pending_jobs, self.settings.backlog_recount_seconds)
        if self.health is None:
            self.health = HealthReports(self.settings.health_max_age_seconds)
        if self.upload_decodes is None:
            self.upload_decodes = threading.BoundedSemaphore(self.settings.upload_decode_slots)
        if self.rate_limits is None:
            settings = self.settings
            self.rate_limits = RateLimits({"generate": settings.rate_limit_generate, "upload": settings.rate_limit_upload},
                                          settings.rate_limit_storage, settings.trusted_proxies)
        if self.passwords is None:
            self.passwords = PasswordPool(self.settings.login_workers, self.settings.login_queue)

    @property
    def hot(self) -> AsyncEngine:
        """The asyncio engine of the running event loop (called from async code only). The engines are
        made on first use, so services can be built before their sessions are bound to a database."""
        if self.hot_engines is None:
            self.hot_engines = hot_engines(self.settings, self.sessions.kw["bind"].url)
        return self.hot_engines.current()


def ingress_sessions(settings: Settings, database_url: str) -> sessionmaker[Session]:
    """Sessions for one HTTP process: a connection for each route thread (`ingress_threads`), so no
    request waits for one, and one for the replica's health probe; each statement bounded by
    `db_statement_timeout_seconds`."""
    return make_sessionmaker(make_engine(
        database_url, pool_size=settings.ingress_threads + PROBE_CONNECTIONS, max_overflow=0, pool_timeout=settings.db_pool_timeout_seconds,
        statement_timeout=settings.db_statement_timeout_seconds,
    ))


def hot_engines(settings: Settings, database_url: str | URL) -> LoopEngines:
    """The asyncio engines of POST /generate and GET /jobs/{id}: `ingress_connections` connections
    each, every statement its own transaction, bounded by `db_statement_timeout_seconds`."""
    return LoopEngines(lambda: make_async_engine(
        database_url, pool_size=settings.ingress_connections, pool_timeout=settings.db_pool_timeout_seconds,
        statement_timeout=settings.db_statement_timeout_seconds,
    ))


def get_services(request: Request) -> Services:
    """The replica's services. Async routes call it directly: as a dependency, FastAPI would run this
    plain function on a thread."""
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]

oauth2 = OAuth2PasswordBearer(tokenUrl="/admin/login")
UNAUTHORIZED = HTTPException(401, "invalid or expired credentials", headers={"WWW-Authenticate": "Bearer"})


def current_admin(token: Annotated[str, Depends(oauth2)], services: ServicesDep) -> AdminUser:
    """The admin a bearer token names: a missing, malformed, expired or foreign token, or the token of a
    deleted or deactivated user, is a 401 before the route does any work."""
    with services.sessions() as session:
        try:
            return user_for_token(session, token, services.jwt_secret)
        except AuthError:
            raise UNAUTHORIZED from None
