"""Start the application the way `make run` does, as a child process on a free loopback port.

Integration tests and benchmarks use it, so they exercise exactly the local run path
(`python -m serve_app.cli run` → Ray's `serve run` with the local Serve config).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
LOCAL_CONFIG = Path(__file__).with_name("serve_config.local.yaml")


# Ray's default worker ports are 10002-19999; the kernel's ephemeral range (32768-60999 here) is where
# every outgoing connection takes its local port. A port the kernel handed out for us to listen on
# later could meanwhile be the source port of one of Ray's hundreds of loopback connections, and a
# server binding it then fails ("Address already in use": HAProxy did, six retries in a row).
# So listening ports come from the gap between the two.
PORTS_FROM = 20000


def ephemeral_ports() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A loopback port free now, outside Ray's worker ports and the kernel's ephemeral range."""
    low = ephemeral_ports()[0]
    candidates = list(range(PORTS_FROM, low)) if low > PORTS_FROM + 100 else []
    random.shuffle(candidates)
    for port in candidates[:200]:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # an unusual port range: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scratch_database(workdir: Path) -> str:
    """SASTRE_DATABASE_URL when set, else a throw-away embedded PostgreSQL under `workdir`."""
    if os.environ.get("SASTRE_DATABASE_URL"):
        return os.environ["SASTRE_DATABASE_URL"]
    import pgserver

    return pgserver.get_server(workdir / "pg", cleanup_mode="delete").get_uri()


def session_processes(leader: int) -> dict[int, list[str]]:
    """The live processes of the session `leader` leads (a run's Ray head, workers, raylet, GCS,
    dashboard, HAProxy and the namespace bridge all stay in it), each with its command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != leader or (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            found[int(entry.name)] = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, ProcessLookupError, IndexError):
            continue
    return found


def scratch_of(command_lines: list[list[str]]) -> set[Path]:
    """The temporary folders a run's command lines name: Ray's session folder (its sockets and logs),
    HAProxy's (/tmp/haproxy-serve/<node>: its config and admin socket) and the namespace bridge's
    socket folder (/tmp/sastre-netns-*)."""
    folders = set()
    for argv in command_lines:
        for flag, value in zip(argv, argv[1:]):
            if flag == "--inside-namespace" and Path(value).name.startswith("sastre-netns-"):
                folders.add(Path(value))
            elif flag == "-f" and Path(value).parent.parent.name == "haproxy-serve":
                folders.add(Path(value).parent)
        for arg in argv:
            flag, _, value = arg.partition("=")
            if flag in ("--session_dir", "--session-dir") and Path(value).name.startswith("session_"):
                folders.add(Path(value))
    return folders


def end_session(leader: int, timeout: float = 30) -> None:
    """SIGKILL every process of the run at once and remove its temporary folders: a test's service
    has nothing to save, and Serve's graceful shutdown takes half a minute on a busy 2-core machine."""
    processes = session_processes(leader)
    folders = scratch_of(list(processes.values()))
    try:
        os.killpg(leader, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while processes:
        for pid in processes:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of session {leader} outlived SIGKILL: {sorted(processes)}")
        time.sleep(0.05)
        processes = session_processes(leader)
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class Launched:
    base_url: str
    startup_seconds: float
    pid: int  # the `serve_app.cli run` process; it leads the session every Ray process of the run is in
    metrics_url: str  # Ray's Prometheus endpoint: Serve's metrics and the service's (deployments/metrics.py)
    dashboard_url: str | None = None  # the Ray dashboard (and Serve's REST API), when started with one

    def processes(self, title: str) -> list[int]:
        """PIDs of this run's processes whose command line contains `title` (e.g. a replica's name)."""
        return [pid for pid, argv in session_processes(self.pid).items() if title in " ".join(argv)]


@dataclass
class Launch:
    """A `serve_app.cli run` child on its way up: `ready()` waits for it, `stop()` ends it. Two launches
    started one after the other boot side by side, each in its own session."""

    process: subprocess.Popen
    log: BinaryIO
    log_path: Path
    base_url: str
    ready_path: str
    started: float
    deadline: float
    metrics_url: str
    dashboard_url: str | None

    def ready(self) -> Launched:
        """Wait for the first 200 on the ready path; the log's tail in the error if it never comes."""
        while True:
            if self.process.poll() is not None or time.perf_counter() > self.deadline:
                raise RuntimeError(f"service did not become ready:\n{self.log_path.read_text()[-4000:]}")
            try:
                if httpx.get(self.base_url + self.ready_path, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        return Launched(self.base_url, time.perf_counter() - self.started, self.process.pid, self.metrics_url,
                        self.dashboard_url)

    def stop(self, graceful: bool = True) -> None:
        """`graceful`: SIGINT, Serve's and Ray's clean shutdown, as Ctrl-C in `make run` (the kill after a
        minute only for what outlives it). Otherwise `end_session` at once: for tests."""
        try:
            if graceful:
                self.process.send_signal(signal.SIGINT)
                try:
                    self.process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    pass
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            else:
                end_session(self.process.pid)
            self.process.wait(timeout=30)
        finally:
            self.log.close()


def start(workdir: Path, args: dict, import_path: str = "serve_app.app:build_app",
          ready_path: str = "/health", startup_timeout: float = 240, *, dashboard: bool = False,
          app_options: dict | None = None, deployment_options: dict[str, dict] | None = None,
          isolate: bool = False) -> Launch:
    """Start the app on a free loopback port and return at once (`Launch.ready()` waits for it).

    `args` are application settings (they also go to the child's environment as SASTRE_*); an
    `import_path` other than the app's runs that app instead, with default deployment options.
    `dashboard` starts Ray's dashboard (and Serve's REST API) on a free loopback port;
    `app_options` and `deployment_options` (by deployment name; a None value removes that key) change
    the local Serve config, e.g. to autoscale a deployment. `isolate` runs it in a loopback-only
    namespace of its own behind the bridge, as `make run` does on a host, even inside `make test`'s.
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
           **{f"SASTRE_{k.upper()}": json.dumps(v) if isinstance(v, (list, dict)) else str(v)
              for k, v in args.items()}}
    log_path = workdir / f"serve-{port}.log"
    log = log_path.open("wb")
    started = time.perf_counter()
    dashboard_port = free_port() if dashboard else None
    options = ["--dashboard-port", str(dashboard_port)] if dashboard_port else ["--no-dashboard"]
    options += ["--isolate"] if isolate else []
    process = subprocess.Popen([sys.executable, "-m", "serve_app.cli", "run", "--config", str(path), *options],
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    dashboard_url = f"http://127.0.0.1:{dashboard_port}" if dashboard_port else None
    return Launch(process, log, log_path, base_url, ready_path, started, started + startup_timeout,
                  f"http://127.0.0.1:{metrics_port}/metrics", dashboard_url)


@contextmanager
def serve(workdir: Path, args: dict, *, graceful: bool = True, **options: Any) -> Iterator[Launched]:
    """Start the app (`start`'s arguments), wait until it answers, yield where it is; stop it on exit,
    gracefully unless told otherwise (tests: `graceful=False`)."""
    launch = start(workdir, args, **options)
    try:
        yield launch.ready()
    finally:
        launch.stop(graceful)
