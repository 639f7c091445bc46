"""Hostile input through the real CLI: each case exits with its code and one line on stderr that names
what is wrong, never shows a password or a traceback, launches nothing and leaves the store as it was.

Grouped by class: spec syntax and encoding, types and ranges, workload import, tracking URI and store
state, output paths, auth. Exit codes: 2 bad input, 3 tracking store unreachable or refusing.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from tests.conftest import fill_disk, free_port, mounted_tmpfs, remount

SECRET = "hunter2-never-printed"
HEAD = "name: bad\nworkload: tests.toy_workloads:PowerLawToy\n"
AXES = "axes: {n: [10, 100], d: [100]}\n"
STORE = "tracking: {uri: 'sqlite:///$store'}\n"
GOOD = HEAD + AXES + "params: {epochs: 2}\n" + STORE


def cli(*args, env: dict | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def assert_refused(result, code: int, *named: str) -> str:
    """Exit `code`, one 'error: ...' line on stderr holding every `named` text, no secret, no traceback."""
    everything = result.stdout + result.stderr
    assert result.exit_code == code, everything
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in named:
        assert text in lines[0], lines[0]
    assert SECRET not in everything
    assert "Traceback" not in everything
    return lines[0]


def write_spec(folder: Path, text: str | bytes, name: str = "spec.yaml") -> Path:
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text.replace("$store", str(folder / "store.db")).replace("$marker", str(folder / "code-ran")))
    return path


def refused_run(folder: Path, text: str | bytes, launches: list, code: int, *named: str, args=()) -> str:
    """`scalesweep run` on the spec: refused as asked, nothing launched, no store, no code run."""
    line = assert_refused(cli("run", write_spec(folder, text), "--no-progress", *args), code, *named)
    assert not launches
    assert not (folder / "store.db").exists() and not (folder / "mlartifacts").exists()
    assert not (folder / "code-ran").exists()
    return line


# -- spec syntax and encoding --------------------------------------------------------------------

BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8)
)

SYNTAX_AND_ENCODING = [
    ("utf16-with-bom", GOOD.encode("utf-16"), ["encoded as UTF-16; save the spec as UTF-8"]),
    ("utf16-without-bom", GOOD.encode("utf-16-le"), ["line 1: a NUL byte", "UTF-8 text"]),
    ("utf32-with-bom", GOOD.encode("utf-32"), ["encoded as UTF-32"]),
    ("latin1", (HEAD + "description: caf\xe9 au lait\n" + AXES).encode("latin-1"), ["line 3: byte 0xe9 is not UTF-8"]),
    ("binary", bytes(range(256)) * 8, ["line 1: a NUL byte; this is a binary file"]),
    ("gzip", gzip.compress(GOOD.encode()), ["a spec is UTF-8 text"]),
    ("bell-character", HEAD + "description: ding\x07\n" + AXES + STORE, ["line 3: control character U+0007"]),
    ("terminal-escape", HEAD + "description: \x1b[31mred\n" + AXES + STORE, ["line 3: control character U+001B"]),
    ("c1-control", HEAD + "description: next\x85line\n" + AXES + STORE, ["line 3: control character U+0085"]),
    ("larger-than-1-mib", HEAD + "axes: {n: [" + "1, " * 400_000 + "1]}\n" + STORE, ["larger than 1024 KiB"]),
    ("duplicate-top-level-key", GOOD + "axes: {n: [1000]}\n", ["axes (line 6): duplicate key; it is already given on line 3"]),
    ("duplicate-axis", HEAD + "axes: {n: [10, 100], n: [1000]}\n" + STORE, ["axes.n (line 3): duplicate key"]),
    ("duplicate-param", HEAD + AXES + "params: {epochs: 2, epochs: 3}\n" + STORE, ["params.epochs (line 4): duplicate key"]),
    ("alias-bomb", GOOD + BILLION_LAUGHS, ["more than 100000 values once aliases are expanded"]),
    ("alias-inside-itself", HEAD + "axes: {n: &loop [1, *loop]}\n" + STORE, ["axes.n.1.1.1.1", "nested deeper than 32 levels"]),
    ("nested-100-deep", HEAD + AXES + "params: {p: " + "[" * 100 + "]" * 100 + "}\n" + STORE, ["nested deeper than 32 levels"]),
    ("nested-5000-deep", HEAD + AXES + "params: {p: " + "[" * 5000 + "]" * 5000 + "}\n" + STORE, ["YAML syntax error", "exceeded maximum nesting depth"]),
    ("two-documents", GOOD + "---\n" + GOOD, ["YAML syntax error", "expected a single document in the stream but found another document"]),
    ("undefined-alias", HEAD + "axes: {n: *sizes}\n" + STORE, ["YAML syntax error: line 3", "found undefined alias"]),
    ("merge-key", HEAD + AXES + "params: {<<: {epochs: 2}}\n" + STORE, ["<< is a merge key in YAML 1.1", "merge keys are not supported"]),
    ("binary-tag", GOOD + "description: !!binary aGVsbG8=\n", ["description (line 6): the YAML tag !!binary is not allowed"]),
    ("local-tag", GOOD + "description: !env HOME\n", ["the YAML tag !env is not allowed"]),
    ("python-name-tag", "name: bad\nworkload: !!python/name:os.system\n" + AXES + STORE, ["!!python/name:os.system is not allowed"]),
    ("python-apply-tag", GOOD + "description: !!python/object/apply:os.system ['touch $marker']\n", ["!!python/object/apply:os.system is not allowed"]),
    ("set-tag", HEAD + "axes: !!set {n: null}\n" + STORE, ["axes (line 3): the YAML tag !!set is not allowed"]),
    ("key-is-a-list", HEAD + "axes: {? [n, d] : [1]}\n" + STORE, ["a key must be a plain name, not a list or mapping"]),
]  # fmt: skip


@pytest.mark.parametrize("text, named", [c[1:] for c in SYNTAX_AND_ENCODING], ids=[c[0] for c in SYNTAX_AND_ENCODING])
def test_spec_syntax_and_encoding(text, named, tmp_path, launches):
    refused_run(tmp_path, text, launches, 2, "spec.yaml", *named)


def test_a_folder_or_a_device_as_spec(tmp_path, launches):
    assert_refused(cli("run", tmp_path), 2, "not a spec file")
    assert_refused(cli("run", "/dev/zero"), 2, "/dev/zero: not a spec file")
    assert not launches


def test_a_utf8_file_with_a_byte_order_mark_and_crlf_lines_is_a_spec(tmp_path):
    from orchestrator.spec import load_spec

    path = write_spec(tmp_path, ("\ufeff" + GOOD).replace("\n", "\r\n").replace("$store", str(tmp_path / "s.db")).encode())
    assert load_spec(path).axes == {"n": [10, 100], "d": [100]}


# -- types and ranges ----------------------------------------------------------------------------

TYPES_AND_RANGES = [
    ("yaml11-on", HEAD + "axes: {n: [on, 100]}\n" + STORE, ["axes.n.0 (line 3): on is the boolean true in YAML 1.1 but text in YAML 1.2"]),
    ("yaml11-yes", HEAD + AXES + "params: {noise: yes}\n" + STORE, ["params.noise (line 4): yes is the boolean true in YAML 1.1"]),
    ("yaml11-octal", HEAD + "axes: {n: [010, 100]}\n" + STORE, ["010 is 8 in YAML 1.1 but 10 in YAML 1.2"]),
    ("yaml11-sexagesimal", HEAD + AXES + "params: {sleep_s: 1:30}\n" + STORE, ["params.sleep_s (line 4): 1:30 is 90 in YAML 1.1 but text"]),
    ("yaml11-underscores", HEAD + "axes: {n: [1_000]}\n" + STORE, ["1_000 is 1000 in YAML 1.1 but text in YAML 1.2"]),
    ("yaml11-binary", HEAD + "axes: {n: [0b101]}\n" + STORE, ["0b101 is 5 in YAML 1.1"]),
    ("yaml11-date", HEAD + AXES + "params: {seed: 2024-01-01}\n" + STORE, ["params.seed (line 4): 2024-01-01 is a date in YAML 1.1"]),
    ("axis-of-mixed-types", HEAD + "axes: {n: [10, '10', 1000.0, true]}\n" + STORE, ["axes: axis 'n' mixes numbers, text, true/false"]),
    ("axis-of-numbers-and-text", HEAD + "axes: {n: [10], d: [100, '1000']}\n" + STORE, ["axis 'd' mixes numbers, text"]),
    ("axis-repeats-by-value", HEAD + "axes: {n: [10, 10.0]}\n" + STORE, ["axis 'n' repeats a value: [10, 10.0]"]),
    ("infinite-param", HEAD + AXES + "params: {noise: .inf}\n" + STORE, ["params.noise: inf is not a finite number"]),
    ("nan-on-an-axis", HEAD + "axes: {n: [10, .nan]}\n" + STORE, ["axes.n.1: nan is not a finite number"]),
    ("infinite-deep-in-a-param", HEAD + AXES + "params: {schedule: {warmup: [0.1, -.inf]}}\n" + STORE, ["params.schedule: -inf at warmup[1] is not a finite number"]),
    ("budget-of-1e300", HEAD + "axes: {n: [10]}\ncompute_budgets: [1.0e+300]\n" + STORE, ["compute_budgets: 1e+300 FLOPs: a budget must be positive and at most 1e+28"]),
    ("infinite-budget", HEAD + "axes: {n: [10]}\ncompute_budgets: [.inf]\n" + STORE, ["compute_budgets.0: Input should be a finite number"]),
    ("budget-as-text", HEAD + "axes: {n: [10]}\ncompute_budgets: ['1e20']\n" + STORE, ["compute_budgets.0: Input should be a valid number (got '1e20')"]),
    ("integer-beyond-64-bits", HEAD + "axes: {n: [100000000000000000000000]}\n" + STORE, ["axes.n.0: 100000000000000000000000 does not fit in 64 bits"]),
    ("float-beyond-1e30", HEAD + "axes: {n: [10], d: [1.0e+31]}\n" + STORE, ["axes.d.0: 1e+31 is beyond 1e+30"]),
    ("blank-experiment", HEAD + AXES + "tracking: {uri: 'sqlite:///$store', experiment: '   '}\n", ["tracking.experiment: '   ' needs a visible character"]),
    ("experiment-with-control-character", HEAD + AXES + "tracking: {uri: 'sqlite:///$store', experiment: \"a\\x01b\"}\n", ["tracking.experiment: 'a\\x01b' needs a visible character and no control characters"]),
    ("blank-axis-name", HEAD + "axes: {' ': [1], n: [10]}\n" + STORE, ["needs a visible character"]),
    ("blank-sweep-name", "name: '   '\nworkload: tests.toy_workloads:PowerLawToy\n" + AXES + STORE, ["name: String should match pattern"]),
    ("cpu-as-text", GOOD + "resources_per_trial: {cpu: '2'}\n", ["resources_per_trial.cpu: Input should be a valid number (got '2')"]),
    ("cpu-as-boolean", GOOD + "resources_per_trial: {cpu: true}\n", ["resources_per_trial.cpu: Input should be a valid number (got True)"]),
    ("infinite-cpu", GOOD + "resources_per_trial: {cpu: .inf}\n", ["resources_per_trial.cpu: Input should be a finite number"]),
    ("a-million-cpus", GOOD + "resources_per_trial: {cpu: 1000000}\n", ["resources_per_trial.cpu: Input should be less than or equal to 4096"]),
    ("negative-gpu", GOOD + "resources_per_trial: {gpu: -1}\n", ["resources_per_trial.gpu: gpu must be 'auto' or between 0 and 64"]),
    ("fractional-retries", GOOD + "execution: {max_retries: 2.5}\n", ["execution.max_retries: Input should be a valid integer"]),
    ("boolean-retries", GOOD + "execution: {max_retries: true}\n", ["execution.max_retries: Input should be a valid integer"]),
    ("nan-checkpoint-interval", GOOD + "execution: {checkpoint_every_s: .nan}\n", ["execution.checkpoint_every_s: Input should be a finite number"]),
    ("ten-million-max-trials", GOOD + "execution: {max_trials: 10000000}\n", ["execution.max_trials: Input should be less than or equal to 1000000"]),
    ("outage-of-a-year", HEAD + AXES + "tracking: {uri: 'sqlite:///$store', max_outage_s: 31536000}\n", ["tracking.max_outage_s: Input should be less than or equal to 604800"]),
    ("null-axis-value", HEAD + "axes: {n: [null]}\n" + STORE, ["axes.n.0: null is not a number, text or true/false"]),
    ("list-as-axis-value", HEAD + "axes: {n: [[1, 2]]}\n" + STORE, ["axes.n.0: [1, 2] is not a number, text or true/false"]),
    ("description-as-list", GOOD + "description: [a, b]\n", ["description: Input should be a valid string"]),
    ("uri-with-password-and-bad-scheme", HEAD + AXES + f"tracking: {{uri: 'htps://bob:{SECRET}@mlflow.example.com'}}\n", ["tracking.uri: 'htps://bob:***@mlflow.example.com' is not a tracking URI"]),
    ("uri-with-password-and-space", HEAD + AXES + f"tracking: {{uri: 'http://bob:{SECRET}@exa mple.com'}}\n", ["'http://bob:***@exa mple.com' is not a valid http(s) URL"]),
    ("in-memory-sqlite", HEAD + AXES + "tracking: {uri: 'sqlite:///:memory:'}\n", ["is an in-memory store, which keeps nothing"]),
]  # fmt: skip


@pytest.mark.parametrize("text, named", [c[1:] for c in TYPES_AND_RANGES], ids=[c[0] for c in TYPES_AND_RANGES])
def test_types_and_ranges(text, named, tmp_path, launches):
    refused_run(tmp_path, text, launches, 2, "spec.yaml", *named)


def test_a_grid_past_a_million_trials_is_refused_even_with_yes(tmp_path, launches):
    sizes = ", ".join(map(str, range(1, 1002)))
    text = HEAD + f"axes: {{n: [{sizes}], d: [{sizes}]}}\nexecution: {{max_trials: 1000000}}\n" + STORE
    refused_run(tmp_path, text, launches, 2, "the grid has 1,002,001 trials; a sweep holds at most 1,000,000", args=["--yes"])


# -- workload import -----------------------------------------------------------------------------

WORKLOAD_BASE = """
from pydantic import BaseModel
from workloads.api import TrialSize, Workload

