"""Render-cache queries on `render_cache`: find a completed cut by its inputs' hash, remember one, forget.

An entry points at the stored image of the cut that made it (`object_key`); a hit reuses that object and
copies nothing. Entries age from their last hit (`used_at`, set by `touch`); the prune
(`db/retention.py`) deletes unused ones and an object only once no entry or job names it. Entries are
only added by a completed render; two runners finishing the same inputs at once keep the first (their
images are equal).
"""

from __future__ import annotations

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db.models import GenerationJob, RenderCacheEntry


def find(session: Session, key_hash: str) -> RenderCacheEntry | None:
    return session.get(RenderCacheEntry, key_hash)


def cached_keys(session: Session, key_hashes) -> set[str]:
    """Which of `key_hashes` have an entry (one round trip, for the catalog pre-render)."""
    key_hashes = list(key_hashes)
    if not key_hashes:
        return set()
    return set(session.scalars(select(RenderCacheEntry.key_hash).where(RenderCacheEntry.key_hash.in_(key_hashes))))


def remember(session: Session, **entry) -> bool:
    """Add an entry unless one with its key exists already; True when this one was added."""
    added = session.execute(insert(RenderCacheEntry).values(**entry)
                            .on_conflict_do_nothing(index_elements=["key_hash"]))
    return added.rowcount == 1


def forget(session: Session, key_hash: str) -> None:
    """Drop one entry (its object is gone: the next request renders again)."""
    session.execute(delete(RenderCacheEntry).where(RenderCacheEntry.key_hash == key_hash))


def forget_color(session: Session, color_id: str) -> int:
    """An admin changed the color's swatch or words: its entries can never hit again."""
    return session.execute(delete(RenderCacheEntry).where(RenderCacheEntry.color_id == color_id)).rowcount


def forget_family(session: Session, family_id: str) -> int:
    """An admin changed the family's words: its entries can never hit again."""
    return session.execute(delete(RenderCacheEntry).where(RenderCacheEntry.family_id == family_id)).rowcount


def catalog_renders_in_flight(session: Session, seed: int) -> set[tuple[str, str]]:
    """(color_id, cut) of the one-cut jobs at `seed` still waiting or rendering: a second pre-render
    started before the first one finished must not queue them again."""
    rows = session.execute(
        select(GenerationJob.color_id, GenerationJob.cuts)
        .where(GenerationJob.status.in_(("pending", "processing")), GenerationJob.seed == seed,
               func.json_array_length(GenerationJob.cuts) == 1)
    )
    return {(color_id, cuts[0]) for color_id, cuts in rows}


def touch(session: Session, object_key: str) -> bool:
    """A hit on the entries naming `object_key`: they were used now (they age from here). False when no
    entry names it any more (it aged out meanwhile): the hit must not be used, its object may be gone.

    The caller records the hit in the same transaction: the row lock taken here keeps the prune from
    deleting the entry (and then the object) until the job's row names the object too.
    """
    touched = session.execute(update(RenderCacheEntry).where(RenderCacheEntry.object_key == object_key)
                              .values(used_at=func.now()))
    return touched.rowcount > 0
