"""Every file under cluster/ is checked offline, the way the tools that read it would.

ray up YAMLs: Ray's own `prepare_config` (merges the provider's defaults.yaml, the setup commands and
the node types' worker bounds) and then `validate_config` (ray-schema.json shipped in the wheel, plus
its head-node-type and max-workers checks). Neither needs cloud credentials: the cloud calls happen
later, in the provider's `bootstrap_config` (IAM role, key pair, subnets, security group on AWS;
project, service account, key on GCP), which needs credentials and is not run here. What it would
open is checked with Ray's own rule builder: the AWS security group's ingress rules come from
`_create_default_inbound_rules`, a pure function. ray-schema leaves `node_config` free-form and
ray up passes it verbatim to the cloud, so it is checked against the clouds' own request schemas,
shipped offline with their clients: EC2 RunInstances from botocore's service model, the GCE
`Instance` resource from google-api-python-client's discovery document. Not checked without an
account: that the instance types, images and quotas exist in the region, and IAM permissions.

KubeRay manifests: no Kubernetes API server here, so a strict key check of our own: the known keys of
every level of ray.io/v1 RayCluster and RayJob (from KubeRay's Go types) and of the core Kubernetes
objects they embed, plus the required fields; an unknown key anywhere is an error.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import googleapiclient
import jsonschema
import pytest
import ray
import yaml
from botocore.session import get_session
from botocore.validate import ParamValidator
from click.exceptions import NoSuchOption
from ray.autoscaler._private.aws.config import _create_default_inbound_rules
from ray.autoscaler._private.gcp.config import get_node_type
from ray.autoscaler._private.gcp.node import GCPNodeType
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.scripts.scripts import start as ray_start

from orchestrator.spec import parse_spec

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "cluster"
RAY_UP_FILES = ["aws-gpu.yaml", "gcp-gpu.yaml", "onprem.yaml"]
PYPROJECT = (REPO / "pyproject.toml").read_text()  # read as text: tomllib needs Python 3.11
SCALESWEEP_PIN = "scalesweep==" + re.search(r'^version = "([^"]+)"', PYPROJECT, re.M).group(1)
TORCH_PIN = "torch==" + re.search(r"torch==([0-9.]+)", (REPO / "Makefile").read_text()).group(1)  # what `make` installs
RAY_PIN = re.search(r'"ray\[default\]==([^"]+)"', PYPROJECT).group(1)
MLFLOW_PIN = re.search(r'"mlflow==([^"]+)"', PYPROJECT).group(1)
IMAGE = re.compile(rf"^rayproject/ray:{re.escape(RAY_PIN)}-py311-(cpu|gpu)$")


def load_ray_up(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def prepared(name: str) -> dict:
    config = prepare_config(load_ray_up(name))
    validate_config(config)
    return config


def all_commands(config: dict, key: str) -> str:
    return "\n".join(config[key])


# -- ray up ------------------------------------------------------------------------------------


def test_the_pinned_ray_is_the_installed_ray():
    assert ray.__version__ == RAY_PIN


@pytest.mark.parametrize("name", RAY_UP_FILES)
def test_ray_up_yaml_passes_rays_own_validation(name):
    config = prepared(name)
    assert config["head_node_type"] in config["available_node_types"]
    # prepare_config merged the common setup commands into the head's and the workers'.
    assert config["setup_commands"][0] in config["head_setup_commands"]


@pytest.mark.parametrize("name", RAY_UP_FILES)
def test_ray_validation_rejects_a_misspelt_key(name):
    """The validation above is strict: the same file with one key misspelt fails."""
    config = load_ray_up(name)
    config["head_start_ray_command"] = config.pop("head_start_ray_commands")
    with pytest.raises(jsonschema.ValidationError, match="head_start_ray_command"):
        validate_config(prepare_config(config))


@pytest.mark.parametrize("name", RAY_UP_FILES)
def test_images_are_the_pinned_ray_without_ray_ml(name):
    docker = prepared(name)["docker"]
    images = {k: v for k, v in docker.items() if k in ("image", "head_image", "worker_image")}
    assert images and all(IMAGE.match(image) for image in images.values()), images
    if "worker_image" in images:  # the head needs no CUDA; the workers do
        assert images["head_image"].endswith("-cpu") and images["worker_image"].endswith("-gpu")
    else:
        assert images["image"].endswith("-gpu")


@pytest.mark.parametrize("name", RAY_UP_FILES)
def test_setup_installs_pinned_scalesweep_and_torch_on_every_node(name):
    config = prepared(name)
    for key in ("head_setup_commands", "worker_setup_commands"):
        commands = all_commands(config, key)
        assert f'"{SCALESWEEP_PIN}"' in commands, key
        assert f'"{TORCH_PIN}"' in commands, key
    # The head's driver writes to the PostgreSQL-backed tracking server (cluster/mlflow/serve.sh).
    assert "psycopg2-binary" in all_commands(config, "head_setup_commands")


@pytest.mark.parametrize("name", RAY_UP_FILES)
def test_token_auth_on_every_node_and_dashboard_only_on_loopback(name):
    config = prepared(name)
    head, workers = all_commands(config, "head_start_ray_commands"), all_commands(config, "worker_start_ray_commands")
    for commands in (head, workers):
        starts = [c for c in commands.split("\n") if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token ray start" in c for c in starts), commands
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in head + workers
    # The token from `ray get-auth-token --generate` reaches every node at Ray's default token path.
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    # Every other file mount is a path in this repository (ray up runs from its root).
    for remote, local in config["file_mounts"].items():
        if remote != "~/.ray/auth_token":
            assert (REPO / local).exists(), local


def ray_start_options(command: str) -> dict:
    """Parse the arguments of the `ray start` in a shell command with ray's own CLI, without running it."""
    args = shlex.split(command.split("ray start", 1)[1].replace("$RAY_HEAD_IP", "10.0.0.1"))
    return ray_start.make_context("start", args).params


