"""Backpressure for POST /generate: refuse new jobs while the pending backlog is over a limit.

Counting pending rows on every request would make each POST cost O(backlog) exactly when the
system is busiest, so each ingress replica re-checks at most every `ttl_seconds`; the limit is a
soft one (a few requests per replica may pass in that window), which is all backpressure needs.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy.orm import Session

from db import jobs


class BacklogGate:
    def __init__(self, limit: int, ttl_seconds: float = 0.5) -> None:
        self.limit = limit
        self.ttl_seconds = ttl_seconds
        self._full = False
        self._checked_at = float("-inf")
        self._lock = threading.Lock()

    def is_full(self, session: Session) -> bool:
        with self._lock:
            if time.monotonic() - self._checked_at < self.ttl_seconds:
                return self._full
        full = jobs.backlog_at_least(session, self.limit)
        with self._lock:
            self._full, self._checked_at = full, time.monotonic()
        return full
