"""The KubeRay RayService is what serve_config.yaml says, and passes Ray's, Kubernetes' and KubeRay's schemas.

No cluster and no copy of KubeRay: Ray's own `ServeDeploySchema` (installed ray) checks serveConfigV2, the
`kubernetes-validate` package checks the pod templates against Kubernetes' published schema, and
tests/unit/kuberay_v1_schema.py (written from KubeRay's Go types) checks the RayService fields.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import ray
import yaml
from pydantic import SecretStr
from ray.serve.schema import ServeDeploySchema

from deploy.kuberay import render
from serve_app.settings import Settings
from tests.unit.kuberay_v1_schema import KUBERAY_VERSION, RAYSERVICE

ROOT = Path(__file__).resolve().parents[2]
RAYSERVICE_YAML = ROOT / "deploy" / "kuberay" / "rayservice.yaml"
KUBERNETES_VERSION = "1.33"  # pod templates are checked against this release's schema (one KubeRay 1.6 supports)


def _manifest() -> dict:
    return yaml.safe_load(RAYSERVICE_YAML.read_text())


def _pod_templates(manifest: dict) -> dict[str, dict]:
    cluster = manifest["spec"]["rayClusterConfig"]
    return {"head": cluster["headGroupSpec"]["template"],
            **{group["groupName"]: group["template"] for group in cluster["workerGroupSpecs"]}}


def _validate_pod_template(template: dict) -> None:
    """Kubernetes' own schema for a PodTemplate, strict: an unknown field anywhere in it is an error."""
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"},
                                  "template": template}, KUBERNETES_VERSION, strict=True)