@pytest.mark.parametrize("name", RAY_UP_FILES)
def test_start_commands_are_valid_ray_start_invocations(name):
    config = prepared(name)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (command,) = [c for c in config[key] if "ray start" in c]
        options = ray_start_options(command)
        assert options["head"] == (key == "head_start_ray_commands")
    head = ray_start_options(next(c for c in config["head_start_ray_commands"] if "ray start" in c))
    assert head["dashboard_host"] == "127.0.0.1"
    with pytest.raises(NoSuchOption):
        ray_start_options("ray start --head --dashbord-host=127.0.0.1")


@pytest.mark.parametrize("name", ["aws-gpu.yaml", "gcp-gpu.yaml"])
def test_cloud_head_has_no_gpu_and_gpu_workers_autoscale(name):
    config = prepared(name)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"].get("CPU") == 0
    assert head["max_workers"] == 0
    gpu_types = {k: v for k, v in types.items() if v["resources"].get("GPU", 0) >= 1}
    assert len(gpu_types) >= 2
    for node_type in gpu_types.values():
        assert node_type["min_workers"] == 0 < node_type["max_workers"] <= config["max_workers"]
    assert sum(t["max_workers"] for t in gpu_types.values()) >= 4


def test_aws_gpu_workers_are_gpu_instances_mostly_spot_and_nothing_but_ssh_is_opened():
    config = prepared("aws-gpu.yaml")
    types = config["available_node_types"]
    gpu_types = {k: v for k, v in types.items() if k != config["head_node_type"]}
    # g5: NVIDIA A10G, g6: NVIDIA L4; the head is a general-purpose instance.
    assert all(re.match(r"^g[56]\.", t["node_config"]["InstanceType"]) for t in gpu_types.values())
    assert not re.match(r"^[gp]\d", types["head"]["node_config"]["InstanceType"])
    spot = [k for k, t in gpu_types.items() if t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"]
    assert spot, "no spot GPU worker type"
    # ray up creates the security group (see the ingress test below) instead of using one of ours.
    assert all("SecurityGroupIds" not in t["node_config"] for t in types.values())
    assert config["provider"]["cache_stopped_nodes"] is False  # stopped spot nodes cannot be resumed


def test_gcp_gpu_workers_are_gpu_machines_mostly_spot():
    config = prepared("gcp-gpu.yaml")
    types = config["available_node_types"]
    gpu_types = {k: v for k, v in types.items() if k != config["head_node_type"]}
    # a2: NVIDIA A100, g2: NVIDIA L4; both come with their GPUs attached, no guestAccelerators needed.
    assert all(re.match(r"^(a2|g2)-", t["node_config"]["machineType"]) for t in gpu_types.values())
    for node_type in gpu_types.values():
        # GCE refuses live migration for GPU machines: onHostMaintenance must be TERMINATE.
        assert node_type["node_config"]["scheduling"]["onHostMaintenance"] == "TERMINATE"
    spot = [k for k, t in gpu_types.items() if t["node_config"]["scheduling"].get("provisioningModel") == "SPOT"]
    assert spot, "no spot GPU worker type"
    assert config["provider"]["project_id"]


def test_aws_ingress_is_ssh_and_intra_cluster_only():
    """The rules ray up authorizes on the security group it creates, built by Ray's own code."""
    config = prepared("aws-gpu.yaml")
    extra = config["provider"].get("security_group", {}).get("IpPermissions", [])
    rules = _create_default_inbound_rules({"sg-cluster"}, extra)
    from_outside = [r for r in rules if r.get("IpRanges") or r.get("Ipv6Ranges") or r.get("PrefixListIds")]
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in from_outside] == [("tcp", 22, 22)]
    inside = [r for r in rules if r not in from_outside]
    assert all(r["UserIdGroupPairs"] == [{"GroupId": "sg-cluster"}] for r in inside)


