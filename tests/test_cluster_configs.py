"""Every file under cluster/, and every command of cluster/README.md, checked offline the way the tools
that read them would.

ray up YAMLs: Ray's own `prepare_config` (merges the provider's defaults.yaml, the setup commands and
the node types' worker bounds) and then `validate_config` (ray-schema.json shipped in the wheel, plus
its head-node-type and max-workers checks). Neither needs cloud credentials: the cloud calls happen
later, in the provider's `bootstrap_config`, which is not run here. What it would open is checked with
Ray's own rule builder (`_create_default_inbound_rules`), which nodes Ray's autoscaler launches for a
request with Ray's own `get_nodes_for` and utilisation scorer, and `node_config` (free-form to Ray,
passed verbatim to the cloud) against the clouds' own request schemas, shipped with their clients:
EC2 RunInstances from botocore's model, the GCE `Instance` from google-api-python-client's discovery
document. Not checked without an account: that instance types, images and quotas exist in the region,
and IAM as AWS evaluates it.

KubeRay manifests: against the openAPIV3Schema of KubeRay v1.7.0's own CRDs (tests/data, vendored
verbatim from ray-project/kuberay at tag v1.7.0), made strict the way the API server treats a
structural schema: a field the schema does not name is refused (kubectl's default strict field
validation; without it, pruned). The core objects beside them (Deployment, StatefulSet, Service,
PVC) are checked against the Kubernetes schemas those CRDs embed (pod template, Service, PVC spec).
Not checked: the CRDs' CEL rules (`x-kubernetes-validations`), which need an API server.

cluster/README.md: every command in it parses with the tool that runs it (`ray`, `scalesweep`,
awscli), refers to files that exist, and agrees with the files it drives.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import fnmatch
import functools
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import googleapiclient
import jsonpatch
import jsonschema
import pytest
import ray
import yaml
from botocore.session import get_session
from botocore.validate import ParamValidator
from click.exceptions import NoSuchOption
from dockerfile_parse import DockerfileParser
from ray.autoscaler._private.aws.config import _create_default_inbound_rules
from ray.autoscaler._private.gcp.config import get_node_type
from ray.autoscaler._private.gcp.node import GCPNodeType
from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary
from ray.autoscaler._private.resource_demand_scheduler import _default_utilization_scorer, get_nodes_for
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.autoscaler.sdk import get_docker_host_mount_location
from ray.scripts.scripts import cli as ray_cli
from ray.scripts.scripts import start as ray_start

from orchestrator.spec import parse_spec
from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "cluster"
README = (CLUSTER / "README.md").read_text()
RAY_UP_FILES = ["aws-gpu.yaml", "gcp-gpu.yaml", "onprem.yaml"]
CLOUD_FILES = ["aws-gpu.yaml", "gcp-gpu.yaml"]
PYPROJECT = (REPO / "pyproject.toml").read_text()  # read as text: tomllib needs Python 3.11
VERSION = re.search(r'^version = "([^"]+)"', PYPROJECT, re.M).group(1)
TORCH_PIN = "torch==" + re.search(r"torch==([0-9.]+)", (REPO / "Makefile").read_text()).group(1)  # what `make` installs
RAY_PIN = re.search(r'"ray\[default\]==([^"]+)"', PYPROJECT).group(1)
MLFLOW_PIN = re.search(r'"mlflow==([^"]+)"', PYPROJECT).group(1)
IMAGE = re.compile(rf"^rayproject/ray:{re.escape(RAY_PIN)}-py311-(cpu|gpu)$")
PACKAGES = re.findall(r'"(\w+)\*"', re.search(r"^include = \[(.*)\]$", PYPROJECT, re.M).group(1))
CRD_VERSION = "v1.7.0"
SCALESWEEP_IMAGE = f"ghcr.io/YOUR-ORG/scalesweep:{VERSION}"  # built from cluster/Dockerfile (README)


def load_ray_up(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


@functools.cache
def _prepared(name: str) -> dict:
    config = prepare_config(load_ray_up(name))
    validate_config(config)
    return config


def prepared(name: str) -> dict:
    return copy.deepcopy(_prepared(name))


def all_commands(config: dict, key: str) -> str:
    return "\n".join(config[key])


def readme_block(marker: str) -> str:
    """The fenced block of the README whose first line is `marker`."""
    (block,) = [b for b in re.findall(r"```\w*\n(.*?)```", README, re.S) if b.startswith(marker)]
    return block


def readme_spec():
    return parse_spec(yaml.safe_load(readme_block("# sweep/spec.yaml")), "cluster/README.md step 6")


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
def test_no_node_installs_scalesweep_and_setup_preinstalls_the_pinned_torch_and_mlflow(name):
    config = prepared(name)
    for key in ("head_setup_commands", "worker_setup_commands"):
        commands = all_commands(config, key)
        assert "scalesweep" not in commands, key  # it comes in each job's wheel
        assert f'"{TORCH_PIN}"' in commands and f'"mlflow=={MLFLOW_PIN}"' in commands, key
    # The head's driver talks HTTP to the tracking server: no database driver on the nodes.
    assert "psycopg2" not in all_commands(config, "head_setup_commands")


def requirement_tokens(text: str) -> list[str]:
    """The words after `pip install` (and in pip lists of runtime envs) in a file."""
    words = []
    for match in re.finditer(r"pip3? install ([^\n&;|]*)", text):
        words += [w.strip("\"'") for w in match.group(1).replace("\\", " ").split()]
    for match in re.finditer(r"^\s*pip:\s*\n((?:\s+- .*\n)+)", text, re.M):
        words += [line.strip()[2:].strip("\"'") for line in match.group(1).splitlines()]
    return words


def test_no_recipe_installs_scalesweep_from_a_package_index():
    files = [p for p in CLUSTER.rglob("*") if p.is_file()]
    assert len(files) >= 10
    from_index = re.compile(r"^scalesweep($|\s*[=<>~!\[@;])", re.I)
    for path in files:
        text = path.read_text()
        assert "git+" not in text, path
        bad = [w for w in requirement_tokens(text) if from_index.match(w)]
        assert not bad, f"{path}: {bad}"
    # The check sees a requirement where there is one.
    assert [w for w in requirement_tokens('pip install -q "scalesweep==0.1.0" torch') if from_index.match(w)]
    assert not [w for w in requirement_tokens("pip install /tmp/wheels/scalesweep-*.whl") if from_index.match(w)]


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


@pytest.mark.parametrize("name", CLOUD_FILES)
def test_cloud_head_has_no_gpu_and_gpu_workers_autoscale(name):
    config = prepared(name)
    types_ = config["available_node_types"]
    head = types_[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"].get("CPU") == 0
    assert head["max_workers"] == 0
    gpu_types = {k: v for k, v in types_.items() if v["resources"].get("GPU", 0) >= 1}
    assert len(gpu_types) >= 2
    for node_type in gpu_types.values():
        assert node_type["min_workers"] == 0 < node_type["max_workers"] <= config["max_workers"]
    assert sum(t["max_workers"] for t in gpu_types.values()) >= 4


@pytest.mark.parametrize("name", CLOUD_FILES)
def test_each_gpu_node_type_advertises_a_resource_named_after_it(name):
    types_ = prepared(name)["available_node_types"]
    gpu_types = {k: v["resources"] for k, v in types_.items() if v["resources"].get("GPU", 0) >= 1}
    # One name per role on both clouds, so one spec serves both.
    assert set(gpu_types) == {"gpu_1x_spot", "gpu_4x_ondemand"}
    for node_type, resources in gpu_types.items():
        assert resources[node_type] == resources["GPU"], node_type
        assert not [k for k in resources if k in gpu_types and k != node_type]


# Ray's autoscaler scores node types with this (AUTOSCALER_UTILIZATION_SCORER's default).
SCORER = functools.partial(_default_utilization_scorer, node_availability_summary=NodeAvailabilitySummary({}))


def nodes_launched(config: dict, bundles: list[dict]) -> dict[str, int]:
    """The node types Ray's autoscaler launches on an empty cluster for these bundles, all of them placed."""
    launched, unplaced = get_nodes_for(config["available_node_types"], {}, config["head_node_type"],
                                       config["max_workers"], bundles, SCORER)  # fmt: skip
    assert unplaced == [], unplaced
    return dict(launched)


