"""Command line: `python -m serve_app.cli prepare|run|stop-db`.

`run` is what `make run` calls: it prepares the database and catalog, starts a local Ray instance on
127.0.0.1 (dashboard included, on 127.0.0.1:8265) and hands over to Ray's own `serve run` with the
local Serve config.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from pathlib import Path

from serve_app.bootstrap import prepare
from serve_app.launcher import LOCAL_CONFIG
from serve_app.settings import Settings


def run(config: Path, dashboard: bool = True) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray.serve.scripts import cli as serve_cli

    # SIGTERM gets the same clean shutdown as Ctrl-C (Serve, then the local Ray instance).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    ray.init(_node_ip_address="127.0.0.1", include_dashboard=dashboard, dashboard_host="127.0.0.1",
             namespace="serve")
    serve_cli.main(["run", str(config)], prog_name="serve")


def stop_database(settings: Settings) -> None:
    import subprocess

    import pgserver

    data = (settings.data_dir / "postgres").resolve()
    subprocess.run([str(Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl"), "-D", str(data), "stop"],
                   check=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serve_app.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare", help="migrate the database and load the sample catalog")
    run_parser = sub.add_parser("run", help="prepare, then serve the application locally")
    run_parser.add_argument("--config", type=Path, default=LOCAL_CONFIG)
    run_parser.add_argument("--no-dashboard", dest="dashboard", action="store_false",
                            help="skip the Ray dashboard (tests; a second local instance)")
    sub.add_parser("stop-db", help="stop the embedded PostgreSQL")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings()
    if args.command == "prepare":
        url = prepare(settings)
        print(f"database ready: {url if settings.database_url else 'embedded PostgreSQL under ' + str(settings.data_dir)}")
    elif args.command == "run":
        prepare(settings)
        run(args.config, args.dashboard)
    elif args.command == "stop-db":
        stop_database(settings)


if __name__ == "__main__":
    main()
