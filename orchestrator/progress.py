"""A live progress bar for a running sweep: done, running, failed, ETA."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class SweepProgress:
    """Counts trials as they start and end; draws a rich bar on stderr when enabled."""

    def __init__(self, total: int, name: str, enabled: bool = True):
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
                console=Console(stderr=True),
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
        return f"running {self.running}  finished {self.counts['finished']}  failed {failed}"

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
