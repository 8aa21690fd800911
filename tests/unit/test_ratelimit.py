"""The in-memory moving window behind the per-client rate limits (the routes' 429s are in test_api)."""

from __future__ import annotations

import threading

from serve_app.edge.ratelimit import MovingWindows, RateLimits, parse_limits
from tests.fake_clock import Clock


def test_a_window_refuses_the_hit_over_the_limit_until_its_oldest_hit_leaves():
    clock = Clock()
    windows = MovingWindows(clock)
    three_a_minute = parse_limits("3/minute")
    for step in (0, 10, 20):  # hits at t = 0, 10 and 20 s
        clock.now = 1000.0 + step
        assert windows.hit("generate", "198.51.100.7", three_a_minute) is None
    clock.now = 1030.0
    limit, wait = windows.hit("generate", "198.51.100.7", three_a_minute)
    assert str(limit) == str(three_a_minute[0]) and abs(wait - 30.0) < 1e-9  # the t = 0 hit leaves at t = 60
    assert windows.hit("generate", "198.51.100.8", three_a_minute) is None  # another client counts alone
    assert windows.hit("upload", "198.51.100.7", three_a_minute) is None  # and so does another route
    clock.now = 1060.0
    assert windows.hit("generate", "198.51.100.7", three_a_minute) is None  # the window moved: room for one
    limit, wait = windows.hit("generate", "198.51.100.7", three_a_minute)
    assert abs(wait - 10.0) < 1e-9  # the refusal at t = 30 was not counted: next to leave is t = 10


def test_a_request_refused_by_one_limit_is_not_counted_by_the_others():
    clock = Clock()
    windows = MovingWindows(clock)
    limits = parse_limits("5/minute;2/second")
    assert [windows.hit("generate", "c", limits) is None for _ in range(4)] == [True, True, False, False]
    clock.now += 1.0  # the per-second window is free again; the per-minute one holds only the two counted
    assert [windows.hit("generate", "c", limits) is None for _ in range(3)] == [True, True, False]
    clock.now += 1.0
    assert windows.hit("generate", "c", limits) is None  # the fifth this minute: the refusals were not counted
    limit, wait = windows.hit("generate", "c", limits)
    assert str(limit) == str(limits[0]) and abs(wait - 58.0) < 1e-9  # now the minute is spent, since t = 0


def test_quiet_clients_are_forgotten_and_active_ones_kept():
    clock = Clock()
    windows = MovingWindows(clock)
    minute = parse_limits("10/minute")
    for client in range(100):
        windows.hit("generate", f"192.0.2.{client}", minute)
    clock.now += 59.0
    windows.hit("generate", "192.0.2.1", minute)
    clock.now += 2.0  # past the first sweep, due 60 s after the start: only 192.0.2.1 hit in the last minute
    windows.hit("generate", "203.0.113.5", minute)
    assert sorted(key[1] for key in windows.hits) == ["192.0.2.1", "203.0.113.5"]


def test_counting_in_memory_starts_no_thread(monkeypatch):
    """The `limits` library's memory store started a timer thread every 10 ms while hits came."""
    started = []
    real_start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda thread: started.append(thread) or real_start(thread))
    limits = RateLimits({"generate": "100000/minute"})
    refusals = [limits.windows.hit("generate", "127.0.0.1", limits.limits["generate"]) for _ in range(5000)]
    assert refusals == [None] * 5000 and started == []
    assert len(limits.windows.hits[("generate", "127.0.0.1", 100000, 60)]) == 5000
