"""A sweep as a Ray job on a cluster whose nodes do not have scalesweep: `scalesweep submit`.

The job brings scalesweep with it. This checkout is built into a wheel, the wheel travels in the
job's working dir beside the spec, and the job's runtime_env pip-installs it on every node where a
process of the job starts. Ray builds that environment as a virtualenv over the node's own Python,
so it inherits what the image already has (ray, torch, mlflow, ...) and pip installs only what is
missing; nothing comes from a package index that the nodes do not already need for the dependencies.

The wheel's version carries a hash of the sources (`0.1.0+g<12 hex digits>`), for two reasons:
pip skips a wheel whose version is already installed ("already installed with the same version as
the provided wheel"), which on an image with scalesweep baked in would silently run the image's
copy; and Ray caches a pip environment by its list of requirements, so a changed checkout must name
a different file while an unchanged one reuses the environment built for it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from orchestrator.spec import SpecError, SweepSpec

# The torch the project is tested with (the Makefile installs it first). A node whose image lacks
# torch gets this one in the job's environment instead of whatever release `torch>=2.4` would pick.
TORCH_REQUIREMENT = "torch==2.13.0"
# Where the wheel lies inside the job's working dir; Ray expands the variable on each node.
WHEEL_DIR = "_scalesweep_wheel"
WORKING_DIR_VAR = "${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}"
# 1980-01-01, the earliest time a zip entry can hold: the same sources give the same wheel bytes.
REPRODUCIBLE_EPOCH = "315532800"
# Never uploaded with a job's working dir: caches, and what local sweeps leave beside a spec (Ray
# refuses a working dir over 500 MiB).
UPLOAD_IGNORE = ("__pycache__", "*.pyc", ".git", ".venv", ".pytest_cache", "mlruns", "mlartifacts", "reports", "checkpoints", "*.db")


class BuildError(RuntimeError):
    """The scalesweep wheel could not be built from this checkout."""


@dataclass(frozen=True)
class SubmittedJob:
    """A sweep handed to a cluster's Jobs API."""

    submission_id: str
    address: str
    entrypoint: str
    wheel: str  # the wheel's file name, with the version that ran


def source_root() -> Path:
    """The checkout this scalesweep is imported from (the folder with its pyproject.toml)."""
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or not re.search(r'^name = "scalesweep"$', pyproject.read_text(), re.M):
        raise BuildError(
            f"scalesweep is installed at {root} without its sources, so there is no wheel to build: "
            "run submit from a checkout of scalesweep (pip install -e .)"
        )
    return root