class C(BaseModel):
    n: int = 1

class Base(Workload):
    Config = C
    model_size_param = "n"
    data_size_param = "n"

    def size(self, config):
        return TrialSize(n_params=config.n, n_samples=1, train_flops=6.0 * config.n)

    def train(self, config, reporter):
        reporter.report(1, test_error=0.5)
"""

WORKLOAD_MODULES = [
    ("syntax-error", "def broken(:\n    pass\n", "Thing", ["failed: syntax error in", ".py, line 1"]),
    ("raises-at-import", "raise RuntimeError('this module needs a GPU')\n", "Thing", ["failed: RuntimeError: this module needs a GPU at", ".py, line 1"]),
    ("sys-exit-0-at-import", "import sys\nsys.exit(0)\n", "Thing", ["failed: it called sys.exit(0) while being imported"]),
    ("sys-exit-3-at-import", "import sys\nsys.exit(3)\n", "Thing", ["failed: it called sys.exit(3) while being imported"]),
    ("missing-dependency", "import not_installed_dependency_xyz\n", "Thing", ["ModuleNotFoundError: No module named 'not_installed_dependency_xyz'"]),
    ("endless-recursion", "def f():\n    return f()\nf()\n", "Thing", ["RecursionError: maximum recursion depth exceeded"]),
    ("abstract-class", WORKLOAD_BASE + "class Thing(Workload):\n    Config = C\n    model_size_param = data_size_param = 'n'\n", "Thing", ["Thing is abstract; it must implement size, train"]),
    ("no-config", WORKLOAD_BASE + "class Thing(Base):\n    Config = None\n", "Thing", ["Thing has no Config (a pydantic model of its parameters)"]),
    ("config-not-a-model", WORKLOAD_BASE + "class Thing(Base):\n    Config = dict\n", "Thing", ["Thing has no Config"]),
    ("a-function-not-a-class", WORKLOAD_BASE + "def Thing():\n    return Base()\n", "Thing", ["'Thing' in", "is not a Workload subclass"]),
    ("no-such-class", WORKLOAD_BASE, "Missing", ["'Missing' in", "is not a Workload subclass"]),
    ("constructor-raises", WORKLOAD_BASE + "class Thing(Base):\n    def __init__(self):\n        raise RuntimeError('no CUDA device')\n", "Thing", ["Thing() failed: RuntimeError: no CUDA device"]),
    ("no-model-size-param", WORKLOAD_BASE + "class Thing(Base):\n    model_size_param = None\n", "Thing", ["Thing does not set model_size_param"]),
]  # fmt: skip


@pytest.mark.parametrize("source, attribute, named", [c[1:] for c in WORKLOAD_MODULES], ids=[c[0] for c in WORKLOAD_MODULES])
def test_workload_import(source, attribute, named, tmp_path, monkeypatch, launches):
    module = f"hostile_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    text = f"name: bad\nworkload: {module}:{attribute}\naxes: {{n: [10]}}\n" + STORE
    refused_run(tmp_path, text, launches, 2, f"workload: workload '{module}:{attribute}'", *named)


@pytest.mark.parametrize("command", ["plan", "status", "fit", "report"])
def test_workload_that_fails_at_import_opens_no_store_in_any_command(command, tmp_path, monkeypatch, launches):
    module = f"hostile_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{module}.py").write_text("raise ImportError('a broken install')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = write_spec(tmp_path, f"name: bad\nworkload: {module}:Thing\naxes: {{n: [10]}}\n" + STORE)
    args = ["--out", tmp_path / "report"] if command == "report" else []
    assert_refused(cli(command, spec, *args), 2, f"importing '{module}' failed: ImportError: a broken install")
    assert not (tmp_path / "store.db").exists() and not launches


# -- tracking URI and store state ----------------------------------------------------------------


def tracking_spec(folder: Path, uri: str) -> Path:
    return write_spec(folder, HEAD + AXES + "params: {epochs: 2}\n" + f"tracking: {{uri: '{uri}', experiment: hostile}}\n")


def refused_store(folder: Path, uri: str, launches: list, code: int, *named: str, command: str = "run") -> str:
    started = time.monotonic()
    args = ("--no-progress",) if command == "run" else ()
    line = assert_refused(cli(command, tracking_spec(folder, uri), *args), code, *named)
    assert time.monotonic() - started < 60  # no minutes of retries for an answer that cannot change
    assert not launches
    return line


def test_file_uri_names_the_setting_mlflow_needs(tmp_path, monkeypatch, launches):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    refused_store(tmp_path, f"file://{tmp_path}/mlruns", launches, 2, "tracking.uri", "MLflow 3 opens file: stores only with MLFLOW_ALLOW_FILE_STORE=true")
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize(
    "uri, named",
    [
        (f"postgresql+pg8000://bob:{SECRET}@127.0.0.1:9/mlflow", ["postgresql+pg8000://bob:***@127.0.0.1:9/mlflow", "the database driver for 'postgresql+pg8000' is not installed"]),
        (f"mysql://bob:{SECRET}@127.0.0.1:9/mlflow", ["mysql://bob:***@", "the database driver for 'mysql' is not installed"]),
    ],
    ids=["postgresql-without-its-driver", "mysql-without-its-driver"],
)  # fmt: skip
def test_database_uri_without_its_driver(uri, named, tmp_path, launches):
    refused_store(tmp_path, uri, launches, 3, *named)


def test_database_that_is_down(tmp_path, launches):
    uri = f"postgresql://bob:{SECRET}@127.0.0.1:{free_port()}/mlflow"
    refused_store(tmp_path, uri, launches, 3, "tracking store postgresql://bob:***@127.0.0.1", "is unreachable", "Connection refused")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("content", [bytes(range(256)) * 16, b"name: this is a spec, not a database\n"], ids=["random-bytes", "a-text-file"])
def test_sqlite_file_that_is_not_a_database(content, tmp_path, launches):
    db = tmp_path / "store.db"
    db.write_bytes(content)
    refused_store(tmp_path, f"sqlite:///{db}", launches, 3, f"SQLite store sqlite:///{db}: the file is not a SQLite database")
    assert db.read_bytes() == content
    assert not (tmp_path / "mlartifacts").exists()


def test_sqlite_path_under_a_file(tmp_path, launches):
    (tmp_path / "afile").write_text("x")
    refused_store(tmp_path, f"sqlite:///{tmp_path}/afile/store.db", launches, 3, f"{tmp_path}/afile is a file, not a folder")


def test_sqlite_in_a_read_only_folder_fails_at_once(tmp_path, launches):
    with mounted_tmpfs(tmp_path / "ro", "1m", read_only=True) as folder:
        refused_store(tmp_path, f"sqlite:///{folder}/store.db", launches, 3, f"cannot create {folder}/store.db: the file system is read-only")
        refused_store(tmp_path, f"sqlite:///{folder}/sub/store.db", launches, 3, f"cannot create the folder {folder}/sub (Read-only file system)")
        assert not any(folder.iterdir())


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory) -> Path:
    """An MLflow SQLite store of one experiment, as a first sweep leaves it; made once, in a process of
    its own, so no connection of this one keeps a copy open (a busy file system cannot be remounted)."""
    db = tmp_path_factory.mktemp("mlflow-db") / "store.db"
    code = f"from mlflow.tracking import MlflowClient; MlflowClient('sqlite:///{db}').create_experiment('before')"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=300)
    return db


def copy_store(template: Path, db: Path) -> None:
    shutil.copyfile(template, db)  # the template was closed cleanly: one file, no -wal beside it


def experiments_in(db: Path) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return sorted(name for (name,) in conn.execute("SELECT name FROM experiments"))


def test_sqlite_store_on_a_read_only_file_system(tmp_path, launches, mlflow_db):
    with mounted_tmpfs(tmp_path / "disk", "32m") as folder:
        db = folder / "store.db"
        copy_store(mlflow_db, db)
        before = digest(db)
        remount(folder, read_only=True)
        refused_store(tmp_path, f"sqlite:///{db}", launches, 3, "read-only")
        assert digest(db) == before


@pytest.mark.parametrize("command", ["run", "status"])
def test_sqlite_store_on_a_full_disk_fails_at_once(command, tmp_path, launches, mlflow_db):
    with mounted_tmpfs(tmp_path / "disk", "32m") as folder:
        db = folder / "store.db"
        copy_store(mlflow_db, db)
        fill_disk(folder)
        line = refused_store(tmp_path, f"sqlite:///{db}", launches, 3, f"sqlite:///{db}", "full", command=command)
        assert "has not answered" not in line  # not mistaken for an outage
        assert experiments_in(db) == ["Default", "before"]


FAKE_SERVERS = [
    ("html-page", {"status": 200, "content_type": "text/html", "body": "<!doctype html><html><body>Sign in</body></html>"}, "it answered with an HTML page, not MLflow's API"),
    ("not-found", {"status": 404, "content_type": "text/plain", "body": "no such page"}, "HTTP 404: no MLflow API at this URL"),
    ("json-but-not-mlflow", {"status": 200, "content_type": "application/json", "body": "{}"}, "is not an MLflow server: /version answered '{}' instead of a version number"),
    ("server-error", {"status": 500, "content_type": "text/plain", "body": "boom"}, "answered /health with HTTP 500; is this an MLflow server?"),
    ("starting-up", {"status": 503, "content_type": "text/plain", "body": "wait"}, "answered /health with HTTP 503; is it starting up?"),
]  # fmt: skip


@pytest.mark.parametrize("command", ["run", "status", "fit"])
@pytest.mark.parametrize("answer, named", [c[1:] for c in FAKE_SERVERS], ids=[c[0] for c in FAKE_SERVERS])
def test_tracking_server_that_is_not_mlflow(answer, named, command, tmp_path, fake_http_server, launches):
    server = fake_http_server(**answer)
    uri = server.url.replace("http://", f"http://bob:{SECRET}@")
    refused_store(tmp_path, uri, launches, 3, "MLflow tracking server http://bob:***@127.0.0.1:", named, command=command)
    assert {request.split()[0] for request in server.requests} == {"GET"}  # asked, never wrote


def test_tracking_server_that_never_answers_is_given_up_on_in_seconds(tmp_path, fake_http_server, launches, monkeypatch):
    import orchestrator.tracking.client

    monkeypatch.setattr(orchestrator.tracking.client, "CHECK_ANSWER_S", 3.0)  # 20 s by default
    server = fake_http_server(silent=True)
    refused_store(tmp_path, server.url, launches, 3, f"MLflow tracking server {server.url} is unreachable: no answer within 3 s")
    assert server.requests == ["GET /health"]


def test_tracking_server_port_closed(tmp_path, launches, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)  # masked even where a library quotes it
    refused_store(tmp_path, f"http://bob:{SECRET}@127.0.0.1:{free_port()}", launches, 3, "http://bob:***@127.0.0.1:", "is unreachable")


def test_missing_sweep_names_the_sweep_and_the_store(tmp_path, launches, mlflow_db):
    db = tmp_path / "store.db"
    copy_store(mlflow_db, db)
    line = refused_store(tmp_path, f"sqlite:///{db}", launches, 2, "name: no sweep 'bad' in experiment 'hostile'", command="fit")
    assert "run it first" in line


# -- output paths --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory, ray_local):
    """A finished toy sweep in a SQLite store whose artifacts live on their own small file system."""
    folder = tmp_path_factory.mktemp("finished")
    artifacts = folder / "artifacts"
    with mounted_tmpfs(artifacts, "32m"):
        body = {
            "name": "done",
            "workload": "tests.toy_workloads:PowerLawToy",
            "axes": {"n": [10, 100, 1000], "d": [100, 1000]},
            "params": {"epochs": 3},
            "resources_per_trial": {"cpu": 1},
            "tracking": {"uri": f"sqlite:///{folder / 'store.db'}", "artifact_location": artifacts.as_uri()},
        }
        spec = folder / "spec.yaml"
        spec.write_text(yaml.safe_dump(body))
        ran = cli("run", spec, "--no-progress")
        assert ran.exit_code == 0, ran.stdout + ran.stderr
        yield spec, artifacts


def artifact_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_report_onto_an_existing_file(finished_sweep, tmp_path, launches):
    spec, artifacts = finished_sweep
    before = artifact_files(artifacts)
    (tmp_path / "report.html").write_text("mine")
    assert_refused(cli("report", spec, "--out", tmp_path / "report.html"), 2, f"--out {tmp_path}/report.html: a file is in the way")
    assert (tmp_path / "report.html").read_text() == "mine"
    assert artifact_files(artifacts) == before and not launches


def test_report_under_a_file(finished_sweep, tmp_path):
    spec, _ = finished_sweep
    (tmp_path / "afile").write_text("x")
    assert_refused(cli("report", spec, "--out", tmp_path / "afile" / "report"), 2, "--out", "cannot write there (Not a directory)")


def test_report_onto_a_read_only_folder(finished_sweep, tmp_path):
    spec, artifacts = finished_sweep
    before = artifact_files(artifacts)
    with mounted_tmpfs(tmp_path / "ro", "1m", read_only=True) as folder:
        assert_refused(cli("report", spec, "--out", folder), 2, f"--out {folder}: cannot write there (Read-only file system)")
    assert artifact_files(artifacts) == before


def test_report_onto_a_full_disk(finished_sweep, tmp_path):
    spec, artifacts = finished_sweep
    before = artifact_files(artifacts)
    with mounted_tmpfs(tmp_path / "full", "256k") as folder:
        fill_disk(folder)
        assert_refused(cli("report", spec, "--out", folder / "report", "--n-boot", "20"), 2, "--out", "cannot write the report: No space left on device")
    assert artifact_files(artifacts) == before


def test_report_in_an_unknown_format(finished_sweep, tmp_path):
    spec, _ = finished_sweep
    assert_refused(cli("report", spec, "--out", tmp_path / "r", "--format", "bmp"), 2, "--format: 'bmp' is not one of png, svg, pdf")
    assert not (tmp_path / "r").exists()


def test_fit_and_report_with_a_read_only_artifact_store_print_what_they_computed(finished_sweep, tmp_path):
    spec, artifacts = finished_sweep
    before = artifact_files(artifacts)
    remount(artifacts, read_only=True)
    try:
        fitted = cli("fit", spec, "--n-boot", "20")
        assert_refused(fitted, 3, "the fits above are not stored on the sweep's run", "read-only")
        assert "test_error vs n_params" in fitted.stdout and "not fitted:" in fitted.stdout, fitted.stdout  # the fits table came out
        reported = cli("report", spec, "--out", tmp_path / "report", "--n-boot", "20")
        assert_refused(reported, 3, "the report files above are not stored on the sweep's run", "read-only")
        assert (tmp_path / "report" / "report.html").stat().st_size > 0 and "wrote" in reported.stdout
    finally:
        remount(artifacts, read_only=False)
    assert artifact_files(artifacts) == before


def test_ui_on_a_taken_port(tmp_path, launches):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        spec = write_spec(tmp_path, GOOD)
        assert_refused(cli("ui", spec, "--port", port), 3, f"--port {port}: cannot listen on 127.0.0.1:{port} (Address already in use)")
    assert not (tmp_path / "store.db").exists() and not launches


# -- auth: MLflow's basic-auth server, started as docs/security.md says ----------------------------


@pytest.fixture(scope="module")
def team_sweep(basic_auth_server, ray_local, tmp_path_factory):
    """A finished sweep the admin ran into experiment 'team', a user 'alice' and a READ user 'reader'."""
    folder = tmp_path_factory.mktemp("team")
    body = {
        "name": "team",
        "workload": "tests.toy_workloads:PowerLawToy",
        "axes": {"n": [10, 100, 1000], "d": [100, 1000]},
        "params": {"epochs": 3},
        "resources_per_trial": {"cpu": 1},
        "tracking": {"uri": basic_auth_server.url, "experiment": "team"},
    }
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump(body))
    admin = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": basic_auth_server.admin_password}
    ran = cli("run", spec, "--no-progress", env=admin)
    assert ran.exit_code == 0, ran.stdout + ran.stderr
    basic_auth_server.create_user("alice")
    return spec, {"MLFLOW_TRACKING_USERNAME": "reader", "MLFLOW_TRACKING_PASSWORD": basic_auth_server.create_user("reader")}


def team_runs(server) -> list[tuple[str, str]]:
    """(run id, status) of every run in experiment 'team', read as the admin."""
    experiment = server.admin_request("GET", "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": "team"})
    found = server.admin_request(
        "POST", "/api/2.0/mlflow/runs/search", json={"experiment_ids": [experiment.json()["experiment"]["experiment_id"]], "max_results": 1000}
    )  # fmt: skip
    return sorted((run["info"]["run_id"], run["info"]["status"]) for run in found.json().get("runs", []))


def team_artifacts(server) -> list[str]:
    """Every file in the server's artifact store."""
    root = server.root / "home" / "artifacts"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


