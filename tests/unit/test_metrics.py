"""The metrics module without Ray: exposed names and cache counting (the values on Ray's endpoint are
tests/integration/test_metrics.py's)."""

from __future__ import annotations

import pytest
from cachetools import LRUCache, cached

from deployments import metrics


def test_exposed_names_follow_ray_s_prometheus_naming():
    names = metrics.exposed_names()
    assert {"ray_sastre_jobs_created_total", "ray_sastre_backlog_pending_jobs", "ray_sastre_stage_seconds_bucket",
            "ray_sastre_stage_seconds_sum", "ray_sastre_stage_seconds_count"} <= names
    assert "ray_sastre_jobs_created" not in names  # a counter is only ever seen with its _total
    assert len(names) == sum(3 if m.kind == "Histogram" else 1 for m in metrics.ALL)


def test_cache_counters_hand_out_each_hit_and_miss_once_and_skip_what_they_are_told():
    square = cached(LRUCache(8), info=True)(lambda x: x * x)
    counters = metrics.CacheCounters({"control_map": square})
    for x in (1, 1, 2):
        square(x)
    assert counters._take() == {"control_map": (1, 2)}
    square(2)
    assert counters._take() == {"control_map": (1, 0)}
    square(3)
    counters.skip()  # e.g. a warm-up
    square(3)
    assert counters._take() == {"control_map": (1, 0)}


def test_a_cache_must_have_a_declared_name():
    with pytest.raises(ValueError, match="unknown cache"):
        metrics.CacheCounters({"my_cache": cached(LRUCache(1), info=True)(abs)})


def test_batch_size_buckets_are_centred_on_whole_sizes_so_ray_s_midpoint_sums_are_exact():
    bounds = metrics.BATCH_BOUNDARIES
    midpoints = [(bounds[i] + bounds[i + 1]) / 2 for i in range(len(bounds) - 1)]
    assert midpoints[:8] == [1, 2, 3, 4, 5, 6, 7, 8]
