"""Generation history for admins: jobs with their queue bookkeeping, paged by a stable cursor."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from fastapi import HTTPException

from db.models import GenerationJob
from deployments.storage import Storage
from serve_app.admin.generations.schemas import AdminJobOut
from serve_app.generation.service import job_out


def admin_job(job: GenerationJob, storage: Storage) -> AdminJobOut:
    return AdminJobOut(**job_out(job, storage).model_dump(), max_attempts=job.max_attempts,
                       lease_owner=job.lease_owner, lease_expires_at=job.lease_expires_at,
                       idempotency_key=job.idempotency_key, cancel_requested=job.cancel_requested,
                       error_detail=job.error_detail, client=job.client, kept=job.kept)


def encode_cursor(job: GenerationJob) -> str:
    """The last job of a page, as (created_at, id): new inserts never shift the pages after it."""
    return base64.urlsafe_b64encode(json.dumps([job.created_at.isoformat(), job.id]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        created, job_pk = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(created), int(job_pk)
    except (ValueError, TypeError, binascii.Error):
        raise HTTPException(422, "invalid cursor") from None