def test_aws_node_configs_are_valid_run_instances_requests():
    """node_config as Ray's AWS provider sends it to EC2 RunInstances, checked against botocore's model."""
    config = prepared("aws-gpu.yaml")
    run_instances = get_session().get_service_model("ec2").operation_model("RunInstances").input_shape
    for name, node_type in config["available_node_types"].items():
        # What bootstrap and the node provider add before calling create_instances(**conf).
        request = {**node_type["node_config"], "SubnetId": "subnet-0123456789abcdef0",
                   "SecurityGroupIds": ["sg-0123456789abcdef0"], "MinCount": 1, "MaxCount": 1,
                   "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "ray-node-type", "Value": name}]}]}  # fmt: skip
        report = ParamValidator().validate(request, run_instances)
        assert not report.has_errors(), f"{name}: {report.generate_report()}"
    # The model does catch a misspelt field.
    misspelt = {"InstanceType": "g6.2xlarge", "ImageId": "ami-0", "MinCount": 1, "MaxCount": 1,
                "InstanceMarketOption": {"MarketType": "spot"}}  # fmt: skip
    assert "InstanceMarketOption" in ParamValidator().validate(misspelt, run_instances).generate_report()


def gce_problems(value: Any, schema: dict, schemas: dict, path: str) -> list[str]:
    """Unknown fields and values outside an enum, per the GCE API's discovery document."""
    if "$ref" in schema:
        return gce_problems(value, schemas[schema["$ref"]], schemas, path)
    if isinstance(value, dict) and "properties" in schema:
        problems = [f"{path}.{k}: not a field of the API" for k in value if k not in schema["properties"]]
        for key, item in value.items():
            if key in schema["properties"]:
                problems += gce_problems(item, schema["properties"][key], schemas, f"{path}.{key}")
        return problems
    if isinstance(value, list) and "items" in schema:
        return [p for i, item in enumerate(value) for p in gce_problems(item, schema["items"], schemas, f"{path}[{i}]")]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} not in {schema['enum']}"]
    return []


def test_gcp_node_configs_are_valid_instances():
    """node_config as Ray's GCP provider sends it to instances.insert, checked against the API's schema."""
    config = prepared("gcp-gpu.yaml")
    discovery = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "compute.v1.json"
    schemas = json.loads(discovery.read_text())["schemas"]
    for name, node_type in config["available_node_types"].items():
        node_config = node_type["node_config"]
        assert get_node_type(node_config) == GCPNodeType.COMPUTE
        assert gce_problems(node_config, schemas["Instance"], schemas, name) == []
    # The checker does catch a misspelt field and a value outside an enum.
    bad = {"machineType": "g2-standard-8", "scheduling": {"provisioningModel": "SPOTTY", "preemptable": True}}
    assert gce_problems(bad, schemas["Instance"], schemas, "bad") == [
        "bad.scheduling.preemptable: not a field of the API",
        f"bad.scheduling.provisioningModel: 'SPOTTY' not in {schemas['Scheduling']['properties']['provisioningModel']['enum']}",
    ]


