"""The backlog policy as Serve's controller calls it: real AutoscalingContexts, wrapped as Serve wraps it.

The cluster test (tests/integration/test_scaling.py) shows it scaling a running generator; these pin
the arithmetic and show that Serve's own bounds and delays still apply to its answers.
"""

from __future__ import annotations

import pytest
from ray.serve._private.common import DeploymentID, ReplicaID
from ray.serve.autoscaling_policy import _apply_app_level_autoscaling_config
from ray.serve.config import AutoscalingConfig, AutoscalingContext

from db.jobs import Backlog
from serve_app.jobqueue.autoscaling import BacklogPolicy, backlog_stats, generator_replicas

GENERATOR = DeploymentID("SdxlTurboGenerator", "sastre")
RUNNER = DeploymentID("JobRunner", "sastre")
FINISHER = DeploymentID("Finisher", "sastre")


def context(deployment: DeploymentID, replicas: int, config: AutoscalingConfig, requests: float = 0,
            reports: list[dict] = ()) -> AutoscalingContext:
    replica_ids = [ReplicaID(f"r{i}", deployment) for i in range(replicas)]
    metrics: dict[str, dict] = {}
    for replica_id, report in zip(replica_ids, reports):
        for name, value in report.items():
            metrics.setdefault(name, {})[replica_id] = value
    return AutoscalingContext(
        deployment_id=deployment, deployment_name=deployment.name, app_name="sastre", current_num_replicas=replicas,
        target_num_replicas=replicas, running_replicas=replica_ids, total_num_requests=requests,
        total_queued_requests=0, aggregated_metrics=metrics, raw_metrics={},
        capacity_adjusted_min_replicas=config.min_replicas, capacity_adjusted_max_replicas=config.max_replicas,
        policy_state={}, last_scale_up_time=None, last_scale_down_time=None, current_time=None, config=config)


def report(pending_cuts: int, in_flight: int, oldest: float = 0.0) -> dict:
    return backlog_stats(Backlog(pending_jobs=pending_cuts, pending_cuts=pending_cuts, cuts_in_flight=in_flight,
                                 oldest_pending_seconds=oldest))


def test_replicas_follow_the_work_at_the_configured_throughput():
    # 20 cuts/s per replica, 30 s to drain: one replica per 600 cuts of work, pending or in hand.
    assert generator_replicas(report(900, 300), 1, 20, 30) == pytest.approx(2.0)
    assert generator_replicas(report(0, 60), 1, 20, 30) == pytest.approx(0.1)
    assert generator_replicas(report(0, 0), 3, 20, 30) == 0


def test_a_job_waiting_longer_than_the_drain_time_asks_for_one_more_replica_than_now():
    assert generator_replicas(report(10, 0, oldest=45), 3, 20, 30) == 4
    assert generator_replicas(report(10, 0, oldest=20), 3, 20, 30) == pytest.approx(10 / 600)


def test_the_generator_follows_the_runners_backlog_and_other_deployments_keep_the_request_policy():
    policy = _apply_app_level_autoscaling_config(BacklogPolicy(cuts_per_second=1, drain_seconds=1))
    generator = AutoscalingConfig(min_replicas=1, max_replicas=3, upscale_delay_s=0)
    finisher = AutoscalingConfig(min_replicas=1, max_replicas=8, target_ongoing_requests=2, upscale_delay_s=0)
    runner = AutoscalingConfig(min_replicas=2, max_replicas=2)
    contexts = {
        GENERATOR: context(GENERATOR, 1, generator),
        RUNNER: context(RUNNER, 2, runner, reports=[report(8, 4), report(8, 4)]),  # both see the same table
        FINISHER: context(FINISHER, 1, finisher, requests=6),
    }
    decisions, _ = policy(contexts)
    # 12 cuts of work at one cut per replica; Serve's application state then holds it within min/max
    # (the cluster test sees the bound).
    assert decisions[GENERATOR] == 12
    assert decisions[FINISHER] == 3  # 6 requests at 2 per replica, Serve's own policy
    assert decisions[RUNNER] == 2


def test_serve_still_applies_the_upscale_delay_to_the_policys_answer():
    policy = _apply_app_level_autoscaling_config(BacklogPolicy(cuts_per_second=1, drain_seconds=1))
    generator = AutoscalingConfig(min_replicas=1, max_replicas=3, upscale_delay_s=60)
    runner = AutoscalingConfig(min_replicas=1, max_replicas=1)
    decisions, _ = policy({GENERATOR: context(GENERATOR, 1, generator),
                           RUNNER: context(RUNNER, 1, runner, reports=[report(5, 0)])})
    assert decisions[GENERATOR] == 1


def test_before_the_runner_reports_the_generator_follows_serves_request_policy():
    policy = _apply_app_level_autoscaling_config(BacklogPolicy())
    generator = AutoscalingConfig(min_replicas=1, max_replicas=4, target_ongoing_requests=8, upscale_delay_s=0)
    runner = AutoscalingConfig(min_replicas=1, max_replicas=1)
    decisions, _ = policy({GENERATOR: context(GENERATOR, 1, generator, requests=24),
                           RUNNER: context(RUNNER, 1, runner)})
    assert decisions[GENERATOR] == 3


def test_a_policy_without_throughput_is_refused():
    with pytest.raises(ValueError, match="positive"):
        BacklogPolicy(cuts_per_second=0)
