"""What a person watching a sweep sees: a live progress bar (done, running, failed, ETA) and tables
of its state (per-status counts, a model size x data size grid, the best and worst trials)."""

from __future__ import annotations

from collections import Counter

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class SweepProgress:
    """Counts trials as they start and end; draws a rich bar on stderr when enabled."""

    def __init__(self, total: int, name: str, enabled: bool = True, console: Console | None = None):
        self.total = total
        self.counts: Counter = Counter()
        self.running = 0
        self._progress = (
            Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[state]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console or Console(stderr=True),
                transient=False,
            )
            if enabled
            else None
        )
        self._name = name
        self._task = None

    def __enter__(self) -> SweepProgress:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task(self._name, total=self.total, state=self.state)
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    @property
    def state(self) -> str:
        failed = self.counts["failed"] + self.counts["diverged"]
        return f"done [green]{self.counts['finished']}[/green]  running [cyan]{self.running}[/cyan]  failed [red]{failed}[/red]"

    def started(self, n: int) -> None:
        self.running += n
        self._refresh(0)

    def finished(self, status: str) -> None:
        self.running -= 1
        self.counts[status] += 1
        self._refresh(1)

    def _refresh(self, advance: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=advance, state=self.state)


# -- tables of a sweep's state, for `run`'s final summary and `status` ---------------------------------

STATUS_STYLE = {"finished": "green", "running": "cyan", "failed": "red", "diverged": "magenta", "pending": "dim"}


def si(value: float) -> str:
    """1200 -> 1.2k, 3.5e6 -> 3.5M: compact model and data sizes for table headers."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def counts_table(counts: Counter, pending: int, title: str) -> Table:
    """One row: trials per status, pending included."""
    table = Table(title=title, title_justify="left")
    statuses = [s for s in ("finished", "running", "failed", "diverged") if counts.get(s)] + [
        s for s in sorted(counts) if s not in STATUS_STYLE
    ]
    for status in [*statuses, "pending"]:
        table.add_column(status, justify="right", style=STATUS_STYLE.get(status, ""))
    table.add_row(*(str(counts.get(s, 0)) for s in statuses), str(pending))
    return table


def grid_cell(rows: pd.DataFrame, planned: int, metric: str) -> str:
    """A (model size, data size) cell: seed-mean metric of finished trials, then marks for the rest."""
    finished = rows[rows["status"] == "finished"] if not rows.empty else rows
    text = f"{finished[metric].mean():.3f}" if metric in finished and finished[metric].notna().any() else ""
    marks = {
        "running": "[cyan]…[/cyan]",
        "failed": "[red]✗[/red]",
        "diverged": "[magenta]∞[/magenta]",
    }
    for status, mark in marks.items():
        n = int((rows["status"] == status).sum()) if not rows.empty else 0
        text += f" {mark}{n if n > 1 else ''}" if n else ""
    missing = planned - len(rows)
    if missing > 0:
        text += f" [dim]·{missing if missing > 1 else ''}[/dim]"
    if planned == 0:
        return ""  # an IsoFLOP grid plans only some (N, D) pairs: nothing to wait for here
    return text.strip() or "[dim]-[/dim]"  # finished without this metric


def grid_table(grid: pd.DataFrame, trials: pd.DataFrame, metric: str, title: str, size_col="n_params", data_col="n_samples") -> Table:
    """Data size (rows) x model size (columns): seed-mean `metric` of finished trials per cell;
    … running, ✗ failed, ∞ diverged, · not started (with a count when more than one), blank where
    the grid plans no trial (an IsoFLOP sweep's (N, D) pairs lie on a few diagonals)."""
    sizes = sorted(grid[size_col].unique())
    data_sizes = sorted(grid[data_col].unique())
    sparse = len(grid[[size_col, data_col]].drop_duplicates()) < len(sizes) * len(data_sizes)
    table = Table(
        title=title,
        title_justify="left",
        caption="rows: data size D, columns: model size N (parameters); … running  ✗ failed  ∞ diverged  · not started"
        + ("  blank: no trial planned" if sparse else ""),
        caption_justify="left",
    )
    table.add_column("D \\ N", style="bold", justify="right")
    for n in sizes:
        table.add_column(si(n), justify="right")
    recorded = trials.set_index("trial_key") if not trials.empty else None
    for d in data_sizes:
        cells = []
        for n in sizes:
            keys = grid.loc[(grid[size_col] == n) & (grid[data_col] == d), "trial_key"]
            rows = recorded.loc[recorded.index.intersection(keys)] if recorded is not None else pd.DataFrame(columns=["status"])
            cells.append(grid_cell(rows, len(keys), metric))
        table.add_row(si(d), *cells)
    return table


def extremes_table(trials: pd.DataFrame, columns: list[str], metric: str, n: int = 3, title: str = "") -> Table:
    """The n best and n worst finished trials by `metric` (lower is better)."""
    finished = trials[trials["status"] == "finished"].dropna(subset=[metric]).sort_values(metric)
    picked = pd.concat([finished.head(n).assign(rank="best"), finished.tail(n).iloc[::-1].assign(rank="worst")])
    picked = picked[~picked.index.duplicated()]
    table = Table(title=title, title_justify="left")
    for column in ["rank", *columns, metric]:
        table.add_column(column, justify="right")
    for _, row in picked.iterrows():
        table.add_row(*(f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in ["rank", *columns, metric]))
    return table


def results_table(grid: pd.DataFrame, trials: pd.DataFrame, axes: list[str], metric: str, title: str) -> Table:
    """The compact grid table when the model size x data size grid fits a terminal (<= 10 x 16),
    else the best and worst trials."""
    if grid["n_params"].nunique() <= 10 and grid["n_samples"].nunique() <= 16:
        return grid_table(grid, trials, metric, title)
    columns = [a for a in axes if a in trials] + ["n_params", "n_samples"]
    return extremes_table(trials, list(dict.fromkeys(columns)), metric, title=title)
