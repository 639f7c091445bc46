"""The envelope over hyperparameter axes: per size, the setting that reached the lowest loss.

Scaling laws are fitted to the best run at each size, not to every run: Porian et al. (2024) tune
learning rate and batch size per model size, and one untuned setting makes bigger models look worse
(the loss even rises with N). Given the axes to optimise over (learning rate, batch size, warmup...),
each cell (a model size N and a data size D, or N and a compute budget) keeps the trials of the
setting with the lowest seed-mean metric, every seed of it. The chosen setting is reported per cell;
one on the edge of its axis' grid says the optimum may lie beyond what was tried.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from orchestrator.fit.power_law import FitError


@dataclass(frozen=True)
class Envelope:
    """Which setting of `axes` each cell kept.

    cells: the columns that define a cell (e.g. n_params, n_samples). choices: one row per cell with
    the cell columns, the chosen value of each axis, `metric` (its seed mean), `settings` (how many
    were tried there) and `at_edge` (the axes whose chosen value is the smallest or largest tried
    there, comma-separated; empty when interior). grid: the values tried per axis, over the sweep.
    """

    axes: tuple[str, ...]
    cells: tuple[str, ...]
    metric: str
    choices: pd.DataFrame = field(repr=False)
    grid: dict[str, list] = field(default_factory=dict)

    @property
    def n_at_edge(self) -> int:
        return int((self.choices["at_edge"] != "").sum())

    def setting(self, row) -> str:
        return ", ".join(f"{a}={_fmt(row[a])}" for a in self.axes) + ("*" if row["at_edge"] else "")

    def table(self) -> list[str]:
        """The chosen setting per cell: one line per model size, one column per other cell value; * = at the grid's edge."""
        first, rest = self.cells[0], list(self.cells[1:])
        columns = sorted({tuple(r) for r in self.choices[rest].itertuples(index=False)}) if rest else [()]
        heads = [",".join(f"{c}={_fmt(v)}" for c, v in zip(rest, key)) or "setting" for key in columns]
        widths = [max(len(h), 12) for h in heads]
        lines = [f"  {first:>12} " + " ".join(f"{h:>{w}}" for h, w in zip(heads, widths))]
        for size, rows in self.choices.groupby(first, sort=True):
            by_key = {tuple(r[c] for c in rest): self.setting(r) for _, r in rows.iterrows()}
            cells = [by_key.get(key, "-") for key in columns]
            lines.append(f"  {_fmt(size):>12} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
        return lines

    @property
    def title(self) -> str:
        edge = f"; {self.n_at_edge} of {len(self.choices)} at the edge of the grid (*): the best may lie beyond" if self.n_at_edge else ""
        grid = "; ".join(f"{a} in {[_fmt(v) for v in self.grid.get(a, [])]}" for a in self.axes)
        return f"envelope: the best {', '.join(self.axes)} per ({', '.join(self.cells)}) by {self.metric} ({grid}){edge}"

    def summary(self) -> str:
        return "\n".join([self.title, *self.table()])

    def to_dict(self) -> dict:
        return {
            "kind": "envelope",
            "axes": list(self.axes),
            "cells": list(self.cells),
            "metric": self.metric,
            "grid": {a: [_plain(v) for v in values] for a, values in self.grid.items()},
            "choices": self.choices.replace({np.nan: None}).to_dict(orient="records"),
        }


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, (float, np.floating)) else str(value)


def best_per_cell(trials: pd.DataFrame, axes: Sequence[str], metric: str, cells: Sequence[str]) -> tuple[pd.DataFrame, Envelope]:
    """The trials of the best setting of `axes` in each cell, and which setting that was.

    trials: one row per finished trial; axes: hyperparameter columns to optimise over; cells: the
    columns of a cell (model size and data size or budget, and label noise where it varies).
    Raises FitError when a column is missing.
    """
    axes, cells = list(axes), list(cells)
    missing = [c for c in (*axes, *cells, metric) if c not in trials]
    if missing:
        raise FitError(f"envelope: columns {missing} missing; have {sorted(trials.columns)}")
    means = trials.groupby(cells + axes, dropna=False)[metric].mean().reset_index()
    rows = []
    for key, cell in means.groupby(cells, sort=True, dropna=False):
        best = cell.loc[cell[metric].idxmin()]
        edges = []
        for axis in axes:
            tried = np.sort(cell[axis].unique())
            if len(tried) >= 2 and best[axis] in (tried[0], tried[-1]):
                edges.append(axis)
        rows.append({**{c: best[c] for c in cells}, **{a: best[a] for a in axes}, metric: best[metric], "settings": len(cell), "at_edge": ",".join(edges)})
    choices = pd.DataFrame(rows)
    chosen = trials.merge(choices[cells + axes], on=cells + axes, how="inner")
    grid = {a: sorted(trials[a].dropna().unique().tolist()) for a in axes}
    return chosen, Envelope(tuple(axes), tuple(cells), metric, choices, grid)
