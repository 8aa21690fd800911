"""First service baseline (tiny-random profile, CPU): startup, POST latency, 2-cut job latency.

Each figure is printed beside a baseline measured in the same run, as a ratio:
- startup to healthy        vs. a one-route Ray Serve app started the same way (Ray's own floor);
- POST /generate latency    vs. GET /livez through the same proxy (the proxy's floor);
- POST → completed, 2 cuts  vs. the same two cuts through the same render chain in-process
                              (`RenderChain.in_process`: the plain worker classes, cuts rendered
                              concurrently as the runner does), no Ray, no DB.

Run: `make bench` (or `python bench/e2e_latency.py --jobs 20`). Prints a table and one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time

import httpx

from figures import measured_on, percentile
from harness import job_seconds, options, run_directory, tiny_service
from serve_app.launcher import serve

NAVY = {"family_id": "lana-fria", "color_id": "lana-fria-azul-marino"}


def in_process_two_cuts(size: int, repeats: int) -> list[float]:
    """The work of one 2-cut job without the service around it: the runner's render chain, in-process."""
    from catalog.data import load_catalog
    from catalog.prompts import build_prompt
    from catalog.swatches import render_swatch
    from deployments.finishing import JpegFinisher
    from deployments.generation import CutGenerator, SdxlTurboModel
    from deployments.preprocessing import ControlMapper
    from deployments.rendering import CutTask, RenderChain
    from deployments.storage import LocalStorage

    catalog = load_catalog()
    storage = LocalStorage(tempfile.mkdtemp(), "http://127.0.0.1/media")
    storage.put("swatches/095T-0121.png", render_swatch("#1F2A44", "095T-0121"), "image/png")
    model = SdxlTurboModel.from_profile("tiny-random", device="cpu")
    chain = RenderChain.in_process(ControlMapper(), CutGenerator(model, storage), JpegFinisher(storage), "canny", size,
                                   stage_timeout_s=300)

    async def job(run: int) -> None:
        await asyncio.gather(*(chain.render(CutTask(
            job_id=f"bench-{run}", cut=c.cut_id, prompt=build_prompt(c.prompt, "fine worsted cool wool", "navy blue"),
            template_png=c.template_png(), swatch_key="swatches/095T-0121.png", seed=run * 2 + i,
            result_key=f"generated/x/{run}/{c.cut_id}.jpg",
        )) for i, c in enumerate(catalog.cuts)))

    times = []
    for run in range(repeats + 1):
        started = time.perf_counter()
        asyncio.run(job(run))
        if run:  # the first run warms caches, as the service's first job does
            times.append(time.perf_counter() - started)
    return times


def job_latencies(client: httpx.Client, jobs: int) -> list[float]:
    times = [job_seconds(client, {**NAVY, "cuts": ["recto", "cruzado"], "seed": seed}, 0.01)[0]
             for seed in range(jobs + 1)]
    return times[1:]  # the first job warms the replicas


def request_latencies(client: httpx.Client, method: str, path: str, n: int, body: dict | None = None) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.request(method, path, json=body)
        times.append(time.perf_counter() - started)
        assert response.status_code < 300, response.text
    return times


def main() -> None:
    args = options(jobs=(20, "2-cut jobs for the end-to-end median"), posts=50, size=512)
    workdir = run_directory("bench")
    settings = tiny_service(workdir, args.size, poll_seconds=0.5)

    baseline_job = in_process_two_cuts(args.size, args.jobs)
    with serve(workdir, settings, import_path="bench.trivial_app:app", ready_path="/livez") as trivial:
        trivial_start = trivial.startup_seconds
    with serve(workdir, settings) as launched:
        startup = launched.startup_seconds
        with httpx.Client(base_url=launched.base_url, timeout=60) as client:
            jobs = job_latencies(client, args.jobs)
            live = request_latencies(client, "GET", "/livez", args.posts)
            posts = request_latencies(client, "POST", "/generate", args.posts, {**NAVY, "cuts": ["recto"]})

    rows = [
        ("startup to healthy (s)", startup, trivial_start, "one-route Serve app startup"),
        ("POST /generate p50 (ms)", statistics.median(posts) * 1e3, statistics.median(live) * 1e3, "GET /livez p50"),
        ("POST /generate p99 (ms)", percentile(posts, 0.99) * 1e3, percentile(live, 0.99) * 1e3, "GET /livez p99"),
        ("2-cut job, POST→completed p50 (ms)", statistics.median(jobs) * 1e3, statistics.median(baseline_job) * 1e3,
         "same 2 cuts in-process"),
    ]
    print(f"{'figure':38} {'ours':>10} {'baseline':>10} {'ratio':>7}  baseline is")
    for name, ours, base, what in rows:
        print(f"{name:38} {ours:10.1f} {base:10.1f} {ours / base:7.2f}  {what}")
    print(json.dumps({
        **measured_on(), "size": args.size,
        "jobs": args.jobs, "posts": args.posts,
        "figures": {name: {"ours": round(ours, 2), "baseline": round(base, 2), "ratio": round(ours / base, 2)}
                    for name, ours, base, _ in rows},
    }))


if __name__ == "__main__":
    main()
