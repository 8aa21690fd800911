"""GPU scaling on the real application: the backlog policy and the scale command, on one local cluster.

The service runs as `make run` runs it, plus Ray's dashboard (Serve's REST API) on a free port and a
test config: the generator autoscales between 1 and 2 replicas with short delays and a tenth of a CPU
each, the backlog policy counts one replica per cut of work, and the runner reports every second. A
fault-injection file stalls every generator call, so the jobs posted stay in hand and the backlog stays.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from serve_app.cli import main
from serve_app.launcher import ROOT, Launched
from serve_app.scaling import ServeApi, ray_token
from tests.conftest import fresh_database
from tests.integration.conftest import IMAGE_SIZE, UNLIMITED
from tests.integration.test_service import NAVY, _wait
from tests.services import Services

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GENERATOR = "SdxlTurboGenerator"
# One replica per cut of work: 0.1 cuts/s each, to be drained within 10 s.
POLICY = {"policy_function": "serve_app.jobqueue.autoscaling:BacklogPolicy",
          "policy_kwargs": {"cuts_per_second": 0.1, "drain_seconds": 10}}
DEPLOYMENTS = {
    GENERATOR: {"num_replicas": None, "ray_actor_options": {"num_cpus": 0.1, "num_gpus": 0},
                "autoscaling_config": {"min_replicas": 1, "max_replicas": 2, "upscale_delay_s": 2,
                                       "downscale_delay_s": 5}},
    # Serve's metrics_interval_s (deprecated in favour of an environment variable, still what 2.60 reads):
    # the runner's reports reach the policy every second instead of every ten.
    "JobRunner": {"num_replicas": None, "autoscaling_config": {"min_replicas": 1, "max_replicas": 1,
                                                               "look_back_period_s": 3, "metrics_interval_s": 1}},
}


@dataclass
class Cluster:
    launched: Launched
    stall_file: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.launched.base_url, timeout=30)

    def api(self) -> ServeApi:
        return ServeApi(self.launched.dashboard_url, ray_token())

    def deployment(self, name: str) -> dict:
        return self.api().details()["applications"]["sastre"]["deployments"][name]

    def until_target(self, name: str, replicas: int, timeout: float) -> float:
        """Seconds until Serve's target for `name` is `replicas`."""
        started = time.monotonic()
        while (target := self.deployment(name)["target_num_replicas"]) != replicas:
            assert time.monotonic() - started < timeout, f"{name} target {target}, not {replicas}, after {timeout} s"
            time.sleep(0.5)
        return time.monotonic() - started

    def scale(self, *argv: str) -> subprocess.CompletedProcess:
        """The scale command as ops type it (its own process, the token found as Ray finds it)."""
        return subprocess.run([sys.executable, "-m", "serve_app.cli", "scale", *argv,
                               "--address", self.launched.dashboard_url, "--wait", "120"],
                              capture_output=True, text=True, timeout=180, cwd=ROOT)


