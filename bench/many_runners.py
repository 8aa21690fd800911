"""Many runners, one queue: 1, 4 and 8 JobRunner loops claiming from one PostgreSQL (issue 25, item 4).

For each runner count, a scratch database gets `--jobs` pending one-cut jobs, spread over `--clients`
clients; then that many processes each run the real `JobWorker` loop (claims, leases, progress writes,
the rescuer, the queue ranking) with a stand-in renderer that answers at once, so the figure is the
queue's own cost. Each process times every `jobs.claim_jobs` call and counts its renders per job; the
parent samples `pg_locks` every 20 ms for waits. Printed per count: jobs/s and its ratio to one runner
(the baseline, measured in the same run), claim p50/p99, lock-wait samples, and the exactly-once check
(every job completed, on its first attempt, rendered once in all).

Run: `SASTRE_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/many_runners.py`
(any PostgreSQL you may create a database in; each scratch database is dropped afterwards).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import statistics
import threading
import time
from collections import Counter

from sqlalchemy import text

from catalog.data import load_catalog
from catalog.loader import sync_catalog
from db import jobs
from db.engine import make_engine, make_sessionmaker
from deployments.rendering import CutResult, CutTask
from figures import measured_on
from harness import options, scratch_sessions
from serve_app.jobqueue.worker import JobWorker, database_connections



class InstantRenderer:
    """Answers every cut at once, counting them: the queue alone is measured."""

    def __init__(self) -> None:
        self.renders: Counter = Counter()

    async def render(self, task: CutTask) -> CutResult:
        self.renders[task.job_id] += 1
        return CutResult(f"http://bench/{task.result_key}", task.result_key, task.seed, False)


def run_one(database_url: str, total: int, concurrency: int, results: multiprocessing.Queue) -> None:
    """One runner process: its loop until every job of the table has finished; then its claim timings
    and render counts."""
    engine = make_engine(database_url, pool_size=database_connections(concurrency), max_overflow=0)
    sessions = make_sessionmaker(engine)
    claims: list[float] = []
    claim = jobs.claim_jobs

    def timed_claim(*args, **kwargs):
        started = time.perf_counter()
        try:
            return claim(*args, **kwargs)
        finally:
            claims.append(time.perf_counter() - started)

    jobs.claim_jobs = timed_claim  # this process's own module: what the loop calls
    renderer = InstantRenderer()
    worker = JobWorker(sessions, database_url, load_catalog(), renderer, concurrency=concurrency,
                       lease_seconds=30, poll_seconds=0.2)

    async def until_done() -> None:
        loop = asyncio.create_task(worker.run_forever())
        while True:
            await asyncio.sleep(0.1)
            with sessions() as session:
                finished = session.scalar(text("SELECT count(*) FROM generation_jobs "
                                               "WHERE status IN ('completed', 'failed')"))
            if finished >= total:
                break
        worker.stop()
        await loop

    asyncio.run(until_done())
    engine.dispose()
    results.put({"claims": claims, "renders": dict(renderer.renders)})


def lock_waits(database_url: str, stop: threading.Event, samples: list[list[str]]) -> None:
    """Every 20 ms: the locks someone waits for, as `locktype mode` (relation, transactionid, advisory...)."""
    engine = make_engine(database_url)
    with engine.connect() as conn:
        while not stop.is_set():
            samples.append(list(conn.scalars(text("SELECT locktype || ' ' || mode FROM pg_locks WHERE NOT granted"))))
            conn.rollback()
            time.sleep(0.02)
    engine.dispose()


def measure(runners: int, total: int, clients: int, concurrency: int) -> dict:
    with scratch_sessions() as (engine, sessions):
        with sessions.begin() as session:
            sync_catalog(session, load_catalog())
            for n in range(total):
                jobs.create_job(session, family_id="lana-fria", color_id="lana-fria-azul-marino", cuts=["recto"],
                                seed=n, swatch_key="k.png", client=f"10.0.0.{n % clients}")
        url = engine.url.render_as_string(hide_password=False)
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        stop, waits = threading.Event(), []
        sampler = threading.Thread(target=lock_waits, args=(url, stop, waits))
        sampler.start()
        started = time.perf_counter()
        processes = [context.Process(target=run_one, args=(url, total, concurrency, results)) for _ in range(runners)]
        for process in processes:
            process.start()
        reports = [results.get(timeout=900) for _ in processes]
        seconds = time.perf_counter() - started
        for process in processes:
            process.join()
        stop.set()
        sampler.join()
        with sessions() as session:
            attempts = dict(session.execute(text("SELECT attempts, count(*) FROM generation_jobs "
                                                 "WHERE status = 'completed' GROUP BY attempts")).all())
            statuses = dict(session.execute(text("SELECT status, count(*) FROM generation_jobs GROUP BY status")).all())
            # From the first claim to the last completion: the processes' start-up is not the queue's.
            busy = session.scalar(text("SELECT extract(epoch FROM max(completed_at) - min(started_at)) "
                                       "FROM generation_jobs"))
    renders: Counter = Counter()
    for report in reports:
        renders.update(report["renders"])
    claims = sorted(c for report in reports for c in report["claims"])
    kinds = Counter(kind for sample in waits for kind in sample)
    return {"runners": runners, "seconds": round(float(busy), 2), "with_start_up_s": round(seconds, 2),
            "jobs_per_s": round(total / float(busy), 1),
            "claim_p50_ms": round(statistics.median(claims) * 1000, 2),
            "claim_p99_ms": round(claims[int(len(claims) * 0.99)] * 1000, 2), "claims": len(claims),
            "lock_wait_samples": sum(1 for w in waits if w), "lock_wait_max": max(map(len, waits), default=0),
            "samples": len(waits), "lock_waits_by_kind": dict(kinds.most_common()),
            "statuses": statuses, "attempts": attempts,
            "exactly_once": attempts == {1: total} and len(renders) == total and set(renders.values()) == {1}}


def main() -> None:
    args = options(jobs=(2000, "one-cut jobs queued before the runners start"), clients=50,
                   runners=("1,4,8", "runner counts, the first is the baseline"),
                   concurrency=(4, "jobs in hand per runner: each holds concurrency + 5 connections, and 8 "
                                   "runners at the default 16 need 168, past PostgreSQL's default 100"))
    rows = [measure(int(n), args.jobs, args.clients, args.concurrency) for n in args.runners.split(",")]
    base = rows[0]["jobs_per_s"]
    print(f"{args.jobs} one-cut jobs, {args.clients} clients, {args.concurrency} jobs in hand per runner, a stand-in "
          "generator that answers at once")
    print(f"{'runners':>7} {'jobs/s':>8} {'x one':>6} {'claim p50 ms':>13} {'claim p99 ms':>13} "
          f"{'lock waits':>11} {'exactly once':>13}")
    for row in rows:
        print(f"{row['runners']:>7} {row['jobs_per_s']:>8} {row['jobs_per_s'] / base:>6.2f} {row['claim_p50_ms']:>13} "
              f"{row['claim_p99_ms']:>13} {row['lock_wait_samples']:>5}/{row['samples']:<5} {str(row['exactly_once']):>13}")
    print(json.dumps({**measured_on(), "jobs": args.jobs, "clients": args.clients, "concurrency": args.concurrency,
                      "rows": rows}))


if __name__ == "__main__":
    main()
