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
        ({**GOOD, "fit": {"split_by": ["weight_decay"]}}, "fit.split_by: 'weight_decay' is not an axis of this sweep"),
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
    with pytest.raises(SpecError, match="name \\(line 1\\): the YAML tag !!python/object/apply:os.system is not allowed"):
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


# -- malformed spec files through the real CLI: exit 2, the problem named, nothing launched or logged --

TOY_HEAD = "name: bad\nworkload: tests.toy_workloads:PowerLawToy\n"
GOOD_AXES = "axes: {n: [10, 100], d: [100]}\n"
TRACKING = "tracking: {uri: '$uri', experiment: $experiment}\n"
GOOD_TAIL = GOOD_AXES + "params: {epochs: 2}\n" + TRACKING

# (file name, YAML text with $uri/$experiment/$marker placeholders, what the message must say)
MALFORMED_FILES = [
    ("unclosed-bracket.yaml", TOY_HEAD + "axes: {n: [10, 100, d: [100]}\n" + TRACKING, "YAML syntax error: line 3"),
    ("tab-indent.yaml", TOY_HEAD + "axes:\n\tn: [10]\n" + TRACKING, "YAML syntax error: line 4"),
    ("python-tag.yaml", "name: !!python/object/apply:os.system ['touch $marker']\n" + GOOD_TAIL, "the YAML tag !!python/object/apply:os.system is not allowed"),
    ("list-not-mapping.yaml", "- name: bad\n- workload: x\n", "a spec must be a mapping of keys to values, got list"),
    ("empty.yaml", "", "a spec must be a mapping of keys to values, got NoneType"),
    ("missing-workload.yaml", "name: bad\n" + GOOD_TAIL, "workload: required field is missing"),
    ("missing-name.yaml", "workload: tests.toy_workloads:PowerLawToy\n" + GOOD_TAIL, "name: required field is missing"),
    ("missing-axes.yaml", TOY_HEAD + TRACKING, "axes: required field is missing"),
    ("unknown-key.yaml", TOY_HEAD + GOOD_TAIL + "epochs: 3\n", "epochs: unknown key; valid keys here: name, workload"),
    ("unknown-nested-key.yaml", TOY_HEAD + GOOD_TAIL + "resources_per_trial: {gpus: 1}\n", "resources_per_trial.gpus: unknown key; valid keys here: cpu, gpu"),
    ("no-axes.yaml", TOY_HEAD + "axes: {}\n" + TRACKING, "axes: a sweep needs at least one axis"),
    ("empty-axis.yaml", TOY_HEAD + "axes: {n: [], d: [100]}\n" + TRACKING, "axis 'n' is empty"),
    ("axis-not-a-list.yaml", TOY_HEAD + "axes: {n: 10, d: [100]}\n" + TRACKING, "axes.n: Input should be a valid list"),
    ("axis-value-a-mapping.yaml", TOY_HEAD + "axes: {n: [{a: 1}], d: [100]}\n" + TRACKING, "axes.n.0"),
    ("negative-model-size.yaml", TOY_HEAD + "axes: {n: [-10, 100], d: [100]}\n" + TRACKING, "axes.n: Input should be greater than 0 (got -10)"),
    ("zero-data-size.yaml", TOY_HEAD + "axes: {n: [10], d: [0]}\n" + TRACKING, "axes.d: Input should be greater than 0 (got 0)"),
    ("param-wrong-type.yaml", TOY_HEAD + GOOD_AXES + "params: {epochs: many}\n" + TRACKING, "params.epochs: Input should be a valid integer"),
    ("unknown-param.yaml", TOY_HEAD + GOOD_AXES + "params: {lr: 0.1}\n" + TRACKING, "params.lr: not a parameter of workload"),
    ("axis-and-param.yaml", TOY_HEAD + GOOD_AXES + "params: {n: 3}\n" + TRACKING, "given both as axes and as fixed params"),
    ("unknown-import-path.yaml", "name: bad\nworkload: no_such_pkg.models:Thing\n" + GOOD_TAIL, "cannot import module 'no_such_pkg.models'"),
    ("not-a-workload.yaml", "name: bad\nworkload: tests.toy_workloads:ToyConfig\n" + GOOD_TAIL, "'ToyConfig' in 'tests.toy_workloads' is not a Workload subclass"),
    ("unknown-builtin.yaml", "name: bad\nworkload: resnet\n" + GOOD_TAIL, "unknown workload 'resnet'"),
    ("code-as-workload.yaml", "name: bad\nworkload: __import__('os').system('true')\n" + GOOD_TAIL, "is neither a built-in workload name nor an import path"),
    ("bad-name.yaml", "name: has space\nworkload: mnist1d_mlp\n" + GOOD_TAIL, "name: String should match pattern"),
    ("tracking-no-scheme.yaml", TOY_HEAD + GOOD_AXES + "tracking: {uri: 'localhost:5000'}\n", "tracking.uri: 'localhost:5000' is not a tracking URI"),
    ("tracking-sqlite-slashes.yaml", TOY_HEAD + GOOD_AXES + "tracking: {uri: 'sqlite://x.db'}\n", "needs three slashes"),
    ("tracking-bad-url.yaml", TOY_HEAD + GOOD_AXES + "tracking: {uri: 'http://exa mple.com'}\n", "is not a valid http(s) URL"),
    ("tracking-negative-outage.yaml", TOY_HEAD + GOOD_AXES + "tracking: {uri: '$uri', max_outage_s: -1}\n", "tracking.max_outage_s: Input should be greater than 0"),
    ("negative-cpu.yaml", TOY_HEAD + GOOD_TAIL + "resources_per_trial: {cpu: -1}\n", "resources_per_trial.cpu: Input should be greater than 0"),
    ("gpu-word.yaml", TOY_HEAD + GOOD_TAIL + "resources_per_trial: {gpu: lots}\n", "resources_per_trial.gpu"),
    ("more-cpus-than-the-machine.yaml", TOY_HEAD + GOOD_TAIL + "resources_per_trial: {cpu: 4096}\n", "resources_per_trial.cpu: 4096 CPUs per worker, but the local Ray has"),
    ("more-gpus-than-the-machine.yaml", TOY_HEAD + GOOD_TAIL + "resources_per_trial: {gpu: 64}\n", "resources_per_trial.gpu: 64 GPUs per worker, but torch sees"),
    ("negative-retries.yaml", TOY_HEAD + GOOD_TAIL + "execution: {max_retries: -1}\n", "execution.max_retries: Input should be greater than or equal to 0"),
    ("unknown-mode.yaml", TOY_HEAD + GOOD_TAIL + "execution: {mode: fast}\n", "execution.mode: Input should be 'auto', 'pack' or 'single'"),
    ("huge-grid.yaml", TOY_HEAD + "axes: {n: [" + ", ".join(map(str, range(1, 101))) + "], d: [" + ", ".join(map(str, range(1, 101))) + "]}\n" + TRACKING, "axes: the grid has 10000 trials, more than execution.max_trials=5000; confirm with --yes"),
]  # fmt: skip


def experiment_names(uri: str) -> set[str]:
    from mlflow.tracking import MlflowClient

    return {e.name for e in MlflowClient(uri).search_experiments(view_type=3)}  # 3: all, deleted too


def test_there_are_at_least_20_malformed_files():
    assert len({name for name, _, _ in MALFORMED_FILES}) == len(MALFORMED_FILES) >= 20


@pytest.mark.parametrize("name, text, expected", MALFORMED_FILES, ids=[case[0] for case in MALFORMED_FILES])
def test_malformed_spec_file_exits_2_naming_the_problem(name, text, expected, tmp_path, mlflow_server, launches):
    from string import Template

    marker = tmp_path / "code-ran"
    experiment = f"malformed-{name.removesuffix('.yaml')}"
    path = tmp_path / name
    path.write_text(Template(text).substitute(uri=mlflow_server.url, experiment=experiment, marker=marker))
    before = experiment_names(mlflow_server.url)

    result = CliRunner().invoke(app, ["run", str(path), "--no-progress"])

    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split()), result.output
    assert not launches  # Ray was neither started nor joined
    assert experiment_names(mlflow_server.url) == before  # nothing was logged
    assert not marker.exists()  # no code from the spec ran
