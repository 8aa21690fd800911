"""Command line: `python -m serve_app.cli prepare|run|stop-db`.

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


def run(config: Path, dashboard: bool = True) -> None:
    """Serve in this process: Ray's `serve run`, in the current network namespace."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray.serve.scripts import cli as serve_cli

    ray.init(_node_ip_address="127.0.0.1", include_dashboard=dashboard, dashboard_host="127.0.0.1",
             namespace="serve")
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


def run_isolated(config: Path, dashboard: bool, ports: list[int]) -> int:
    """Serve from a loopback-only namespace, bridging `ports` to this host's loopback."""
    bridges = Path(tempfile.mkdtemp(prefix="sastre-netns-"))
    argv = [sys.executable, "-m", "serve_app.cli", "run", "--config", str(config), "--inside-namespace", str(bridges)]
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serve_app.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare", help="migrate the database and load the sample catalog")
    run_parser = sub.add_parser("run", help="prepare, then serve the application locally")
    run_parser.add_argument("--config", type=Path, default=LOCAL_CONFIG)
    run_parser.add_argument("--no-dashboard", dest="dashboard", action="store_false",
                            help="skip the Ray dashboard (tests; a second local instance)")
    run_parser.add_argument("--inside-namespace", type=Path, help=argparse.SUPPRESS)
    sub.add_parser("stop-db", help="stop the embedded PostgreSQL")
    admin = sub.add_parser("create-admin", help="create an admin user (password read from the terminal or stdin)")
    admin.add_argument("username")
    admin.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    args = parser.parse_args(argv)
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
        ports = [http_port(args.config)] + ([DASHBOARD_PORT] if args.dashboard else [])
        if args.inside_namespace is None and can_isolate():
            if settings.database_url and "host=/" not in settings.database_url:
                logging.warning("SASTRE_DATABASE_URL is a TCP address, which a loopback-only namespace cannot "
                                "reach: Ray's processes will listen on all interfaces")
            else:
                sys.exit(run_isolated(args.config, args.dashboard, ports))
        if args.inside_namespace:
            start_unix_to_tcp(args.inside_namespace, ports)
        prepare(settings)
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1" if use_haproxy(settings) else "0"  # read by Serve's controller
        run(args.config, args.dashboard)
    elif args.command == "stop-db":
        stop_database(settings)
    elif args.command == "create-admin":
        create_admin(settings, args.username, args.password_stdin)


if __name__ == "__main__":
    main()
