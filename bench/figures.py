"""The numbers every benchmark here reports, computed one way (scripts run as `python bench/x.py`,
so they import this as `figures`)."""

from __future__ import annotations


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q` quantile of `values` (q in [0, 1])."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load_summary(latencies: list[float], errors: int, elapsed: float) -> dict:
    """Throughput and latency of a load run: requests/s, p50 and p99 in ms, counts."""
    return {"rps": round(len(latencies) / elapsed, 1), "p50_ms": round(percentile(latencies, 0.5) * 1e3, 1),
            "p99_ms": round(percentile(latencies, 0.99) * 1e3, 1), "requests": len(latencies), "errors": errors}
