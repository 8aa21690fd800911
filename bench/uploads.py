"""Ten concurrent 25 MP swatch uploads: what they cost the ingress, against the upload path as it was.

One server at a time, the same app under plain uvicorn (`bench/plain_app.py`'s setup) on the same
database, runs each upload path:
  before  the path as of commit ded9490 (loaded from git): the full-size picture decoded, rotated,
          converted, copied and re-encoded as stored (25 MP kept), any number of uploads at once;
  after   today's: JPEG `draft`, the decoded picture shrunk to 1024 px before anything else touches it,
          at most `SASTRE_UPLOAD_DECODE_SLOTS` decodes at once (503 + Retry-After past them).
Ten clients each upload a 5000x5000 PNG (a woven pattern that compresses to ~190 KB, as photos of
cloth with flat light do) at once, retrying after `Retry-After` on a 503 until it is taken, while one
client polls `GET /catalog` back to back. Reported per path: the server's extra RSS (its peak while
uploading minus its RSS just before, sampled every 10 ms from /proc), `/catalog` p50 during the
uploads against the same server's idle p50 (measured just before, a ratio), the wall time until all
ten were stored, and the 503s the clients retried.

Run: `make bench-uploads` (or `python bench/uploads.py`; SASTRE_DATABASE_URL to use a running
PostgreSQL, else an embedded one starts). Prints a table and one JSON line. On the 2-core dev VM the
load generator and the server share the cores: compare the ratios, not the milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import signal
import subprocess
import sys
import threading
import time
import types
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
from PIL import Image

from figures import measured_on, percentile

BASELINE_COMMIT = "ded9490"  # the last commit before uploads were downscaled and their decodes bounded
ROOT = Path(__file__).resolve().parents[1]
UPLOADS = 10
SIDE = 5000


def cloth_png(side: int = SIDE) -> bytes:
    """A `side` x `side` twill-like weave in two browns: 25 MP that compress to ~190 KB as PNG."""
    yy, xx = np.mgrid[0:side, 0:16]
    twill = ((xx + yy) // 4 % 2).astype(bool)
    row = np.where(twill[..., None], np.array((110, 70, 40), np.uint8), np.array((88, 56, 32), np.uint8))
    pixels = np.tile(row, (1, side // 16 + 1, 1))[:, :side]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), "RGB").save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def serve_with(path: str, port: int) -> None:
    """The server role (a subprocess): the app under uvicorn, its uploads cleaned by `path`'s code."""
    import uvicorn

    from catalog.data import load_catalog
    from deployments.storage import open_storage
    from serve_app.bootstrap import resolve_jwt_secret
    from serve_app.deps import Services, ingress_sessions
    from serve_app.settings import Settings
    from serve_app.uploads import routes
    from serve_app.web import create_app, freeze_startup_heap

    if path == "before":
        source = subprocess.run(["git", "show", f"{BASELINE_COMMIT}:serve_app/uploads/service.py"], cwd=ROOT,
                                check=True, capture_output=True, text=True).stdout
        before = sys.modules["uploads_service_before"] = types.ModuleType("uploads_service_before")
        exec(compile(source, f"{BASELINE_COMMIT}:serve_app/uploads/service.py", "exec"), before.__dict__)

        async def clean_as_before(services: Services, data: bytes):
            return await asyncio.to_thread(before.sanitize_image, data, services.settings.upload_max_pixels)

        routes.clean_upload = clean_as_before  # the route's one call into the cleaning code
    settings = Settings()
    services = Services(settings=settings, sessions=ingress_sessions(settings, settings.database_url),
                        storage=open_storage(settings.storage_config()), catalog=load_catalog(),
                        jwt_secret=resolve_jwt_secret(settings))
    app = create_app(services)
    freeze_startup_heap()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


