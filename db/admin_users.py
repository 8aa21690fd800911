"""Admin users and their failed logins: the queries behind login, tokens and the admin CLI.

A login try is counted as a failure *before* its password is checked (and forgotten when it succeeds),
so parallel guesses cannot get more tries through than the limit. Tries are limited per client
address, whatever the usernames, in one transaction serialized on that address (an advisory lock);
the failures of a username from every address are counted too, for the delay its next try serves.
Each try also deletes a small batch of failures older than the window: the table holds only what
throttling still needs, and no prune ever holds a long lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from db.models import AdminLoginFailure, AdminUser

PRUNE_BATCH = 100  # old failures deleted per login try: more than one try ever adds


@dataclass(frozen=True)
class LoginTry:
    """What counting a try decided: refused for `refused_for` seconds (the address is over its limit;
    nothing counted), or counted, with the username's failures within the window from any address
    before this try."""

    refused_for: float | None = None
    username_failures: int = 0


def find_user(session: Session, username: str) -> AdminUser | None:
    return session.scalar(select(AdminUser).where(AdminUser.username == username))


def find_active_user(session: Session, username: str) -> AdminUser | None:
    return session.scalar(select(AdminUser).where(AdminUser.username == username, AdminUser.is_active))


def add_user(session: Session, username: str, password_hash: str) -> AdminUser:
    user = AdminUser(username=username, password_hash=password_hash)
    session.add(user)
    session.flush()
    return user


def change_password(session: Session, username: str, password_hash: str) -> bool:
    """A new password for `username` (False if there is none); its earlier tokens stop working."""
    changed = session.execute(update(AdminUser).where(AdminUser.username == username)
                              .values(password_hash=password_hash, token_version=AdminUser.token_version + 1)
                              .returning(AdminUser.id))
    return changed.first() is not None


def deactivate_user(session: Session, username: str) -> bool:
    """Close `username`'s account (False if there is none): it cannot log in, its tokens stop working."""
    closed = session.execute(update(AdminUser).where(AdminUser.username == username)
                             .values(is_active=False, token_version=AdminUser.token_version + 1)
                             .returning(AdminUser.id))
    return closed.first() is not None


def _lock(session: Session, *parts: str) -> None:
    session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended("\x1f".join(parts), 0))))


def prune_login_failures(session: Session, window: timedelta, batch: int = PRUNE_BATCH) -> int:
    """Delete up to `batch` failures older than `window` (rows other tries are pruning are skipped)."""
    old = (select(AdminLoginFailure.id).where(AdminLoginFailure.failed_at <= func.now() - window)
           .order_by(AdminLoginFailure.failed_at).limit(batch).with_for_update(skip_locked=True))
    return session.execute(delete(AdminLoginFailure).where(AdminLoginFailure.id.in_(old.scalar_subquery()))).rowcount


def count_login_try(session: Session, username: str, address: str, per_address: int, window: timedelta) -> LoginTry:
    """Count one login try for (username, address) as a failure until it succeeds, unless `address`
    already has `per_address` failures within `window`: then count nothing and say for how long."""
    prune_login_failures(session, window)
    _lock(session, "admin-login-address", address)  # first the address, then the username: never a cycle
    _lock(session, "admin-login-user", username)
    recent = AdminLoginFailure.failed_at > func.now() - window
    failures, frees_in = session.execute(
        select(func.count(), func.extract("epoch", func.min(AdminLoginFailure.failed_at) + window - func.now()))
        .where(AdminLoginFailure.address == address, recent)
    ).one()
    if failures >= per_address:
        return LoginTry(refused_for=float(frees_in))
    username_failures = session.scalar(select(func.count()).select_from(AdminLoginFailure)
                                       .where(AdminLoginFailure.username == username, recent))
    session.add(AdminLoginFailure(username=username, address=address))
    session.flush()
    return LoginTry(username_failures=username_failures)


def forget_login_failures(session: Session, username: str, address: str) -> None:
    """A successful login clears its pair's failures (the try it made included)."""
    session.execute(delete(AdminLoginFailure).where(AdminLoginFailure.username == username,
                                                    AdminLoginFailure.address == address))
