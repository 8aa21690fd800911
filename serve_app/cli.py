"""Command line: `python -m serve_app.cli prepare|run|stop-db|create-admin|scale`.

`run` is what `make run` calls: it prepares the database and catalog, starts a local Ray instance
(dashboard on 127.0.0.1:8265) and hands over to Ray's own `serve run` with the local Serve config.
Where Linux allows it, Ray runs in a loopback-only network namespace (see serve_app/isolation.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from serve_app.bootstrap import prepare
from serve_app.isolation import can_isolate, in_loopback_namespace, only_loopback, start_unix_to_tcp, tcp_to_unix
from serve_app.launcher import LOCAL_CONFIG
from serve_app.settings import Settings


DASHBOARD_PORT = 8265


def http_port(config: Path) -> int:
    return int(yaml.safe_load(config.read_text()).get("http_options", {}).get("port", 8000))


def run(config: Path, dashboard: bool, dashboard_port: int, metrics_port: int) -> None:
    """Serve in this process: Ray's `serve run`, in the current network namespace, with Ray's Prometheus
    endpoint (Serve's metrics and ours) at 127.0.0.1:`metrics_port`/metrics."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray.serve.scripts import cli as serve_cli

    ray.init(_node_ip_address="127.0.0.1", include_dashboard=dashboard, dashboard_host="127.0.0.1",
             dashboard_port=dashboard_port if dashboard else None, namespace="serve",
             _metrics_export_port=metrics_port)
    logging.info("metrics (Prometheus): http://127.0.0.1:%d/metrics", metrics_port)
    serve_cli.main(["run", str(config)], prog_name="serve")


def use_haproxy(settings: Settings) -> bool:
    """HAProxy in front of the ingress (`SASTRE_INGRESS_PROXY`), where its ports stay private: Ray 2.60
    binds its stats and Prometheus frontends on every interface, so only in a loopback-only namespace."""
    if settings.ingress_proxy != "haproxy":
        return False
    if not only_loopback():
        logging.warning("not in a loopback-only network namespace: Serve's default proxy instead of HAProxy, "
                        "whose stats and metrics ports would listen on every interface")
        return False
    return True


def run_isolated(config: Path, dashboard: bool, dashboard_port: int, ports: list[int]) -> int:
    """Serve from a loopback-only namespace, bridging `ports` to this host's loopback."""
    bridges = Path(tempfile.mkdtemp(prefix="sastre-netns-"))
    argv = [sys.executable, "-m", "serve_app.cli", "run", "--config", str(config), "--inside-namespace", str(bridges),
            "--dashboard-port", str(dashboard_port)]
    child = subprocess.Popen(in_loopback_namespace(argv + ([] if dashboard else ["--no-dashboard"])))

    async def bridge() -> None:
        servers = await tcp_to_unix(bridges, ports)
        try:
            while child.poll() is None:
                await asyncio.sleep(0.5)
        finally:
            for server in servers:
                server.close()

    try:
        asyncio.run(bridge())
    except KeyboardInterrupt:
        # A terminal's Ctrl-C reaches the child too; forward it only if the child did not get it.
        try:
            child.wait(timeout=3)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGINT)
    finally:
        child.wait()
        shutil.rmtree(bridges, ignore_errors=True)
    return child.returncode


def stop_database(settings: Settings) -> None:
    """Fast shutdown of the embedded server (SIGINT to the postmaster, as `pg_ctl stop -m fast` does)."""
    pid_file = (settings.data_dir / "postgres" / "postmaster.pid").resolve()
    if not pid_file.exists():
        print("embedded PostgreSQL is not running")
        return
    os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)
    print(f"stopping embedded PostgreSQL in {pid_file.parent}")


def create_admin(settings: Settings, username: str, from_stdin: bool) -> None:
    """Create an admin user; there is no default account and no default password anywhere."""
    import getpass

    from db.engine import make_engine, make_sessionmaker
    from serve_app.admin.auth.service import create_user

    password = sys.stdin.readline().rstrip("\n") if from_stdin else getpass.getpass(f"password for {username}: ")
    if not from_stdin and getpass.getpass("again: ") != password:
        sys.exit("passwords differ")
    engine = make_engine(prepare(settings), pool_size=1)
    try:
        with make_sessionmaker(engine).begin() as session:
            create_user(session, username, password)
    except ValueError as exc:
        sys.exit(str(exc))
    finally:
        engine.dispose()
    print(f"admin user {username!r} created; log in with POST /admin/login")


