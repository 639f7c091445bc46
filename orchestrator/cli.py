"""`scalesweep`: the command line, a thin layer over orchestrator.sweep.

Exit codes scripts can trust:
  0  everything asked for finished
  1  the sweep ran, but some trials failed or diverged
  2  bad input (spec, workload, arguments, output path), or another driver runs the sweep; nothing was launched
  3  the tracking store or the cluster could not be reached or refused the request
  4  an internal error (a bug in scalesweep); `--debug` shows the traceback
  130, 143  interrupted by Ctrl-C or SIGTERM; the sweep's runs are marked KILLED and `run` resumes it

Errors are raised as typed exceptions where they are found and turned into an exit code and one
line on stderr only here, in `OneErrorPath`; a traceback is printed only with `--debug`.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from orchestrator import sweep
from orchestrator.progress import counts_table, results_table
from orchestrator.fit.common import DEFAULT_MIN_RISE, DEFAULT_TRAIN_TOL, FitError
from orchestrator.driver import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated
from orchestrator.redact import redact_secrets
from orchestrator.spec import SpecError, SweepSpec, load_spec
from orchestrator.submit import BuildError, submit_sweep
from orchestrator.sweep import Sweep
from orchestrator.tracking import ArtifactUploadFailed, TrackingUnavailable
from orchestrator.tracking.lease import SweepLocked
from workloads.api import WorkloadError

if TYPE_CHECKING:
    from orchestrator.fit import SweepFits

EXIT_OK, EXIT_TRIALS_FAILED, EXIT_BAD_INPUT, EXIT_UNREACHABLE, EXIT_INTERNAL = 0, 1, 2, 3, 4
DEMO_SPEC = Path(__file__).resolve().parent.parent / "examples" / "mnist1d_demo.yaml"

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def print_error(message: str) -> None:
    """`error: message` on stderr: credentials masked, never read as rich markup (a value may hold brackets)."""
    err.print(Text.assemble(("error: ", "red"), redact_secrets(message)), highlight=False, soft_wrap=True)


def fail(message: str, code: int) -> typer.Exit:
    print_error(message)
    return typer.Exit(code)


def failure(error: Exception) -> tuple[int, str]:
    """The exit code and the line for an exception a command let through."""
    if isinstance(error, (SpecError, WorkloadError, SweepLocked, BuildError)):
        return EXIT_BAD_INPUT, str(error)
    if isinstance(error, TrackingUnavailable):
        return EXIT_UNREACHABLE, str(error)
    if isinstance(error, ConnectionError):  # what ray.init raises for a cluster it cannot join
        return EXIT_UNREACHABLE, f"cannot reach the Ray cluster: {error}"
    first_line = (str(error).strip().splitlines() or [""])[0]
    return EXIT_INTERNAL, f"internal error: {error.__class__.__name__}: {first_line} (run with --debug for the traceback)"


class OneErrorPath(TyperGroup):
    """Every command's failure becomes its exit code and one line on stderr, here and nowhere else."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # a command's own exit code, and the parser's usage errors (exit 2)
        except KeyboardInterrupt:
            print_error("interrupted: the sweep's parent run and its unfinished trials are marked KILLED; run again to resume")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Terminated:
            print_error("terminated (SIGTERM): the sweep's parent run and its unfinished trials are marked KILLED; run again to resume")
            raise typer.Exit(EXIT_TERMINATED) from None
        except Exception as error:
            code, message = failure(error)
            if ctx.params.get("debug"):
                traceback.print_exception(error, file=sys.stderr)
            print_error(message)
            raise typer.Exit(code) from None


