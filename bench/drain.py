"""Draining a backlog: cuts/s through the service beside the same cuts computed in one process.

Both sides render the same N one-cut jobs (the catalog's cuts in turn, one catalog color, seeds
0..N-1, tiny-random profile, `--size` px):
- in-process  the model class the generator replica wraps (`SdxlTurboModel`), fed in batches of the
              service's `max_batch_size`, control maps and the swatch prepared once beforehand, as the
              replicas cache them: what the cuts cost without the service around them;
- service     the application as `make run` starts it (`serve_app.launcher.serve`): all N jobs POSTed,
              timed from the first POST until the database shows every job completed (read straight
              from PostgreSQL, so polling does not load the ingress). The service also watermarks,
              encodes and stores each image, and shares the cores with the runner, the proxy and
              PostgreSQL: that, and our own per-cut work, is what the ratio shows.

A warm-up job of each cut runs first on both sides (replica start-up, caches), untimed.

Run: `make bench-drain` (or `python bench/drain.py --jobs 100`). Prints a table and one JSON line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine, func, select

from catalog.data import load_catalog
from catalog.prompts import build_prompt
from catalog.swatches import render_swatch
from db.models import GenerationJob
from figures import measured_on
from harness import options, run_directory, tiny_service
from serve_app.launcher import serve
from serve_app.settings import Settings

NAVY = {"family_id": "lana-fria", "color_id": "lana-fria-azul-marino"}
NAVY_WORDS = ("fine worsted cool wool", "navy blue")  # the catalog's words for NAVY, as the runner builds them


def in_process(jobs: int, size: int, batch_size: int) -> float:
    """Seconds for `jobs` one-cut renders through `SdxlTurboModel` alone, after a warm-up batch."""
    from deployments.generation import CutRequest, SdxlTurboModel
    from deployments.preprocessing import ControlMapper

    cuts = load_catalog().cuts
    mapper = ControlMapper()
    controls = {c.cut_id: mapper.control_map(c.template_png(), c.cut_id, "canny", size) for c in cuts}
    swatch = render_swatch("#1F2A44", "095T-0121")
    requests = [CutRequest(build_prompt(c.prompt, *NAVY_WORDS), controls[c.cut_id], swatch, seed)
                for seed, c in ((seed, cuts[seed % len(cuts)]) for seed in range(jobs))]
    model = SdxlTurboModel.from_profile("tiny-random", device="cpu")
    model.generate(requests[:len(cuts)])  # warm-up: prompt and swatch embeddings, allocator
    started = time.perf_counter()
    for start in range(0, jobs, batch_size):
        model.generate(requests[start:start + batch_size])
    return time.perf_counter() - started


def completed(engine, job_ids: list[str]) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).where(GenerationJob.job_id.in_(job_ids),
                                                      GenerationJob.status.in_(("completed", "failed"))))


def through_service(jobs: int, size: int, workdir: Path, timeout: float) -> float:
    """Seconds from the first of `jobs` POSTs until every one of those jobs is finished."""
    settings = tiny_service(workdir, size, poll_seconds=0.5)
    cuts = [c.cut_id for c in load_catalog().cuts]
    engine = create_engine(settings["database_url"].replace("postgresql://", "postgresql+psycopg://", 1))
    with serve(workdir, settings) as launched, httpx.Client(base_url=launched.base_url, timeout=60) as client:
        def post(cut: str, seed: int) -> str:
            response = client.post("/generate", json={**NAVY, "cuts": [cut], "seed": seed})
            assert response.status_code == 202, response.text
            return response.json()["job_id"]

        warm = [post(cut, 10_000 + i) for i, cut in enumerate(cuts)]
        wait_for(engine, warm, timeout)
        started = time.perf_counter()
        job_ids = [post(cuts[seed % len(cuts)], seed) for seed in range(jobs)]
        wait_for(engine, job_ids, timeout)
        elapsed = time.perf_counter() - started
        with engine.connect() as conn:
            failed = conn.scalar(select(func.count()).where(GenerationJob.job_id.in_(job_ids),
                                                            GenerationJob.status != "completed"))
        assert failed == 0, f"{failed} of the {jobs} jobs did not complete"
    engine.dispose()
    return elapsed


def wait_for(engine, job_ids: list[str], timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while completed(engine, job_ids) < len(job_ids):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"jobs still unfinished after {timeout:g} s")
        time.sleep(0.1)


def main() -> None:
    args = options(jobs=(100, "one-cut jobs in the backlog"), size=512,
                   timeout=(900.0, "seconds to wait for the service to drain"))
    workdir = run_directory("drain")
    batch_size = Settings.model_fields["max_batch_size"].default

    local = in_process(args.jobs, args.size, batch_size)
    service = through_service(args.jobs, args.size, workdir, args.timeout)
    ours, base = args.jobs / service, args.jobs / local
    print(f"{'figure':34} {'service':>9} {'in-process':>11} {'ratio':>7}")
    print(f"{'cuts/s draining ' + str(args.jobs) + ' one-cut jobs':34} {ours:9.2f} {base:11.2f} {ours / base:7.2f}")
    print(json.dumps({
        **measured_on(), "size": args.size,
        "jobs": args.jobs, "batch_size": batch_size, "service_s": round(service, 2), "in_process_s": round(local, 2),
        "service_cuts_per_s": round(ours, 2), "in_process_cuts_per_s": round(base, 2), "ratio": round(ours / base, 2),
    }))


if __name__ == "__main__":
    main()