@contextmanager
def server(path: str, env: dict):
    from serve_app.launcher import free_port

    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--serve", path, str(port)], env=env, cwd=ROOT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if process.poll() is not None:
                raise RuntimeError(f"the {path} server exited with {process.returncode}")
            try:
                if httpx.get(f"{base_url}/livez", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield base_url, process.pid
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class PeakRss:
    """The highest RSS of `pid` while it is entered, sampled every 10 ms on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self._stop.wait(0.01)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


async def catalog_p50(client: httpx.AsyncClient, until: asyncio.Event | None = None, count: int = 60) -> tuple[float, int]:
    """p50 in ms of GET /catalog back to back: `count` requests, or until `until` is set."""
    latencies = []
    while (until is None and len(latencies) < count) or (until is not None and not until.is_set()):
        started = time.perf_counter()
        response = await client.get("/catalog")
        response.raise_for_status()
        latencies.append(time.perf_counter() - started)
    return percentile(latencies, 0.5) * 1e3, len(latencies)


async def upload_until_stored(client: httpx.AsyncClient, data: bytes) -> tuple[int, dict]:
    """One client's upload, retried after `Retry-After` on a 503: (503s seen, the stored swatch's answer)."""
    refused = 0
    while True:
        response = await client.post("/upload-swatch", files={"file": ("cloth.png", data, "image/png")})
        if response.status_code != 503:
            assert response.status_code == 201, response.text
            return refused, response.json()
        refused += 1
        await asyncio.sleep(float(response.headers["retry-after"]))


async def measure(base_url: str, pid: int, data: bytes) -> dict:
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        await upload_until_stored(client, data)  # warm: first imports, pools, allocator arenas
        await catalog_p50(client, count=20)
        idle_p50, _ = await catalog_p50(client)
        idle_rss = rss_mb(pid)
        done = asyncio.Event()
        with PeakRss(pid) as peak:
            started = time.perf_counter()
            polling = asyncio.create_task(catalog_p50(client, until=done))
            uploads = await asyncio.gather(*(upload_until_stored(client, data) for _ in range(UPLOADS)))
            wall = time.perf_counter() - started
            done.set()
            busy_p50, polled = await polling
        stored = await client.get(urlsplit(uploads[0][1]["swatch_url"]).path)  # URLs name the public base URL
        with Image.open(io.BytesIO(stored.content)) as image:
            stored_size = image.size
    return {"extra_rss_mb": round(peak.peak - idle_rss, 1), "idle_rss_mb": round(idle_rss, 1),
            "catalog_idle_p50_ms": round(idle_p50, 1), "catalog_busy_p50_ms": round(busy_p50, 1),
            "catalog_ratio": round(busy_p50 / idle_p50, 2), "catalog_requests": polled,
            "uploads_wall_s": round(wall, 2), "retried_503": sum(refused for refused, _ in uploads),
            "stored_px": f"{stored_size[0]}x{stored_size[1]}", "stored_kb": round(len(stored.content) / 1024, 1)}


def main() -> None:
    from harness import as_environment, run_directory
    from serve_app.bootstrap import prepare
    from serve_app.launcher import scratch_database
    from serve_app.settings import Settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", nargs=2, metavar=("PATH", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_with(args.serve[0], int(args.serve[1]))
        return
    workdir = run_directory("bench-uploads")
    settings = {"database_url": scratch_database(workdir), "data_dir": str(workdir / "data"),
                "rate_limit_upload": "100000/minute"}
    prepare(Settings(**settings))
    env = as_environment(settings)
    data = cloth_png()
    results = {}
    for path in ("before", "after"):
        with server(path, env) as (base_url, pid):
            results[path] = asyncio.run(measure(base_url, pid, data))
    print(f"{UPLOADS} concurrent uploads of a {SIDE}x{SIDE} PNG ({len(data) / 1024:.0f} KB) under plain uvicorn")
    print(f"{'path':7} {'extra RSS MB':>12} {'/catalog p50 idle→busy ms':>26} {'÷ idle':>7} {'wall s':>7} "
          f"{'503s':>5} {'stored':>10}")
    for path, r in results.items():
        print(f"{path:7} {r['extra_rss_mb']:12.0f} {r['catalog_idle_p50_ms']:12.1f} → {r['catalog_busy_p50_ms']:<11.1f} "
              f"{r['catalog_ratio']:7.2f} {r['uploads_wall_s']:7.1f} {r['retried_503']:5d} {r['stored_px']:>10}")
    before, after = results["before"], results["after"]
    print(f"after ÷ before: extra RSS {after['extra_rss_mb'] / before['extra_rss_mb']:.2f}, "
          f"/catalog busy p50 {after['catalog_busy_p50_ms'] / before['catalog_busy_p50_ms']:.2f}, "
          f"wall {after['uploads_wall_s'] / before['uploads_wall_s']:.2f}")
    print(json.dumps({**measured_on(),
                      "png_bytes": len(data), "uploads": UPLOADS, "results": results}))


if __name__ == "__main__":
    main()
