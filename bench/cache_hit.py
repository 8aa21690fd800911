"""A cache-hit job's POST → completed time beside a rendered one's, on the local cluster, in one run.

For each of `--jobs` seeds: a 2-cut job nobody asked for before (rendered: the baseline), then the very
same request again (served from the render cache). Both are timed the same way, POST until GET
/jobs/{id} says completed, polling every `--poll-ms`, and the hit is checked to be one
(`progress[].cached`). Tiny-random profile, CPU.

Run: `make bench-cache BENCH_ARGS="--jobs 20"`. Prints a table and one JSON line.
"""

from __future__ import annotations

import json
import statistics

import httpx

from figures import measured_on, percentile
from harness import job_seconds, options, run_directory, tiny_service
from serve_app.launcher import serve

NAVY = {"family_id": "lana-fria", "color_id": "lana-fria-azul-marino"}


def main() -> None:
    args = options(jobs=(20, "pairs of (rendered, cached) 2-cut jobs"), size=512, poll_ms=5.0)
    workdir = run_directory("bench")
    settings = tiny_service(workdir, args.size, poll_seconds=0.5)
    rendered, cached = [], []
    with serve(workdir, settings, startup_timeout=600) as launched, \
            httpx.Client(base_url=launched.base_url, timeout=120) as client:
        for seed in range(args.jobs + 1):
            body = {**NAVY, "cuts": ["recto", "cruzado"], "seed": 100 + 2 * seed}
            first, job = job_seconds(client, body, args.poll_ms / 1e3)
            assert job["status"] == "completed" and not any(p["cached"] for p in job["progress"]), job
            again, job = job_seconds(client, body, args.poll_ms / 1e3)
            assert job["status"] == "completed" and all(p["cached"] for p in job["progress"]), job
            if seed:  # the first pair warms the replicas, as the service's first job does
                rendered.append(first)
                cached.append(again)

    rows = [
        ("2-cut job POST→completed p50 (ms)", statistics.median(cached) * 1e3, statistics.median(rendered) * 1e3),
        ("2-cut job POST→completed p90 (ms)", percentile(cached, 0.9) * 1e3, percentile(rendered, 0.9) * 1e3),
    ]
    print(f"{'figure':36} {'cache hit':>10} {'rendered':>10} {'ratio':>7}")
    for name, hit, miss in rows:
        print(f"{name:36} {hit:10.1f} {miss:10.1f} {hit / miss:7.2f}")
    print(json.dumps({
        **measured_on(), "size": args.size,
        "jobs": args.jobs, "poll_ms": args.poll_ms,
        "figures": {name: {"cache_hit": round(hit, 1), "rendered": round(miss, 1), "ratio": round(hit / miss, 3)}
                    for name, hit, miss in rows},
    }))


if __name__ == "__main__":
    main()