def readme_request() -> list[dict]:
    """The bundles of step 5's `request_resources` call, as the README writes them."""
    call = re.search(r"request_resources\(bundles=(\[.*?\]) \* (\d+)\)", README.replace('\\"', '"'))
    return ast.literal_eval(call.group(1)) * int(call.group(2))


def sweep_demand(spec, workers: int) -> list[dict]:
    """What a sweep's trial workers ask Ray for (orchestrator.scheduler: one bundle per worker)."""
    resources = spec.resources_per_trial
    return [{"CPU": resources.cpu, "GPU": resources.gpu, **resources.custom_resources}] * workers


@pytest.mark.parametrize("name", CLOUD_FILES)
def test_the_readme_requests_bring_up_the_four_spot_nodes_it_promises(name):
    config = prepared(name)
    request = readme_request()
    assert len(request) == 4
    assert nodes_launched(config, request) == {"gpu_1x_spot": 4}
    # The sweep's own demand at full size (32 workers: "32 at once on 4 GPUs"), as after all four spot
    # nodes were reclaimed, brings back the same four, not one 4-GPU node.
    spec = readme_spec()
    assert "32 at once on 4 GPUs" in README and int(4 / spec.resources_per_trial.gpu) == 32
    assert nodes_launched(config, sweep_demand(spec, 32)) == {"gpu_1x_spot": 4}
    # Why the requests name the node type: without it, Ray's scorer takes the 4-GPU node for both.
    assert nodes_launched(config, [{"GPU": 1}] * 4) == {"gpu_4x_ondemand": 1}
    assert nodes_launched(config, [{"CPU": 1, "GPU": 0.125}] * 32) == {"gpu_4x_ondemand": 1}
    # And what the 4-GPU node type is for: requests that name it.
    assert nodes_launched(config, [{"GPU": 1, "gpu_4x_ondemand": 1}] * 4) == {"gpu_4x_ondemand": 1}


