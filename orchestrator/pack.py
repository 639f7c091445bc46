"""Packs: trials that train together in one process, as one vmapped model.

A pack holds trials of one workload and one model shape (`Workload.pack_key`): they differ only in
what a vmapped train loop can keep per member (seed, data size, label noise, learning rate...).
The driver groups trials into packs (`make_packs`); the worker that runs a pack cuts it to fit its
device's memory (`device_memory_budget`, `split_to_budget`) and, when the device still runs out of
memory, splits the pack in halves and tries again, down to single trials (`run_pack`). A trial is
never lost: every trial handed to `run_pack` comes back with a result.
"""

from __future__ import annotations

import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal, Sequence

from orchestrator.grid import Trial
from orchestrator.spec import SpecError

# A CPU has no memory query that means "free for this worker"; this is a conservative share of a
# small machine for one worker's pack (parameters, optimizer state and activations of all members).
CPU_PACK_BUDGET_BYTES = 1 << 30
# A pack is split when it costs more than this many even shares of the sweep per worker; the slack
# keeps packs that are about one share whole (splitting them gains no balance, only launches).
SPLIT_SLACK = 1.25
# Of the GPU memory a worker may use, keep this fraction for the allocator's fragmentation and the
# CUDA context's own growth.
GPU_BUDGET_FRACTION = 0.8

Mode = Literal["auto", "pack", "single"]


class PackingUnsupported(SpecError):
    """execution.mode 'pack' was asked for a workload that has no train_pack."""


@dataclass
class TrialResult:
    """What a trial left behind: status (finished, failed, diverged), per-epoch metrics, timing.

    duration_s is the wall time of the pack the trial trained in (seconds); pack_size its members.
    """

    trial_key: str
    status: str
    history: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None
    duration_s: float = 0.0
    attempts: int = 1
    worker: str = ""
    pack_size: int = 1


# -- the driver: grouping ------------------------------------------------------------------------


def uses_packs(workload, mode: Mode, gpu: bool = False) -> bool:
    """Whether trials of this workload train in packs under execution.mode `mode` on workers with
    (`gpu`) or without a GPU.

    'auto' packs only on GPU workers: a GPU runs one small model far below its capacity, launch
    after launch, so a pack costs little more than one member; a CPU is already busy with one
    model, and a vmapped step costs about its members' steps one after another (measured: the
    MNIST-1D demo took 64 s packed, 42 s one at a time on 2 cores). 'pack' forces packs anywhere.
    """
    if mode == "single":
        return False
    if mode == "pack" and not workload.can_pack:
        raise PackingUnsupported(
            f"execution.mode: 'pack' needs a workload with train_pack; {type(workload).__name__} trains one trial "
            "at a time (use mode 'auto' or 'single')"
        )
    return workload.can_pack and (mode == "pack" or gpu)


def pack_cost(pack: Sequence[Trial]) -> float:
    """Training compute of a pack (FLOPs; a WSD branch's is its cooldown); orders and balances packs."""
    return sum(trial.run_flops for trial in pack)


def make_packs(
    trials: Sequence[Trial], workload, mode: Mode = "auto", n_slots: int = 1, gpu: bool = False
) -> list[list[Trial]]:
    """Trials grouped into packs, costliest first.

    Trials with equal `pack_key` share a pack, ordered by data size so that when a pack is split
    its halves hold similar data sizes (a member with fewer samples idles, masked, while the
    pack's largest member finishes its epoch). A pack costing more than an even share of the
    sweep over `n_slots` workers (times SPLIT_SLACK) is split in halves, so that one pack does not
    hold the sweep back while other workers idle; so is any pack while there are fewer packs than
    workers. Costliest first: the long packs start early (longest-processing-time order).
    """
    if not uses_packs(workload, mode, gpu):
        return [[trial] for trial in trials]
    groups: dict = defaultdict(list)
    singles = []
    for trial in trials:
        # A WSD trunk or branch trains alone: train_pack knows no schedule override.
        key = None if trial.wsd is not None else workload.pack_key(workload.validate_config(trial.config))
        if key is None:
            singles.append([trial])
        else:
            groups[key].append(trial)
    packs = [sorted(group, key=lambda t: (t.size.n_samples, t.key)) for group in groups.values()]
    share = sum(pack_cost(p) for p in packs + singles) / max(n_slots, 1)
    balanced = []
    while packs:
        pack = packs.pop()
        if len(pack) > 1 and (pack_cost(pack) > SPLIT_SLACK * share or len(packs) + len(balanced) + 1 < n_slots):
            half = len(pack) // 2
            packs += [pack[:half], pack[half:]]
        else:
            balanced.append(pack)
    return sorted(balanced + singles, key=pack_cost, reverse=True)


