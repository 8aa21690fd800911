"""Admin authentication: bcrypt-hashed users in the database, HS256 JWTs, login throttling.

Tokens are python-jose HS256 only (the algorithm list is fixed, so `alg: none` or HS512 tokens are
refused), must carry `sub`, `iat`, `exp` and our issuer, and are accepted only while their user still
exists and is active. Failed logins are counted per (username, client): a stranger's guesses lock out
only the stranger. Each try is counted before its password is checked (see `db.admin_users`), so
parallel guesses never get more than `THROTTLE_FAILURES` password checks per window.
"""

from __future__ import annotations

import os
import secrets
from datetime import datetime, timedelta, timezone
from pathlib import Path

import bcrypt
from jose import JWTError, jwt
from sqlalchemy.orm import Session, sessionmaker

from db import admin_users
from db.models import AdminUser

ALGORITHM = "HS256"
ISSUER = "sastre"
THROTTLE_FAILURES = 5
THROTTLE_WINDOW = timedelta(minutes=15)
MAX_PASSWORD_BYTES = 72  # bcrypt's limit (bcrypt 5 raises beyond it rather than truncate)
MIN_PRODUCTION_SECRET_BYTES = 32  # HS256 key: at least the hash's output size


class AuthError(Exception):
    """The credentials or token are not acceptable (always answered as 401, with no detail leaked)."""


class Throttled(Exception):
    """Too many failed logins for this (username, client) lately (answered as 429)."""


class PasswordTooLong(ValueError):
    """More than bcrypt accepts: a clear 422, never a 500."""

    def __init__(self) -> None:
        super().__init__(f"passwords can be at most {MAX_PASSWORD_BYTES} bytes (UTF-8), the most bcrypt accepts")


def hash_password(password: str) -> str:
    if len(password) < 10:
        raise ValueError("passwords need at least 10 characters")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise PasswordTooLong()
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()


def verify_password(password: str, password_hash: str) -> bool:
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        return False  # no stored hash can match it
    return bcrypt.checkpw(password.encode(), password_hash.encode())


# Compared against when the username is unknown, so both paths cost one bcrypt check.
_DUMMY_HASH = bcrypt.hashpw(b"no such user", bcrypt.gensalt()).decode()


def local_secret(data_dir: Path) -> str:
    """The local run's signing secret: generated once, kept (mode 600) in the data directory."""
    path = data_dir / "jwt_secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def create_user(session: Session, username: str, password: str) -> AdminUser:
    if admin_users.find_user(session, username) is not None:
        raise ValueError(f"admin user {username!r} already exists")
    return admin_users.add_user(session, username, hash_password(password))


def authenticate(sessions: sessionmaker[Session], username: str, password: str, address: str) -> AdminUser:
    """The active user with these credentials. Raises `PasswordTooLong` (nothing counted), `Throttled`,
    or `AuthError` (the try stays counted as a failure for this username and client)."""
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise PasswordTooLong()
    with sessions.begin() as session:  # committed before the slow bcrypt check: the try is counted
        if not admin_users.count_login_try(session, username, address, THROTTLE_FAILURES, THROTTLE_WINDOW):
            raise Throttled()
        user = admin_users.find_active_user(session, username)
    if not verify_password(password, user.password_hash if user else _DUMMY_HASH) or user is None:
        raise AuthError()
    with sessions.begin() as session:
        admin_users.forget_login_failures(session, username, address)
    return user


def issue_token(user: AdminUser, secret: str, lifetime: timedelta) -> str:
    now = datetime.now(timezone.utc)
    claims = {"sub": user.username, "iat": int(now.timestamp()), "exp": int((now + lifetime).timestamp()),
              "iss": ISSUER}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def user_for_token(session: Session, token: str, secret: str) -> AdminUser:
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], issuer=ISSUER,
                            options={"require_exp": True, "require_iat": True, "require_sub": True})
    except JWTError:
        raise AuthError() from None
    user = admin_users.find_active_user(session, claims["sub"])
    if user is None:
        raise AuthError()
    return user