def test_aws_gpu_workers_are_gpu_instances_mostly_spot_and_nothing_but_ssh_is_opened():
    config = prepared("aws-gpu.yaml")
    types_ = config["available_node_types"]
    gpu_types = {k: v for k, v in types_.items() if k != config["head_node_type"]}
    # g5: NVIDIA A10G, g6: NVIDIA L4; the head is a general-purpose instance.
    assert all(re.match(r"^g[56]\.", t["node_config"]["InstanceType"]) for t in gpu_types.values())
    assert not re.match(r"^[gp]\d", types_["head"]["node_config"]["InstanceType"])
    spot = [k for k, t in gpu_types.items() if t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"]
    assert spot == ["gpu_1x_spot"]
    # ray up creates the security group (see the ingress test below) instead of using one of ours.
    assert all("SecurityGroupIds" not in t["node_config"] for t in types_.values())
    assert config["provider"]["cache_stopped_nodes"] is False  # stopped spot nodes cannot be resumed


def test_gcp_gpu_workers_are_gpu_machines_mostly_spot():
    config = prepared("gcp-gpu.yaml")
    types_ = config["available_node_types"]
    gpu_types = {k: v for k, v in types_.items() if k != config["head_node_type"]}
    # a2: NVIDIA A100, g2: NVIDIA L4; both come with their GPUs attached, no guestAccelerators needed.
    assert all(re.match(r"^(a2|g2)-", t["node_config"]["machineType"]) for t in gpu_types.values())
    for node_type in gpu_types.values():
        # GCE refuses live migration for GPU machines: onHostMaintenance must be TERMINATE.
        assert node_type["node_config"]["scheduling"]["onHostMaintenance"] == "TERMINATE"
    spot = [k for k, t in gpu_types.items() if t["node_config"]["scheduling"].get("provisioningModel") == "SPOT"]
    assert spot == ["gpu_1x_spot"]
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


def iam_allows(policy: dict, action: str, resource: str) -> bool:
    """Whether an Allow statement of an IAM policy matches (IAM's * and ? wildcards; no conditions here)."""
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert "Condition" not in statement and statement["Effect"] == "Allow"
        if any(fnmatch.fnmatchcase(action, a) for a in actions) and any(fnmatch.fnmatchcase(resource, r) for r in resources):
            return True
    return False


def test_the_aws_head_role_can_resolve_every_ami_it_launches_and_nothing_shared_is_widened():
    config = prepared("aws-gpu.yaml")
    region = config["provider"]["region"]
    head = config["available_node_types"][config["head_node_type"]]["node_config"]
    assert head["IamInstanceProfile"] == {"Name": "scalesweep-head"}  # Ray's bootstrap then leaves ray-autoscaler-v1 alone
    policy = json.loads((CLUSTER / "aws" / "scalesweep-head-policy.json").read_text())
    parameters = {t["node_config"]["ImageId"].removeprefix("resolve:ssm:") for t in config["available_node_types"].values()}
    assert parameters and all(p.startswith("/aws/service/") for p in parameters)
    for parameter in parameters:  # public parameters have no account in their ARN
        assert iam_allows(policy, "ssm:GetParameters", f"arn:aws:ssm:{region}::parameter{parameter}")
    assert not iam_allows(policy, "ssm:GetParameters", f"arn:aws:ssm:{region}:123456789012:parameter/team/db-password")
    # The MLflow server on the head writes the README's bucket, and only buckets named like it.
    (bucket,) = set(re.findall(r"s3://(scalesweep-[A-Z-]+)", README))
    assert iam_allows(policy, "s3:PutObject", f"arn:aws:s3:::{bucket}/mlflow/1/artifacts/report.html")
    assert iam_allows(policy, "s3:ListBucket", f"arn:aws:s3:::{bucket}")
    assert not iam_allows(policy, "s3:PutObject", "arn:aws:s3:::someone-elses-bucket/x")
    trust = json.loads((CLUSTER / "aws" / "ec2-trust-policy.json").read_text())
    assert trust["Statement"] == [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]


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
    # All four are up from the start, so there is no node type to choose: the autoscaler launches nothing.
    assert node_type["min_workers"] == node_type["max_workers"] == 4
    launched, unplaced = get_nodes_for(config["available_node_types"], {}, config["head_node_type"], 4, readme_request(), SCORER)
    assert not launched and len(unplaced) == 4
    assert "--num-gpus=0" in all_commands(config, "head_start_ray_commands")
    # Docker everywhere: the head runs Ray and the MLflow server in containers too.
    assert "Needs Docker on every machine, the head too" in (CLUSTER / "onprem.yaml").read_text()


# -- the MLflow server on a ray up head ----------------------------------------------------------

SERVE = CLUSTER / "mlflow" / "serve.sh"
# Docker is on the head only: without it on the PATH the script stops right after its checks.
PATH_WITHOUT_DOCKER = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "docker").exists())


def serve(args: list[str], home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home), "PATH": PATH_WITHOUT_DOCKER}
    return subprocess.run([shutil.which("bash"), str(SERVE), *args], env=env, capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)  # fmt: skip


def test_serve_script_refuses_bad_arguments_before_touching_anything(tmp_path):
    assert subprocess.run(["bash", "-n", str(SERVE)]).returncode == 0
    good_db, good_artifacts = "postgresql://mlflow@db.internal:5432/mlflow", "s3://scalesweep-team/mlflow"
    cases = {
        ("sqlite:////tmp/mlflow.db", good_artifacts): "must be a PostgreSQL URI",
        ("postgresql://mlflow:hunter2@db.internal:5432/mlflow", good_artifacts): "holds a password",
        ("postgresql://db.internal:5432/mlflow", good_artifacts): "names no user",
        (good_db, "mlartifacts"): "ARTIFACTS must be",
        (good_db, "s3://"): "ARTIFACTS must be",
        (good_db, good_artifacts, "50x0"): "PORT must be a number",
        (good_db,): "usage",
    }
    for args, message in cases.items():
        result = serve(list(args), tmp_path)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
    assert not list(tmp_path.iterdir())  # nothing written, nothing asked
    # Good arguments get as far as Docker, which only the head has.
    result = serve([good_db, good_artifacts], tmp_path)
    assert result.returncode == 1 and "no docker" in result.stderr


