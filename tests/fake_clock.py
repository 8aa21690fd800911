"""A clock the test moves by hand, for code that takes its time source as an argument (health
reports, replica probes, rate-limit windows): ages and waits come out exact whatever the machine's load."""

from __future__ import annotations


class Clock:
    """Returns `now` when called; the test sets or advances `now` itself."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
