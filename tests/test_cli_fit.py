"""`scalesweep fit`, `report` and `demo` on real sweeps (local Ray, an MLflow server): what they print,
what they log, and the options that choose the analysis."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator import load_spec
from orchestrator.cli import EXIT_BAD_INPUT, app
from orchestrator.sweep import Sweep
from tests.conftest import REPO

TOY = "tests.toy_fit_workloads:TunedLawToy"
PRINTED_ALLOCATION = re.compile(r"approach [23] \([^)]*\)\s+\d|^\s+a\s+\d", re.M)


def logged_fits(spec_path: Path, tmp_path: Path) -> dict:
    sweep = Sweep(load_spec(spec_path))
    store, parent = sweep.store, sweep.parent_run_id
    return json.loads(Path(store.client.download_artifacts(parent, "fits/fits.json", str(tmp_path))).read_text())


def test_a_sweep_whose_loss_rises_with_n_gets_no_allocation_printed_or_logged(ray_local, write_spec, tmp_path):
    spec_path = write_spec(
        {
            "name": "rising",
            "workload": TOY,
            "axes": {"n": [100, 1000, 10000, 100000], "d": [100, 1000, 10000, 100000]},
            "params": {"shape": "rising"},
            "resources_per_trial": {"cpu": 1},
        }
    )
    runner = CliRunner()
    assert runner.invoke(app, ["run", str(spec_path), "--no-progress"]).exit_code == 0
    result = runner.invoke(app, ["fit", str(spec_path), "--n-boot", "20"])
    assert result.exit_code == 0, result.output
    assert "fits of test_loss; N = n_params (non-embedding parameters)" in result.output
    assert "joint L(N, D), approach 3" in result.output and "not identified: " in result.output
    assert not PRINTED_ALLOCATION.search(result.output), result.output
    verbose = runner.invoke(app, ["fit", str(spec_path), "--n-boot", "20", "--verbose"])
    assert "no compute-optimal allocation: it would rest on this fit" in verbose.output
    assert not PRINTED_ALLOCATION.search(verbose.output)
    logged = logged_fits(spec_path, tmp_path)
    assert logged["schema"] == "scalesweep.fits/2" and logged["joint"]["identified"] is False
    assert logged["joint"]["allocation"] is None and all(a["params"] is None for a in logged["allocations"])


def test_envelope_and_parameter_count_options(ray_local, write_spec, tmp_path):
    body = {
        "name": "tuned",
        "workload": TOY,
        "axes": {"n": [100, 1000, 10000, 100000], "d": [100, 1000, 10000], "lr": [0.001, 0.01, 0.1]},
        "resources_per_trial": {"cpu": 1},
    }
    spec_path = write_spec(body)
    runner = CliRunner()
    assert runner.invoke(app, ["run", str(spec_path), "--no-progress"]).exit_code == 0

    pooled = runner.invoke(app, ["fit", str(spec_path), "--n-boot", "20"])
    assert pooled.exit_code == 0 and "`--envelope lr` fits the best per size" in pooled.output

    tuned = runner.invoke(app, ["fit", str(spec_path), "--n-boot", "20", "--envelope", "lr", "--n-params", "with_embeddings"])
    assert tuned.exit_code == 0, tuned.output
    assert "N = n_params_with_embeddings (parameters including embeddings); best lr per size" in tuned.output
    # lr* = 0.1 at n = 100, 0.01 at n = 10000: chosen per size; 0.1 and 0.001 are the grid's edges.
    rows = {line.split()[0]: line for line in tuned.output.splitlines() if re.match(r"\s+\d+\s+lr=", line)}
    assert set(rows) == {"1100", "2000", "11000", "101000"}  # N with the embedding
    assert rows["1100"].split()[1:] == ["lr=0.1*"] * 3 and rows["11000"].split()[1:] == ["lr=0.01"] * 3
    print(tuned.output)
    logged = logged_fits(spec_path, tmp_path)
    assert logged["n_params"] == {"convention": "with_embeddings", "column": "n_params_with_embeddings", "counts": "parameters including embeddings"}
    assert logged["envelope"]["axes"] == ["lr"] and len(logged["envelope"]["choices"]) == 12

    apart = runner.invoke(app, ["fit", str(spec_path), "--n-boot", "20", "--split-by", "lr"])
    assert apart.exit_code == 0, apart.output
    assert "apart per lr" in apart.output and "--envelope lr" not in apart.output  # nothing pooled
    assert "n_samples=100,lr=0.001" in apart.output  # a law per learning rate
    assert logged_fits(spec_path, tmp_path)["split_by"] == ["lr"]

    # Options this sweep cannot take: exit 2, naming the option, before anything is read.
    for args, named in (
        (["--envelope", "warmup"], "envelope: 'warmup' is not an axis"),
        (["--n-params", "all"], "--n-params: 'all' is not one of"),
        (["--split-by", "warmup"], "split-by: 'warmup' is not an axis"),
        (["--split-by", "lr", "--envelope", "lr"], "split-by: 'lr' is also enveloped"),
        (["--split-by", "n"], "split-by: 'n' is a size or the seed"),
    ):
        bad = runner.invoke(app, ["fit", str(spec_path), *args])
        assert bad.exit_code == EXIT_BAD_INPUT and named in bad.output, bad.output
    in_spec = write_spec({**body, "fit": {"envelope": ["warmup"]}}, name="bad-fit.yaml")
    bad = runner.invoke(app, ["fit", str(in_spec)])
    assert bad.exit_code == EXIT_BAD_INPUT and "fit.envelope: 'warmup' is not an axis" in bad.output
    both = runner.invoke(app, ["fit", str(write_spec({**body, "fit": {"envelope": ["lr"], "split_by": ["lr"]}}, name="both.yaml"))])
    assert both.exit_code == EXIT_BAD_INPUT and "fit.split_by: 'lr' is also in fit.envelope" in both.output, both.output
    spec_envelope = write_spec({**body, "fit": {"envelope": ["lr"]}, "tracking": yaml.safe_load(spec_path.read_text())["tracking"]}, name="fit-section.yaml")
    from_spec = runner.invoke(app, ["fit", str(spec_envelope), "--n-boot", "20"])
    assert from_spec.exit_code == 0 and "best lr per size" in from_spec.output


def test_a_workload_that_counts_n_one_way_refuses_with_embeddings(write_spec, toy_spec):
    bad = CliRunner().invoke(app, ["fit", str(write_spec(toy_spec)), "--n-params", "with_embeddings"])
    assert bad.exit_code == EXIT_BAD_INPUT and "n_params: with_embeddings needs" in bad.output


@pytest.mark.slow
def test_the_demo_fits_one_screen_after_its_progress_bar(ray_local, write_spec, tmp_path, monkeypatch):
    """The demo's own spec (its grid, so its number of curves), trained for 2 epochs instead of 60."""
    demo = yaml.safe_load((REPO / "examples" / "mnist1d_demo.yaml").read_text())
    demo["params"]["epochs"] = 4
    demo["tracking"] = {"uri": f"sqlite:///{tmp_path / 'demo.db'}"}  # the demo's own kind of store
    spec_path = write_spec(demo)
    monkeypatch.chdir(tmp_path)  # the demo writes reports/<name> where it runs
    result = CliRunner().invoke(app, ["demo", "--spec", str(spec_path)])
    assert result.exit_code in (0, 1), result.output
    lines = result.stdout.splitlines()
    print("\n".join(lines))
    assert len(lines) <= 60, "\n".join(lines)
    assert any(line.startswith("double-descent curves of test_error") for line in lines)
    assert lines[-2].startswith("report: ") and (tmp_path / "reports" / demo["name"] / "report.html").exists()
