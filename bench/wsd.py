"""The same tiny_lm N x D grid trained twice, side by side: every point from scratch with a
full-length decay, then as warmup-stable-decay trunks with a cooldown branch per data size.

(a) from scratch: tiny_lm's own schedule, linear warmup and cosine decay over each trial's length.
(b) WSD: the same spec with `schedule: {kind: wsd, ...}`: one stable trunk per width, each data size
    a cooldown from the trunk's checkpoint at D x (1 - cooldown_fraction).

Both run in this process, one after the other, on one local Ray (its start counted by neither),
each recording to a fresh SQLite store. Prints the FLOPs each spent (load-independent: the plan of
what finished), wall time of its `run_sweep`, CPU time of this process and every process under it
meanwhile (Ray's workers included, sampled every 0.2 s), the final held-out loss of every (N, D) point, and the joint law L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al. approach 3)
fitted to each side with bootstrap CIs, with its compute-optimal exponent a (N_opt ~ C^a).

    PYTHONPATH=. python bench/wsd.py --num-cpus 2                         # 3 widths x 4 data sizes
    PYTHONPATH=. python bench/wsd.py --num-cpus 2 --cooldown-fraction 0.1
    PYTHONPATH=. python bench/wsd.py --smoke --num-cpus 2                 # tiny, checks it runs
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402

from orchestrator.fit import FitError, fit_joint_law  # noqa: E402
from orchestrator.grid import expand_grid  # noqa: E402
from orchestrator.spec import load_spec  # noqa: E402
from orchestrator.scheduler import connect  # noqa: E402
from orchestrator.sweep import run_sweep, sweep_status  # noqa: E402

GRIDS = {
    # widths, base steps (the smallest D, in optimizer steps), fixed params
    "cpu": ([16, 32, 48], 150, {"n_layers": 2, "head_dim": 8, "context_len": 64, "batch_size": 16, "eval_tokens": 8192}),
    "smoke": ([8, 12, 16], 10, {"n_layers": 1, "head_dim": 4, "context_len": 16, "batch_size": 4, "eval_tokens": 512}),
}
DATA_MULTIPLES = (1, 2, 4, 8)  # D in steps of 2
COMMON = {"n_evals": 2, "corpus_max_bytes": 4_000_000, "seed": 0}


@dataclass
class Side:
    """One of the two sweeps: what it spent and what it found."""

    name: str
    flops: float  # training compute of its finished trials (FLOPs)
    wall_s: float
    cpu_s: float  # driver and every process under it (seconds)
    n_trials: int
    losses: dict[tuple[int, int], float]  # final test loss (bits per byte) by (N, D)
    fit: object | None = None
    fit_error: str = ""


def bodies(args) -> tuple[dict, dict]:
    widths, base_steps, params = GRIDS["smoke" if args.smoke else "cpu"]
    step_tokens = params["batch_size"] * params["context_len"]
    sizes = [m * base_steps * step_tokens for m in DATA_MULTIPLES]
    scratch = {
        "name": "wsd-bench-scratch",
        "workload": "tiny_lm",
        "axes": {"d_model": widths, "n_tokens": sizes},
        "params": {**COMMON, **params},
        "resources_per_trial": {"cpu": 1},
        "execution": {"max_trials": 1000},
    }
    # The WSD warmup: as many tokens as the from-scratch run of the middle data size warms up for.
    warmup = round(0.05 * sizes[2])
    schedule = {"kind": "wsd", "warmup": warmup, "cooldown_fraction": args.cooldown_fraction, "cooldown_shape": args.cooldown_shape}
    wsd = {**scratch, "name": "wsd-bench-wsd", "schedule": schedule}
    return scratch, wsd


class CpuMeter:
    """CPU seconds of this process and every process under it (Ray's raylet and workers), sampled
    every `every_s` on a thread: a worker is killed at the end of its sweep, so its time is read
    while it lives (the last fraction of a second of each process may be missed)."""

    def __init__(self, every_s: float = 0.2):
        self.every_s = every_s
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def sample(self) -> None:
        me = psutil.Process()
        for process in [me, *me.children(recursive=True)]:
            try:
                times = process.cpu_times()
                self.seen[process.pid] = times.user + times.system
            except psutil.Error:
                pass

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def total(self) -> float:
        self.sample()
        return sum(self.seen.values())

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def measure(name: str, body: dict, args, root: Path, meter: CpuMeter) -> Side:
    body = {**body, "tracking": {"uri": f"sqlite:///{root / name / 'mlflow.db'}"}}
    body["execution"] = {**body["execution"], "checkpoint_dir": str(root / name / "checkpoints")}
    (root / name).mkdir(parents=True)
    path = root / name / "spec.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    spec = load_spec(path)
    cpu_before, started = meter.total(), time.perf_counter()
    outcome = run_sweep(spec, num_cpus=args.num_cpus, progress=False)
    wall_s, cpu_s = time.perf_counter() - started, meter.total() - cpu_before
    if not outcome.ok:
        raise SystemExit(f"{name}: not every trial finished: {dict(outcome.counts)}")
    planned = expand_grid(spec)
    flops = sum(t.run_flops for t in planned)  # every trial finished, trunks included
    state = sweep_status(spec)
    points = state.trials[state.trials["status"] == "finished"]
    losses = {(int(r.n_params), int(r.n_samples)): float(r.test_loss) for r in points.itertuples()}
    side = Side(name, flops, wall_s, cpu_s, len(planned), losses)
    N, D = zip(*losses) if losses else ((), ())
    try:
        side.fit = fit_joint_law(list(N), list(D), list(losses.values()), n_boot=args.n_boot, y_name="test_loss", label=name)
    except FitError as err:
        side.fit_error = str(err)
    return side


def interval(fit, name: str) -> str:
    if name == "a":
        value, (lo, hi) = fit.allocation.params["a"], fit.allocation.ci["a"]
    else:
        value, (lo, hi) = fit.params[name], fit.ci[name]
    return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def overlap(a, b, name: str) -> bool:
    ci = (lambda f: f.allocation.ci["a"]) if name == "a" else (lambda f: f.ci[name])
    (lo1, hi1), (lo2, hi2) = ci(a), ci(b)
    return max(lo1, lo2) <= min(hi1, hi2)


def report(scratch: Side, wsd: Side, args) -> None:
    print(f"\n{'':<14}{'FLOPs spent':>14}{'wall s':>10}{'CPU s':>10}{'trials':>8}")
    for side in (scratch, wsd):
        print(f"{side.name:<14}{side.flops:>14.4g}{side.wall_s:>10.1f}{side.cpu_s:>10.1f}{side.n_trials:>8}")
    print(
        f"{'scratch / WSD':<14}{scratch.flops / wsd.flops:>13.3f}x{scratch.wall_s / wsd.wall_s:>9.2f}x"
        f"{scratch.cpu_s / wsd.cpu_s:>9.2f}x   (target: >= 1.6x less compute and wall time)"
    )

    print("\nfinal test loss (bits per byte), from scratch / WSD, per point:")
    n_values = sorted({n for n, _ in scratch.losses})
    print("D \\ N".rjust(10) + "".join(f"{n:>22}" for n in n_values))
    for d in sorted({d for _, d in scratch.losses}):
        cells = []
        for n in n_values:
            a, b = scratch.losses.get((n, d)), wsd.losses.get((n, d))
            cells.append(f"{a:.4f} / {b:.4f}" if a is not None and b is not None else "missing")
        print(f"{d:>10}" + "".join(f"{c:>22}" for c in cells))
    common = [k for k in scratch.losses if k in wsd.losses]
    if common:
        diffs = [wsd.losses[k] - scratch.losses[k] for k in common]
        print(f"WSD minus scratch: mean {sum(diffs) / len(diffs):+.4f}, min {min(diffs):+.4f}, max {max(diffs):+.4f} bits per byte")

    print(f"\njoint law L = E + A/N^alpha + B/D^beta, 95% CI from {args.n_boot} resamples; a: N_opt ~ C^a")
    print(f"{'':<14}{'alpha':>26}{'beta':>26}{'a':>26}{'rmse(log)':>11}")
    for side in (scratch, wsd):
        if side.fit is None:
            print(f"{side.name:<14}not fitted: {side.fit_error}")
        elif not side.fit.identified:  # the data cannot carry the law: no numbers, the reason
            print(f"{side.name:<14}{side.fit.identification.status}")
        else:
            row = "".join(f"{interval(side.fit, k):>26}" for k in ("alpha", "beta", "a"))
            print(f"{side.name:<14}{row}{side.fit.rmse_log:>11.4f}")
    if all(side.fit is not None and side.fit.identified for side in (scratch, wsd)):
        agree = {k: overlap(scratch.fit, wsd.fit, k) for k in ("alpha", "beta", "a")}
        print("CIs overlap: " + ", ".join(f"{k} {'yes' if ok else 'NO'}" for k, ok in agree.items()))
        for side in (scratch, wsd):
            if side.fit.at_bounds:
                print(f"warning: {side.name}: {', '.join(side.fit.at_bounds)} at the optimiser's bound")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of each sweep's local Ray")
    parser.add_argument("--cooldown-fraction", type=float, default=0.2)
    parser.add_argument("--cooldown-shape", choices=("linear", "1-sqrt"), default="1-sqrt")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true", help="tiny models and data, 20 resamples: checks it runs")
    parser.add_argument("--keep", type=Path, default=None, help="folder for the stores and logs (default: a new temporary one)")
    args = parser.parse_args()
    if args.smoke:
        args.n_boot = min(args.n_boot, 20)
    root = args.keep or Path(tempfile.mkdtemp(prefix="scalesweep-wsd-bench-"))
    scratch_body, wsd_body = bodies(args)
    load = os.getloadavg()[0]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f} at start; stores in {root}")
    axes = scratch_body["axes"]
    print(f"tiny_lm d_model {axes['d_model']} x n_tokens {axes['n_tokens']}; WSD: {wsd_body['schedule']}")
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    connect(num_cpus=args.num_cpus)  # one local Ray for both sides; its start is counted by neither
    meter = CpuMeter()
    try:
        scratch = measure("scratch", scratch_body, args, root, meter)
        wsd = measure("wsd", wsd_body, args, root, meter)
    finally:
        meter.close()
    report(scratch, wsd, args)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