def scale(args: argparse.Namespace) -> None:
    """Change one deployment's replicas in the running application (serve_app/scaling.py)."""
    from serve_app.scaling import Scale, ScaleRefused, ServeApi, ray_token, scale_deployment

    if args.min is not None and args.max is not None and args.min > args.max:
        sys.exit(f"refused: --min {args.min} > --max {args.max}: nothing changed")
    change = Scale(args.deployment, min_replicas=args.min, max_replicas=args.max, replicas=args.replicas)
    try:
        scale_deployment(ServeApi(args.address, ray_token()), change, app=args.app, wait_seconds=args.wait)
    except ScaleRefused as refused:
        sys.exit(f"refused: {refused}")


def replica_count(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value
    return parse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serve_app.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare", help="migrate the database and load the sample catalog")
    run_parser = sub.add_parser("run", help="prepare, then serve the application locally")
    run_parser.add_argument("--config", type=Path, default=LOCAL_CONFIG)
    run_parser.add_argument("--no-dashboard", dest="dashboard", action="store_false",
                            help="skip the Ray dashboard (tests; a second local instance)")
    run_parser.add_argument("--dashboard-port", type=int, default=DASHBOARD_PORT,
                            help=f"the Ray dashboard's port on 127.0.0.1 (default {DASHBOARD_PORT})")
    run_parser.add_argument("--inside-namespace", type=Path, help=argparse.SUPPRESS)
    sub.add_parser("stop-db", help="stop the embedded PostgreSQL")
    admin = sub.add_parser("create-admin", help="create an admin user (password read from the terminal or stdin)")
    admin.add_argument("username")
    admin.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    scaler = sub.add_parser("scale", help="change a deployment's replicas in the running application "
                            "(e.g. scale SdxlTurboGenerator --min 2 --max 6, or --replicas 3)")
    scaler.add_argument("deployment", help="e.g. SdxlTurboGenerator, Ingress, JobRunner")
    scaler.add_argument("--replicas", type=replica_count(1), help="a fixed count (autoscaling off)")
    scaler.add_argument("--min", type=replica_count(0), help="the autoscaler's lower bound")
    scaler.add_argument("--max", type=replica_count(1), help="the autoscaler's upper bound")
    scaler.add_argument("--address", default=os.environ.get("RAY_DASHBOARD_ADDRESS", f"http://127.0.0.1:{DASHBOARD_PORT}"),
                        help="the Ray dashboard (default: RAY_DASHBOARD_ADDRESS, as for `serve deploy`, "
                        f"else http://127.0.0.1:{DASHBOARD_PORT})")
    scaler.add_argument("--app", help="the Serve application (default: the one holding the deployment)")
    scaler.add_argument("--wait", type=float, default=60, help="seconds to wait for the new count to run")
    args = parser.parse_args(argv)
    if args.command == "scale":
        if args.replicas is not None and (args.min is not None or args.max is not None):
            parser.error("--replicas is a fixed count: it takes no --min or --max")
        if args.replicas is None and args.min is None and args.max is None:
            parser.error("scale needs --replicas N, or --min and/or --max")
        scale(args)
        return
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings()
    if args.command == "prepare":
        url = prepare(settings)
        print(f"database ready: {url if settings.database_url else 'embedded PostgreSQL under ' + str(settings.data_dir)}")
    elif args.command == "run":
        # Ctrl-C and SIGTERM both get the clean shutdown (Serve, then the local Ray instance), even when
        # started in the background by a shell that ignores SIGINT for background jobs.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        ports = [http_port(args.config), settings.metrics_export_port] + ([args.dashboard_port] if args.dashboard else [])
        if args.inside_namespace is None and can_isolate():
            if settings.database_url and "host=/" not in settings.database_url:
                logging.warning("SASTRE_DATABASE_URL is a TCP address, which a loopback-only namespace cannot "
                                "reach: Ray's processes will listen on all interfaces")
            else:
                sys.exit(run_isolated(args.config, args.dashboard, args.dashboard_port, ports))
        if args.inside_namespace:
            start_unix_to_tcp(args.inside_namespace, ports)
        prepare(settings)
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1" if use_haproxy(settings) else "0"  # read by Serve's controller
        run(args.config, args.dashboard, args.dashboard_port, settings.metrics_export_port)
    elif args.command == "stop-db":
        stop_database(settings)
    elif args.command == "create-admin":
        create_admin(settings, args.username, args.password_stdin)


if __name__ == "__main__":
    main()