def test_onprem_has_a_head_and_four_workers_and_the_head_trains_nothing():
    config = prepared("onprem.yaml")
    provider = config["provider"]
    assert provider["head_ip"] not in provider["worker_ips"] and len(set(provider["worker_ips"])) == 4
    node_type = config["available_node_types"]["local.cluster.node"]
    assert node_type["min_workers"] == node_type["max_workers"] == 4
    assert "--num-gpus=0" in all_commands(config, "head_start_ray_commands")


# -- KubeRay -----------------------------------------------------------------------------------

ANY = None  # a leaf whose value is not checked here


@dataclass(frozen=True)
class Obj:
    """An object with exactly these known keys (each mapped to its own shape) and these required ones."""

    keys: dict[str, Any]
    required: tuple[str, ...] = ()


@dataclass(frozen=True)
class ListOf:
    item: Any


@dataclass(frozen=True)
class MapOf:
    """Free keys (labels, rayStartParams, resource names) with values of one shape."""

    value: Any = ANY


@dataclass
class KeyCheck:
    problems: list[str] = field(default_factory=list)

    def check(self, value: Any, shape: Any, path: str) -> None:
        if shape is ANY:
            return
        if isinstance(shape, Obj):
            if not isinstance(value, dict):
                self.problems.append(f"{path}: expected a mapping, got {type(value).__name__}")
                return
            for key in value:
                if key not in shape.keys:
                    self.problems.append(f"{path}.{key}: unknown key; known here: {', '.join(sorted(shape.keys))}")
            for key in shape.required:
                if key not in value:
                    self.problems.append(f"{path}.{key}: required field is missing")
            for key, item in value.items():
                if key in shape.keys:
                    self.check(item, shape.keys[key], f"{path}.{key}")
        elif isinstance(shape, ListOf):
            if not isinstance(value, list):
                self.problems.append(f"{path}: expected a list, got {type(value).__name__}")
                return
            for i, item in enumerate(value):
                self.check(item, shape.item, f"{path}[{i}]")
        elif isinstance(shape, MapOf):
            if not isinstance(value, dict):
                self.problems.append(f"{path}: expected a mapping, got {type(value).__name__}")
                return
            for key, item in value.items():
                self.check(item, shape.value, f"{path}.{key}")


def key_problems(document: dict, shape: Obj, name: str = "") -> list[str]:
    checker = KeyCheck()
    checker.check(document, shape, name or document.get("kind", "?"))
    return checker.problems