def readme_serve_command() -> list[str]:
    (line,) = [l for l in logical_lines(README) if "serve.sh" in l and l.startswith("ray exec")]
    words = shlex.split(line)
    assert words[:4] == ["ray", "exec", "--run-env", "host"]
    return [words[4], *shlex.split(words[5])]


@pytest.mark.parametrize("name", RAY_UP_FILES)
def test_the_serve_script_is_where_ray_up_keeps_the_cluster_file_mount_on_the_host(name):
    """`ray exec --run-env host` runs outside Ray's container, where ray up syncs every file mount to
    get_docker_host_mount_location(cluster_name)/<target> before mounting it into the container."""
    config = prepared(name)
    (target,) = [remote for remote, local in config["file_mounts"].items() if local == "./cluster"]
    assert target.startswith("/") and config["docker"]["container_name"]
    on_host = Path(get_docker_host_mount_location(config["cluster_name"])) / target.lstrip("/") / "mlflow" / "serve.sh"
    if name == "aws-gpu.yaml":
        config_file, bash, script, *args = readme_serve_command()
        assert config_file == f"cluster/{name}" and bash == "bash" and Path(script) == on_host
        # The README's arguments pass the script's own checks.
        result = serve(args, Path(tempfile.gettempdir()) / "unused-home")
        assert result.returncode == 1 and "no docker" in result.stderr, result.stderr
    else:  # the README's path, with this file's cluster name where it differs
        readme_path = Path(readme_serve_command()[2])
        assert on_host == readme_path or (f"`{config['cluster_name']}`" in README and on_host.parts[4:] == readme_path.parts[4:])
    assert get_docker_host_mount_location("scalesweep-gpu") == "/tmp/ray_tmp_mount/scalesweep-gpu"


@pytest.mark.slow
def test_mlflow_server_reaches_postgres_with_the_password_only_in_its_environment(tmp_path):
    """serve.sh's server gets a URI without a password and libpq's PGPASSWORD from its env file: a
    real `mlflow server` against a real PostgreSQL that demands the password."""
    from mlflow.tracking import MlflowClient

    from tests.servers import PostgresServer, wait_healthy

    password = "s3cr3t-" + os.urandom(4).hex()
    postgres = PostgresServer(password=password)
    mlflow_process = None
    try:
        postgres.start()
        db_uri = postgres.create_database("mlflow")
        assert password not in db_uri
        psql = [str(postgres.bin / "psql"), "-w", "-d", db_uri.replace("postgresql://", "postgres://"), "-tAc"]
        without = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
        assert subprocess.run([*psql, "select 1"], env=without, capture_output=True).returncode != 0  # it wants the password

        # The env file as serve.sh writes it, read the way `docker run --env-file` does; no URI flags.
        assert "printf 'MLFLOW_BACKEND_STORE_URI=%s\\nMLFLOW_ARTIFACTS_DESTINATION=%s\\nPGPASSWORD=%s\\n'" in SERVE.read_text()
        assert 'db_uri="postgresql+psycopg2://${db_uri#*://}"' in SERVE.read_text()  # the image's driver, by name
        served_uri = db_uri.replace("postgresql://", "postgresql+psycopg2://")
        env_file = f"MLFLOW_BACKEND_STORE_URI={served_uri}\nMLFLOW_ARTIFACTS_DESTINATION={tmp_path / 'artifacts'}\nPGPASSWORD={password}\n"
        server_env = dict(line.split("=", 1) for line in env_file.splitlines())
        port = free_port()
        mlflow_process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env={**without, **server_env}, stdout=open(tmp_path / "mlflow.log", "wb"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, mlflow_process, timeout_s=240)
        client = MlflowClient(url)
        run = client.create_run(client.create_experiment("pgpassword"))
        client.log_metric(run.info.run_id, "test_loss", 0.5)
        assert client.get_run(run.info.run_id).data.metrics == {"test_loss": 0.5}
        rows = subprocess.run([*psql, "select count(*) from runs"], env={**without, "PGPASSWORD": password}, capture_output=True, text=True)
        assert rows.stdout.strip() == "1", rows.stdout + rows.stderr
        assert password not in Path(f"/proc/{mlflow_process.pid}/cmdline").read_text()
    finally:
        if mlflow_process is not None:
            os.killpg(mlflow_process.pid, 9)
            mlflow_process.wait()
        postgres.stop()


# -- KubeRay -----------------------------------------------------------------------------------

STRUCTURAL = ("properties", "items", "additionalProperties", "anyOf", "allOf", "oneOf", "not")


