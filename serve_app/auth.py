"""Admin authentication: bcrypt-hashed users in the database, HS256 JWTs, login throttling.

Tokens are python-jose HS256 only (the algorithm list is fixed, so `alg: none` or HS512 tokens are
refused), must carry `sub`, `iat`, `exp` and our issuer, and are accepted only while their user still
exists and is active.
"""

from __future__ import annotations

import os
import secrets
from datetime import datetime, timedelta, timezone
from pathlib import Path

import bcrypt
from jose import JWTError, jwt
from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from db.models import AdminLoginFailure, AdminUser

ALGORITHM = "HS256"
ISSUER = "sastre"
THROTTLE_FAILURES = 5
THROTTLE_WINDOW = timedelta(minutes=15)


class AuthError(Exception):
    """The credentials or token are not acceptable (always answered as 401, with no detail leaked)."""


def hash_password(password: str) -> str:
    if len(password) < 10:
        raise ValueError("passwords need at least 10 characters")
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()


def verify_password(password: str, password_hash: str) -> bool:
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
    if session.scalar(select(AdminUser).where(AdminUser.username == username)) is not None:
        raise ValueError(f"admin user {username!r} already exists")
    user = AdminUser(username=username, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    return user


def is_throttled(session: Session, username: str, address: str) -> bool:
    since = datetime.now(timezone.utc) - THROTTLE_WINDOW
    failures = session.scalar(
        select(func.count()).select_from(AdminLoginFailure)
        .where(AdminLoginFailure.failed_at > since,
               or_(AdminLoginFailure.username == username, AdminLoginFailure.address == address))
    )
    return failures >= THROTTLE_FAILURES


def authenticate(session: Session, username: str, password: str, address: str) -> AdminUser:
    """The active user with these credentials; records the failure (for throttling) otherwise."""
    user = session.scalar(select(AdminUser).where(AdminUser.username == username, AdminUser.is_active))
    if not verify_password(password, user.password_hash if user else _DUMMY_HASH) or user is None:
        session.add(AdminLoginFailure(username=username, address=address))
        raise AuthError()
    session.execute(delete(AdminLoginFailure).where(AdminLoginFailure.username == username))
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
    user = session.scalar(select(AdminUser).where(AdminUser.username == claims["sub"], AdminUser.is_active))
    if user is None:
        raise AuthError()
    return user