app = typer.Typer(
    cls=OneErrorPath,
    help="Scaling-law sweeps: a grid of model size x data size trained on Ray, recorded in MLflow, fitted and reported.\n\n"
    "Exit codes: 0 done, 1 some trials failed, 2 bad input (nothing launched), 3 tracking store or cluster "
    "unreachable or refusing, 4 internal error, 130/143 interrupted (Ctrl-C/SIGTERM; run again to resume).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

SpecArg = typer.Argument(..., help="sweep spec (YAML): workload, axes, params, resources, tracking", show_default=False)


@app.callback()
def options(debug: bool = typer.Option(False, "--debug", help="print the traceback of an error, too")):
    """Options for every command (give them before the command: scalesweep --debug run SPEC)."""
    if not debug:
        # MLflow logs each database error with its traceback (and each engine retry); the error
        # path above reports what it means in one line.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def fmt_flops(flops: float) -> str:
    return f"{flops:.3g}"


@app.command()
def plan(spec_path: Path = SpecArg, offline: bool = typer.Option(False, help="do not look up finished trials in MLflow")):
    """Show the trial table and total compute, and how many trials are already finished. Launches nothing.

    With a WSD schedule: the trunks and the branches each starts from, and the compute as planned
    beside what training every point from scratch would cost."""
    spec = load_spec(spec_path)
    handle = Sweep(spec)
    plan_ = handle.plan(offline=offline, confirmed=True)
    wsd = spec.schedule is not None
    table = Table(title=f"{spec.name}: {len(plan_.trials)} trials of {spec.workload}")
    data_unit = f"D ({handle.workload.data_unit})"
    wsd_columns = ("part", "trunk @ D", "trains (FLOPs)") if wsd else ()
    for column in ("trial_key", *wsd_columns, *spec.axes, "N (params)", data_unit, "C (FLOPs)", "done"):
        table.add_column(column)
    for trial in plan_.trials:
        if wsd:
            where = "" if trial.is_trunk else f"{trial.depends_on} @ {trial.wsd.branch_start}"
            wsd_cells = (trial.wsd.part.kind, where, fmt_flops(trial.run_flops))
        else:
            wsd_cells = ()
        table.add_row(
            trial.key,
            *wsd_cells,
            *(str(trial.config[a]) for a in spec.axes if a in trial.config),
            str(trial.size.n_params),
            str(trial.size.n_samples),
            fmt_flops(trial.size.train_flops),
            "yes" if trial.key in plan_.finished else "",
        )
    out.print(table)
    if wsd:
        trunks = [t for t in plan_.trials if t.is_trunk]
        trunk_flops = sum(t.run_flops for t in trunks)
        out.print(
            f"WSD ({spec.schedule.cooldown_shape} cooldown over the last {spec.schedule.cooldown_fraction:g} of each D): "
            f"{len(trunks)} trunks, {len(plan_.trials) - len(trunks)} branches; planned compute {fmt_flops(plan_.total_flops)} "
            f"FLOPs (trunks {fmt_flops(trunk_flops)} + cooldowns {fmt_flops(plan_.total_flops - trunk_flops)}), from scratch "
            f"{fmt_flops(plan_.from_scratch_flops)} FLOPs: {plan_.from_scratch_flops / plan_.total_flops:.2f}x less"
        )
    out.print(
        f"total compute {fmt_flops(plan_.total_flops)} FLOPs; {len(plan_.finished & {t.key for t in plan_.trials})} finished, "
        f"{len(plan_.todo)} to run"
    )
    if spec.grid_size > spec.execution.max_trials:
        out.print(f"[yellow]the grid exceeds execution.max_trials={spec.execution.max_trials}: `run` needs --yes[/yellow]")


@app.command()
def run(
    spec_path: Path = SpecArg,
    address: Optional[str] = typer.Option(None, help="join an existing Ray cluster (e.g. 'auto' or 'HOST:6379') instead of starting a local one"),
    num_cpus: Optional[int] = typer.Option(None, help="CPUs for a new local Ray (default: all)"),
    yes: bool = typer.Option(False, "--yes", "-y", help="confirm a grid larger than execution.max_trials"),
    progress: bool = typer.Option(True, help="show a live progress bar"),
    extend: bool = typer.Option(False, "--extend", help="accept a spec that differs from the sweep's recorded one: add its trials, keep the old ones still in the grid"),
    force_takeover: bool = typer.Option(False, "--force-takeover", help="take the sweep over from another driver you know is gone"),
):
    """Run every trial of SPEC that has no FINISHED run in MLflow yet (so running it again resumes).

    One driver per sweep: while another driver runs it, this one exits 2 naming it."""
    spec = load_spec(spec_path)
    sweep_ = Sweep(spec)
    outcome = sweep_.run(address=address, num_cpus=num_cpus, confirmed=yes, progress=progress, extend=extend, force_takeover=force_takeover)
    print_outcome(spec, outcome)
    print_results(spec, sweep_.status())
    raise typer.Exit(EXIT_OK if outcome.ok else EXIT_TRIALS_FAILED)


@app.command()
def submit(
    spec_path: Path = SpecArg,
    address: str = typer.Option("http://127.0.0.1:8265", help="the cluster's Jobs API: its dashboard URL (`ray dashboard CONFIG` forwards it to this default)"),
    working_dir: Optional[Path] = typer.Option(None, help="folder uploaded with the job, holding the spec (default: the spec's folder)"),
    yes: bool = typer.Option(False, "--yes", "-y", help="confirm a grid larger than execution.max_trials"),
):
    """Run SPEC as a Ray job on a cluster whose nodes need not have scalesweep installed.

    Builds this checkout's wheel into the job's working dir, and the job's runtime_env pip-installs it
    on every node the sweep uses. Prints the job id and returns; the sweep runs on without this process.
    """
    spec = load_spec(spec_path)
    job = submit_sweep(spec, spec_path, address, working_dir, confirmed=yes)
    out.print(f"sweep {spec.name}: submitted as Ray job {job.submission_id} (scalesweep from {job.wheel})", highlight=False)
    out.print(f"  follow its log:  ray job logs --address {address} --follow {job.submission_id}", highlight=False)
    out.print(f"  trials so far:   scalesweep status {spec_path}", highlight=False)
    out.print(f"  stop it:         ray job stop --address {address} {job.submission_id}", highlight=False)


def print_outcome(spec: SweepSpec, outcome: sweep.SweepOutcome) -> None:
    if outcome.took_over_from:
        out.print(f"took the sweep over from a driver that is gone ({outcome.took_over_from})")
    counts = ", ".join(f"{n} {status}" for status, n in sorted(outcome.counts.items())) or "nothing to run"
    out.print(
        f"sweep {spec.name}: {outcome.n_trials} trials, {outcome.n_skipped} already finished, "
        f"{outcome.n_submitted} submitted ({counts}) in {outcome.wall_s:.1f} s; parent run {outcome.parent_run_id}"
    )


def report_metric(frame) -> str:
    return next((m for m in ("test_error", "test_loss") if m in frame), "test_error")


def print_results(spec: SweepSpec, state: sweep.SweepState, counts: bool = True) -> None:
    """Counts per status, then the compact grid (or the best and worst trials) of the final metric."""
    if counts:
        out.print(counts_table(state.counts, state.pending, f"{spec.name}: trials by status"))
    if state.grid_size:
        metric = report_metric(state.trials)
        title = f"{spec.name}: final {metric} (seed mean)"
        out.print(results_table(state.grid, state.trials, list(spec.axes), metric, title))


def ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@app.command()
def status(spec_path: Path = SpecArg, trials: bool = typer.Option(False, "--trials", help="list every trial")):
    """The state of a sweep, read from MLflow alone: works while it runs, after a crash, from another machine."""
    spec = load_spec(spec_path)
    state = Sweep(spec).status()
    if state.parent_run_id is None:
        out.print(f"sweep {spec.name}: not started ({state.grid_size} trials in the grid)")
        return
    counts = state.counts
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    out.print(
        f"sweep {spec.name} (parent run {state.parent_run_id}): {state.grid_size} trials: "
        f"{summary or 'none recorded'}, {state.pending} pending"
    )
    if state.driver:
        out.print(f"driver: {state.driver}")
    elif state.counts.get("running"):
        out.print("[yellow]no live driver holds this sweep: its running trials were left by one that is gone; `run` resumes them[/yellow]")
    if state.n_duplicates:
        out.print(f"[yellow]{state.n_duplicates} extra finished run(s) of trials that already have one: counted once; `run` marks them duplicate[/yellow]")
    if state.n_deleted:
        out.print(f"[yellow]{state.n_deleted} trial(s) have only deleted runs (MLflow's trash): `run` trains them again[/yellow]")
    if state.n_outside_grid:
        out.print(f"left out {state.n_outside_grid} run(s) of trials that are not in the current grid")
    now = time.time()
    if state.first_start_s is not None:
        timing = f"first trial started {ago(now - state.first_start_s)} ago, last activity {ago(now - state.last_activity_s)} ago"
        eta = state.eta_s(now)
        if counts["running"] and eta is not None:
            timing += f"; about {ago(eta)} left at this pace"
        out.print(timing)
    print_results(spec, state)
    if trials and not state.trials.empty:
        frame = state.trials
        table = Table()
        columns = ["trial_key", "status", *[a for a in spec.axes if a in frame], "n_params", "n_samples"]
        columns += [m for m in ("train_error", "test_error", "test_loss") if m in frame]
        for column in columns:
            # Keys and statuses are what a reader searches for: never cut them.
            table.add_column(column, no_wrap=column in ("trial_key", "status"), min_width=len(column))
        for _, row in frame[columns].iterrows():
            table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
        out.print(table)


N_PARAMS_CHOICES = ("non_embedding", "with_embeddings")
EnvelopeOpt = typer.Option(None, "--envelope", help="an axis (lr, batch_size...) whose best value per size the fits use; repeatable (default: the spec's fit.envelope)")
SplitByOpt = typer.Option(None, "--split-by", help="an axis (weight_decay...) fitted apart: a law and a double-descent curve per value; repeatable (default: the spec's fit.split_by)")
NParamsOpt = typer.Option(None, "--n-params", help="the parameter count N: non_embedding or with_embeddings (default: the spec's fit.n_params)")
MetricOpt = typer.Option(None, help="the metric to fit (test_error, test_loss, ...; default: the workload's)")


def fit_options(metric: Optional[str], envelope: Optional[list[str]], n_params: Optional[str], split_by: Optional[list[str]] = None) -> dict:
    """The analysis options `fit`, `report` and `demo` share; a bad one exits 2 before anything is read."""
    if n_params is not None and n_params not in N_PARAMS_CHOICES:
        raise fail(f"--n-params: {n_params!r} is not one of {', '.join(N_PARAMS_CHOICES)}", EXIT_BAD_INPUT)
    return {"metric": metric, "envelope": envelope or None, "n_params": n_params, "split_by": split_by or None}


@app.command()
def fit(
    spec_path: Path = SpecArg,
    n_boot: int = typer.Option(1000, help="bootstrap resamples for the CIs of the joint and IsoFLOP fits (per-axis laws use at most 200)"),
    metric: Optional[str] = MetricOpt,
    train_tol: float = typer.Option(DEFAULT_TRAIN_TOL, help="train error at or below which a model interpolates (double-descent threshold)"),
    min_rise: float = typer.Option(DEFAULT_MIN_RISE, help="smallest rise of a double-descent peak above both sides, relative to its height"),
    epoch_wise: bool = typer.Option(True, help="also look for epoch-wise double descent in each trial's history"),
    envelope: Optional[list[str]] = EnvelopeOpt,
    split_by: Optional[list[str]] = SplitByOpt,
    n_params: Optional[str] = NParamsOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="print every fit's full block instead of the tables"),
):
    """Every fit the results support: power laws per axis, joint L(N, D), IsoFLOP, extrapolation, double descent.

    Prints one table of fits and one of double-descent curves (--verbose: every block) and logs them as
    fits/fits.json to the sweep's parent run. A fit the data cannot carry says "not identified" and why.
    """
    spec = load_spec(spec_path)
    options = fit_options(metric, envelope, n_params, split_by)
    sweep_ = Sweep(spec)
    try:
        fits = sweep_.fit(n_boot=n_boot, train_tol=train_tol, min_rise=min_rise, epoch_wise=epoch_wise, log=False, **options)
    except FitError as e:
        raise fail(str(e), EXIT_TRIALS_FAILED) from None
    print_fits(fits, verbose)  # before storing them: a store that refuses the upload does not cost the user the fits
    try:
        sweep_.log_fits(fits)
    except ArtifactUploadFailed as e:
        raise fail(f"the fits above are not stored on the sweep's run: {e}", EXIT_UNREACHABLE) from None
    if not fits.n_fits:
        raise typer.Exit(EXIT_TRIALS_FAILED)


