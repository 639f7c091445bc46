"""A wrong spec names the field, exits 2 and launches nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.grid import expand_grid
from orchestrator.spec import SpecError, load_spec, parse_spec

GOOD = {
    "name": "ok",
    "workload": "mnist1d_mlp",
    "axes": {"width": [4, 8], "n_train": [100]},
    "params": {"epochs": 2},
}


def with_changes(**changes) -> dict:
    spec = {**GOOD, **changes}
    return {k: v for k, v in spec.items() if v is not None}


@pytest.mark.parametrize(
    "body, expected",
    [
        (with_changes(name=None), "name: required field is missing"),
        (with_changes(workload=None), "workload: required field is missing"),
        (with_changes(axes={}), "axes: a sweep needs at least one axis"),
        (with_changes(axes={"width": []}), "axis 'width' is empty"),
        (with_changes(axes={"width": [4, 4]}), "axis 'width' repeats a value"),
        (with_changes(axes={"width": "4,8"}), "axes.width"),
        ({**GOOD, "epochs": 3}, "epochs: unknown key; valid keys here: name, workload"),
        ({**GOOD, "tracking": {"urii": "x"}}, "tracking.urii: unknown key; valid keys here: uri, experiment"),
        ({**GOOD, "tracking": {"uri": "localhost:5000"}}, "tracking.uri: 'localhost:5000' is not a tracking URI"),
        ({**GOOD, "tracking": {"uri": "sqlite://x.db"}}, "needs three slashes"),
        ({**GOOD, "resources_per_trial": {"cpu": -1}}, "resources_per_trial.cpu"),
        ({**GOOD, "resources_per_trial": {"gpu": "lots"}}, "resources_per_trial.gpu"),
        ({**GOOD, "execution": {"mode": "fast"}}, "execution.mode"),
        (with_changes(name="has space"), "name: String should match pattern"),
        (with_changes(workload="not a path!"), "is neither a built-in workload name nor an import path"),
        ({**GOOD, "params": {"width": 3}}, "given both as axes and as fixed params"),
    ],
)
def test_malformed_spec_names_the_field(body, expected):
    with pytest.raises(SpecError) as info:
        parse_spec(body, "spec.yaml")
    assert expected in str(info.value)
    assert str(info.value).startswith("spec.yaml: ")


@pytest.mark.parametrize(
    "params, axes, expected",
    [
        ({"epochs": 2}, {"width": [-4], "n_train": [100]}, "axes.width: Input should be greater than 0 (got -4)"),
        ({"epochs": 2, "lrr": 0.1}, {"width": [4], "n_train": [100]}, "params.lrr: not a parameter of workload 'mnist1d_mlp'"),
        ({"epochs": "many"}, {"width": [4], "n_train": [100]}, "params.epochs"),
        ({}, {"width": [4]}, "params.n_train: required by workload 'mnist1d_mlp'"),
        ({}, {"width": [4], "n_train": [10**9]}, "axes.n_train: Input should be less than or equal to 10000"),
    ],
)
def test_workload_config_errors_name_the_field(params, axes, expected):
    spec = parse_spec({**GOOD, "axes": axes, "params": params})
    with pytest.raises(SpecError) as info:
        expand_grid(spec)
    assert expected in str(info.value)


def test_unknown_workload_import_path():
    spec = parse_spec({**GOOD, "workload": "no_such_package.module:Thing"})
    with pytest.raises(SpecError, match="workload: workload 'no_such_package.module:Thing': cannot import module"):
        expand_grid(spec)


def test_yaml_syntax_error_gives_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\naxes: [1, 2\nworkload: y\n")
    with pytest.raises(SpecError, match=r"broken.yaml: YAML syntax error: line \d+"):
        load_spec(path)


def test_spec_yaml_cannot_construct_objects(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\nworkload: mnist1d_mlp\naxes: {width: [1]}\n")
    with pytest.raises(SpecError, match="YAML syntax error"):
        load_spec(path)


def test_missing_file():
    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec("/nonexistent/spec.yaml")


@pytest.mark.parametrize(
    "body, expected",
    [
        ({**GOOD, "axes": {"width": [0], "n_train": [100]}}, "axes.width"),
        ({**GOOD, "tracking": {"urii": "sqlite:///x.db"}}, "tracking.urii"),
        ({**GOOD, "axes": {"width": list(range(1, 101)), "n_train": list(range(1, 101))}}, "confirm with --yes"),
    ],
)
def test_cli_bad_spec_exits_2_and_launches_nothing(tmp_path, monkeypatch, body, expected):
    import yaml

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**body, "tracking": body.get("tracking", {"uri": "sqlite:///store.db"})}))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert not (tmp_path / "store.db").exists()  # nothing was recorded, so nothing launched


def test_exit_code_2_from_a_real_process(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nworkload: mnist1d_mlp\naxes: {width: []}\n")
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "axis 'width' is empty" in proc.stderr
