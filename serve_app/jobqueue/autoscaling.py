"""Backlog-driven GPU autoscaling, with Ray Serve's own custom-policy mechanism.

Serve's default autoscaler counts requests in flight at replicas and handles. The runners cap those
(each holds at most `runner_concurrency` jobs), so jobs waiting as `pending` rows are invisible to it
and a burst of 1,000 jobs looks like a trickle of 30. Instead each JobRunner replica reports the
backlog it reads from PostgreSQL (`record_autoscaling_stats`, the numbers of `backlog_stats`), and
`BacklogPolicy`, the application's `autoscaling_policy` in the Serve configs, sizes the generator:

    replicas = (pending cuts + cuts in flight) / (cuts_per_second × drain_seconds)

enough replicas to clear the work in `drain_seconds` at the configured throughput of one replica,
and at least one more than now while the oldest pending job has waited longer than `drain_seconds`
(the throughput figure is too optimistic, or replicas are failing). Serve then applies the
generator's own `autoscaling_config` to that number, as it does for its built-in policy: Ray 2.60
wraps every custom policy in the up/downscaling factors and `upscale_delay_s`/`downscale_delay_s`,
and holds the result within min/max replicas. Every other autoscaling deployment keeps Serve's
request-based policy.

It is an application-level policy because a deployment's own policy sees only its own replicas'
numbers, and the generator knows nothing of the backlog (at zero replicas it could report nothing
anyway). The runner
always has a replica, so the generator scales from zero too (`min_replicas: 0`): Serve 2.60 starts
the first replica as soon as the policy asks for one (from zero it skips `upscale_delay_s`), and
its own cold-start path does the same when a runner's request already waits at the generator's handle.

Serve runs this in its controller, not in the application, so its settings are its `policy_kwargs`
in the Serve config (defaults below), not `SASTRE_*` variables. Note that the older form
`policy: {name: ...}` is silently ignored by Serve 2.60: the key is `policy_function`.
"""

from __future__ import annotations

from ray.serve.autoscaling_policy import replica_queue_length_autoscaling_policy
from ray.serve.config import AutoscalingContext

from db.jobs import Backlog

GENERATOR = "SdxlTurboGenerator"
RUNNER = "JobRunner"
# Custom metrics reach the controller only from autoscaling deployments: the runner's fixed count is
# written as min = max. Serve records its stats every look_back_period_s / 5 (3 s), pushes them to the
# controller every 10 s (the default metrics_interval_s) and averages them over the look-back window.
RUNNER_AUTOSCALING = {"min_replicas": 1, "max_replicas": 1, "look_back_period_s": 15}


IDLE = Backlog(pending_jobs=0, pending_cuts=0, cuts_in_flight=0, oldest_pending_seconds=0.0)  # no work waits


def backlog_stats(backlog: Backlog) -> dict[str, float]:
    """What a runner replica reports to Serve (only ints and floats are accepted)."""
    return {"pending_jobs": backlog.pending_jobs, "pending_cuts": backlog.pending_cuts,
            "cuts_in_flight": backlog.cuts_in_flight, "oldest_pending_seconds": backlog.oldest_pending_seconds}


def generator_replicas(backlog: dict[str, float], current_replicas: int, cuts_per_second: float,
                       drain_seconds: float) -> float:
    """Replicas that clear the backlog within `drain_seconds`, before Serve's bounds and delays.

    Cuts in flight count as much as pending ones: how many jobs the runners have claimed changes
    where the work waits, not how much GPU it needs. No work asks for zero (Serve's min_replicas holds).
    """
    work = backlog.get("pending_cuts", 0.0) + backlog.get("cuts_in_flight", 0.0)
    wanted = work / (cuts_per_second * drain_seconds)
    if backlog.get("pending_cuts", 0.0) > 0 and backlog.get("oldest_pending_seconds", 0.0) > drain_seconds:
        wanted = max(wanted, current_replicas + 1)
    return wanted


def reported_backlog(context: AutoscalingContext) -> dict[str, float] | None:
    """The runners' latest backlog (averaged by Serve over the look-back window); None before any report.

    Every runner reads the same table, so their reports agree; the largest is taken, not the sum.
    """
    metrics = context.aggregated_metrics or {}
    if not metrics.get("pending_cuts"):
        return None
    return {name: max(by_replica.values()) for name, by_replica in metrics.items() if by_replica}


class BacklogPolicy:
    """Serve's application-level `autoscaling_policy`: a class, so that Serve passes it `policy_kwargs`."""

    def __init__(self, cuts_per_second: float = 20.0, drain_seconds: float = 30.0) -> None:
        if cuts_per_second <= 0 or drain_seconds <= 0:
            raise ValueError("BacklogPolicy: cuts_per_second and drain_seconds must be positive")
        self.cuts_per_second = cuts_per_second
        self.drain_seconds = drain_seconds

    def __call__(self, contexts: dict) -> tuple[dict, dict]:
        runner = next((ctx for ctx in contexts.values() if ctx.deployment_name == RUNNER), None)
        backlog = reported_backlog(runner) if runner is not None else None
        decisions, states = {}, {}
        for deployment_id, ctx in contexts.items():
            if ctx.deployment_name == GENERATOR and backlog is not None:
                decisions[deployment_id] = generator_replicas(backlog, ctx.current_num_replicas,
                                                              self.cuts_per_second, self.drain_seconds)
            else:  # no report yet, or another deployment: Serve's request-based policy
                decisions[deployment_id], states[deployment_id] = replica_queue_length_autoscaling_policy(ctx)
        return decisions, states
