"""A sweep reaches a real two-node Ray cluster whose Python does not have scalesweep, the README's way.

The cluster is what `ray up` or KubeRay builds, in miniature (tests/ray_cluster_harness.py): `ray
start --head` and one `ray start --address` node, token auth on, the Jobs API on 127.0.0.1, run from
a Python environment with every dependency of scalesweep but not scalesweep, from a folder outside
any checkout. `scalesweep submit` builds this checkout's wheel into the job's working dir, and the
job's runtime_env pip-installs it on each node: the only way scalesweep can get there.

Other Ray clusters may run on the same machine, so this one uses free ports and a temp dir of its
own and is stopped by the process ids it started, never by `ray stop`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
import zipfile
from pathlib import Path

import pytest
import requests
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.submit import REPRODUCIBLE_EPOCH, TORCH_REQUIREMENT, build_wheel, job_runtime_env
from tests.conftest import REPO
from tests.ray_cluster_harness import LocalRayCluster, python_without_scalesweep

TRACED_WORKLOAD = REPO / "tests" / "data" / "traced_workload.py"


def scalesweep(*args: str, env: dict, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """The `scalesweep` command of this checkout (the user's laptop), as the README runs it."""
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def bare_cluster():
    """Two nodes running a Python without scalesweep; the second advertises a custom resource, as a
    node type of cluster/aws-gpu.yaml does."""
    # A short root: Ray's unix socket paths live under the temp dir and must fit in 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="ss-cluster-"))
    bin_dir = python_without_scalesweep(root / "env")
    cluster = LocalRayCluster(root, bin_dir)
    try:
        cluster.start(n_workers=1, worker_resources={"gpu_1x_spot": 1})
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def checkout_env():
    """The environment of a `scalesweep` command on the user's laptop: this checkout."""
    return {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "token"}


@pytest.fixture
def laptop_env(bare_cluster, checkout_env):
    """The same, holding the cluster's token."""
    return {**checkout_env, "RAY_AUTH_TOKEN": bare_cluster.token}


def test_the_cluster_python_lacks_scalesweep_but_has_its_dependencies(bare_cluster):
    python = str(Path(bare_cluster.ray).parent / "python")
    probe = "import importlib.util as u, sys; print([m for m in sys.argv[1:] if u.find_spec(m) is None])"
    modules = ["orchestrator", "workloads", "dashboards", "ray", "torch", "mlflow", "pydantic", "virtualenv"]
    result = subprocess.run([python, "-c", probe, *modules], env=bare_cluster.env, cwd=bare_cluster.root,
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert result.stdout.strip() == str(["orchestrator", "workloads", "dashboards"])
    assert not (Path(bare_cluster.ray).parent / "scalesweep").exists()


@pytest.mark.slow
def test_submitted_sweep_installs_scalesweep_from_its_wheel_on_both_nodes(bare_cluster, laptop_env, mlflow_server, tmp_path):
    # The README's sweep folder: the spec and the team's own workload module beside it. The nodes
    # share this machine's disk, so the trials can write their traces into it; each waits until
    # trials have started on both nodes.
    sweep_dir = tmp_path / "sweep"
    experiment = traced_sweep(sweep_dir, mlflow_server, params={"trace_dir": str(sweep_dir / "trace"), "nodes": 2})

    submitted = scalesweep("submit", "sweep/spec.yaml", "--address", bare_cluster.dashboard_url, env=laptop_env, cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    (job_id,) = re.findall(r"submitted as Ray job (\S+)", submitted.stdout)
    wheel = re.search(r"scalesweep from (scalesweep-0\.1\.0\+g[0-9a-f]{12}-py3-none-any\.whl)", submitted.stdout).group(1)
    (follow,) = [line.split(":", 1)[1].split() for line in submitted.stdout.splitlines() if "ray job logs" in line]
    assert "scalesweep status sweep/spec.yaml" in submitted.stdout
    # The sweep runs on without the submitting process: the printed command follows it to the end.
    follow[0] = str(Path(sys.executable).parent / "ray")
    logs = subprocess.run(follow, env=laptop_env, capture_output=True, text=True, timeout=240)
    job = requests.get(f"{bare_cluster.dashboard_url}/api/jobs/{job_id}", headers=bare_cluster.headers, timeout=5).json()
    assert job["status"] == "SUCCEEDED", logs.stdout + logs.stderr + job.get("message", "")
    assert "4 submitted (4 finished)" in logs.stdout

    client = MlflowClient(mlflow_server.url)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in runs if r.data.tags.get("scalesweep.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("scalesweep.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    # Every trial exactly once, FINISHED.
    assert sorted((r.data.params["n"], r.data.params["d"]) for r in children) == [("10", "100"), ("10", "1000"), ("100", "100"), ("100", "1000")]  # fmt: skip
    assert all(r.info.status == "FINISHED" and r.data.tags["status"] == "finished" for r in children)

    # Both nodes trained, and every trial's process imported scalesweep from the job's pip
    # environment in its own node's temp dir: the wheel installed there, nowhere else to find it.
    node_dirs = bare_cluster.node_dirs()
    assert len(node_dirs) == 2
    traces = {path.stem: json.loads(path.read_text()) for path in (sweep_dir / "trace").glob("n*.json")}
    by_run = {f"n{r.data.params['n']}-d{r.data.params['d']}": r.data.tags["worker"] for r in children}
    assert set(traces) == set(by_run)
    for name, trace in traces.items():
        assert by_run[name].split(":")[0] == trace["node_id"][:8]
        env_dir = node_dirs[trace["node_id"]] / "session_latest" / "runtime_resources" / "pip"
        assert Path(trace["orchestrator"]).is_relative_to(env_dir.resolve()) or Path(trace["orchestrator"]).is_relative_to(env_dir), trace
    assert {t["node_id"] for t in traces.values()} == set(node_dirs)
    # Each node installed this very wheel (the version names the sources it was built from).
    for node_dir in node_dirs.values():
        installed = {p.name for p in node_dir.glob("session_latest/runtime_resources/pip/*/virtualenv/lib/python*/site-packages/scalesweep-*.dist-info")}
        assert wheel.split("-py3")[0] + ".dist-info" in installed, (node_dir, installed)


def traced_sweep(sweep_dir: Path, mlflow_server, **spec) -> str:
    """A sweep folder of the traced workload; returns its experiment's name."""
    (sweep_dir / "trace").mkdir(parents=True)
    shutil.copy(TRACED_WORKLOAD, sweep_dir / "traced_workload.py")
    experiment = f"cluster-{uuid.uuid4().hex[:8]}"
    body = {
        "name": "cluster-job",
        "workload": "traced_workload:TracedToy",
        "axes": {"n": [10, 100], "d": [100, 1000]},
        "params": {"trace_dir": str(sweep_dir / "trace"), "nodes": 1},
        "resources_per_trial": {"cpu": 1},
        "tracking": {"uri": mlflow_server.url, "experiment": experiment},
        **spec,
    }
    (sweep_dir / "spec.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    return experiment


@pytest.mark.slow
def test_trials_asking_for_a_custom_resource_run_only_on_the_node_that_has_it(bare_cluster, laptop_env, mlflow_server, tmp_path):
    experiment = traced_sweep(tmp_path / "sweep", mlflow_server,
                              resources_per_trial={"cpu": 1, "custom_resources": {"gpu_1x_spot": 1}})  # fmt: skip
    submitted = scalesweep("submit", "sweep/spec.yaml", "--address", bare_cluster.dashboard_url, env=laptop_env, cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    (job_id,) = re.findall(r"submitted as Ray job (\S+)", submitted.stdout)
    logs = subprocess.run([str(Path(sys.executable).parent / "ray"), "job", "logs", "--address", bare_cluster.dashboard_url, "--follow", job_id],
                          env=laptop_env, capture_output=True, text=True, timeout=240)  # fmt: skip
    assert "4 submitted (4 finished)" in logs.stdout, logs.stdout + logs.stderr
    client = MlflowClient(mlflow_server.url)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], "tags.`scalesweep.role` = 'trial'")
    nodes = {node["node_id"]: node for node in bare_cluster.alive_nodes()}
    (spot_node,) = [n for n, node in nodes.items() if node["resources_total"].get("gpu_1x_spot")]
    assert len(runs) == 4 and {r.data.tags["worker"].split(":")[0] for r in runs} == {spot_node[:8]}


def test_custom_resources_on_a_new_local_ray_exit_2_naming_the_field(checkout_env, tmp_path):
    spec = {"name": "s", "workload": "mnist1d_mlp", "axes": {"width": [4], "n_train": [500]},
            "resources_per_trial": {"cpu": 1, "custom_resources": {"gpu_1x_spot": 0.125}},
            "tracking": {"uri": f"sqlite:///{tmp_path / 'sweep.db'}"}}  # fmt: skip
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    result = scalesweep("run", "spec.yaml", "--no-progress", env=checkout_env, cwd=tmp_path)
    assert result.returncode == 2 and "resources_per_trial.custom_resources" in result.stderr, result.stdout + result.stderr
    assert not (tmp_path / "sweep.db").exists()  # refused before the tracking store was opened


def test_submit_refuses_bad_input_before_contacting_the_cluster(checkout_env, tmp_path):
    spec = {"name": "s", "workload": "mnist1d_mlp", "axes": {"width": [4], "n_train": [500]}, "tracking": {"uri": "sqlite:///sweep.db"}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    unreachable = "http://127.0.0.1:9"  # nothing listens on the discard port
    result = scalesweep("submit", "spec.yaml", "--address", unreachable, env=checkout_env, cwd=tmp_path)
    assert result.returncode == 2 and "tracking.uri" in result.stderr and "tracking server" in result.stderr

    spec["tracking"]["uri"] = "http://127.0.0.1:5000"
    spec["params"] = {"widht": 3}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    result = scalesweep("submit", "spec.yaml", "--address", unreachable, env=checkout_env, cwd=tmp_path)
    assert result.returncode == 2 and "params.widht" in result.stderr

    other = tmp_path / "elsewhere"
    other.mkdir()
    result = scalesweep("submit", "spec.yaml", "--address", unreachable, "--working-dir", "elsewhere", env=checkout_env, cwd=tmp_path)
    assert result.returncode == 2 and "inside the job's working dir" in result.stderr


def test_submit_to_an_unreachable_cluster_exits_3(checkout_env, tmp_path):
    spec = {"name": "s", "workload": "mnist1d_mlp", "axes": {"width": [4], "n_train": [500]}, "tracking": {"uri": "http://127.0.0.1:5000"}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    result = scalesweep("submit", "spec.yaml", "--address", "http://127.0.0.1:9", env=checkout_env, cwd=tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "127.0.0.1:9" in result.stderr


def test_submit_without_the_token_is_refused_with_exit_3(bare_cluster, laptop_env, tmp_path):
    spec = {"name": "s", "workload": "mnist1d_mlp", "axes": {"width": [4], "n_train": [500]}, "tracking": {"uri": "http://127.0.0.1:5000"}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = {**laptop_env, "RAY_AUTH_TOKEN": uuid.uuid4().hex}
    result = scalesweep("submit", "spec.yaml", "--address", bare_cluster.dashboard_url, env=env, cwd=tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "refused this client's token" in result.stderr
    jobs = requests.get(f"{bare_cluster.dashboard_url}/api/jobs/", headers=bare_cluster.headers, timeout=5).json()
    assert not [j for j in jobs if (j.get("metadata") or {}).get("scalesweep_sweep") == "s"]


def test_the_wheel_is_reproducible_and_its_version_names_the_sources(tmp_path):
    first, second = build_wheel(tmp_path / "a"), build_wheel(tmp_path / "b")
    assert first.name == second.name and first.read_bytes() == second.read_bytes()
    version = re.fullmatch(r"scalesweep-(0\.1\.0\+g[0-9a-f]{12})-py3-none-any\.whl", first.name).group(1)
    with zipfile.ZipFile(first) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(f"scalesweep-{version}.dist-info/METADATA").decode()
        assert {info.date_time for info in wheel.infolist()} == {(1980, 1, 1, 0, 0, 0)}  # SOURCE_DATE_EPOCH
    assert int(REPRODUCIBLE_EPOCH) == 315532800
    assert {n.split("/")[0] for n in names} == {"orchestrator", "workloads", "dashboards", f"scalesweep-{version}.dist-info"}
    assert "orchestrator/submit.py" in names and not [n for n in names if "__pycache__" in n]
    assert "Requires-Dist: ray[default]==2.60.0" in metadata
    # A changed source is a different version, so Ray builds (and caches) a new environment for it.
    changed = tmp_path / "changed"
    shutil.copytree(REPO, changed, ignore=shutil.ignore_patterns(".git", ".venv", "tests", "__pycache__", "*.egg-info", "build"))
    (changed / "orchestrator" / "submit.py").write_text((changed / "orchestrator" / "submit.py").read_text() + "\n# changed\n")
    assert build_wheel(tmp_path / "c", changed).name != first.name
    assert not (changed / "build").exists() and not list(changed.glob("*.egg-info"))  # built in a copy


def test_the_job_runtime_env_pip_installs_the_wheel_from_the_working_dir(tmp_path):
    env = job_runtime_env(tmp_path, "_scalesweep_wheel/scalesweep-0.1.0+g0123456789ab-py3-none-any.whl")
    assert env["working_dir"] == str(tmp_path)
    assert env["pip"]["packages"] == [
        "${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}/_scalesweep_wheel/scalesweep-0.1.0+g0123456789ab-py3-none-any.whl",
        TORCH_REQUIREMENT,
    ]
    # The torch pin is the one `make` installs.
    assert TORCH_REQUIREMENT in (REPO / "Makefile").read_text()
    from ray.runtime_env import RuntimeEnv

    RuntimeEnv(**env)  # Ray's own validation of the fields


def test_jobs_api_refuses_a_request_without_the_token(bare_cluster):
    assert requests.get(f"{bare_cluster.dashboard_url}/api/jobs/", timeout=5).status_code in (401, 403)
    wrong = {"Authorization": f"Bearer {uuid.uuid4().hex}"}
    assert requests.get(f"{bare_cluster.dashboard_url}/api/jobs/", headers=wrong, timeout=5).status_code in (401, 403)
    assert requests.get(f"{bare_cluster.dashboard_url}/api/jobs/", headers=bare_cluster.headers, timeout=5).ok
