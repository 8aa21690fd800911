"""A job's deadline, from `deadline_seconds` in the body or the `Cancel-After` header (Replicate's name).

`Cancel-After` takes a duration as Replicate and Go write them, `15s`, `1m30s`, `2h`, or plain seconds.
Given both, the earlier deadline wins: either alone would already ask for it.
"""

from __future__ import annotations

import re

from fastapi import HTTPException

MIN_SECONDS, MAX_SECONDS = 1, 86_400  # a shopper's moment to a day; past that a deadline protects nothing
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(ms|h|m|s))")


def cancel_after_seconds(header: str) -> float:
    """The seconds a `Cancel-After` value names; 422 for anything else or out of range."""
    value = header.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    elif value and _DURATION.sub("", value) == "":
        seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION.findall(value))
    else:
        raise HTTPException(422, f"Cancel-After must be a duration such as 15s, 1m30s or 2h, not {header!r}")
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise HTTPException(422, f"Cancel-After must be between {MIN_SECONDS} s and {MAX_SECONDS} s")
    return seconds


def deadline_seconds(body_seconds: float | None, cancel_after: str | None) -> float | None:
    """The job's deadline in seconds from now, or None for none."""
    given = [s for s in (body_seconds, cancel_after_seconds(cancel_after) if cancel_after else None) if s is not None]
    return min(given) if given else None