def strict(schema: dict) -> dict:
    """A CRD's structural schema as JSON Schema that refuses the fields it does not name, as the API
    server does (strict field validation, kubectl's default; pruning otherwise)."""
    out = dict(schema)
    if "properties" in schema:
        out["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(key), dict):
            out[key] = strict(schema[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in schema:
            out[key] = [strict(s) for s in schema[key]]
    return out


@functools.cache
def crd_schema(kind: str) -> dict:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the files are 1-2 MB
    crd = yaml.load((REPO / "tests" / "data" / f"ray.io_{kind.lower()}s.yaml").read_text(), Loader=loader)
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return strict(version["schema"]["openAPIV3Schema"])


def schema_problems(document: dict, schema: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(document))


# Git blob ids of ray-operator/config/crd/bases/ray.io_{rayclusters,rayjobs}.yaml at ray-project/kuberay
# tag v1.7.0 (commit 59d663aeec13760646da3db9c1cf8cfe883e30b7): the vendored files are those, byte for byte.
UPSTREAM_CRD_BLOBS = {"RayCluster": "ff0be58ada3bd457605eff1f258c16df21e61e21", "RayJob": "c7d3f081af8cf08c256a8c33a0c3b6ea28b816a0"}


def test_the_vendored_crds_are_kuberay_v1_7_0():
    import hashlib

    for kind, blob in UPSTREAM_CRD_BLOBS.items():
        data = (REPO / "tests" / "data" / f"ray.io_{kind.lower()}s.yaml").read_bytes()
        assert hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == blob, kind
    assert f"--version {CRD_VERSION.lstrip('v')}" in README


def manifests(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((CLUSTER / "kuberay" / name).read_text()) if d]


def by_kind(name: str, kind: str, metadata_name: str | None = None) -> dict:
    (document,) = [
        d for d in manifests(name) if d["kind"] == kind and metadata_name in (None, d["metadata"]["name"])
    ]
    return document


@pytest.mark.parametrize("name, kind", [("raycluster.yaml", "RayCluster"), ("rayjob.yaml", "RayJob")])
def test_kuberay_manifests_pass_kuberays_own_crds(name, kind):
    document = by_kind(name, kind)
    assert document["apiVersion"] == "ray.io/v1" and document["metadata"]["namespace"] == "scalesweep"
    assert schema_problems(document, crd_schema(kind)) == []


def test_the_crd_check_refuses_unknown_removed_and_mistyped_fields():
    cluster = copy.deepcopy(by_kind("raycluster.yaml", "RayCluster"))
    group = cluster["spec"]["workerGroupSpecs"][0]
    group["template"]["spec"]["tolerations"][0]["efect"] = group["template"]["spec"]["tolerations"][0].pop("effect")
    del group["groupName"]
    group["minReplicas"] = "4"
    problems = schema_problems(cluster, crd_schema("RayCluster"))
    assert problems == sorted([
        "spec.workerGroupSpecs.0: 'groupName' is a required property",
        "spec.workerGroupSpecs.0.minReplicas: '4' is not of type 'integer'",
        "spec.workerGroupSpecs.0.template.spec.tolerations.0: Additional properties are not allowed ('efect' was unexpected)",
    ])
    job = copy.deepcopy(by_kind("rayjob.yaml", "RayJob"))
    job["spec"]["deletionPolicy"] = "DeleteCluster"  # KubeRay < 1.5.1; replaced by deletionStrategy
    assert schema_problems(job, crd_schema("RayJob")) == [
        "spec: Additional properties are not allowed ('deletionPolicy' was unexpected)"
    ]
    del job["spec"]["deletionPolicy"]
    job["spec"]["deletionStrategy"] = {"onSuccess": {"policy": "DeleteCluster"}, "onFailure": {"policy": "DeleteNone"}}
    assert schema_problems(job, crd_schema("RayJob")) == []


def embedded_schemas() -> dict[str, dict]:
    """Kubernetes schemas that KubeRay's CRD embeds, generated from the k8s.io/api types it builds with."""
    head = crd_schema("RayCluster")["properties"]["spec"]["properties"]["headGroupSpec"]["properties"]
    pod_template = head["template"]
    volume = pod_template["properties"]["spec"]["properties"]["volumes"]["items"]
    pvc_template = volume["properties"]["ephemeral"]["properties"]["volumeClaimTemplate"]
    affinity = pod_template["properties"]["spec"]["properties"]["affinity"]["properties"]
    label_selector = affinity["podAffinity"]["properties"]["requiredDuringSchedulingIgnoredDuringExecution"]["items"]["properties"]["labelSelector"]  # fmt: skip
    return {"pod_template": pod_template, "service": head["headService"], "pvc_template": pvc_template,
            "label_selector": label_selector, "metadata": pod_template["properties"]["metadata"]}  # fmt: skip


def core_schema(api_version: str, kind: str) -> dict:
    """The objects of mlflow.yaml and rayjob.yaml's ConfigMap: the embedded schemas, and for the
    workload controllers the few apps/v1 fields of their own (k8s.io/api/apps/v1 types.go)."""
    k8s = embedded_schemas()
    top = {"apiVersion": {"type": "string", "const": api_version}, "kind": {"type": "string", "const": kind}, "metadata": k8s["metadata"]}
    integer, string = {"type": "integer"}, {"type": "string"}
    if kind == "Service":
        return k8s["service"]
    if kind == "ConfigMap":
        return strict({"type": "object", "properties": {**top, "data": {"type": "object", "additionalProperties": string},
                       "binaryData": {"type": "object"}, "immutable": {"type": "boolean"}}, "required": ["metadata"]})  # fmt: skip
    if kind == "PersistentVolumeClaim":
        return strict({"type": "object", "properties": {**top, "spec": k8s["pvc_template"]["properties"]["spec"]}, "required": ["spec"]})
    common = {"replicas": integer, "selector": k8s["label_selector"], "template": k8s["pod_template"], "minReadySeconds": integer,
              "revisionHistoryLimit": integer}  # fmt: skip
    if kind == "Deployment":
        spec = {**common, "paused": {"type": "boolean"}, "progressDeadlineSeconds": integer,
                "strategy": {"type": "object", "properties": {"type": {"enum": ["Recreate", "RollingUpdate"]}, "rollingUpdate": {"type": "object"}}}}  # fmt: skip
    elif kind == "StatefulSet":
        spec = {**common, "serviceName": string, "podManagementPolicy": {"enum": ["OrderedReady", "Parallel"]},
                "updateStrategy": {"type": "object"}, "persistentVolumeClaimRetentionPolicy": {"type": "object"}, "ordinals": {"type": "object"},
                "volumeClaimTemplates": {"type": "array", "items": k8s["pvc_template"]}}  # fmt: skip
    else:
        raise AssertionError(f"no schema for {api_version} {kind}")
    return strict({"type": "object", "properties": {**top, "spec": {"type": "object", "properties": spec, "required": ["selector", "template"]}},
                   "required": ["spec"]})  # fmt: skip


@pytest.mark.parametrize("name", ["mlflow.yaml", "rayjob.yaml"])
def test_core_kubernetes_objects_pass_the_schemas_kuberay_embeds(name):
    documents = [d for d in manifests(name) if d["apiVersion"] != "ray.io/v1"]
    assert documents
    for document in documents:
        assert document["metadata"]["namespace"] == "scalesweep"
        problems = schema_problems(document, core_schema(document["apiVersion"], document["kind"]))
        assert problems == [], (document["kind"], problems)
    # The same check refuses what the API server would.
    deployment = copy.deepcopy(by_kind("mlflow.yaml", "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicey"] = "Always"
    deployment["spec"]["replica"] = 1
    assert schema_problems(deployment, core_schema("apps/v1", "Deployment")) == sorted([
        "spec: Additional properties are not allowed ('replica' was unexpected)",
        "spec.template.spec.containers.0: Additional properties are not allowed ('imagePullPolicey' was unexpected)",
    ])


def cluster_specs() -> list[tuple[str, dict]]:
    return [
        ("raycluster.yaml", by_kind("raycluster.yaml", "RayCluster")["spec"]),
        ("rayjob.yaml", by_kind("rayjob.yaml", "RayJob")["spec"]["rayClusterSpec"]),
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
    (group,) = spec["workerGroupSpecs"]
    pod = group["template"]["spec"]
    (worker,) = pod["containers"]
    if name == "raycluster.yaml":  # plain Ray: scalesweep comes in each job's wheel
        assert IMAGE.match(head_container["image"]) and head_container["image"].endswith("-cpu")
        assert IMAGE.match(worker["image"]) and worker["image"].endswith("-gpu")
    else:  # a RayJob's pods run the image of cluster/Dockerfile
        assert head_container["image"] == worker["image"] == SCALESWEEP_IMAGE
    assert "nvidia.com/gpu" not in head_container["resources"]["limits"]
    assert spec["enableInTreeAutoscaling"] is True
    assert 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"] and group["maxReplicas"] >= 4
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


@pytest.mark.parametrize("name, spec", cluster_specs())
def test_kuberay_gpu_pods_hold_eight_trials_per_gpu(name, spec):
    """What Ray advertises for a pod: --num-cpus if given, else the container's CPU limit (KubeRay)."""
    sweep = readme_spec() if name == "raycluster.yaml" else rayjob_sweep()
    resources = sweep.resources_per_trial
    assert resources.custom_resources == {} or name == "raycluster.yaml"  # README: leave it out on KubeRay
    (group,) = spec["workerGroupSpecs"]
    (worker,) = group["template"]["spec"]["containers"]
    cpus = float(group["rayStartParams"].get("num-cpus", worker["resources"]["limits"]["cpu"]))
    gpus = int(worker["resources"]["limits"]["nvidia.com/gpu"])
    trials = min(cpus // resources.cpu, gpus / resources.gpu)
    assert trials == 8 * gpus
    # The pod itself asks for fewer cores than an 8-vCPU GPU node has allocatable.
    assert float(worker["resources"]["requests"]["cpu"]) <= 7.5


def rayjob_sweep():
    job = by_kind("rayjob.yaml", "RayJob")["spec"]
    spec_path = Path(job["entrypoint"].split()[2])
    return parse_spec(yaml.safe_load(by_kind("rayjob.yaml", "ConfigMap")["data"][spec_path.name]), "rayjob.yaml ConfigMap")


def test_rayjob_runs_the_mounted_spec_from_the_scalesweep_image_and_cleans_up():
    job = by_kind("rayjob.yaml", "RayJob")["spec"]
    assert re.fullmatch(r"scalesweep run (\S+) --address auto --no-progress", job["entrypoint"])
    spec_path = Path(job["entrypoint"].split()[2])
    assert job["shutdownAfterJobFinishes"] is True and job["ttlSecondsAfterFinished"] > 0
    assert "runtimeEnvYAML" not in job  # scalesweep is in the image; nothing to install

    # The ConfigMap is mounted on the head, where the job's driver runs, at the entrypoint's path.
    head_pod = job["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    (mount,) = head_pod["containers"][0]["volumeMounts"]
    (volume,) = [v for v in head_pod["volumes"] if v["name"] == mount["name"]]
    config_map = by_kind("rayjob.yaml", "ConfigMap")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert spec_path.parent == Path(mount["mountPath"]) and spec_path.name in config_map["data"]

    # The sweep in it is a valid spec, and its results go to the tracking server of mlflow.yaml.
    sweep = rayjob_sweep()
    service = by_kind("mlflow.yaml", "Service", "mlflow")
    port = service["spec"]["ports"][0]["port"]
    assert sweep.tracking.uri == f"http://mlflow.{service['metadata']['namespace']}.svc.cluster.local:{port}"


def test_mlflow_on_kubernetes_uses_postgres_a_secret_and_stays_inside_the_cluster():
    documents = manifests("mlflow.yaml")
    services = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Service"}
    assert all(s["spec"]["type"] == "ClusterIP" for s in services.values())
    server = by_kind("mlflow.yaml", "Deployment")["spec"]["template"]["spec"]["containers"][0]
    command = " ".join(server["args"])
    assert '--backend-store-uri "postgresql+psycopg2://mlflow:${DB_PASSWORD}@mlflow-postgres:5432/mlflow"' in command
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


# -- the image ---------------------------------------------------------------------------------


def test_dockerfile_builds_scalesweep_from_the_checkout_on_the_pinned_ray():
    dockerfile = DockerfileParser(str(CLUSTER / "Dockerfile"))
    instructions = [(i["instruction"], i["value"]) for i in dockerfile.structure if i["instruction"] != "COMMENT"]
    froms = [v for k, v in instructions if k == "FROM"]
    assert froms == [f"rayproject/ray:{RAY_PIN}-py311-gpu AS wheel", f"rayproject/ray:{RAY_PIN}-py311-gpu"]
    # The first stage gets the files setuptools builds from (pyproject's packages), and builds the wheel.
    first = instructions[: instructions.index(("FROM", froms[1]))]
    copied = {Path(p).name for k, v in first if k == "COPY" for p in shlex.split(v)[1:-1]}
    assert copied == {"pyproject.toml", "README.md", *PACKAGES} and all((REPO / name).exists() for name in copied)
    runs = [v for k, v in instructions if k == "RUN"]
    assert any(re.match(r"pip wheel --no-deps .*-w (\S+) /home/ray/src$", r) for r in runs)
    # The second installs the pinned torch first, then that wheel file: never scalesweep from an index.
    assert runs[1] == f'pip install --no-cache-dir "{TORCH_PIN}"'
    assert ("COPY", "--from=wheel /home/ray/wheels /tmp/scalesweep-wheels") in instructions
    assert runs[2].startswith("pip install --no-cache-dir /tmp/scalesweep-wheels/scalesweep-*.whl")
    # The README builds it under the name the RayJob runs.
    assert f"docker build -f cluster/Dockerfile -t {SCALESWEEP_IMAGE} ." in README
    assert f"docker push {SCALESWEEP_IMAGE}" in README


# -- every command of the README ---------------------------------------------------------------


def logical_lines(text: str) -> list[str]:
    """The command lines of the README's bash blocks, continuation lines joined, comments dropped."""
    lines = []
    for block in re.findall(r"^[ ]*```bash\n(.*?)^[ ]*```", text, re.S | re.M):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                lines.append(shlex.join(words))
    return lines


def commands(line: str) -> list[list[str]]:
    """A line's simple commands (split at && | ; &)."""
    parts, current = [], []
    for word in shlex.split(line):
        if word in ("&&", "|", ";", "&"):
            parts.append(current)
            current = []
        else:
            current.append(word)
    return [p for p in parts + [current] if p]


def click_parse(command, name: str, args: list[str]):
    """Parse args as `name args` with a click command (groups resolved down to the leaf), running nothing."""
    ctx = command.make_context(name, list(args))
    while hasattr(command, "resolve_command"):
        pending = getattr(ctx, "_protected_args", None)  # click >= 8.2 (protected_args before)
        pending = ctx.protected_args if pending is None else pending
        sub_name, command, sub_args = command.resolve_command(ctx, [*pending, *ctx.args])
        ctx = command.make_context(sub_name, sub_args, parent=ctx)
    return ctx


def aws_requests(args: list[str]) -> list[tuple[str, str, dict]]:
    """The API calls awscli makes for `aws args`, parsed and validated by awscli and botocore, not sent."""
    import awscli.clidriver

    calls: list = []
    fake = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLEEXAMPLE00", "AWS_SECRET_ACCESS_KEY": "example", "AWS_DEFAULT_REGION": "us-west-2",
            "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}  # fmt: skip
    saved = {k: os.environ.get(k) for k in fake}
    os.environ.update(fake)
    try:
        driver = awscli.clidriver.create_clidriver()
        driver.session.register("before-parameter-build", lambda params, model, **_: calls.append((model.service_model.service_name, model.name, dict(params))))
        driver.session.register("before-call", lambda **_: (types.SimpleNamespace(status_code=200, headers={}), {}))  # never sent
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = driver.main(list(args))
            except SystemExit as exit_:
                rc = exit_.code
        assert rc == 0, f"aws {shlex.join(args)}: {err.getvalue()[-1000:]}"
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    return calls


def check_command(words: list[str]) -> str:
    """Check one command of the README offline; returns what it was checked as."""
    from typer.main import get_command

    from orchestrator.cli import app

    tool, args = words[0], words[1:]
    if re.fullmatch(r"[A-Z_]+=.*", tool):  # VAR=value prefix or export's words
        return check_command(args) if args else "assignment"
    if tool == "ray":
        ctx = click_parse(ray_cli, "ray", args)
        config = ctx.params.get("cluster_config_file")
        if config:
            assert (REPO / config).is_file() and prepared(Path(config).name), config
        if ctx.command.name == "exec":
            inner = ctx.params["cmd"]
            if inner.startswith("python -c "):
                compile(shlex.split(inner)[2], "<ray exec python -c>", "exec")
            elif inner.startswith("bash "):
                assert "serve.sh" in inner
            else:
                for command in commands(inner):
                    check_command(command)
        return f"ray {ctx.command.name}"
    if tool == "scalesweep":
        ctx = click_parse(get_command(app), "scalesweep", args)
        for key in ("spec_path",):
            if key in ctx.params:
                assert str(ctx.params[key]) == "sweep/spec.yaml"  # the README's sweep folder (step 6)
        return f"scalesweep {ctx.command.name}"
    if tool == "aws":
        if args == ["configure"]:  # interactive: it writes credentials
            return "aws configure"
        for word in args:  # what a $(...) runs is a command of the README too
            if re.fullmatch(r"\$\((.*)\)", word):
                for command in commands(word[2:-1]):
                    check_command(command)
        files = {w: w.removeprefix("file://") for w in args if w.startswith("file://")}
        assert all((REPO / f).is_file() for f in files.values()), files
        substituted = [re.sub(r"^\$\(.*\)$", "sg-0123456789abcdef0", w) for w in args]
        cwd = os.getcwd()
        os.chdir(REPO)  # file:// paths are relative to the repository root, where the README runs them
        try:
            calls = aws_requests(substituted)
        finally:
            os.chdir(cwd)
        assert calls, words
        return "aws " + " ".join(f"{service}.{operation}" for service, operation, _ in calls)
    if tool == "kubectl":
        if "-f" in args and ({"apply", "delete"} & set(args)):
            manifest = REPO / args[args.index("-f") + 1]
            assert manifest.is_file() and list(yaml.safe_load_all(manifest.read_text()))
        if "patch" in args:
            kind, name = args[args.index("patch") + 1 : args.index("patch") + 3]
            patch = jsonpatch.JsonPatch(json.loads(args[args.index("-p") + 1]))
            (document,) = [d for n in ("raycluster.yaml", "rayjob.yaml") for d in manifests(n)
                           if d["kind"].lower() == kind and d["metadata"]["name"] == name]  # fmt: skip
            assert schema_problems(patch.apply(document), crd_schema(document["kind"])) == []
        if "port-forward" in args:
            service, ports = args[args.index("port-forward") + 1 :][:2]
            target = int(ports.split(":")[1])
            heads = {f"svc/{d['metadata']['name']}-head-svc": 8265 for d in manifests("raycluster.yaml")}  # KubeRay's naming
            services = {f"svc/{d['metadata']['name']}": d["spec"]["ports"][0]["port"] for d in manifests("mlflow.yaml") if d["kind"] == "Service"}
            assert {**heads, **services}.get(service) == target, (service, target)
        return f"kubectl {args[0] if args[0] != '-n' else args[2]}"
    if tool == "helm":
        if args[0] == "install":
            assert args[args.index("--version") + 1] == CRD_VERSION.lstrip("v")
        return f"helm {args[0]}"
    if tool == "docker":
        if args[0] == "build":
            assert (REPO / args[args.index("-f") + 1]).is_file() and args[-1] == "."
        return f"docker {args[0]}"
    if tool == "make":
        assert re.search(rf"^{args[0]}:", (REPO / "Makefile").read_text(), re.M)
        return f"make {args[0]}"
    if tool == "source":
        assert args == [".venv/bin/activate"]  # what `make setup` creates
        return "source"
    if tool == "export":
        for word in args:
            assert re.fullmatch(r"[A-Z_]+=.*", word), word
        return "export"
    if tool in ("openssl", "base64"):  # inside $(...) of kubectl and export
        return tool
    raise AssertionError(f"no offline check for {shlex.join(words)}")


def test_every_command_in_the_cluster_readme_parses_offline():
    checked = []
    for line in logical_lines(README):
        for command in commands(line):
            checked.append(check_command(command))
    # Every step of the walk-through was seen, none skipped.
    assert {"ray get-auth-token", "ray up", "ray exec", "ray dashboard", "ray down", "scalesweep submit", "make setup",
            "aws iam.CreateRole", "aws iam.PutRolePolicy", "aws s3.CreateBucket", "aws ec2.AuthorizeSecurityGroupIngress",
            "kubectl apply", "kubectl patch", "helm install", "docker build"} <= set(checked)  # fmt: skip
    # Commands the prose names inline, too.
    inline = [c for c in re.findall(r"`((?:ray|scalesweep|kubectl) [^`]*[-/][^`]*)`", README) if "JOB_ID" in c or "/" in c]
    assert len(inline) >= 5
    for command in inline:
        check_command(shlex.split(command.replace("JOB_ID", "raysubmit_0123")))


def test_the_readme_checks_catch_a_wrong_command():
    with pytest.raises(NoSuchOption):
        check_command(["ray", "exec", "--run-enviroment", "host", "cluster/aws-gpu.yaml", "ls"])
    with pytest.raises(AssertionError, match="NoSuchEntity|Invalid|error|usage|unknown"):
        check_command(["aws", "iam", "create-role", "--role-nam", "scalesweep-head"])
    with pytest.raises(AssertionError):
        check_command(["kubectl", "-n", "scalesweep", "patch", "raycluster", "scalesweep", "--type", "json", "-p",
                       '[{"op": "replace", "path": "/spec/workerGroupSpecs/0/minReplicas", "value": "4"}]'])  # fmt: skip
    with pytest.raises(AssertionError, match="no offline check"):
        check_command(["terraform", "apply"])


def test_the_readme_sweep_is_a_valid_spec_for_the_cluster():
    spec = readme_spec()
    assert spec.tracking.uri == "http://127.0.0.1:5000"  # the server of step 4 as the head sees it
    assert spec.resources_per_trial.custom_resources == {"gpu_1x_spot": spec.resources_per_trial.gpu}
    *_, db_uri, artifacts = readme_serve_command()
    assert db_uri.startswith("postgresql://mlflow@") and artifacts.startswith("s3://scalesweep-")