# Core Kubernetes (v1) objects, the fields of k8s.io/api that these manifests may use.
METADATA = Obj(
    {"name": ANY, "generateName": ANY, "namespace": ANY, "labels": MapOf(), "annotations": MapOf(),
     "finalizers": ANY, "ownerReferences": ANY}  # fmt: skip
)
KEY_SELECTOR = Obj({"name": ANY, "key": ANY, "optional": ANY}, required=("name", "key"))
ENV_VAR = Obj(
    {"name": ANY, "value": ANY,
     "valueFrom": Obj({"secretKeyRef": KEY_SELECTOR, "configMapKeyRef": KEY_SELECTOR,
                       "fieldRef": Obj({"fieldPath": ANY, "apiVersion": ANY}),
                       "resourceFieldRef": Obj({"containerName": ANY, "resource": ANY, "divisor": ANY})})},
    required=("name",),
)  # fmt: skip
RESOURCES = Obj({"requests": MapOf(), "limits": MapOf(), "claims": ANY})
PROBE = Obj(
    {"exec": Obj({"command": ListOf(ANY)}), "httpGet": Obj({"path": ANY, "port": ANY, "host": ANY, "scheme": ANY, "httpHeaders": ANY}),
     "tcpSocket": Obj({"port": ANY, "host": ANY}), "grpc": Obj({"port": ANY, "service": ANY}),
     "initialDelaySeconds": ANY, "periodSeconds": ANY, "timeoutSeconds": ANY, "successThreshold": ANY,
     "failureThreshold": ANY, "terminationGracePeriodSeconds": ANY}
)  # fmt: skip
CONTAINER = Obj(
    {"name": ANY, "image": ANY, "imagePullPolicy": ANY, "command": ListOf(ANY), "args": ListOf(ANY), "workingDir": ANY,
     "ports": ListOf(Obj({"containerPort": ANY, "name": ANY, "protocol": ANY, "hostPort": ANY, "hostIP": ANY}, required=("containerPort",))),
     "env": ListOf(ENV_VAR), "envFrom": ANY, "resources": RESOURCES,
     "volumeMounts": ListOf(Obj({"name": ANY, "mountPath": ANY, "subPath": ANY, "subPathExpr": ANY, "readOnly": ANY,
                                 "mountPropagation": ANY, "recursiveReadOnly": ANY}, required=("name", "mountPath"))),
     "volumeDevices": ANY, "livenessProbe": PROBE, "readinessProbe": PROBE, "startupProbe": PROBE, "lifecycle": ANY,
     "securityContext": ANY, "stdin": ANY, "stdinOnce": ANY, "tty": ANY, "terminationMessagePath": ANY,
     "terminationMessagePolicy": ANY, "restartPolicy": ANY, "resizePolicy": ANY},
    required=("name", "image"),
)  # fmt: skip
VOLUME = Obj(
    {"name": ANY, "emptyDir": Obj({"medium": ANY, "sizeLimit": ANY}),
     "configMap": Obj({"name": ANY, "items": ANY, "defaultMode": ANY, "optional": ANY}),
     "secret": Obj({"secretName": ANY, "items": ANY, "defaultMode": ANY, "optional": ANY}),
     "persistentVolumeClaim": Obj({"claimName": ANY, "readOnly": ANY}, required=("claimName",)),
     "hostPath": Obj({"path": ANY, "type": ANY}), "nfs": Obj({"server": ANY, "path": ANY, "readOnly": ANY}),
     "projected": ANY, "csi": ANY, "ephemeral": ANY},
    required=("name",),
)  # fmt: skip
TOLERATION = Obj({"key": ANY, "operator": ANY, "value": ANY, "effect": ANY, "tolerationSeconds": ANY})
POD_SPEC = Obj(
    {"containers": ListOf(CONTAINER), "initContainers": ListOf(CONTAINER), "ephemeralContainers": ANY,
     "volumes": ListOf(VOLUME), "tolerations": ListOf(TOLERATION), "nodeSelector": MapOf(), "affinity": ANY,
     "serviceAccountName": ANY, "serviceAccount": ANY, "automountServiceAccountToken": ANY, "securityContext": ANY,
     "restartPolicy": ANY, "terminationGracePeriodSeconds": ANY, "activeDeadlineSeconds": ANY, "dnsPolicy": ANY,
     "dnsConfig": ANY, "hostNetwork": ANY, "hostPID": ANY, "hostIPC": ANY, "shareProcessNamespace": ANY,
     "imagePullSecrets": ANY, "priorityClassName": ANY, "priority": ANY, "schedulerName": ANY, "runtimeClassName": ANY,
     "topologySpreadConstraints": ANY, "hostname": ANY, "subdomain": ANY, "hostAliases": ANY, "nodeName": ANY,
     "enableServiceLinks": ANY, "preemptionPolicy": ANY, "overhead": ANY, "readinessGates": ANY, "os": ANY,
     "hostUsers": ANY, "schedulingGates": ANY, "resourceClaims": ANY, "resources": ANY, "setHostnameAsFQDN": ANY},
    required=("containers",),
)  # fmt: skip
POD_TEMPLATE = Obj({"metadata": METADATA, "spec": POD_SPEC}, required=("spec",))
LABEL_SELECTOR = Obj({"matchLabels": MapOf(), "matchExpressions": ANY})
PVC_SPEC = Obj(
    {"accessModes": ListOf(ANY), "resources": RESOURCES, "storageClassName": ANY, "volumeMode": ANY, "selector": LABEL_SELECTOR,
     "dataSource": ANY, "dataSourceRef": ANY, "volumeName": ANY, "volumeAttributesClassName": ANY},
    required=("accessModes", "resources"),
)  # fmt: skip
SERVICE_SPEC = Obj(
    {"type": ANY, "selector": MapOf(),
     "ports": ListOf(Obj({"name": ANY, "port": ANY, "targetPort": ANY, "protocol": ANY, "nodePort": ANY, "appProtocol": ANY}, required=("port",))),
     "clusterIP": ANY, "clusterIPs": ANY, "sessionAffinity": ANY, "sessionAffinityConfig": ANY, "externalTrafficPolicy": ANY,
     "internalTrafficPolicy": ANY, "ipFamilies": ANY, "ipFamilyPolicy": ANY, "loadBalancerSourceRanges": ANY,
     "publishNotReadyAddresses": ANY, "externalIPs": ANY, "loadBalancerIP": ANY, "loadBalancerClass": ANY,
     "allocateLoadBalancerNodePorts": ANY, "healthCheckNodePort": ANY, "trafficDistribution": ANY}
)  # fmt: skip


