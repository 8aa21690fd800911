"""Start the application the way `make run` does, as a child process on a free loopback port.

Integration tests and benchmarks use it, so they exercise exactly the local run path
(`python -m serve_app.cli run` → Ray's `serve run` with the local Serve config).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
LOCAL_CONFIG = Path(__file__).with_name("serve_config.local.yaml")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scratch_database(workdir: Path) -> str:
    """SASTRE_DATABASE_URL when set, else a throw-away embedded PostgreSQL under `workdir`."""
    if os.environ.get("SASTRE_DATABASE_URL"):
        return os.environ["SASTRE_DATABASE_URL"]
    import pgserver

    return pgserver.get_server(workdir / "pg", cleanup_mode="delete").get_uri()


@dataclass(frozen=True)
class Launched:
    base_url: str
    startup_seconds: float
    pid: int  # the `serve_app.cli run` process; it leads the session every Ray process of the run is in
    metrics_url: str  # Ray's Prometheus endpoint: Serve's metrics and the service's (deployments/metrics.py)
    dashboard_url: str | None = None  # the Ray dashboard (and Serve's REST API), when started with one

    def processes(self, title: str) -> list[int]:
        """PIDs of this run's processes whose command line contains `title` (e.g. a replica's name)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.getsid(int(entry.name)) != self.pid:
                    continue
                if title in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except (OSError, ProcessLookupError):
                continue
        return found


@contextmanager
def serve(workdir: Path, args: dict, import_path: str = "serve_app.app:build_app",
          ready_path: str = "/health", startup_timeout: float = 240, *, dashboard: bool = False,
          app_options: dict | None = None, deployment_options: dict[str, dict] | None = None) -> Iterator[Launched]:
    """Start the app, wait for the first 200 on `ready_path`, yield where it is; stop it on exit.

    `args` are application settings (they also go to the child's environment as SASTRE_*); an
    `import_path` other than the app's runs that app instead, with default deployment options.
    `dashboard` starts Ray's dashboard (and Serve's REST API) on a free loopback port;
    `app_options` and `deployment_options` (by deployment name; a None value removes that key) change
    the local Serve config, e.g. to autoscale a deployment.
    """
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    config = yaml.safe_load(LOCAL_CONFIG.read_text())
    config["http_options"]["port"] = port
    app = config["applications"][0]
    app["import_path"] = import_path
    args = {**args, "public_base_url": base_url}
    app["args"] = args
    app.update(app_options or {})
    for deployment in app["deployments"]:
        for key, value in (deployment_options or {}).get(deployment["name"], {}).items():
            if value is None:
                deployment.pop(key, None)
            else:
                deployment[key] = value
    if import_path != "serve_app.app:build_app":
        app.pop("deployments")
        app.pop("args")
    path = workdir / f"config-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    metrics_port = free_port()
    # Behind HAProxy, Ray 2.60's ports are fixed by default: its stats and metrics frontends, and the Serve
    # proxy HAProxy forwards to (8500), which binds with SO_REUSEPORT. Two runs in one namespace (a test
    # module's own service beside the session's) then shared that port, and the kernel handed the second
    # run's requests to the first run's application. So each run gets free ones.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "SASTRE_METRICS_EXPORT_PORT": str(metrics_port),
           "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()), "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
           "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()), "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port()),
           **{f"SASTRE_{k.upper()}": str(v) for k, v in args.items()}}
    log_path = workdir / f"serve-{port}.log"
    log = log_path.open("wb")
    started = time.perf_counter()
    dashboard_port = free_port() if dashboard else None
    options = ["--dashboard-port", str(dashboard_port)] if dashboard_port else ["--no-dashboard"]
    process = subprocess.Popen([sys.executable, "-m", "serve_app.cli", "run", "--config", str(path), *options],
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    try:
        deadline = started + startup_timeout
        while True:
            if process.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"service did not become ready:\n{log_path.read_text()[-4000:]}")
            try:
                if httpx.get(base_url + ready_path, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        dashboard_url = f"http://127.0.0.1:{dashboard_port}" if dashboard_port else None
        yield Launched(base_url, time.perf_counter() - started, process.pid,
                       f"http://127.0.0.1:{metrics_port}/metrics", dashboard_url)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()
