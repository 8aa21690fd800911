"""Why a job failed, as its client is told: a stable code and a short sentence, never exception text.

A job's `error_message` is public (GET /jobs/{id}, its event stream, the shop page), and exception text
carries what a stranger must not see: actor addresses from a dead replica, storage endpoints, bucket
names, file paths. So the public column holds one of the reasons below (`code: sentence`, the code
first so a front end can match it), and the raw text goes to `error_detail`, which logs and the admin
history show. The codes are part of the API: add new ones, never rename one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FailureReason:
    code: str
    sentence: str

    @property
    def message(self) -> str:
        """What `error_message` holds: `render_failed: the render failed; try again`."""
        return f"{self.code}: {self.sentence}"


RENDER_FAILED = FailureReason("render_failed", "the render failed; try again")
NOT_IN_CATALOG = FailureReason("not_in_catalog", "the fabric, color or cut is no longer offered; choose another")
INTERRUPTED = FailureReason("interrupted", "the render was interrupted too many times; try again")
RETRYING = FailureReason("retrying", "the render was interrupted and will be retried shortly")
DEADLINE_PASSED = FailureReason("deadline_passed", "the job was not finished by its deadline; the cuts done are kept")
INTERNAL = FailureReason("internal_error", "something went wrong on our side; try again")