def top_level(api_version_kind_spec: Obj, **extra: Any) -> Obj:
    return Obj({"apiVersion": ANY, "kind": ANY, "metadata": METADATA, "spec": api_version_kind_spec, **extra},
               required=("apiVersion", "kind", "metadata", "spec"))  # fmt: skip


CORE = {
    ("v1", "Service"): top_level(SERVICE_SPEC),
    ("v1", "PersistentVolumeClaim"): top_level(PVC_SPEC),
    ("v1", "ConfigMap"): Obj({"apiVersion": ANY, "kind": ANY, "metadata": METADATA, "data": MapOf(), "binaryData": MapOf(), "immutable": ANY},
                             required=("apiVersion", "kind", "metadata")),  # fmt: skip
    ("apps/v1", "Deployment"): top_level(Obj(
        {"replicas": ANY, "selector": LABEL_SELECTOR, "template": POD_TEMPLATE, "minReadySeconds": ANY,
         "revisionHistoryLimit": ANY, "progressDeadlineSeconds": ANY, "paused": ANY,
         "strategy": Obj({"type": ANY, "rollingUpdate": Obj({"maxSurge": ANY, "maxUnavailable": ANY})})},
        required=("selector", "template"),
    )),  # fmt: skip
    ("apps/v1", "StatefulSet"): top_level(Obj(
        {"replicas": ANY, "selector": LABEL_SELECTOR, "template": POD_TEMPLATE, "serviceName": ANY,
         "volumeClaimTemplates": ListOf(Obj({"metadata": METADATA, "spec": PVC_SPEC}, required=("metadata", "spec"))),
         "podManagementPolicy": ANY, "updateStrategy": ANY, "revisionHistoryLimit": ANY, "minReadySeconds": ANY,
         "persistentVolumeClaimRetentionPolicy": ANY, "ordinals": ANY},
        required=("selector", "template"),
    )),  # fmt: skip
}

# ray.io/v1, from KubeRay's ray-operator/apis/ray/v1 Go types (json tags), KubeRay >= 1.5.1.
AUTOSCALER_OPTIONS = Obj(
    {"resources": RESOURCES, "image": ANY, "imagePullPolicy": ANY, "securityContext": ANY, "idleTimeoutSeconds": ANY,
     "upscalingMode": ANY, "env": ListOf(ENV_VAR), "envFrom": ANY, "volumeMounts": ANY, "version": ANY}
)  # fmt: skip
HEAD_GROUP = Obj(
    {"template": POD_TEMPLATE, "headService": ANY, "enableIngress": ANY, "rayStartParams": MapOf(), "serviceType": ANY},
    required=("template",),
)  # fmt: skip
WORKER_GROUP = Obj(
    {"suspend": ANY, "groupName": ANY, "replicas": ANY, "minReplicas": ANY, "maxReplicas": ANY, "idleTimeoutSeconds": ANY,
     "rayStartParams": MapOf(), "template": POD_TEMPLATE, "scaleStrategy": Obj({"workersToDelete": ANY}), "numOfHosts": ANY},
    required=("groupName", "minReplicas", "maxReplicas", "template"),
)  # fmt: skip
RAY_CLUSTER_SPEC = Obj(
    {"suspend": ANY, "managedBy": ANY, "autoscalerOptions": AUTOSCALER_OPTIONS, "headServiceAnnotations": MapOf(),
     "enableInTreeAutoscaling": ANY, "gcsFaultToleranceOptions": ANY, "headGroupSpec": HEAD_GROUP, "rayVersion": ANY,
     "workerGroupSpecs": ListOf(WORKER_GROUP),
     "authOptions": Obj({"mode": ANY, "secretName": ANY, "enableK8sTokenAuth": ANY})},
    required=("headGroupSpec", "rayVersion"),
)  # fmt: skip
RAY_JOB_SPEC = Obj(
    {"activeDeadlineSeconds": ANY, "backoffLimit": ANY, "rayClusterSpec": RAY_CLUSTER_SPEC, "submitterPodTemplate": POD_TEMPLATE,
     "metadata": MapOf(), "clusterSelector": MapOf(), "submitterConfig": Obj({"backoffLimit": ANY}), "managedBy": ANY,
     "deletionPolicy": ANY, "entrypoint": ANY, "runtimeEnvYAML": ANY, "jobId": ANY, "submissionMode": ANY,
     "entrypointResources": ANY, "entrypointNumCpus": ANY, "entrypointNumGpus": ANY, "ttlSecondsAfterFinished": ANY,
     "shutdownAfterJobFinishes": ANY, "suspend": ANY},
    required=("entrypoint", "rayClusterSpec"),
)  # fmt: skip
RAY = {("ray.io/v1", "RayCluster"): top_level(RAY_CLUSTER_SPEC), ("ray.io/v1", "RayJob"): top_level(RAY_JOB_SPEC)}
KNOWN = {**CORE, **RAY}


