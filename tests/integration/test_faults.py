"""Faults and load on the real application: replicas killed with SIGKILL, PostgreSQL restarted, a burst.

The service here has its own embedded PostgreSQL (so the test can restart it), short leases (3 s)
and a generous per-cut retry budget, as an ops team would configure for fast recovery.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import httpx
import pytest

from db.migrate import upgrade
from serve_app.launcher import Launched
from tests.integration.conftest import UNLIMITED
from tests.integration.test_service import NAVY
from tests.services import Services

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SIZE = 64
GENERATOR = "ServeReplica:sastre:SdxlTurboGenerator"
RUNNER = "ServeReplica:sastre:JobRunner"


@dataclass
class FaultService:
    launched: Launched
    data_dir: Path
    postgres: object  # pgserver.PostgresServer

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.launched.base_url, timeout=30)

    def only(self, title: str, timeout: float = 120) -> int:
        """The PID of the single live replica named `title` (waiting for a replacement if needed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.launched.processes(title)
            if len(pids) == 1:
                return pids[0]
            time.sleep(0.2)
        raise AssertionError(f"no single {title} replica: {self.launched.processes(title)}")

    def objects(self, job: dict) -> list[str]:
        """The files in the folder of the job's results (named by its random result token, not its id)."""
        folders = {PurePosixPath(urlsplit(url).path.split("/media/", 1)[1]).parent for url in job["result_urls"]}
        assert len(folders) == 1, job["result_urls"]
        folder = self.data_dir / "storage" / folders.pop()
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".part-"))


@pytest.fixture(scope="module")
def faulty(services: Services, tmp_path_factory) -> Iterator[FaultService]:
    import pgserver

    root = tmp_path_factory.mktemp("faults")
    postgres = pgserver.get_server(root / "pg", cleanup_mode="delete")
    url = postgres.get_uri()
    upgrade(url)
    settings = {"database_url": url, "data_dir": str(root / "data"), "model_profile": "tiny-random",
                "image_size": SIZE, "poll_seconds": 0.5, "lease_seconds": 3, "cut_attempts": 8,
                "cut_retry_seconds": 0.5, "runner_concurrency": 16, **UNLIMITED}
    # One generator replica whatever the burst: the kill test needs the replica it kills to be the only one.
    single = {"SdxlTurboGenerator": {"num_replicas": None, "autoscaling_config": {"min_replicas": 1, "max_replicas": 1}}}
    with services.own(root, settings, deployment_options=single) as launched:
        yield FaultService(launched, root / "data", postgres)
    postgres.cleanup()


def submit(client: httpx.Client, cuts=("recto", "cruzado"), seed: int | None = None) -> str:
    body = {**NAVY, "cuts": list(cuts), **({"seed": seed} if seed is not None else {})}
    response = client.post("/generate", json=body)
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def wait_all(client: httpx.Client, job_ids: list[str], timeout: float = 180) -> list[dict]:
    deadline = time.monotonic() + timeout
    final: dict[str, dict] = {}
    while len(final) < len(job_ids):
        assert time.monotonic() < deadline, f"{len(job_ids) - len(final)} jobs unfinished"
        for job_id in job_ids:
            if job_id not in final:
                response = client.get(f"/jobs/{job_id}")
                if response.status_code == 200 and response.json()["status"] in ("completed", "failed", "canceled"):
                    final[job_id] = response.json()
        time.sleep(0.2)
    return [final[j] for j in job_ids]


