"""What the ageing's result-key index costs the runner's hottest write, beside the same write without it.

Ageing deletes an image only once no job names it, and asks that through a GIN index on the keys in
`cut_progress` (`ix_generation_jobs_result_keys`, migration 0009). Every progress write of a cut
(`jobs.record_cut`, two per cut) then also updates that index, and is no longer a HOT update. This
times `--writes` progress writes on `--jobs` processing jobs, alternately with the index and without it
(dropped and created again, two rounds each), in one scratch database, and prints both medians and
their ratio.

Run: `SASTRE_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/result_key_index.py`
"""

from __future__ import annotations

import json
import statistics
import time

from sqlalchemy import text

from db import fabrics, jobs
from harness import options, scratch_sessions

INDEX = ("CREATE INDEX ix_generation_jobs_result_keys ON generation_jobs "
         "USING gin (jsonb_path_query_array(cut_progress, '$.*.key'))")


def time_writes(sessions, leases: list[jobs.Lease], writes: int, label: str) -> list[float]:
    seconds = []
    for index in range(writes):
        lease = leases[index % len(leases)]
        entry = {"status": "completed", "seed": 1, "key": f"generated/f/c/{label}-{index}/recto.jpg", "attempt": 1}
        started = time.perf_counter()
        with sessions.begin() as session:
            assert jobs.record_cut(session, lease, "recto", entry) is not None
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    args = options(jobs=200, finished=50_000, writes=2000)
    with scratch_sessions() as (engine, sessions):
        with sessions.begin() as session:
            session.execute(text("""
                INSERT INTO generation_jobs (job_id, status, family_id, color_id, cuts, seed, cut_progress, completed_at)
                SELECT gen_random_uuid()::text, 'completed', 'f', 'c', '["recto"]', i,
                       jsonb_build_object('recto', jsonb_build_object('status', 'completed',
                                                                      'key', 'generated/f/c/' || i || '/recto.jpg')),
                       now()
                FROM generate_series(1, :n) AS i"""), {"n": args.finished})
            family = fabrics.add_family(session, family_id="f", display_name="f", fabric="worsted wool")
            fabrics.add_color(session, family, color_id="c", name="c", english="navy blue", hex_value="#1F2A44")
            for _ in range(args.jobs):  # create_job queues a job only for an active color of an active family
                jobs.create_job(session, family_id="f", color_id="c", cuts=["recto"], seed=1)
        with sessions.begin() as session:
            leases = [jobs.lease_of(job) for job in jobs.claim_jobs(session, "bench", args.jobs, 600)]
        time_writes(sessions, leases, args.writes // 4, "warm-up")
        with_index, without_index = [], []
        for round_ in range(2):  # alternated, so neither side gets only the cold or only the warm cache
            with_index += time_writes(sessions, leases, args.writes // 2, f"with-{round_}")
            with engine.begin() as conn:
                conn.execute(text("DROP INDEX ix_generation_jobs_result_keys"))
            without_index += time_writes(sessions, leases, args.writes // 2, f"without-{round_}")
            with engine.begin() as conn:
                conn.execute(text(INDEX))
    figures = {"with_index_p50_ms": statistics.median(with_index) * 1000,
               "without_index_p50_ms": statistics.median(without_index) * 1000}
    figures["ratio"] = figures["with_index_p50_ms"] / figures["without_index_p50_ms"]
    print(f"record_cut p50: {figures['with_index_p50_ms']:.2f} ms with the result-key index, "
          f"{figures['without_index_p50_ms']:.2f} ms without ({figures['ratio']:.2f}x)")
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