@pytest.fixture(scope="module")
def cluster(services: Services, server_url, tmp_path_factory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("scaling")
    stall_file = root / "stall-the-generator"
    with fresh_database(server_url) as database_url:
        settings = {"database_url": database_url, "data_dir": str(root / "data"), "model_profile": "tiny-random",
                    "image_size": IMAGE_SIZE, "poll_seconds": 0.5, "fault_stall_file": str(stall_file), **UNLIMITED}
        with services.own(root, settings, dashboard=True, app_options={"autoscaling_policy": POLICY},
                   deployment_options=DEPLOYMENTS) as launched:
            yield Cluster(launched, stall_file)


def test_a_backlog_scales_the_generator_up_to_its_max_and_back_when_drained(cluster):
    assert cluster.deployment(GENERATOR)["target_num_replicas"] == 1
    cluster.stall_file.touch()
    with cluster.client() as client:
        started = time.monotonic()
        job_ids = [client.post("/generate", json={**NAVY, "cuts": ["recto", "cruzado"], "seed": seed}).json()["job_id"]
                   for seed in (1, 2)]
        # 4 cuts of work at one replica per cut: the policy asks for 4, Serve's max holds it at 2.
        up = cluster.until_target(GENERATOR, 2, timeout=90)
        print(f"\nbacklog of 4 cuts posted: generator target 1 -> 2 after {up:.1f} s")
        assert cluster.deployment(GENERATOR)["target_num_replicas"] == 2
        cluster.stall_file.unlink()
        drained = time.monotonic()
        for job_id in job_ids:
            assert _wait(client, job_id, timeout=180)[0]["status"] == "completed"
        print(f"jobs drained {time.monotonic() - drained:.1f} s after the stall ended")
        down = cluster.until_target(GENERATOR, 1, timeout=120)
        print(f"generator target 2 -> 1, {down:.1f} s after the jobs completed "
              f"({time.monotonic() - started:.1f} s since the backlog was posted)")


def test_scale_min_max_changes_the_running_application(cluster):
    # Bounds that need no new replica (starting one is the --replicas test's part): the test stays short.
    assert cluster.deployment(GENERATOR)["deployment_config"]["autoscaling_config"]["max_replicas"] == 2
    done = cluster.scale(GENERATOR, "--min", "1", "--max", "3")
    assert done.returncode == 0, done.stderr
    assert f"before: {GENERATOR}: autoscaling 1..2; target 1 replicas, 1 running" in done.stdout
    assert f"after:  {GENERATOR}: autoscaling 1..3; target 1 replicas, 1 running" in done.stdout
    deployed = cluster.deployment(GENERATOR)["deployment_config"]["autoscaling_config"]
    assert (deployed["min_replicas"], deployed["max_replicas"]) == (1, 3)
    assert (deployed["upscale_delay_s"], deployed["downscale_delay_s"]) == (2, 5)  # the rest as deployed


def test_scale_replicas_sets_a_fixed_count_that_serve_reaches(cluster):
    done = cluster.scale("Finisher", "--replicas", "2")
    assert done.returncode == 0, done.stderr
    deployed = cluster.deployment("Finisher")
    assert deployed["deployment_config"].get("autoscaling_config") is None
    assert deployed["deployment_config"]["num_replicas"] == 2
    assert sum(replica["state"] == "RUNNING" for replica in deployed["replicas"]) == 2
    assert "after:  Finisher: fixed 2; target 2 replicas, 2 running" in done.stdout


def refusal(cluster: Cluster, *argv: str) -> str:
    """The scale command's refusal (the same `main` as above, in this process: no second Ray import)."""
    with pytest.raises(SystemExit) as exited:
        main(["scale", *argv, "--address", cluster.launched.dashboard_url])
    assert isinstance(exited.value.code, str), exited.value.code  # a message, not a traceback
    return exited.value.code


def test_unknown_deployments_and_min_above_max_are_refused_and_nothing_changes(cluster):
    before = cluster.api().details()["applications"]["sastre"]["deployed_app_config"]
    unknown = refusal(cluster, "SdxlGenerator", "--min", "1", "--max", "2")
    above_max = refusal(cluster, GENERATOR, "--min", "4")  # above the deployed max (3)
    crossed = refusal(cluster, GENERATOR, "--min", "3", "--max", "1")
    assert unknown == ("refused: unknown deployment 'SdxlGenerator'; known deployments: "
                       "ControlNetPreprocessor, Finisher, Ingress, JobRunner, SdxlTurboGenerator")
    assert above_max == "refused: min_replicas 4 > max_replicas 3 for SdxlTurboGenerator: nothing changed"
    assert crossed == "refused: --min 3 > --max 1: nothing changed"
    assert cluster.api().details()["applications"]["sastre"]["deployed_app_config"] == before


def test_the_dashboard_wants_the_token_that_ray_get_auth_token_prints(cluster):
    """What the `make run` banner and the docs tell ops to type."""
    url = cluster.launched.dashboard_url + "/api/serve/applications/"
    assert httpx.get(url, timeout=30).status_code == 401
    token = subprocess.run([str(Path(sys.executable).with_name("ray")), "get-auth-token"], capture_output=True,
                           text=True, timeout=120, check=True).stdout.strip()
    answer = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert answer.status_code == 200 and "sastre" in answer.json()["applications"]
