"""Admin users and their failed logins: the queries behind login, tokens and the create-admin CLI.

Failed logins are counted per (username, client address). Counting and checking happen in one
transaction serialized on that pair (an advisory lock), and a try is counted *before* its password is
checked, so parallel guesses cannot get more than the limit through to the password check.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from db.models import AdminLoginFailure, AdminUser


def find_user(session: Session, username: str) -> AdminUser | None:
    return session.scalar(select(AdminUser).where(AdminUser.username == username))


def find_active_user(session: Session, username: str) -> AdminUser | None:
    return session.scalar(select(AdminUser).where(AdminUser.username == username, AdminUser.is_active))


def add_user(session: Session, username: str, password_hash: str) -> AdminUser:
    user = AdminUser(username=username, password_hash=password_hash)
    session.add(user)
    session.flush()
    return user


def count_login_try(session: Session, username: str, address: str, limit: int, window: timedelta) -> bool:
    """Count one login try for (username, address) as a failure until it succeeds; False, counting
    nothing, when `limit` tries already failed within `window`."""
    session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(f"admin-login\x1f{username}\x1f{address}", 0))))
    failures = session.scalar(
        select(func.count()).select_from(AdminLoginFailure)
        .where(AdminLoginFailure.username == username, AdminLoginFailure.address == address,
               AdminLoginFailure.failed_at > func.now() - window)
    )
    if failures >= limit:
        return False
    session.add(AdminLoginFailure(username=username, address=address))
    session.flush()
    return True


def forget_login_failures(session: Session, username: str, address: str) -> None:
    """A successful login clears its pair's failures (the try it made included)."""
    session.execute(delete(AdminLoginFailure).where(AdminLoginFailure.username == username,
                                                    AdminLoginFailure.address == address))
