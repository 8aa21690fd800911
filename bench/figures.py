"""The numbers every benchmark here reports, computed one way, where and when they were measured, and
the closed-loop load that the API benchmarks drive (scripts run as `python bench/x.py`, so they import
this as `figures`)."""

from __future__ import annotations

import asyncio
import os
import platform
import time
from collections.abc import Awaitable, Callable
from datetime import date

import aiohttp

# (session, client index, request number) -> the response of one request
Request = Callable[[aiohttp.ClientSession, int, int], Awaitable[aiohttp.ClientResponse]]


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q` quantile of `values` (q in [0, 1])."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measured_on() -> dict[str, str]:
    """The date and the machine: the first fields of every benchmark's JSON line."""
    return {"date": date.today().isoformat(), "machine": f"{platform.node()} {os.cpu_count()} cores"}


def load_summary(latencies: list[float], errors: int, elapsed: float) -> dict:
    """Throughput and latency of a load run: requests/s, p50 and p99 in ms, counts."""
    return {"rps": round(len(latencies) / elapsed, 1), "p50_ms": round(percentile(latencies, 0.5) * 1e3, 1),
            "p99_ms": round(percentile(latencies, 0.99) * 1e3, 1), "requests": len(latencies), "errors": errors}


async def closed_loop(base_url: str, clients: int, seconds: float, request: Request, ok_below: int = 300) -> dict:
    """`clients` clients, each on one connection, sending `request` back to back for `seconds`; a
    status at or above `ok_below`, or a connection error, counts as an error."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(index: int) -> None:
        nonlocal errors
        async with aiohttp.ClientSession(base_url, connector=aiohttp.TCPConnector(limit=1)) as session:
            n = 0
            while time.perf_counter() < deadline:
                n += 1
                started = time.perf_counter()
                try:
                    response = await request(session, index, n)
                    await response.read()
                    ok = response.status < ok_below
                except aiohttp.ClientError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                errors += not ok

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return load_summary(latencies, errors, time.perf_counter() - started)
