"""Queue positions (db/queue_positions.py) on a real PostgreSQL: the ranking is the claim order, fair turns
and lanes included; the estimate follows the recent pace; GET /jobs/{id} shows the place only while pending."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import text

from db import jobs, queue_positions
from tests.job_rows import queue_job
from tests.unit.test_api import NAVY, api, call  # noqa: F401 (api is a fixture)


def _queue(sessions, client: str, n: int, lane: str = "interactive") -> list[str]:
    ids = []
    for i in range(n):
        with sessions.begin() as s:  # one transaction each: distinct created_at, the claim's tie-break
            ids.append(queue_job(s, cuts=["recto"], seed=i, swatch_key="k.png", client=client, lane=lane).job_id)
    return ids


def _places(sessions) -> dict[str, int]:
    with sessions() as s:
        return dict(s.execute(text("SELECT job_id, ahead FROM queue_positions")).all())


def _ranked(sessions) -> list[str]:
    return [job_id for job_id, _ in sorted(_places(sessions).items(), key=lambda item: item[1])]


def test_the_ranking_is_the_order_the_runners_claim_in(sessions):
    a = _queue(sessions, "a", 3)
    b = _queue(sessions, "b", 1)
    prewarm = _queue(sessions, "", 2, lane="batch")
    with sessions.begin() as s:
        moved = queue_positions.refresh(s)
    assert set(moved) == {*a, *b, *prewarm}  # all new: announced to their event streams
    # Turn 1 of each client (oldest first), then A's later turns; batch work after every shopper's job.
    assert _ranked(sessions) == [a[0], b[0], a[1], a[2], *prewarm]
    with sessions.begin() as s:
        assert {job.job_id for job in jobs.claim_jobs(s, "runner", 2, 30)} == {a[0], b[0]}
    time.sleep(0.01)
    late = _queue(sessions, "c", 1)
    with sessions.begin() as s:
        moved = queue_positions.refresh(s)
    # C's first job comes before A's second (A has one running); what was claimed has no place.
    assert _ranked(sessions) == [late[0], a[1], a[2], *prewarm]
    assert set(moved) == {*late, *a[1:], *prewarm}  # every place changed
    for expected in ([late[0]], [a[1]], [a[2]], [prewarm[0]]):
        with sessions.begin() as s:
            assert [job.job_id for job in jobs.claim_jobs(s, "runner", 1, 30)] == expected
    with sessions.begin() as s:
        assert queue_positions.refresh(s) == [prewarm[1]]  # moved up to 0; nothing else left to rank
    assert _places(sessions) == {prewarm[1]: 0}


def test_a_job_past_its_deadline_or_beyond_the_horizon_has_no_place(sessions):
    queued = _queue(sessions, "a", 5)
    with sessions.begin() as s:
        s.execute(text("UPDATE generation_jobs SET deadline_at = now() - interval '1 second' WHERE job_id = :j"),
                  {"j": queued[0]})
        queue_positions.refresh(s, horizon=3)
    assert _places(sessions) == {queued[1]: 0, queued[2]: 1, queued[3]: 2}


def test_the_estimated_start_follows_the_pace_of_the_last_minutes(sessions):
    waiting = _queue(sessions, "a", 3)
    with sessions.begin() as s:
        queue_positions.refresh(s)
        first = queue_positions.places(s, waiting)
    assert all(place.estimated_start_at is None for place in first.values())  # nothing finished lately: no pace
    done = _queue(sessions, "b", 21)
    with sessions.begin() as s:  # 21 jobs finished over the last 100 s: 0.2 jobs per second
        s.execute(text("UPDATE generation_jobs SET status = 'completed', "
                       "completed_at = now() - make_interval(secs => 100 - 5 * (id % 21)) WHERE job_id = ANY(:ids)"),
                  {"ids": done})
        now = s.scalar(text("SELECT now()"))
        queue_positions.refresh(s)
        places = queue_positions.places(s, waiting)
    for job_id, ahead in zip(waiting, (0, 1, 2)):
        assert places[job_id].ahead == ahead
        expected = now + timedelta(seconds=ahead / 0.21)  # 21 in 100 s
        assert abs((places[job_id].estimated_start_at - expected).total_seconds()) < 0.5


def test_get_jobs_shows_the_place_only_while_pending(api, sessions):
    first, second = (call(api, "POST", "/generate", json=NAVY).json()["job_id"] for _ in range(2))
    unranked = call(api, "GET", f"/jobs/{second}").json()
    assert unranked["queue_position"] is None and unranked["estimated_start_at"] is None  # not ranked yet
    with sessions.begin() as s:
        queue_positions.refresh(s)
    assert [call(api, "GET", f"/jobs/{j}").json()["queue_position"] for j in (first, second)] == [0, 1]
    with sessions.begin() as s:
        jobs.claim_jobs(s, "runner", 1, 30)  # the place is a tick old now; a claimed job shows none
    shown = call(api, "GET", f"/jobs/{first}").json()
    assert shown["status"] == "processing" and shown["queue_position"] is None
