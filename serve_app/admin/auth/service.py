"""Admin authentication: bcrypt-hashed users in the database, HS256 JWTs, login throttling.

Tokens are python-jose HS256 only (the algorithm list is fixed, so `alg: none` or HS512 tokens are
refused), must carry `sub`, `iat`, `exp`, `ver` and our issuer, and are accepted only while their user
still exists, is active and has the token version `ver` names (a password change or a deactivation
bumps it, so every earlier token dies at once, whatever second it was issued in).

Logins cost the attacker, not the shop: each client address gets `login_failures_per_address` failed
tries per window whatever the usernames (then 429), a username that failed `FREE_FAILURES` times from
anywhere makes each next try wait a growing delay before its check (slower, never refused: the admin
on another address still gets in), and bcrypt runs on the replica's bounded `PasswordPool`, never on
the route threads. Each try is counted before its password is checked (see `db.admin_users`).
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import bcrypt
from jose import JWTError, jwt
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from db import admin_users
from db.models import AdminUser
from serve_app.admin.auth.password_pool import PasswordPool
from serve_app.settings import Settings

ALGORITHM = "HS256"
ISSUER = "sastre"
FREE_FAILURES = 5  # a username's failed tries (from any address) within the window before its tries wait
MAX_DELAY_SECONDS = 10.0  # the longest a try waits: slow for a guesser, bearable for the admin
MAX_USERNAME_CHARS = 64
MAX_PASSWORD_BYTES = 72  # bcrypt's limit (bcrypt 5 raises beyond it rather than truncate)
MIN_PRODUCTION_SECRET_BYTES = 32  # HS256 key: at least the hash's output size


class AuthError(Exception):
    """The credentials or token are not acceptable (always answered as 401, with no detail leaked)."""


class Throttled(Exception):
    """Too many failed logins from this client address lately (answered as 429 with `Retry-After`)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins from this address; retry in {retry_after} s")
        self.retry_after = retry_after


class PasswordTooLong(ValueError):
    """More than bcrypt accepts: a clear 422, never a 500."""

    def __init__(self) -> None:
        super().__init__(f"passwords can be at most {MAX_PASSWORD_BYTES} bytes (UTF-8), the most bcrypt accepts")


class UsernameTooLong(ValueError):
    """No admin has such a name: a clear 422, and no row of attacker-chosen length is ever stored."""

    def __init__(self) -> None:
        super().__init__(f"usernames can be at most {MAX_USERNAME_CHARS} characters")


@dataclass(frozen=True)
class LoginPolicy:
    per_address: int  # failed tries per client address within `window`
    window: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginPolicy:
        return cls(settings.login_failures_per_address, timedelta(minutes=settings.login_window_minutes))


def username_delay(failures: int) -> float:
    """Seconds a try for a username waits before its check, given that username's recent failures from
    every address: none up to `FREE_FAILURES`, then 1 s, doubling with each failure, at most 10 s."""
    if failures < FREE_FAILURES:
        return 0.0
    return min(2.0 ** (failures - FREE_FAILURES), MAX_DELAY_SECONDS)


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
    if not username or len(username) > MAX_USERNAME_CHARS:
        raise ValueError(f"usernames need 1 to {MAX_USERNAME_CHARS} characters")
    if admin_users.find_user(session, username) is not None:
        raise ValueError(f"admin user {username!r} already exists")
    return admin_users.add_user(session, username, hash_password(password))


def set_password(session: Session, username: str, password: str) -> None:
    """A new password; every token issued before it is refused from now on."""
    if not admin_users.change_password(session, username, hash_password(password)):
        raise LookupError(f"no admin user {username!r}")


def deactivate_user(session: Session, username: str) -> None:
    """Close an account: no more logins, and its tokens are refused from now on."""
    if not admin_users.deactivate_user(session, username):
        raise LookupError(f"no admin user {username!r}")


def _count_try(sessions: sessionmaker[Session], username: str, address: str,
               policy: LoginPolicy) -> tuple[admin_users.LoginTry, AdminUser | None]:
    with sessions.begin() as session:  # committed before the slow bcrypt check: the try is counted
        counted = admin_users.count_login_try(session, username, address, policy.per_address, policy.window)
        refused = counted.refused_for is not None
        return counted, None if refused else admin_users.find_active_user(session, username)


def _forget_failures(sessions: sessionmaker[Session], username: str, address: str) -> None:
    with sessions.begin() as session:
        admin_users.forget_login_failures(session, username, address)


async def authenticate(sessions: sessionmaker[Session], pool: PasswordPool, policy: LoginPolicy,
                       username: str, password: str, address: str) -> AdminUser:
    """The active user with these credentials. Raises `UsernameTooLong` or `PasswordTooLong` (nothing
    counted), `PoolBusy` (nothing counted), `Throttled`, or `AuthError` (the try stays counted as a
    failure for this username and address). Holds a route thread only for its database round trips."""
    if len(username) > MAX_USERNAME_CHARS:
        raise UsernameTooLong()
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise PasswordTooLong()
    async with pool.admission():
        counted, user = await run_in_threadpool(_count_try, sessions, username, address, policy)
        if counted.refused_for is not None:
            raise Throttled(max(1, math.ceil(counted.refused_for)))
        await asyncio.sleep(username_delay(counted.username_failures))
        matches = await pool.run(verify_password, password, user.password_hash if user else _DUMMY_HASH)
    if not matches or user is None:
        raise AuthError()
    await run_in_threadpool(_forget_failures, sessions, username, address)
    return user


def issue_token(user: AdminUser, secret: str, lifetime: timedelta) -> str:
    now = datetime.now(timezone.utc)
    claims = {"sub": user.username, "iat": int(now.timestamp()), "exp": int((now + lifetime).timestamp()),
              "iss": ISSUER, "ver": user.token_version}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def user_for_token(session: Session, token: str, secret: str) -> AdminUser:
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], issuer=ISSUER,
                            options={"require_exp": True, "require_iat": True, "require_sub": True})
    except JWTError:
        raise AuthError() from None
    user = admin_users.find_active_user(session, claims["sub"])
    if user is None or claims.get("ver") != user.token_version:  # issued before a password change
        raise AuthError()
    return user