NO_LOGIN = {"MLFLOW_TRACKING_USERNAME": None, "MLFLOW_TRACKING_PASSWORD": None}


@pytest.mark.slow
@pytest.mark.parametrize("command", ["run", "status", "fit", "report"])
@pytest.mark.parametrize(
    "login, named",
    [
        (NO_LOGIN, "HTTP 401: the server wants a login; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
        ({"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": SECRET}, "HTTP 401: the server refused the login of user 'alice'"),
    ],
    ids=["no-login", "wrong-password"],
)
def test_a_login_the_server_refuses(login, named, command, team_sweep, basic_auth_server, tmp_path, launches):
    spec, _ = team_sweep
    before = team_runs(basic_auth_server), team_artifacts(basic_auth_server)
    args = {"run": ["--no-progress"], "report": ["--out", tmp_path / "report"]}.get(command, [])
    assert_refused(cli(command, spec, *args, env=login), 3, f"MLflow tracking server {basic_auth_server.url}", named)
    assert (team_runs(basic_auth_server), team_artifacts(basic_auth_server)) == before
    assert not launches


@pytest.mark.slow
def test_a_wrong_password_in_the_uri_is_not_printed(team_sweep, basic_auth_server, tmp_path, launches):
    uri = basic_auth_server.url.replace("http://", f"http://alice:{SECRET}@")
    refused_store(tmp_path, uri, launches, 3, "http://alice:***@127.0.0.1", "refused the login of user 'alice'", command="status")


@pytest.mark.slow
def test_a_read_only_user_cannot_run_into_someone_elses_experiment(team_sweep, basic_auth_server, launches):
    spec, reader = team_sweep
    before = team_runs(basic_auth_server)
    assert_refused(cli("run", spec, "--no-progress", env=reader), 3, "HTTP 403: user 'reader' lacks the permission", "EDIT")
    assert team_runs(basic_auth_server) == before and not launches


@pytest.mark.slow
def test_a_read_only_user_gets_status_and_the_fits_but_cannot_store_them(team_sweep, basic_auth_server, tmp_path):
    spec, reader = team_sweep
    before = team_runs(basic_auth_server), team_artifacts(basic_auth_server)
    status = cli("status", spec, env=reader)
    assert status.exit_code == 0 and "6 finished" in status.stdout, status.stdout + status.stderr
    fitted = cli("fit", spec, "--n-boot", "20", env=reader)
    assert_refused(fitted, 3, "the fits above are not stored on the sweep's run", "HTTP 403: user 'reader' lacks the permission")
    assert fitted.stdout.strip(), "the fits were computed and printed before the upload was refused"
    reported = cli("report", spec, "--out", tmp_path / "report", "--n-boot", "20", env=reader)
    assert_refused(reported, 3, "the report files above are not stored on the sweep's run", "HTTP 403")
    assert (tmp_path / "report" / "report.html").exists()
    assert (team_runs(basic_auth_server), team_artifacts(basic_auth_server)) == before