def manifests(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((CLUSTER / "kuberay" / name).read_text()) if d]


def by_kind(name: str, kind: str, metadata_name: str | None = None) -> dict:
    (document,) = [
        d for d in manifests(name) if d["kind"] == kind and metadata_name in (None, d["metadata"]["name"])
    ]
    return document


def cluster_specs() -> list[tuple[str, dict]]:
    return [
        ("raycluster.yaml", by_kind("raycluster.yaml", "RayCluster")["spec"]),
        ("rayjob.yaml", by_kind("rayjob.yaml", "RayJob")["spec"]["rayClusterSpec"]),
    ]


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml", "mlflow.yaml"])
def test_kubernetes_manifests_pass_the_strict_key_check(name):
    documents = manifests(name)
    assert documents
    for document in documents:
        kind = (document.get("apiVersion"), document.get("kind"))
        assert kind in KNOWN, f"{name}: unexpected object {kind}"
        assert key_problems(document, KNOWN[kind]) == []
        assert document["metadata"]["namespace"] == "scalesweep"


def test_the_key_check_catches_misspelt_and_missing_keys():
    cluster = copy.deepcopy(by_kind("raycluster.yaml", "RayCluster"))
    group = cluster["spec"]["workerGroupSpecs"][0]
    group["template"]["spec"]["tolerations"][0]["efect"] = group["template"]["spec"]["tolerations"][0].pop("effect")
    del group["groupName"]
    cluster["spec"]["workerGroupSpec"] = cluster["spec"].pop("workerGroupSpecs")
    assert key_problems(cluster, KNOWN[("ray.io/v1", "RayCluster")]) == [
        "RayCluster.spec.workerGroupSpec: unknown key; known here: " + ", ".join(sorted(RAY_CLUSTER_SPEC.keys))
    ]
    cluster["spec"]["workerGroupSpecs"] = cluster["spec"].pop("workerGroupSpec")
    problems = key_problems(cluster, KNOWN[("ray.io/v1", "RayCluster")])
    assert problems == [
        "RayCluster.spec.workerGroupSpecs[0].groupName: required field is missing",
        "RayCluster.spec.workerGroupSpecs[0].template.spec.tolerations[0].efect: unknown key; known here: "
        + ", ".join(sorted(TOLERATION.keys)),
    ]