def print_fits(fits: SweepFits, verbose: bool = False) -> None:
    """The tables (one line per fit and per double-descent curve), or with verbose every result's block."""
    out.print(fits.summary(verbose=verbose), highlight=False, markup=False)


@app.command()
def report(
    spec_path: Path = SpecArg,
    out_dir: Optional[Path] = typer.Option(None, "--out", help="folder for the files (default: reports/<sweep name>)"),
    formats: list[str] = typer.Option(["png"], "--format", help="picture format, repeatable: png, svg, pdf"),
    n_boot: int = typer.Option(200, help="bootstrap resamples for the fits' CIs and bands"),
    metric: Optional[str] = MetricOpt,
    envelope: Optional[list[str]] = EnvelopeOpt,
    split_by: Optional[list[str]] = SplitByOpt,
    n_params: Optional[str] = NParamsOpt,
):
    """Fit the sweep once and draw it: heatmaps, double descent, scaling, IsoFLOP pictures and an interactive HTML page.

    The files are logged under report/ on the sweep's parent run, the fits they draw as fits/fits.json.
    """
    spec = load_spec(spec_path)
    bad = [f for f in formats if f not in ("png", "svg", "pdf")]
    if bad:
        raise fail(f"--format: {bad[0]!r} is not one of png, svg, pdf", EXIT_BAD_INPUT)
    options = fit_options(metric, envelope, n_params, split_by)
    target = out_dir or Path("reports") / spec.name
    check_writable_folder(target, "--out")
    sweep_ = Sweep(spec)
    try:
        fits = sweep_.fit(n_boot=n_boot, log=False, **options)
        written = sweep_.report(target, n_boot=n_boot, formats=tuple(formats), fits=fits, upload=False)
    except FitError as e:
        raise fail(str(e), EXIT_TRIALS_FAILED) from None
    except OSError as error:  # the tracking store's own errors arrive typed; this is the report's files
        raise fail(f"--out {target}: cannot write the report: {error.strerror or error}", EXIT_BAD_INPUT) from None
    for note in sweep_.left_out():
        out.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    for path in written:
        out.print(f"wrote {path}")
    out.print(f"open {target.resolve() / 'report.html'} in a browser (works offline)")
    try:  # the fits and the files together, once both are complete
        sweep_.log_fits(fits)
        sweep_.upload_report(target)
    except ArtifactUploadFailed as e:
        raise fail(f"the report files above are not stored on the sweep's run: {e}", EXIT_UNREACHABLE) from None
    out.print("also logged to the sweep's MLflow run under report/")


