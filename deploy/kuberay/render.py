"""Writes deploy/kuberay/rayservice.yaml from its template and serve_config.yaml.

serve_config.yaml stays the one place where deployments, replica bounds and actor options are decided; the
RayService embeds it verbatim as `serveConfigV2` (checked against the GPU worker group's cap), so a change
there reaches Kubernetes by running this module (`.venv/bin/python -m deploy.kuberay.render`) and nothing else.
The committed rayservice.yaml is checked against this module's output by tests/unit/test_kuberay.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from ray.serve.config import AutoscalingConfig
from ray.serve.schema import DeploymentSchema, ServeDeploySchema

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = Path(__file__).with_name("rayservice.template.yaml")
OUTPUT = Path(__file__).with_name("rayservice.yaml")
SERVE_CONFIG = ROOT / "serve_config.yaml"

SERVE_CONFIG_MARK = "@SERVE_CONFIG@"


def serve_config_body(text: str) -> str:
    """The config without its opening comment, which speaks of `serve deploy` on a `ray up` cluster."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    return "\n".join(lines[start:]).rstrip() + "\n"


def _max_replicas(deployment: DeploymentSchema) -> int:
    """The most replicas Serve may start, from the config (with Serve's own default for an unset bound)."""
    if deployment.autoscaling_config:
        return int(deployment.autoscaling_config.get("max_replicas", AutoscalingConfig.model_fields["max_replicas"].default))
    if isinstance(deployment.num_replicas, int):
        return deployment.num_replicas
    raise ValueError(f"{deployment.name}: give it num_replicas or autoscaling_config.max_replicas, "
                     "so the GPU worker group can be sized")


def gpu_workers_needed(config: ServeDeploySchema) -> int:
    """GPU pods (one GPU each) that hold every GPU deployment at its max replicas: first-fit decreasing."""
    shares = sorted(
        (d.ray_actor_options.num_gpus
         for app in config.applications for d in app.deployments
         if d.ray_actor_options and d.ray_actor_options.num_gpus
         for _ in range(_max_replicas(d))),
        reverse=True,
    )
    if shares and shares[0] > 1:
        raise ValueError("a replica asks for more than one GPU, and each GPU worker pod has one")
    free: list[float] = []  # what is left of each GPU pod
    for share in shares:
        pod = next((i for i, left in enumerate(free) if left >= share - 1e-9), None)
        if pod is None:
            free.append(1.0 - share)
        else:
            free[pod] -= share
    return len(free)


def gpu_workers_allowed(manifest: dict) -> int:
    """The GPU worker group's maxReplicas: the most GPU pods the cluster may add."""
    groups = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    return sum(group["maxReplicas"] for group in groups
               if any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
                      for c in group["template"]["spec"]["containers"]))


def render(template: Path = TEMPLATE, serve_config: Path = SERVE_CONFIG) -> str:
    """The RayService manifest. Refuses a serve config that Ray Serve itself would refuse, and one whose GPU
    deployments could not all reach their max_replicas inside the GPU worker group."""
    text = serve_config.read_text()
    config = ServeDeploySchema.model_validate(yaml.safe_load(text))
    template_text = template.read_text()
    mark_line = next(line for line in template_text.splitlines() if line.strip() == SERVE_CONFIG_MARK)
    indent = mark_line[: len(mark_line) - len(mark_line.lstrip())]
    block = "\n".join(indent + line if line else "" for line in serve_config_body(text).splitlines())
    manifest_text = template_text.replace(mark_line, block)
    needed, allowed = gpu_workers_needed(config), gpu_workers_allowed(yaml.safe_load(manifest_text))
    if needed > allowed:
        raise ValueError(f"{serve_config.name} needs up to {needed} GPU pods at its max_replicas, the GPU worker "
                         f"group allows {allowed}: raise maxReplicas in {template.name} or lower the bounds")
    return manifest_text


def main() -> None:
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT.relative_to(ROOT)} from {TEMPLATE.relative_to(ROOT)} and {SERVE_CONFIG.relative_to(ROOT)}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
