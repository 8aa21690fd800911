"""A JSON schema of KubeRay's `ray.io/v1` RayService, so a misspelt or misplaced field fails a test, not a deploy.

Written by hand from KubeRay 1.6's Go types (ray-project/kuberay, ray-operator/apis/ray/v1: `RayServiceSpec`,
`RayServiceUpgradeStrategy`, `ClusterUpgradeOptions` in rayservice_types.go; `RayClusterSpec`, `AutoscalerOptions`,
`AuthOptions`, `HeadGroupSpec`, `WorkerGroupSpec` in raycluster_types.go), one property per json tag, with
`additionalProperties: false` on every KubeRay type, so a typo fails here instead of at `kubectl apply` on a
live cluster (or, with field validation off, being pruned and silently ignored). Fields that are Kubernetes core types (the pod
templates, Services, env lists) are only typed here as objects or arrays: tests/unit/test_kuberay.py checks
the pod templates against Kubernetes' own schema. Enumerations are KubeRay's kubebuilder enums and consts.
"""

from __future__ import annotations

KUBERAY_VERSION = "1.6"

_INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
_COUNT = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}  # rayStartParams: "1", never 1
_OBJECT = {"type": "object"}
_LIST = {"type": "array"}


def _closed(properties: dict, required: tuple[str, ...] = ()) -> dict:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


CLUSTER_UPGRADE_OPTIONS = _closed({
    "maxSurgePercent": _INT32,
    "stepSizePercent": _INT32,
    "intervalSeconds": _INT32,
    "gatewayClassName": {"type": "string"},
}, required=("stepSizePercent", "intervalSeconds", "gatewayClassName"))

RAYSERVICE_UPGRADE_STRATEGY = _closed({
    "type": {"enum": ["NewCluster", "NewClusterWithIncrementalUpgrade", "None"]},
    "clusterUpgradeOptions": CLUSTER_UPGRADE_OPTIONS,
})

AUTOSCALER_OPTIONS = _closed({
    "resources": _OBJECT,
    "image": {"type": "string"},
    "imagePullPolicy": {"enum": ["Always", "Never", "IfNotPresent"]},
    "securityContext": _OBJECT,
    "idleTimeoutSeconds": _COUNT,
    "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
    "version": {"enum": ["v1", "v2"]},
    "env": _LIST,
    "envFrom": _LIST,
    "volumeMounts": _LIST,
    "command": {"type": "array", "items": {"type": "string"}},
    "args": {"type": "array", "items": {"type": "string"}},
})

AUTH_OPTIONS = _closed({
    "enableK8sTokenAuth": {"type": "boolean"},
    "secretName": {"type": "string", "minLength": 1},
    "mode": {"enum": ["disabled", "token"]},
})

HEAD_GROUP_SPEC = _closed({
    "template": _OBJECT,
    "headService": _OBJECT,
    "enableIngress": {"type": "boolean"},
    "ingressOptions": _OBJECT,
    "resources": _STRING_MAP,
    "labels": _STRING_MAP,
    "rayStartParams": _STRING_MAP,
    "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]},
}, required=("template",))

WORKER_GROUP_SPEC = _closed({
    "suspend": {"type": "boolean"},
    "groupName": {"type": "string", "minLength": 1},
    "replicas": _COUNT,
    "minReplicas": _COUNT,
    "maxReplicas": _COUNT,
    "idleTimeoutSeconds": _COUNT,
    "priority": _INT32,
    "resources": _STRING_MAP,
    "labels": _STRING_MAP,
    "rayStartParams": _STRING_MAP,
    "template": _OBJECT,
    "scaleStrategy": _closed({"workersToDelete": {"type": "array", "items": {"type": "string"}}}),
    "numOfHosts": _COUNT,
}, required=("groupName", "template"))

RAY_CLUSTER_SPEC = _closed({
    "upgradeStrategy": _closed({"type": {"enum": ["Recreate", "None"]}}),
    "authOptions": AUTH_OPTIONS,
    "suspend": {"type": "boolean"},
    "managedBy": {"enum": ["ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"]},
    "autoscalerOptions": AUTOSCALER_OPTIONS,
    "headServiceAnnotations": _STRING_MAP,
    "enableInTreeAutoscaling": {"type": "boolean"},
    "gcsFaultToleranceOptions": _OBJECT,
    "historyServerOptions": _OBJECT,
    "networkPolicy": _OBJECT,
    "tlsOptions": _closed({"enabled": {"type": "boolean"}}),
    "headGroupSpec": HEAD_GROUP_SPEC,
    "rayVersion": {"type": "string"},
    "workerGroupSpecs": {"type": "array", "items": WORKER_GROUP_SPEC},
}, required=("headGroupSpec",))

RAYSERVICE_SPEC = _closed({
    "rayClusterDeletionDelaySeconds": _COUNT,
    "serviceUnhealthySecondThreshold": _INT32,     # deprecated, unused by the operator
    "deploymentUnhealthySecondThreshold": _INT32,  # deprecated, unused by the operator
    "serveService": _OBJECT,
    "upgradeStrategy": RAYSERVICE_UPGRADE_STRATEGY,
    "serveConfigV2": {"type": "string"},
    "rayClusterConfig": RAY_CLUSTER_SPEC,
    "excludeHeadPodFromServeSvc": {"type": "boolean"},
}, required=("rayClusterConfig",))

RAYSERVICE = _closed({
    "apiVersion": {"const": "ray.io/v1"},
    "kind": {"const": "RayService"},
    # The metadata we write, not all of ObjectMeta: a name is required, as the API server requires one.
    "metadata": _closed({
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    }, required=("name",)),
    "spec": RAYSERVICE_SPEC,
}, required=("apiVersion", "kind", "metadata", "spec"))
