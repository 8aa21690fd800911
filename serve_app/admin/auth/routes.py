"""POST /admin/login: the one admin route that needs no token."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import OAuth2PasswordRequestForm

from serve_app.admin.auth.schemas import TokenOut
from serve_app.admin.auth.service import AuthError, PasswordTooLong, Throttled, authenticate, issue_token
from serve_app.deps import UNAUTHORIZED, ServicesDep
from serve_app.errors import ErrorBody, error_responses
from serve_app.routing import StorableTextRoute

router = APIRouter(prefix="/admin", tags=["admin"], route_class=StorableTextRoute)


@router.post("/login", response_model=TokenOut,
             responses={**error_responses(401, 422), 429: {"model": ErrorBody, "description": "too many failures"}})
def login(form: Annotated[OAuth2PasswordRequestForm, Depends()], request: Request, services: ServicesDep) -> TokenOut:
    """OAuth2 password flow: a bearer JWT (HS256) for an admin user. Five failures in 15 minutes for a
    username from one client address lock that pair out with 429; other clients are not affected."""
    address = services.rate_limits.client(request)  # the trusted-proxy-aware client address
    try:
        user = authenticate(services.sessions, form.username, form.password, address)
    except PasswordTooLong as exc:
        raise HTTPException(422, str(exc)) from None
    except Throttled:
        raise HTTPException(429, "too many failed logins; try again later", headers={"Retry-After": "900"}) from None
    except AuthError:  # the failure was committed before the password was checked
        raise UNAUTHORIZED from None
    lifetime = timedelta(minutes=services.settings.jwt_lifetime_minutes)
    return TokenOut(access_token=issue_token(user, services.jwt_secret, lifetime),
                    expires_in=int(lifetime.total_seconds()))
