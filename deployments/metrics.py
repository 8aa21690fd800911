"""The service's own metrics, every one defined here, recorded where the thing happens.

They are Ray Serve metrics (`ray.serve.metrics`), so Ray's Prometheus endpoint exports them next to
Serve's own, and a metric recorded in a replica carries Serve's `deployment`, `replica` and
`application` tags besides its own. Ray prefixes every name with `ray_`; a counter is exposed as
`<name>_total`, a histogram as `<name>_bucket` / `_sum` / `_count`, a gauge as `<name>`. Our own
tags are few and bounded (outcome, stage, cache, reason, route); never a job id.

| exposed as (ray_ + name)                 | kind      | tags    | what it counts                                 |
|------------------------------------------|-----------|---------|------------------------------------------------|
| sastre_jobs_created_total                | counter   |         | jobs accepted by POST /generate (not replays)  |
| sastre_jobs_finished_total               | counter   | outcome | final writes: completed, failed, canceled, expired |
| sastre_job_latency_seconds               | histogram |         | created → completed, per completed job         |
| sastre_job_queue_wait_seconds            | histogram |         | created → first claimed by a runner            |
| sastre_stage_seconds                     | histogram | stage   | one cut's preprocess / generate / finish call  |
| sastre_backlog_pending_jobs              | gauge     |         | jobs waiting (`pending`), sampled each tick    |
| sastre_backlog_pending_cuts              | gauge     |         | unfinished cuts of those jobs                  |
| sastre_backlog_cuts_in_flight            | gauge     |         | unfinished cuts of `processing` jobs           |
| sastre_backlog_oldest_pending_seconds    | gauge     |         | age of the oldest pending job (0 when none)    |
| sastre_generator_batch_size              | histogram |         | cuts per generator model call (batching.py)    |
| sastre_ip_adapter_fallbacks_total        | counter   |         | cuts generated at IP-Adapter scale 0           |
| sastre_cache_hits_total / _misses_total  | counter   | cache   | in-memory caches and the render cache (CACHES) |
| sastre_rate_limited_total                | counter   | route   | 429s of the per-client rate limits             |
| sastre_refused_total                     | counter   | reason  | backpressure: backlog full (429), database     |
|                                          |           |         | busy or unavailable, upload decodes busy (503),|
|                                          |           |         | a stage's queue full (stage_busy, resent)      |

The backlog gauges are the whole queue's, read from PostgreSQL by every runner replica: aggregate
them with `max`, not `sum`. Outside a Ray worker (unit tests, tools) nothing is exported, so
recording is skipped.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

PREFIX = "ray_"  # what Ray's Prometheus exporter puts before every metric name
LATENCY_BOUNDARIES = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800]
# Ray 2.60 exports a histogram's `_sum` as each bucket's midpoint times its count, not the true sum, so
# the batch-size buckets are centred on whole sizes: up to 8 (the default largest batch) sum and mean
# are exact. Latency sums are approximate: read latencies as quantiles of the buckets.
BATCH_BOUNDARIES = [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5, 16.5, 32.5, 64.5]
OUTCOMES = ("completed", "failed", "canceled", "expired")
STAGES = ("preprocess", "generate", "finish")
CACHES = ("control_map", "prompt_embedding", "swatch_embedding", "preview", "preview_tile", "preview_template",
          "render")  # render: the render cache in PostgreSQL (serve_app/jobqueue/render_cache.py), counted per cut looked up
REFUSALS = ("backlog_full", "client_cap", "database_busy", "database_unavailable", "upload_decodes_busy",
            "stage_busy")  # stage_busy: a render stage past its max_queued_requests refused a runner's call


class _Metric:
    """A metric built on first use in each process.

    Serve adds its replica tags when the metric object is made, which must therefore happen inside
    the replica, not when this module is imported (imports happen before the replica exists).
    """

    def __init__(self, kind: str, name: str, description: str, tag_keys: tuple[str, ...] = (),
                 boundaries: list[float] | None = None) -> None:
        self.kind, self.name, self.description = kind, name, description
        self.tag_keys, self.boundaries = tag_keys, boundaries
        self._made: Any = None
        self._lock = threading.Lock()

    def _metric(self) -> Any | None:
        ray = sys.modules.get("ray")  # a process that never imported Ray has no exporter: don't import it here
        if self._made is not None or ray is None or not ray.is_initialized():
            return self._made
        with self._lock:
            if self._made is None:
                from ray.serve import metrics

                options = {"boundaries": self.boundaries} if self.boundaries else {}
                self._made = getattr(metrics, self.kind)(self.name, description=self.description,
                                                         tag_keys=self.tag_keys, **options)
            return self._made

    def record(self, value: float, **tags: str) -> None:
        metric = self._metric()
        if metric is None:
            return
        record = getattr(metric, {"Counter": "inc", "Gauge": "set", "Histogram": "observe"}[self.kind])
        record(value, tags=tags or None)


JOBS_CREATED = _Metric("Counter", "sastre_jobs_created", "Jobs accepted by POST /generate.")
JOBS_FINISHED = _Metric("Counter", "sastre_jobs_finished", "Jobs that reached a final state, by outcome.",
                        ("outcome",))
JOB_LATENCY = _Metric("Histogram", "sastre_job_latency_seconds", "Created to completed, per completed job.",
                      boundaries=LATENCY_BOUNDARIES)
QUEUE_WAIT = _Metric("Histogram", "sastre_job_queue_wait_seconds", "Created to first claimed by a runner.",
                     boundaries=LATENCY_BOUNDARIES)
STAGE_SECONDS = _Metric("Histogram", "sastre_stage_seconds", "One cut's call of a render stage, by stage.",
                        ("stage",), LATENCY_BOUNDARIES)
BACKLOG = {
    "pending_jobs": _Metric("Gauge", "sastre_backlog_pending_jobs", "Jobs waiting to be claimed."),
    "pending_cuts": _Metric("Gauge", "sastre_backlog_pending_cuts", "Unfinished cuts of pending jobs."),
    "cuts_in_flight": _Metric("Gauge", "sastre_backlog_cuts_in_flight", "Unfinished cuts of processing jobs."),
    "oldest_pending_seconds": _Metric("Gauge", "sastre_backlog_oldest_pending_seconds",
                                      "Age of the oldest pending job; 0 when none waits."),
}
BATCH_SIZE = _Metric("Histogram", "sastre_generator_batch_size", "Cuts per generator model call.",
                     boundaries=BATCH_BOUNDARIES)
IP_ADAPTER_FALLBACKS = _Metric("Counter", "sastre_ip_adapter_fallbacks",
                               "Cuts generated at IP-Adapter scale 0 (swatch gone or undecodable).")
CACHE_HITS = _Metric("Counter", "sastre_cache_hits", "Lookups an in-memory cache answered.", ("cache",))
CACHE_MISSES = _Metric("Counter", "sastre_cache_misses", "Lookups an in-memory cache had to compute.", ("cache",))
RATE_LIMITED = _Metric("Counter", "sastre_rate_limited", "Requests refused by a per-client rate limit (429).",
                       ("route",))
REFUSED = _Metric("Counter", "sastre_refused", "Requests refused to protect the service: backlog full or a "
                  "client at its cap of unfinished jobs (429), database busy or unavailable, upload decodes busy "
                  "(503); a render stage's full queue refusing a runner's call (stage_busy, resent).", ("reason",))

ALL = (JOBS_CREATED, JOBS_FINISHED, JOB_LATENCY, QUEUE_WAIT, STAGE_SECONDS, *BACKLOG.values(), BATCH_SIZE,
       IP_ADAPTER_FALLBACKS, CACHE_HITS, CACHE_MISSES, RATE_LIMITED, REFUSED)


def exposed_names() -> set[str]:
    """Every series name Prometheus sees for our metrics (what a dashboard query may name)."""
    suffixes = {"Counter": ("_total",), "Gauge": ("",), "Histogram": ("_bucket", "_sum", "_count")}
    return {PREFIX + metric.name + suffix for metric in ALL for suffix in suffixes[metric.kind]}


def job_created() -> None:
    JOBS_CREATED.record(1)


def job_finished(outcome: str, latency_seconds: float | None = None) -> None:
    """A job's final write landed (`OUTCOMES`); a completed job also gives its end-to-end latency."""
    JOBS_FINISHED.record(1, outcome=outcome)
    if latency_seconds is not None:
        JOB_LATENCY.record(max(latency_seconds, 0.0))