# -- the worker: memory and running ----------------------------------------------------------------


def device_memory_budget(gpu_share: float = 0.0) -> int:
    """Bytes a worker's pack may use: on CUDA what is free, at most its share of the GPU; on CPU a fixed budget."""
    import torch

    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        share = total * gpu_share if 0 < gpu_share < 1 else total
        return int(min(free, share) * GPU_BUDGET_FRACTION)
    return CPU_PACK_BUDGET_BYTES


def split_to_budget(member_bytes: Sequence[int], budget_bytes: int) -> list[range]:
    """Consecutive index ranges whose summed bytes fit the budget (a member alone always gets one)."""
    chunks, start, used = [], 0, 0
    for i, size in enumerate(member_bytes):
        if i > start and used + size > budget_bytes:
            chunks.append(range(start, i))
            start, used = i, 0
        used += size
    if member_bytes:
        chunks.append(range(start, len(member_bytes)))
    return chunks


def is_out_of_memory(err: BaseException) -> bool:
    """A CUDA OOM, or the CPU allocator failing to allocate."""
    import torch

    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "can't allocate memory" in str(err)
    )


def release_cached_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_trial(workload, trial: Trial) -> TrialResult:
    """Train one trial alone; its own exceptions become a failed (or diverged) result."""
    from workloads.api import Reporter, TrialDiverged

    reporter = Reporter(checkpoint=trial.checkpoint)
    start = time.perf_counter()
    try:
        config = workload.validate_config(trial.config)
        if trial.wsd is not None:
            workload.train_wsd(config, reporter, trial.wsd.part)
        else:
            workload.train(config, reporter)
        status, error = "finished", None
    except TrialDiverged as err:
        status, error = "diverged", str(err)
    except Exception:
        status, error = "failed", traceback.format_exc(limit=20)
    return TrialResult(trial.key, status, reporter.history, error, time.perf_counter() - start)


def train_together(workload, trials: Sequence[Trial]) -> list[TrialResult]:
    """One call of train_pack; raises what it raises (the caller decides: split, or run alone)."""
    from workloads.api import Reporter

    reporters = [Reporter(checkpoint=trial.checkpoint) for trial in trials]
    start = time.perf_counter()
    workload.train_pack([workload.validate_config(t.config) for t in trials], reporters)
    elapsed = time.perf_counter() - start
    return [
        TrialResult(
            trial.key,
            "diverged" if reporter.diverged else "finished",
            reporter.history,
            reporter.diverged,
            elapsed,
            pack_size=len(trials),
        )
        for trial, reporter in zip(trials, reporters)
    ]


def run_pack(workload, trials: Sequence[Trial], budget_bytes: int) -> list[TrialResult]:
    """Every trial's result, in order: packed where the workload can, split to fit memory.

    A pack larger than the budget is cut first; one that still runs out of memory is halved and
    retried; a single trial runs alone through `train`. Any other exception from train_pack is not
    blamed on every member: each then runs alone, so only the trial that raises is failed.
    """
    trials = list(trials)
    if len(trials) == 1 or not workload.can_pack:
        return [run_trial(workload, trial) for trial in trials]
    sizes = [workload.pack_member_bytes(workload.validate_config(t.config)) for t in trials]
    chunks = split_to_budget(sizes, budget_bytes)
    if len(chunks) > 1:
        return [result for chunk in chunks for result in run_pack(workload, trials[chunk.start : chunk.stop], budget_bytes)]
    try:
        return train_together(workload, trials)
    except Exception as err:
        if not is_out_of_memory(err):
            return [run_trial(workload, trial) for trial in trials]
        release_cached_memory()
    half = len(trials) // 2
    # The estimate was too optimistic for this device: no half may grow back past the first half's size.
    smaller = min(budget_bytes, sum(sizes[:half]))
    return run_pack(workload, trials[:half], smaller) + run_pack(workload, trials[half:], smaller)
