"""What the benchmarks here set up the same way (scripts run as `python bench/x.py`, so they import this
as `harness`): a run's work directory, the settings of a tiny-model service on a scratch database, those
settings as the environment of a server started without the launcher, and a scratch database for the
benchmarks that time SQL alone, and their command-line options."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, make_sessionmaker
from db.migrate import fresh_database
from serve_app.launcher import scratch_database

# A benchmark is one client that means to load the service: no rate limit or per-client cap may shape it.
UNCAPPED_CLIENT = {"rate_limit_generate": "100000000/minute", "max_unfinished_jobs_per_client": 100_000_000}
FINAL = ("completed", "failed", "canceled", "expired")


def options(**defaults: object) -> argparse.Namespace:
    """The command line parsed as `--name value` options, one per keyword: its default, or (default, help).
    The type is the default's; a `False` default makes a flag. So a benchmark states its knobs in one call."""
    parser = argparse.ArgumentParser()
    for name, spec in defaults.items():
        default, help_text = spec if isinstance(spec, tuple) else (spec, None)
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", help=help_text)
        else:
            parser.add_argument(flag, type=type(default), default=default, help=help_text)
    return parser.parse_args()


def run_directory(name: str) -> Path:
    """A new directory for one run's database, data and logs; kept afterwards, so the logs can be read."""
    return Path(tempfile.mkdtemp(prefix=f"sastre-{name}-"))


def tiny_service(workdir: Path, image_size: int, **settings) -> dict:
    """Settings for `serve_app.launcher.serve`: the tiny-random model on the CPU at `image_size`, a scratch
    database and data directory under `workdir`, an uncapped client; `settings` add to them or replace them."""
    return {"database_url": scratch_database(workdir), "data_dir": str(workdir / "data"),
            "model_profile": "tiny-random", "image_size": image_size, **UNCAPPED_CLIENT, **settings}


def as_environment(settings: dict) -> dict[str, str]:
    """This process's environment with `settings` added as the SASTRE_* variables `Settings` reads."""
    return {**os.environ, **{f"SASTRE_{name.upper()}": str(value) for name, value in settings.items()}}


def job_seconds(client: httpx.Client, body: dict, poll_seconds: float) -> tuple[float, dict]:
    """Seconds from POST /generate until GET /jobs/{id} shows a final state, polled every `poll_seconds`;
    and the job as that last GET showed it."""
    started = time.perf_counter()
    job_id = client.post("/generate", json=body).json()["job_id"]
    while (job := client.get(f"/jobs/{job_id}").json())["status"] not in FINAL:
        time.sleep(poll_seconds)
    return time.perf_counter() - started, job


@contextmanager
def scratch_sessions() -> Iterator[tuple[Engine, sessionmaker[Session]]]:
    """An engine and a session factory on a new migrated database on the server SASTRE_BENCH_DATABASE_URL
    names (any PostgreSQL one may create a database in), dropped afterwards."""
    with fresh_database(os.environ["SASTRE_BENCH_DATABASE_URL"]) as url:
        engine = make_engine(url)
        try:
            yield engine, make_sessionmaker(engine)
        finally:
            engine.dispose()