def _gpu_group(manifest: dict) -> dict:
    (group,) = [g for g in manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
                if g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")]
    return group


def test_the_committed_rayservice_is_what_the_render_command_writes_from_serve_config():
    assert RAYSERVICE_YAML.read_text() == render.render(), (
        "deploy/kuberay/rayservice.yaml is stale: run .venv/bin/python -m deploy.kuberay.render")


def test_serve_config_v2_is_serve_config_yaml_and_passes_rays_serve_deploy_schema():
    embedded = yaml.safe_load(_manifest()["spec"]["serveConfigV2"])
    assert embedded == yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    config = ServeDeploySchema.model_validate(embedded)
    assert config.applications[0].import_path == "serve_app.app:build_app"


def test_the_rayservice_fields_match_kuberays_v1_api():
    jsonschema.validate(_manifest(), RAYSERVICE)
    assert KUBERAY_VERSION in RAYSERVICE_YAML.read_text().splitlines()[0]  # the file names the API it targets


@pytest.mark.parametrize("path, wrong", [
    (("spec", "rayClusterConfig", "enableInTreeAutoscalling"), True),          # misspelt
    (("spec", "upgradeStrategy", "typ"), "NewCluster"),                        # misspelt, one level down
    (("spec", "rayClusterConfig", "workerGroupSpecs", 0, "maxReplica"), 4),    # misspelt in a worker group
    (("spec", "upgradeStrategy", "type"), "BlueGreen"),                        # not a KubeRay strategy
    (("spec", "rayClusterConfig", "headGroupSpec", "rayStartParams", "num-cpus"), 0),  # must be a string
])
def test_a_field_kuberay_does_not_know_is_rejected(path, wrong):
    manifest = _manifest()
    node = manifest
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = wrong
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(manifest, RAYSERVICE)


def test_the_pod_templates_are_valid_kubernetes_objects_and_a_misspelt_field_is_not():
    templates = _pod_templates(_manifest())
    assert set(templates) == {"head", "gpu"}
    for template in templates.values():
        _validate_pod_template(template)
    broken = copy.deepcopy(templates["gpu"])
    broken["spec"]["containers"][0]["resource"] = broken["spec"]["containers"][0].pop("resources")
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate_pod_template(broken)


def test_a_cpu_head_and_a_gpu_group_that_scales_from_zero_with_serves_demand():
    manifest = _manifest()
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert manifest["spec"]["upgradeStrategy"]["type"] == "NewCluster"
    assert cluster["rayVersion"].split(".")[:2] == ray.__version__.split(".")[:2]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"]
    gpu = _gpu_group(manifest)
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1" and gpu["minReplicas"] == 0
    serve = ServeDeploySchema.model_validate(yaml.safe_load(manifest["spec"]["serveConfigV2"]))
    generator = next(d for d in serve.applications[0].deployments if d.name == "SdxlTurboGenerator")
    assert generator.ray_actor_options.num_gpus > 0.5  # so each generator replica takes a GPU pod of its own
    assert gpu["maxReplicas"] >= render.gpu_workers_needed(serve) >= generator.autoscaling_config["max_replicas"]


def _gpu_bounds(config: dict, generator_max: int, preprocessor_max: int, generator_gpus: float = 0.95) -> dict:
    edited = copy.deepcopy(config)
    deployments = {d["name"]: d for d in edited["applications"][0]["deployments"]}
    deployments["SdxlTurboGenerator"]["autoscaling_config"]["max_replicas"] = generator_max
    deployments["SdxlTurboGenerator"]["ray_actor_options"]["num_gpus"] = generator_gpus
    deployments["ControlNetPreprocessor"]["autoscaling_config"]["max_replicas"] = preprocessor_max
    return edited


def test_gpu_pods_needed_are_counted_by_packing_the_gpu_replicas_of_serve_config():
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    gpu_deployments = {d["name"] for d in config["applications"][0]["deployments"]
                       if d.get("ray_actor_options", {}).get("num_gpus")}
    assert gpu_deployments == {"SdxlTurboGenerator", "ControlNetPreprocessor"}

    def needed(*bounds) -> int:
        return render.gpu_workers_needed(ServeDeploySchema.model_validate(_gpu_bounds(config, *bounds)))

    assert needed(3, 2) == 3       # each preprocessor (0.05) rides in a generator's pod (0.95)
    assert needed(3, 5) == 4       # three ride along, the other two share one more GPU
    assert needed(3, 2, 0.5) == 2  # two half-GPU generators to a pod


def test_the_render_refuses_a_serve_config_the_gpu_group_cannot_hold(tmp_path):
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    allowed = _gpu_group(_manifest())["maxReplicas"]
    edited = tmp_path / "serve_config.yaml"
    edited.write_text(yaml.safe_dump(_gpu_bounds(config, allowed, 1)))
    assert _gpu_group(yaml.safe_load(render.render(serve_config=edited)))["maxReplicas"] == allowed
    edited.write_text(yaml.safe_dump(_gpu_bounds(config, allowed + 1, 1)))
    with pytest.raises(ValueError, match=f"needs up to {allowed + 1} GPU pods"):
        render.render(serve_config=edited)
    edited.write_text(yaml.safe_dump(_gpu_bounds(config, 1, 1, generator_gpus=2)))
    with pytest.raises(ValueError, match="more than one GPU"):
        render.render(serve_config=edited)


def test_secrets_come_from_the_kubernetes_secret_and_never_stand_in_the_file():
    secret_settings = {"database_url", "s3_access_key_id"} | {
        name for name, field in Settings.model_fields.items() if field.annotation in (SecretStr, SecretStr | None)}
    secret_env = {f"SASTRE_{name.upper()}" for name in secret_settings}
    for template in _pod_templates(_manifest()).values():
        (container,) = template["spec"]["containers"]
        env = {item["name"]: item for item in container["env"]}
        for name in secret_env:
            assert "value" not in env[name], name
            assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "sastre-secrets", name
        assert container["envFrom"] == [{"configMapRef": {"name": "sastre-config"}}]
        assert env["SASTRE_STORAGE_BACKEND"]["value"] == "s3"  # pods share no disk