def check_writable_folder(folder: Path, option: str) -> None:
    """Refuse an output folder that cannot take files (a file in the way, read-only, not ours)
    before anything is computed; a disk that fills up while writing is caught where it happens."""
    if folder.exists() and not folder.is_dir():
        raise fail(f"{option} {folder}: a file is in the way; give a folder", EXIT_BAD_INPUT)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # os.access says yes to root on a read-only mount
            pass
    except OSError as error:
        raise fail(f"{option} {folder}: cannot write there ({error.strerror})", EXIT_BAD_INPUT) from None


def check_port_free(port: int) -> None:
    """Refuse a port another server holds: the UI would fail to start while the URL we print led to that server."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the UI's server does: TIME_WAIT is no conflict
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            code = EXIT_UNREACHABLE if error.errno == errno.EADDRINUSE else EXIT_BAD_INPUT
            raise fail(f"--port {port}: cannot listen on 127.0.0.1:{port} ({error.strerror}); pick another port", code) from None


def tracking_ui_command(uri: str, port: int) -> list[str]:
    # One worker: the UI serves one person, and each worker process imports all of MLflow.
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]


@app.command()
def ui(spec_path: Path = SpecArg, port: int = typer.Option(5000, min=1, max=65535, help="port on 127.0.0.1")):
    """Start the MLflow UI on 127.0.0.1 for the spec's tracking store and print the sweep's URL.

    With an http(s) tracking URI the server already is the UI: print the URL and start nothing.
    """
    spec = load_spec(spec_path)
    uri = spec.tracking.uri
    remote = uri.startswith(("http://", "https://"))
    if not remote:
        check_port_free(port)
    sweep_ = Sweep(spec)
    store, parent = sweep_.store, sweep_.parent_run_id
    base = uri.rstrip("/") if remote else f"http://127.0.0.1:{port}"
    url = store.run_url(base, parent) if parent else f"{base}/#/experiments/{store.experiment_id}"
    out.print(f"sweep {spec.name}: {url}" + ("" if parent else "  (not run yet: the experiment)"))
    if remote:
        return
    out.print("MLflow UI listening on 127.0.0.1 only; press Ctrl-C to stop")
    try:
        # Without MLflow's GenAI job runner (and its Huey consumer): two processes nothing here uses.
        code = subprocess.call(tracking_ui_command(store.tracking_uri, port), env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    except KeyboardInterrupt:  # how a user stops the UI
        raise typer.Exit(EXIT_OK) from None
    if code not in (0, -2, 130):  # -2/130: it stopped on the user's Ctrl-C
        raise fail(f"the MLflow UI on 127.0.0.1:{port} exited with code {code}", EXIT_UNREACHABLE)


@app.command()
def demo(
    spec_path: Path = typer.Option(DEMO_SPEC, "--spec", help="the demo spec"),
    num_cpus: Optional[int] = typer.Option(None, help="CPUs for local Ray (default: all)"),
):
    """Run the MNIST-1D demo end to end (42 small MLPs, about 2 minutes): sweep on local Ray, fits, report.

    Too small to show double descent; examples/mnist1d_double_descent.yaml does (README)."""
    spec = load_spec(spec_path)
    sweep_ = Sweep(spec)
    outcome = sweep_.run(num_cpus=num_cpus)
    print_outcome(spec, outcome)  # has the counts per status: the demo leaves out their table, to fit one screen
    print_results(spec, sweep_.status(), counts=False)
    try:
        fits = sweep_.fit(n_boot=200)  # computed once: the tables and the pictures show the same fits
    except FitError as e:
        raise fail(str(e), EXIT_TRIALS_FAILED) from None
    print_fits(fits)
    written = sweep_.report(Path("reports") / spec.name, fits=fits)
    out.print(f"report: {written[0].parent.resolve()}/report.html (also logged to the sweep's MLflow run)")
    out.print(f"MLflow UI: scalesweep ui {spec_path}")
    raise typer.Exit(EXIT_OK if outcome.ok else EXIT_TRIALS_FAILED)


def main() -> None:
    try:
        app()
    except SystemExit as leaving:
        if leaving.code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
            # Ray shuts the local cluster down at exit, which takes a second: a Ctrl-C meanwhile
            # would print a traceback from inside it.
            from orchestrator.driver import exit_at_once_on_signals

            exit_at_once_on_signals(leaving.code)
        raise


if __name__ == "__main__":
    main()
