"""POST /admin/login: the one admin route that needs no token."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request

from serve_app.admin.auth.password_pool import PoolBusy
from serve_app.admin.auth.schemas import TokenOut
from serve_app.admin.auth.service import (
    AuthError,
    LoginPolicy,
    PasswordTooLong,
    Throttled,
    UsernameTooLong,
    authenticate,
    issue_token,
)
from serve_app.deps import UNAUTHORIZED, get_services
from serve_app.errors import ErrorBody, error_responses
from serve_app.edge.routing import StorableTextRoute

router = APIRouter(prefix="/admin", tags=["admin"], route_class=StorableTextRoute)


@router.post("/login", response_model=TokenOut,
             responses={**error_responses(401, 422), 429: {"model": ErrorBody, "description": "too many failed "
                        "logins from this address, or too many logins at once; retry after `Retry-After` seconds"}})
async def login(username: Annotated[str, Form()], password: Annotated[str, Form()], request: Request) -> TokenOut:
    """OAuth2 password flow: a bearer JWT (HS256) for an admin user. Each client address has
    `login_failures_per_address` failed tries per window, whatever the usernames (then 429); a username
    that failed five times from anywhere answers each next try after a growing delay (1 s, 2 s, ... 10 s)
    instead of refusing it, so a stranger cannot lock the admin out. Async: the password check runs on
    the replica's own bcrypt threads, and a flood of logins never holds the public routes' threads."""
    services = get_services(request)
    address = services.rate_limits.client(request)  # the trusted-proxy-aware client address
    try:
        user = await authenticate(services.sessions, services.passwords, LoginPolicy.from_settings(services.settings),
                                  username, password, address)
    except (UsernameTooLong, PasswordTooLong) as exc:
        raise HTTPException(422, str(exc)) from None
    except (Throttled, PoolBusy) as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
    except AuthError:  # the failure was committed before the password was checked
        raise UNAUTHORIZED from None
    lifetime = timedelta(minutes=services.settings.jwt_lifetime_minutes)
    return TokenOut(access_token=issue_token(user, services.jwt_secret, lifetime),
                    expires_in=int(lifetime.total_seconds()))
