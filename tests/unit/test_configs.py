"""The deployment configs pass Ray's own validation and say what ops rely on."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve.config import AutoscalingPolicy
from ray.serve.schema import ServeDeploySchema

from deployments.model_sources import ModelSources
from serve_app.jobqueue.autoscaling import BacklogPolicy
from serve_app.cli import LOCAL_CONFIG
from serve_app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _deployments(config: ServeDeploySchema) -> dict:
    return {d.name: d for d in config.applications[0].deployments}


def test_cluster_yaml_passes_ray_validation_and_has_cpu_head_and_gpu_workers():
    raw = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    nodes = config["available_node_types"]
    assert "GPU" not in nodes[config["head_node_type"]]["resources"]
    assert nodes["gpu_worker"]["resources"]["GPU"] == 1 and nodes["gpu_worker"]["max_workers"] > nodes["gpu_worker"]["min_workers"]
    broken = copy.deepcopy(raw)
    broken["head_node_type"] = "missing"
    with pytest.raises(ValueError):
        validate_config(prepare_config(broken))
    misspelt = copy.deepcopy(raw)
    misspelt["available_node_types"]["gpu_worker"]["max_worker"] = misspelt["available_node_types"]["gpu_worker"].pop("max_workers")
    with pytest.raises(jsonschema.ValidationError, match="'max_worker' was unexpected"):  # ray-schema.json
        validate_config(prepare_config(misspelt))


def test_production_serve_config_uses_pretrained_weights_on_autoscaled_gpus():
    config = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "serve_config.yaml").read_text()))
    app = config.applications[0]
    assert app.import_path == "serve_app.app:build_app" and app.args["model_profile"] == "pretrained"
    deployments = _deployments(config)
    assert set(deployments) == {"Ingress", "JobRunner", "ControlNetPreprocessor", "SdxlTurboGenerator", "Finisher"}
    generator = deployments["SdxlTurboGenerator"]
    assert generator.ray_actor_options.num_gpus > 0.5
    assert generator.autoscaling_config["max_replicas"] > generator.autoscaling_config["min_replicas"]
    Settings(**app.args)  # the args are valid settings


def test_production_generator_follows_the_backlog_policy_that_serve_loads():
    config = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "serve_config.yaml").read_text()))
    app = config.applications[0]
    policy = AutoscalingPolicy(**app.autoscaling_policy)  # Serve imports and pickles it the same way
    loaded = policy.get_policy()(**policy.policy_kwargs)
    assert isinstance(loaded, BacklogPolicy) and loaded.cuts_per_second > 0 and loaded.drain_seconds > 0
    deployments = _deployments(config)
    runner = deployments["JobRunner"].autoscaling_config  # the backlog reports flow only from an autoscaler
    assert runner["min_replicas"] == runner["max_replicas"] >= 1
    # Serve 2.60 ignores a deployment-level `policy: {name: ...}` without a word: none may hide here.
    assert all("policy" not in (d.autoscaling_config or {}) for d in deployments.values())


def test_local_serve_config_is_loopback_cpu_only_and_auto():
    config = ServeDeploySchema.model_validate(yaml.safe_load(LOCAL_CONFIG.read_text()))
    assert config.http_options.host == "127.0.0.1" and config.http_options.port == 8000
    assert config.applications[0].args["model_profile"] == "auto"
    deployments = _deployments(config)
    assert sum(d.ray_actor_options.num_cpus for d in deployments.values()) <= 1.0  # fits a 2-core laptop
    assert all(not d.ray_actor_options.num_gpus for d in deployments.values())


def test_fault_injection_is_refused_in_production(tmp_path):
    Settings(fault_stall_file=str(tmp_path / "stall"))  # fine in a local run (tests)
    with pytest.raises(ValueError, match="refused in production"):
        Settings(environment="production", fault_stall_file=str(tmp_path / "stall"))


def test_model_sources_default_to_the_published_weights_and_follow_the_settings(tmp_path):
    assert Settings(data_dir=tmp_path).model_sources() == ModelSources()
    local = Settings(data_dir=tmp_path, base_model=str(tmp_path / "turbo"), vae_model="").model_sources()
    assert (local.base, local.vae, local.controlnet) == (str(tmp_path / "turbo"), "", ModelSources.controlnet)


def test_every_deployment_bounds_its_queue_and_checks_its_health_as_the_code_declares():
    """The configs override the decorators, so each states the bounds too; they must say what the code says."""
    from deployments.replica_health import HEALTH_CHECK
    from deployments.serving import ControlNetPreprocessor, Finisher, SdxlTurboGenerator
    from serve_app.ingress import Ingress
    from serve_app.jobqueue.job_runner import JobRunner

    declared = {d.name: d for d in (Ingress, JobRunner, ControlNetPreprocessor, SdxlTurboGenerator, Finisher)}
    assert {name: d.max_queued_requests for name, d in declared.items()} == {
        "Ingress": 100, "JobRunner": 8, "ControlNetPreprocessor": 64, "SdxlTurboGenerator": 64, "Finisher": 64}
    assert declared["Ingress"].backpressure_config.retry_after_s == 2  # Retry-After on its 503s
    for path in (ROOT / "serve_config.yaml", LOCAL_CONFIG):
        deployments = _deployments(ServeDeploySchema.model_validate(yaml.safe_load(path.read_text())))
        assert set(deployments) == set(declared), path
        for name, deployment in deployments.items():
            code = declared[name]
            assert deployment.max_queued_requests == code.max_queued_requests, (path.name, name)
            assert {"health_check_period_s": deployment.health_check_period_s,
                    "health_check_timeout_s": deployment.health_check_timeout_s} == HEALTH_CHECK, (path.name, name)
            assert code._deployment_config.health_check_period_s == HEALTH_CHECK["health_check_period_s"], name
            assert code._deployment_config.health_check_timeout_s == HEALTH_CHECK["health_check_timeout_s"], name
        ingress = deployments["Ingress"].backpressure_config
        assert (ingress.status_code, ingress.retry_after_s) == (503, 2), path.name