@pytest.mark.parametrize("name, spec", cluster_specs())
def test_kuberay_cluster_pins_ray_token_auth_private_head_and_gpu_workers(name, spec):
    assert spec["rayVersion"] == RAY_PIN
    assert spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP"  # never NodePort/LoadBalancer: the dashboard stays inside
    assert not head.get("enableIngress")
    assert head["rayStartParams"]["num-gpus"] == "0"
    (head_container,) = head["template"]["spec"]["containers"]
    assert IMAGE.match(head_container["image"]) and head_container["image"].endswith("-cpu")
    assert "nvidia.com/gpu" not in head_container["resources"]["limits"]
    assert spec["enableInTreeAutoscaling"] is True
    (group,) = spec["workerGroupSpecs"]
    assert 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"] and group["maxReplicas"] >= 4
    pod = group["template"]["spec"]
    (worker,) = pod["containers"]
    assert IMAGE.match(worker["image"]) and worker["image"].endswith("-gpu")
    assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == worker["resources"]["requests"]["nvidia.com/gpu"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


@pytest.mark.parametrize("name, spec", cluster_specs())
def test_kuberay_ray_start_params_are_ray_start_options(name, spec):
    """KubeRay turns rayStartParams into `ray start --KEY=VALUE` flags."""
    groups = [("--head", spec["headGroupSpec"])] + [("--address=10.0.0.1:6379", g) for g in spec["workerGroupSpecs"]]
    for first, group in groups:
        flags = " ".join(f"--{k}={shlex.quote(v)}" for k, v in group["rayStartParams"].items())
        ray_start_options(f"ray start {first} {flags}")


def test_rayjob_runs_the_mounted_spec_with_pinned_scalesweep_and_cleans_up():
    job = by_kind("rayjob.yaml", "RayJob")["spec"]
    assert re.fullmatch(r"scalesweep run (\S+) --address auto --no-progress", job["entrypoint"])
    spec_path = Path(job["entrypoint"].split()[2])
    assert job["shutdownAfterJobFinishes"] is True and job["ttlSecondsAfterFinished"] > 0
    runtime_env = yaml.safe_load(job["runtimeEnvYAML"])
    assert set(runtime_env["pip"]) == {SCALESWEEP_PIN, TORCH_PIN}

    # The ConfigMap is mounted on the head, where the job's driver runs, at the entrypoint's path.
    head_pod = job["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    (mount,) = head_pod["containers"][0]["volumeMounts"]
    (volume,) = [v for v in head_pod["volumes"] if v["name"] == mount["name"]]
    config_map = by_kind("rayjob.yaml", "ConfigMap")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert spec_path.parent == Path(mount["mountPath"]) and spec_path.name in config_map["data"]

    # The sweep in it is a valid spec, and its results go to the tracking server of mlflow.yaml.
    sweep = parse_spec(yaml.safe_load(config_map["data"][spec_path.name]), "rayjob.yaml ConfigMap")
    service = by_kind("mlflow.yaml", "Service", "mlflow")
    port = service["spec"]["ports"][0]["port"]
    assert sweep.tracking.uri == f"http://mlflow.{service['metadata']['namespace']}.svc.cluster.local:{port}"


def test_mlflow_on_kubernetes_uses_postgres_a_secret_and_stays_inside_the_cluster():
    documents = manifests("mlflow.yaml")
    services = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Service"}
    assert all(s["spec"]["type"] == "ClusterIP" for s in services.values())
    server = by_kind("mlflow.yaml", "Deployment")["spec"]["template"]["spec"]["containers"][0]
    command = " ".join(server["args"])
    assert '--backend-store-uri "postgresql://mlflow:${DB_PASSWORD}@mlflow-postgres:5432/mlflow"' in command
    assert "--artifacts-destination" in command
    assert "mlflow-postgres" in services and services["mlflow-postgres"]["spec"]["ports"][0]["port"] == 5432
    # MLflow answers only to Host headers it knows: the Service's DNS names and localhost (port-forward).
    allowed = re.search(r'--allowed-hosts "([^"]+)"', command).group(1).split(",")
    assert "mlflow.scalesweep.svc.cluster.local:5000" in allowed and "localhost:*" in allowed
    # The password comes from one Secret, in both the database and the server; it is not in the file.
    postgres = by_kind("mlflow.yaml", "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    refs = [e["valueFrom"]["secretKeyRef"] for c in (server, postgres) for e in c["env"] if "valueFrom" in e]
    assert refs == [{"name": "mlflow-db", "key": "password"}] * 2
    assert not [d for d in documents if d["kind"] == "Secret"]
    assert server["image"] == f"ghcr.io/mlflow/mlflow:v{MLFLOW_PIN}"


def test_mlflow_serve_script_refuses_a_backend_that_is_not_postgres(tmp_path):
    script = CLUSTER / "mlflow" / "serve.sh"
    env = {**os.environ, "HOME": str(tmp_path), "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "must be a PostgreSQL URI" in result.stderr
    env.pop("MLFLOW_BACKEND_STORE_URI")
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "MLFLOW_BACKEND_STORE_URI" in result.stderr
    assert not (tmp_path / "mlflow-server.pid").exists()  # nothing was started
