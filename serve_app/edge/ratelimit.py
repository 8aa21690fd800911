"""Per-client rate limits on the public routes that create work or store files.

`POST /generate` and `POST /upload-swatch` each have a limit in the `limits` library's notation
(`SASTRE_RATE_LIMIT_GENERATE=30/minute`, several separated by `;`), counted by that library over a
moving window. The counts live in this replica's memory (`MovingWindows`) unless
`SASTRE_RATE_LIMIT_STORAGE` names a shared store (`redis://host:6379/0`, counted by the library): with
memory, a client may make the limit's worth of requests to every ingress replica. A refusal is a 429
with `Retry-After`.

The client is the connecting address. When that address is a trusted proxy (`SASTRE_TRUSTED_PROXIES`,
addresses or networks), it is the nearest `X-Forwarded-For` hop that is not itself a trusted proxy:
hops further left were written by the client and prove nothing. The connecting address is the caller's
own through every hop a local run adds (the bridge, HAProxy, Serve's proxy: see `serve_app.cli.
caller_environment`), so those need no entry here.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import deque
from collections.abc import Callable

from fastapi import Depends, HTTPException, Request
from limits import RateLimitItem, parse_many
from limits.storage import Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.concurrency import run_in_threadpool

from deployments import metrics

logger = logging.getLogger("sastre.api")

MAX_CLIENT_KEY = 64  # characters of an address kept in a counter's key
STORE_TIMEOUT = 0.5  # seconds


def parse_limits(text: str) -> list[RateLimitItem]:
    """`30/minute` or `30/minute;500/hour`, refused at start-up if it does not parse."""
    try:
        return parse_many(text)
    except ValueError:
        raise ValueError(f"not a rate limit: {text!r} (write e.g. 30/minute or 30/minute;500/hour)") from None


def shared_store(uri: str) -> Storage:
    """The `limits` store at `uri`; a Redis that stops answering costs 0.5 s, not a hang."""
    options = {}
    if uri.startswith(("redis://", "rediss://")):
        options = {"socket_timeout": STORE_TIMEOUT, "socket_connect_timeout": STORE_TIMEOUT}
    return storage_from_string(uri, **options)


class MovingWindows:
    """Moving-window counts in this process's memory: per client and limit, the times of the hits still
    inside the window, oldest first, so a hit costs O(1) and starts no thread.

    The `limits` library's memory store inserts each hit at the front of a list (O(n) in the limit) and
    starts a timer thread every 10 ms while hits come: about an eighth of POST /generate's CPU under
    load in a plain-uvicorn profile. Used from the event loop only, so it needs no lock.
    """

    SWEEP_SECONDS = 60.0  # how often the counts of clients that went quiet are dropped

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.hits: dict[tuple[str, str, int, int], deque[float]] = {}
        self.next_sweep = clock() + self.SWEEP_SECONDS

    def hit(self, route: str, client: str, limits: list[RateLimitItem]) -> tuple[RateLimitItem, float] | None:
        """Count one hit under every limit, or under none when one is spent: then that limit and the
        seconds until it has room. A refused request uses up nothing."""
        now = self.clock()
        if now >= self.next_sweep:
            self._sweep(now)
        windows = []
        for limit in limits:
            seconds = limit.get_expiry()
            times = self.hits.setdefault((route, client, limit.amount, seconds), deque())
            while times and times[0] <= now - seconds:
                times.popleft()
            if len(times) >= limit.amount:
                return limit, times[0] + seconds - now
            windows.append(times)
        for times in windows:
            times.append(now)
        return None

    def _sweep(self, now: float) -> None:
        """Forget clients with no hit inside their window, so memory follows the active clients."""
        for key in [key for key, times in self.hits.items() if not times or times[-1] <= now - key[-1]]:
            del self.hits[key]
        self.next_sweep = now + self.SWEEP_SECONDS


class RateLimits:
    def __init__(self, limits: dict[str, str], storage: str = "memory://", trusted_proxies: list[str] = ()) -> None:
        self.limits = {route: parse_limits(text) for route, text in limits.items()}
        self.blocking = not storage.startswith("memory://")  # a shared store is a network call
        self.windows = None if self.blocking else MovingWindows()
        self.limiter = MovingWindowRateLimiter(shared_store(storage)) if self.blocking else None
        self.proxies = [ipaddress.ip_network(proxy, strict=False) for proxy in trusted_proxies]

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.proxies)

    def client(self, request: Request) -> str:
        """Who is asking: the connecting address, or the nearest untrusted hop behind trusted proxies."""
        address = request.client.host if request.client else "unknown"
        if not self._trusted(address):
            return address
        forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
        for hop in reversed([hop.strip() for hop in forwarded.split(",") if hop.strip()]):
            if not self._trusted(hop):
                return hop[:MAX_CLIENT_KEY]
            address = hop
        return address

    def check(self, route: str, request: Request) -> None:
        """Count this request against the route's limits for its client; 429 once one is spent."""
        client = self.client(request)
        if self.windows is not None:
            refused = self.windows.hit(route, client, self.limits[route])
        else:
            refused = self._shared_hit(route, client)
        if refused is None:
            return
        limit, wait_seconds = refused
        retry_after = max(1, math.ceil(wait_seconds))
        metrics.rate_limited(route)
        raise HTTPException(429, f"too many requests: the limit is {limit} per client; retry in {retry_after} s",
                            headers={"Retry-After": str(retry_after)})

    def _shared_hit(self, route: str, client: str) -> tuple[RateLimitItem, float] | None:
        """`MovingWindows.hit` against the shared store, through the library (blocking: on a thread)."""
        for limit in self.limits[route]:
            try:
                if self.limiter.hit(limit, "sastre", route, client):
                    continue
                reset_at = self.limiter.get_window_stats(limit, "sastre", route, client).reset_time
            except Exception as exc:  # the shared store is away: protection lapses, the service does not
                logger.warning("rate limit store unavailable (%s); %s not limited", type(exc).__name__, route)
                return None
            return limit, reset_at - time.time()
        return None


def rate_limited(route: str):
    """A route dependency that applies the service's limits for `route` to each request: on the event
    loop when the counts are in memory, on a thread when they are a network call away."""

    async def check(request: Request) -> None:
        limits = request.app.state.services.rate_limits
        if limits.blocking:
            await run_in_threadpool(limits.check, route, request)
        else:
            limits.check(route, request)

    return Depends(check)