def _copy_sources(root: Path, into: Path) -> str:
    """Copy what setuptools builds from (pyproject, README, top-level packages) and hash it."""
    digest = hashlib.sha256()
    names = ["pyproject.toml", "README.md"] + sorted(
        p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").is_file() and p.name != "tests"
    )
    for name in names:
        source = root / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, into / name)
    for path in sorted(p for p in into.rglob("*") if p.is_file()):
        digest.update(path.relative_to(into).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def build_wheel(out_dir: Path, root: Path | None = None) -> Path:
    """Build scalesweep's wheel from the checkout into out_dir; its version names the sources' hash."""
    root = root or source_root()
    with tempfile.TemporaryDirectory(prefix="scalesweep-build-") as tmp:
        # A copy: setuptools leaves build/ and *.egg-info in the tree it builds, and a stale
        # build/lib would put deleted modules into the wheel.
        src = Path(tmp) / "src"
        src.mkdir()
        source_hash = _copy_sources(root, src)
        pyproject = src / "pyproject.toml"
        text, n = re.subn(r'^version = "([^"+]+)"', rf'version = "\1+g{source_hash}"', pyproject.read_text(), count=1, flags=re.M)
        if n != 1:
            raise BuildError(f"{root / 'pyproject.toml'}: no static `version = \"...\"` line to label the wheel with")
        pyproject.write_text(text)
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q", "-w", str(out_dir), str(src)]
        if _has_build_backend():
            command.insert(4, "--no-build-isolation")  # no download of setuptools from an index
        env = {**os.environ, "SOURCE_DATE_EPOCH": REPRODUCIBLE_EPOCH}
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise BuildError(f"pip wheel failed ({result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}")
    (wheel,) = out_dir.glob(f"scalesweep-*+g{source_hash}-*.whl")
    return wheel


def _has_build_backend() -> bool:
    """Whether this Python has the setuptools pyproject.toml asks for (>= 68)."""
    try:
        return int(importlib.metadata.version("setuptools").split(".")[0]) >= 68
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False


def job_runtime_env(working_dir: Path, wheel_in_working_dir: str) -> dict:
    """The runtime_env of a sweep job: its folder, and pip installing the wheel inside it on each node."""
    return {
        "working_dir": str(working_dir),
        "pip": {"packages": [f"{WORKING_DIR_VAR}/{wheel_in_working_dir}", TORCH_REQUIREMENT], "pip_check": False},
    }


def sweep_entrypoint(spec_in_working_dir: str, confirmed: bool) -> str:
    """The job's command, run on the head in the job's working dir with the wheel installed."""
    command = ["scalesweep", "run", spec_in_working_dir, "--address", "auto", "--no-progress"]
    return shlex.join(command + (["--yes"] if confirmed else []))


def check_submittable(spec: SweepSpec, spec_path: Path, working_dir: Path) -> str:
    """The spec's path inside the working dir; SpecError for a job that could not record its trials."""
    if not spec.tracking.uri.startswith(("http://", "https://")):
        raise SpecError(
            f"tracking.uri: a sweep submitted to a cluster needs a tracking server (http://HOST:PORT), got "
            f"{spec.tracking.uri!r}: the job's working dir, and a SQLite file in it, is deleted with the job"
        )
    try:
        return spec_path.resolve().relative_to(working_dir.resolve()).as_posix()
    except ValueError:
        raise SpecError(f"{spec_path}: the spec must lie inside the job's working dir {working_dir}") from None


def plan_locally(spec: SweepSpec, working_dir: Path, confirmed: bool) -> None:
    """Expand the grid here, as the job would, so a wrong spec fails before anything is uploaded.

    The job's processes import a workload of the working dir's own from there (Ray puts it on
    their path), so it goes on this process's path for the check."""
    from orchestrator.sweep import Sweep

    folder = str(working_dir.resolve())
    sys.path.insert(0, folder)
    try:
        Sweep(spec).plan(offline=True, confirmed=confirmed)
    finally:
        sys.path.remove(folder)


def submit_sweep(spec: SweepSpec, spec_path: Path, address: str, working_dir: Path | None = None, confirmed: bool = False) -> SubmittedJob:
    """Submit `scalesweep run` of the spec as a Ray job at address (the dashboard's http URL).

    working_dir (default: the spec's folder) is uploaded with the wheel built from this checkout
    added to it. Returns once the cluster accepted the job; the job runs on without this process.
    """
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    working_dir = working_dir or spec_path.parent
    spec_in_dir = check_submittable(spec, spec_path, working_dir)
    plan_locally(spec, working_dir, confirmed)
    root = source_root()
    try:
        client = JobSubmissionClient(address)  # ConnectionError when nothing answers there
    except AuthenticationError as err:
        raise ConnectionError(
            f"{address} refused this client's token ({err.message}); set RAY_AUTH_MODE=token, and "
            "RAY_AUTH_TOKEN or ~/.ray/auth_token to the cluster's token"
        ) from None
    with tempfile.TemporaryDirectory(prefix="scalesweep-job-") as tmp:
        staged = Path(tmp) / "job"
        # A copy of the folder, so the wheel is added without writing into the user's files.
        shutil.copytree(working_dir, staged, ignore=shutil.ignore_patterns(*UPLOAD_IGNORE))
        (staged / WHEEL_DIR).mkdir(exist_ok=True)
        wheel = build_wheel(staged / WHEEL_DIR, root)
        entrypoint = sweep_entrypoint(spec_in_dir, confirmed)
        try:
            submission_id = client.submit_job(
                entrypoint=entrypoint,
                submission_id=f"{spec.name}-{uuid.uuid4().hex[:8]}",
                runtime_env=job_runtime_env(staged, f"{WHEEL_DIR}/{wheel.name}"),
                metadata={"scalesweep_sweep": spec.name, "scalesweep_wheel": wheel.name},
            )  # uploads the staged folder before it returns
        except RuntimeError as err:  # the Jobs API answered but refused
            raise ConnectionError(f"the Jobs API at {address} refused the job: {err}") from None
    return SubmittedJob(submission_id, address, entrypoint, wheel.name)
