"""Jobs queued straight in the database, for tests of the queue that need no HTTP in front.

`jobs.create_job` queues a job only for an active color of an active family (the catalog check of
POST /generate is in its statement), so a color is added first when the test has none.
"""

from __future__ import annotations

from sqlalchemy import Row, text, update
from sqlalchemy.orm import Session

from db import fabrics, jobs
from db.models import GenerationJob


def ensure_color(session: Session, family_id: str = "f", color_id: str = "c") -> None:
    """An active family `family_id` with an active color `color_id`, unless the color exists already."""
    if fabrics.color_exists(session, color_id):
        return
    family = fabrics.get_family(session, family_id) or fabrics.add_family(
        session, family_id=family_id, display_name=family_id, fabric="worsted wool")
    fabrics.add_color(session, family, color_id=color_id, name=color_id, english="navy blue", hex_value="#1F2A44")


def queue_job(session: Session, *, family_id: str = "f", color_id: str = "c", **fields) -> Row:
    """`jobs.create_job` for `family_id`/`color_id`, the color added when missing; the job's accepted row."""
    ensure_color(session, family_id, color_id)
    job = jobs.create_job(session, family_id=family_id, color_id=color_id, **fields)
    assert job is not None, "the job was refused"
    return job


def expire_leases(session: Session, *job_ids: str) -> None:
    """Lets the leases of `job_ids` (of every job when none is named) run out a second ago: what the
    rescuer sees after a runner died or paused past its lease."""
    statement = update(GenerationJob).values(lease_expires_at=text("now() - interval '1 second'"))
    if job_ids:
        statement = statement.where(GenerationJob.job_id.in_(job_ids))
    session.execute(statement)
