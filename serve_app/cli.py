"""Command line: `python -m serve_app.cli prepare|run|stop-db|create-admin|set-password|deactivate-admin|scale`.

`run` is what `make run` calls: it prepares the database and catalog, starts a local Ray instance
(dashboard on 127.0.0.1:8265) and hands over to Ray's own `serve run` with the local Serve config.
Where Linux allows it, Ray runs in a loopback-only network namespace (see serve_app/isolation.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from serve_app.bootstrap import prepare
from serve_app.edge.haproxy_forwarding import SETTINGS_VARIABLE, launcher_script
from serve_app.isolation import (EGRESS_SOCKET, can_isolate, egress_to_loopback, in_loopback_namespace, only_loopback,
                                 start_unix_to_tcp, tcp_to_unix)
from serve_app.launcher import LOCAL_CONFIG
from serve_app.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

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


def caller_environment(settings: Settings, haproxy: bool) -> dict[str, str]:
    """The environment that makes every hop in front of the ingress pass the caller on.

    Behind HAProxy: HAProxy adds the caller to X-Forwarded-For (serve_app/edge/haproxy_forwarding.py) and
    Ray's servers behind it (uvicorn: the ingress replica, the fallback Serve proxy) take the client
    from that header on connections from HAProxy's address only (`FORWARDED_ALLOW_IPS`). Behind
    Serve's own proxy the caller is its peer (the bridge connects from the caller's address): uvicorn
    there believes the header only from `SASTRE_TRUSTED_PROXIES`, so no caller names itself (its
    default, 127.0.0.1, believed every caller on the host's loopback).
    """
    if not haproxy:
        return {"FORWARDED_ALLOW_IPS": ",".join(settings.trusted_proxies)}
    from ray.serve._private.haproxy import get_haproxy_binary

    script = launcher_script(settings.data_dir.resolve() / "haproxy")
    binary = get_haproxy_binary()  # Ray's choice: the operator's RAY_SERVE_HAPROXY_BINARY_PATH, else its bundled one
    if Path(binary).resolve() == script.resolve():
        raise RuntimeError("RAY_SERVE_HAPROXY_BINARY_PATH names the forwarding script itself, not an HAProxy")
    return {"FORWARDED_ALLOW_IPS": "127.0.0.1", "RAY_SERVE_HAPROXY_BINARY_PATH": str(script),
            SETTINGS_VARIABLE: json.dumps({"binary": binary, "trusted": settings.trusted_proxies})}


def run_isolated(config: Path, dashboard: bool, dashboard_port: int, ports: list[int]) -> int:
    """Serve from a loopback-only namespace, bridging `ports` to this host's loopback."""
    bridges = Path(tempfile.mkdtemp(prefix="sastre-netns-"))
    argv = [sys.executable, "-m", "serve_app.cli", "run", "--config", str(config), "--inside-namespace", str(bridges),
            "--dashboard-port", str(dashboard_port)]
    # Webhooks to the host's loopback leave through the egress socket (the deliverer learns it from the setting).
    child = subprocess.Popen(in_loopback_namespace(argv + ([] if dashboard else ["--no-dashboard"])),
                             env={**os.environ, "SASTRE_WEBHOOK_EGRESS_SOCKET": str(bridges / EGRESS_SOCKET)})

    async def bridge() -> None:
        servers = [*await tcp_to_unix(bridges, ports), await egress_to_loopback(bridges)]
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


def read_password(username: str, from_stdin: bool) -> str:
    """From stdin (one line), or asked twice on the terminal."""
    import getpass

    password = sys.stdin.readline().rstrip("\n") if from_stdin else getpass.getpass(f"password for {username}: ")
    if not from_stdin and getpass.getpass("again: ") != password:
        sys.exit("passwords differ")
    return password


def change_admin(settings: Settings, change: Callable[[Session], None]) -> None:
    """Run `change` in one transaction on the service's database; a refusal exits with its reason."""
    from db.engine import make_engine, make_sessionmaker

    engine = make_engine(prepare(settings), pool_size=1)
    try:
        with make_sessionmaker(engine).begin() as session:
            change(session)
    except (ValueError, LookupError) as exc:
        sys.exit(exc.args[0])
    finally:
        engine.dispose()


def admin_command(settings: Settings, args: argparse.Namespace) -> None:
    """create-admin, set-password, deactivate-admin. There is no default account and no default
    password anywhere; a password change or a deactivation ends every token issued before it."""
    from serve_app.admin.auth import service

    name = args.username
    if args.command == "create-admin":
        password = read_password(name, args.password_stdin)
        change_admin(settings, lambda session: service.create_user(session, name, password))
        print(f"admin user {name!r} created; log in with POST /admin/login")
    elif args.command == "set-password":
        password = read_password(name, args.password_stdin)
        change_admin(settings, lambda session: service.set_password(session, name, password))
        print(f"password of {name!r} changed; tokens issued before now are refused")
    else:
        change_admin(settings, lambda session: service.deactivate_user(session, name))
        print(f"admin user {name!r} deactivated; its tokens are refused")


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
    run_parser.add_argument("--isolate", action="store_true", help="a loopback-only namespace of its own behind "
                            "the bridge even where this one has only loopback (tests of the `make run` path)")
    run_parser.add_argument("--inside-namespace", type=Path, help=argparse.SUPPRESS)
    sub.add_parser("stop-db", help="stop the embedded PostgreSQL")
    for command, text in (("create-admin", "create an admin user"),
                          ("set-password", "change an admin user's password, ending its earlier tokens")):
        admin = sub.add_parser(command, help=f"{text} (password read from the terminal or stdin)")
        admin.add_argument("username")
        admin.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    sub.add_parser("deactivate-admin", help="close an admin account: no more logins, its tokens refused"
                   ).add_argument("username")
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
        if args.inside_namespace is None and (args.isolate or can_isolate()):
            if settings.database_url and "host=/" not in settings.database_url:
                logging.warning("SASTRE_DATABASE_URL is a TCP address, which a loopback-only namespace cannot "
                                "reach: Ray's processes will listen on all interfaces")
            else:
                sys.exit(run_isolated(args.config, args.dashboard, args.dashboard_port, ports))
        if args.inside_namespace:
            start_unix_to_tcp(args.inside_namespace, ports)
        prepare(settings)
        haproxy = use_haproxy(settings)
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1" if haproxy else "0"  # read by Serve's controller
        os.environ.update(caller_environment(settings, haproxy))  # read by Ray's processes, which inherit it
        run(args.config, args.dashboard, args.dashboard_port, settings.metrics_export_port)
    elif args.command == "stop-db":
        stop_database(settings)
    elif args.command in ("create-admin", "set-password", "deactivate-admin"):
        admin_command(settings, args)


if __name__ == "__main__":
    main()