def job_claimed(queue_wait_seconds: float) -> None:
    QUEUE_WAIT.record(max(queue_wait_seconds, 0.0))


def backlog_sampled(pending_jobs: int, pending_cuts: int, cuts_in_flight: int, oldest_pending_seconds: float) -> None:
    for name, value in (("pending_jobs", pending_jobs), ("pending_cuts", pending_cuts),
                        ("cuts_in_flight", cuts_in_flight), ("oldest_pending_seconds", oldest_pending_seconds)):
        BACKLOG[name].record(float(value))


async def timed(stage: str, work: Awaitable[T]) -> T:
    """Await one stage call and record how long it took; failed calls are not latencies and are not recorded."""
    started = time.perf_counter()
    result = await work
    STAGE_SECONDS.record(time.perf_counter() - started, stage=stage)
    return result


def batch_formed(size: int) -> None:
    BATCH_SIZE.record(size)


def ip_adapter_fell_back(cuts: int) -> None:
    if cuts > 0:
        IP_ADAPTER_FALLBACKS.record(cuts)


def cache_looked_up(cache: str, hit: bool) -> None:
    """One lookup in a cache that is not a `cachetools` function (the render cache, the control-map refs)."""
    (CACHE_HITS if hit else CACHE_MISSES).record(1, cache=cache)


def rate_limited(route: str) -> None:
    RATE_LIMITED.record(1, route=route)


def refused(reason: str) -> None:
    REFUSED.record(1, reason=reason)


class CacheCounters:
    """Publishes the hits and misses of `cachetools` caches made with `cached(..., info=True)`.

    The caches count for themselves (`cache_info()`); after a lookup the owner calls `publish()`, which
    adds what changed since the last call, so the totals are exact whatever threads did the lookups.
    """

    def __init__(self, caches: dict[str, Callable[..., Any]]) -> None:
        unknown = set(caches) - set(CACHES)
        if unknown:
            raise ValueError(f"unknown cache name(s) {sorted(unknown)}; add them to CACHES")
        self.caches = caches
        self._seen = {name: (0, 0) for name in caches}
        self._lock = threading.Lock()

    def publish(self) -> None:
        with self._lock:
            for name, (hits, misses) in self._take().items():
                if hits:
                    CACHE_HITS.record(hits, cache=name)
                if misses:
                    CACHE_MISSES.record(misses, cache=name)

    def skip(self) -> None:
        """Take what the caches counted so far as published, without publishing it: a warm-up is not traffic."""
        with self._lock:
            self._take()

    def _take(self) -> dict[str, tuple[int, int]]:
        """(hits, misses) of each cache since the last call."""
        changed = {}
        for name, cached_function in self.caches.items():
            info = cached_function.cache_info()
            hits, misses = self._seen[name]
            self._seen[name] = (info.hits, info.misses)
            changed[name] = (info.hits - hits, info.misses - misses)
        return changed