def submit_until_in_flight(client: httpx.Client, minimum: int, limit: int = 300) -> list[str]:
    """Submit jobs until at least `minimum` are in and one of the newest is being processed.

    A warm tiny-random service finishes a job in a few hundred milliseconds, so a fixed handful of
    jobs can all be done before anyone looks: keep the queue fed, and the kill that follows lands
    while jobs are in flight.
    """
    job_ids: list[str] = []
    while len(job_ids) < limit:
        job_ids += [submit(client) for _ in range(4)]
        newest = job_ids[-8:]
        if len(job_ids) >= minimum and any(client.get(f"/jobs/{j}").json()["status"] == "processing" for j in newest):
            return job_ids
    raise AssertionError(f"none of {limit} jobs was seen processing")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_burst_of_300_jobs_from_30_clients_all_complete_once(faulty):
    runner = faulty.only(RUNNER)
    with faulty.client() as client:  # warm up every deployment before measuring memory
        wait_all(client, [submit(client)])
    before = rss_mb(runner)

    def client_session(index: int) -> list[str]:
        with faulty.client() as client:
            return [submit(client, cuts=("recto",), seed=index * 100 + n) for n in range(10)]

    with ThreadPoolExecutor(30) as pool:
        job_ids = [j for batch in pool.map(client_session, range(30)) for j in batch]
    assert len(set(job_ids)) == 300
    with faulty.client() as client:
        finals = wait_all(client, job_ids, timeout=600)
    assert [f["status"] for f in finals] == ["completed"] * 300
    assert {f["attempts"] for f in finals} == {1}  # none ran twice
    growth = rss_mb(runner) - before
    assert growth < 150, f"runner RSS grew by {growth:.0f} MB over 300 jobs"


def _kill_the_replica_mid_job(faulty, deployment: str, in_flight: int) -> list[dict]:
    """SIGKILLs `deployment`'s only replica while `in_flight` jobs are queued or running, then checks
    what must hold whichever replica died: every job completes with exactly one object per cut, and
    Serve replaced the replica. The jobs' final bodies."""
    with faulty.client() as client:
        job_ids = submit_until_in_flight(client, in_flight)
        victim = faulty.only(deployment)
        os.kill(victim, signal.SIGKILL)
        finals = wait_all(client, job_ids)
    assert [f["status"] for f in finals] == ["completed"] * len(job_ids)
    assert faulty.only(deployment) != victim  # Serve replaced the replica
    for final in finals:
        assert faulty.objects(final) == ["cruzado.jpg", "recto.jpg"]  # exactly one object per cut
    return finals


def test_generator_killed_mid_job_the_jobs_still_complete(faulty):
    _kill_the_replica_mid_job(faulty, GENERATOR, 8)


def test_runner_killed_mid_job_the_lease_expires_and_the_job_completes_once(faulty):
    finals = _kill_the_replica_mid_job(faulty, RUNNER, 12)
    assert max(f["attempts"] for f in finals) >= 2  # at least one job was rescued after its lease expired


def test_postgres_restart_gives_503s_then_every_accepted_job_completes(faulty):
    accepted: list[str] = []
    statuses: list[int] = []
    stop = threading.Event()

    def stream() -> None:
        with faulty.client() as client:
            while not stop.is_set():
                try:
                    response = client.post("/generate", json={**NAVY, "cuts": ["recto"]})
                except httpx.HTTPError:
                    statuses.append(-1)
                    continue
                statuses.append(response.status_code)
                if response.status_code == 202:
                    accepted.append(response.json()["job_id"])
                else:
                    assert response.json()["detail"], response.text  # a JSON error, never a traceback
                time.sleep(0.05)

    worker = threading.Thread(target=stream)
    worker.start()
    time.sleep(2)
    postmaster = faulty.postgres.get_pid()
    os.kill(postmaster, signal.SIGINT)  # fast shutdown, as `pg_ctl stop -m fast`
    time.sleep(4)
    with faulty.client() as client:
        health = client.get("/health")
    faulty.postgres.ensure_postgres_running()
    time.sleep(4)
    stop.set()
    worker.join()

    assert health.status_code == 503 and health.json()["database"]["ok"] is False
    assert 503 in statuses and statuses[0] == 202 and statuses[-1] == 202
    assert set(statuses) <= {202, 503}
    with faulty.client() as client:
        finals = wait_all(client, accepted)
    assert len(accepted) > 20 and all(f["status"] == "completed" for f in finals)
