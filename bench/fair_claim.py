"""The fair claim's cost beside the FIFO claim it replaced, on the same table in the same run.

A scratch database gets `--pending` pending one-cut jobs spread over `--clients` clients (and
`--finished` finished rows, the table's usual bulk), then each statement claims `--limit` jobs
`--runs` times, every claim rolled back so each run sees the same table. Prints the median and p90
of both and their ratio, and the fair claim's `EXPLAIN (ANALYZE, BUFFERS)`.

Run: `SASTRE_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/fair_claim.py`
(any PostgreSQL you may create a database in; it is dropped afterwards).
"""

from __future__ import annotations

import json
import statistics
import time

from sqlalchemy import func, select, text, update

from db import jobs
from db.models import GenerationJob
from harness import options, scratch_sessions


def fifo_claim(session, owner: str, limit: int, lease_seconds: float):
    """The claim before fair share (ded9490), for the baseline: oldest due jobs first, whoever queued them."""
    due = (select(GenerationJob.id)
           .where(GenerationJob.status == "pending", GenerationJob.next_attempt_at <= func.now())
           .order_by(GenerationJob.next_attempt_at, GenerationJob.created_at, GenerationJob.id)
           .limit(limit).with_for_update(skip_locked=True).scalar_subquery())
    return session.scalars(update(GenerationJob).where(GenerationJob.id.in_(due))
                           .values(status="processing", attempts=GenerationJob.attempts + 1, lease_owner=owner,
                                   lease_expires_at=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, lease_seconds))
                           .returning(GenerationJob).execution_options(synchronize_session=False)).all()


def timed(sessions, claim, limit: int, runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        with sessions() as session:
            started = time.perf_counter()
            claimed = claim(session, "bench", limit, 30)
            seconds.append(time.perf_counter() - started)
            assert len(claimed) == limit
            session.rollback()
    return seconds


def main() -> None:
    args = options(pending=10_000, clients=50, finished=100_000, limit=16, runs=50)
    with scratch_sessions() as (engine, sessions):
        with sessions.begin() as session:
            session.execute(text("""
                INSERT INTO generation_jobs (job_id, status, family_id, color_id, cuts, seed, client, cut_progress,
                                             completed_at)
                SELECT gen_random_uuid()::text, CASE WHEN i <= :finished THEN 'completed' ELSE 'pending' END, 'f', 'c',
                       '["recto"]', i, '10.0.' || (i % :clients) || '.1', '{}',
                       CASE WHEN i <= :finished THEN now() END
                FROM generate_series(1, :finished + :pending) AS i"""),
                {"finished": args.finished, "pending": args.pending, "clients": args.clients})
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE generation_jobs"))
        fifo = timed(sessions, fifo_claim, args.limit, args.runs)
        fair = timed(sessions, jobs.claim_jobs, args.limit, args.runs)
        captured = []
        from sqlalchemy import event

        event.listen(engine, "before_cursor_execute", lambda *a: captured.append((a[2], a[3])))
        with sessions() as session:
            jobs.claim_jobs(session, "bench", args.limit, 30)
            session.rollback()
        statement, params = next(c for c in captured if c[0].lstrip().startswith(("WITH", "UPDATE")))
        with engine.connect() as conn:
            cursor = conn.connection.driver_connection.cursor()
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            conn.rollback()
    print(plan)
    figures = {"pending": args.pending, "clients": args.clients, "finished": args.finished, "limit": args.limit,
               "fifo_p50_ms": statistics.median(fifo) * 1000, "fair_p50_ms": statistics.median(fair) * 1000,
               "fifo_p90_ms": statistics.quantiles(fifo, n=10)[-1] * 1000,
               "fair_p90_ms": statistics.quantiles(fair, n=10)[-1] * 1000}
    figures["fair_over_fifo_p50"] = figures["fair_p50_ms"] / figures["fifo_p50_ms"]
    print(f"claim {args.limit} of {args.pending} pending ({args.clients} clients, {args.finished} finished rows): "
          f"FIFO p50 {figures['fifo_p50_ms']:.2f} ms, fair p50 {figures['fair_p50_ms']:.2f} ms "
          f"({figures['fair_over_fifo_p50']:.1f}x)")
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
