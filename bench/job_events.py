"""Live progress by server-sent events vs polling, on the real service (tiny-random profile, CPU).

Two figures, each beside its baseline from the same run, as a ratio:
- requests per completed job: `--jobs` two-cut jobs followed with GET /jobs/{id}/events (an EventSource:
  one request, plus a resume with Last-Event-ID if the server closes the stream before the end) vs as
  many jobs polled with GET /jobs/{id} every 2 s (a request at once, then one every 2 s until final).
  Both halves are submitted together, interleaved, so they see the same queue and the same machine.
- p99 of GET /jobs/{id} under a polling load (`--clients` clients back to back, `--seconds` each) with
  0 event streams open, then `--streams` streams held open, then 0 again. The streams follow jobs that
  cannot finish meanwhile: the generator is stalled with the service's test-only fault injection
  (`fault_stall_file`), so they stay open and idle, as a shop's customers waiting on a busy queue would.

Run: `make bench-events` (or `python bench/job_events.py --jobs 20 --streams 200`). Prints a table and
one JSON line. The load generator shares the machine's cores with the service: the ratios are what to
compare.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

import aiohttp

from figures import closed_loop, measured_on
from harness import options, run_directory, tiny_service
from serve_app.generation.event_stream import EventStreamReader
from serve_app.launcher import serve

TWO_CUTS = {"family_id": "lana-fria", "color_id": "lana-fria-azul-marino", "cuts": ["recto", "cruzado"]}
FINAL = ("completed", "failed", "canceled", "expired")
POLL_SECONDS = 2.0




async def read_events(response: aiohttp.ClientResponse, on_event=None) -> list[dict]:
    """The `data` events of one stream until the server closes it."""
    events, reader = [], EventStreamReader()
    async for line in response.content:
        event = reader.line(line)
        if event is not None and "data" in event:
            events.append(event)
            if on_event:
                on_event(event)
    return events


async def follow_by_events(session: aiohttp.ClientSession, job_id: str) -> tuple[int, str]:
    """An EventSource: returns (requests made, final status)."""
    requests, last_id = 0, None
    while True:
        requests += 1
        headers = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
        async with session.get(f"/jobs/{job_id}/events", headers=headers) as response:
            if response.status == 204:
                raise RuntimeError("204 before a final state was seen")
            response.raise_for_status()
            events = await read_events(response)
        if events:
            last_id = events[-1]["id"]
            if events[-1]["data"]["status"] in FINAL:
                return requests, events[-1]["data"]["status"]


async def follow_by_polling(session: aiohttp.ClientSession, job_id: str) -> tuple[int, str]:
    requests = 0
    while True:
        requests += 1
        async with session.get(f"/jobs/{job_id}") as response:
            status = (await response.json())["status"]
        if status in FINAL:
            return requests, status
        await asyncio.sleep(POLL_SECONDS)


async def requests_per_job(base_url: str, jobs: int) -> dict:
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(base_url, timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one(index: int) -> tuple[str, int, str, float]:
            started = time.perf_counter()
            async with session.post("/generate", json={**TWO_CUTS, "seed": 1000 + 2 * index}) as response:
                job_id = (await response.json())["job_id"]
            mode = "sse" if index % 2 == 0 else "poll"
            follow = follow_by_events if mode == "sse" else follow_by_polling
            requests, status = await follow(session, job_id)
            return mode, requests, status, time.perf_counter() - started

        done = await asyncio.gather(*(one(i) for i in range(2 * jobs)))
    out = {}
    for mode in ("sse", "poll"):
        rows = [d for d in done if d[0] == mode]
        out[mode] = {"jobs": len(rows), "completed": sum(d[2] == "completed" for d in rows),
                     "requests": sum(d[1] for d in rows), "per_job": round(statistics.mean(d[1] for d in rows), 2),
                     "job_seconds_mean": round(statistics.mean(d[3] for d in rows), 1)}
    return out


async def poll_load(base_url: str, job_ids: list[str], clients: int, seconds: float) -> dict:
    async def poll(session: aiohttp.ClientSession, index: int, n: int) -> aiohttp.ClientResponse:
        return await session.get(f"/jobs/{job_ids[(index + n) % len(job_ids)]}")

    return await closed_loop(base_url, clients, seconds, poll, ok_below=201)


async def p99_with_streams(base_url: str, stall_file: Path, streams: int, clients: int, seconds: float) -> dict:
    stall_file.touch()  # from now on no job can finish: its streams stay open
    async with aiohttp.ClientSession(base_url) as session:
        job_ids = []
        for i in range(streams):
            async with session.post("/generate", json={**TWO_CUTS, "seed": 5000 + 2 * i}) as response:
                job_ids.append((await response.json())["job_id"])
    results = {"streams_0": await poll_load(base_url, job_ids, clients, seconds)}

    opened = asyncio.Event()
    first_events = 0

    def counted(_event) -> None:
        nonlocal first_events
        first_events += 1
        if first_events >= streams:
            opened.set()

    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(base_url, timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        async def hold(job_id: str) -> list[dict]:
            async with session.get(f"/jobs/{job_id}/events") as response:
                response.raise_for_status()
                return await read_events(response, counted)

        holders = [asyncio.create_task(hold(job_id)) for job_id in job_ids]
        await asyncio.wait_for(opened.wait(), timeout=120)
        results[f"streams_{streams}"] = await poll_load(base_url, job_ids, clients, seconds)
        still_open = sum(not h.done() for h in holders)
        for holder in holders:
            holder.cancel()
        await asyncio.gather(*holders, return_exceptions=True)
    results[f"streams_{streams}"]["streams_open_throughout"] = still_open
    results["streams_0_again"] = await poll_load(base_url, job_ids, clients, seconds)
    stall_file.unlink()
    return results


def main() -> None:
    args = options(jobs=(20, "two-cut jobs per mode (SSE, polling)"), streams=200,
                   clients=(20, "polling clients for the p99 figure"), seconds=10.0, image_size=128)
    workdir = run_directory("events-bench")
    stall_file = workdir / "stall-generator"
    settings = tiny_service(workdir, args.image_size, max_pending_jobs=100_000, fault_stall_file=str(stall_file))
    with serve(workdir, settings) as launched:
        started = time.perf_counter()
        per_job = asyncio.run(requests_per_job(launched.base_url, args.jobs))
        per_job_seconds = time.perf_counter() - started
        p99 = asyncio.run(p99_with_streams(launched.base_url, stall_file, args.streams, args.clients, args.seconds))

    sse, poll = per_job["sse"], per_job["poll"]
    print(f"Requests per completed job, {args.jobs} two-cut jobs each way, submitted together "
          f"({per_job_seconds:.0f} s):")
    print(f"{'':22} {'jobs done':>9} {'requests':>9} {'per job':>8} {'job s':>6}")
    for name, row in (("SSE (events)", sse), (f"polling every {POLL_SECONDS:.0f} s", poll)):
        print(f"{name:22} {row['completed']:9d} {row['requests']:9d} {row['per_job']:8.2f} {row['job_seconds_mean']:6.1f}")
    print(f"polling ÷ SSE: {poll['per_job'] / sse['per_job']:.1f}× the requests")
    print()
    print(f"GET /jobs/{{id}} under {args.clients} polling clients, {args.seconds:.0f} s each:")
    print(f"{'open streams':22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, row in p99.items():
        print(f"{name.replace('streams_', '').replace('_again', ' (again)'):22} {row['rps']:8.1f} "
              f"{row['p50_ms']:8.1f} {row['p99_ms']:8.1f} {row['errors']:7d}")
    held = p99[f"streams_{args.streams}"]
    baseline = statistics.mean([p99["streams_0"]["p99_ms"], p99["streams_0_again"]["p99_ms"]])
    print(f"p99 with {args.streams} streams ÷ p99 with none (mean of before and after): "
          f"{held['p99_ms'] / baseline:.2f}; streams still open at the end: {held['streams_open_throughout']}"
          f"/{args.streams}")
    print(json.dumps({**measured_on(),
                      "jobs": args.jobs, "image_size": args.image_size, "requests_per_job": per_job,
                      "poll_over_sse": round(poll["per_job"] / sse["per_job"], 2), "poll_latency": p99,
                      "p99_ratio": round(held["p99_ms"] / baseline, 3)}))


if __name__ == "__main__":
    main()
