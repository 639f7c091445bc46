"""Recording trials off the scheduler's hot path: one background thread starts and ends their runs."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Sequence

from orchestrator.tracking import schema
from orchestrator.tracking.store import SweepStore, _chunks

# Trials whose runs a recorder creates between looks at its queue for trials that have already
# ended, and how many ended trials it holds before recording them while more keep arriving.
START_CHUNK = 32


def _ending_keys(items: list[tuple[str, Any]]) -> set[str]:
    return {payload[0].key for kind, payload in items if kind == "finish"}


class TrialRecorder:
    """Records trials off the scheduler's hot path: one background thread starts and ends runs.

    `started(pack)` and `finished(trial, result)` only enqueue and return at once; the thread takes
    whatever queues up within `window_s` of the first item, in order (a trial's start always
    precedes its end), and records it with `start_trials` and one `finish_trials` call for all
    results that arrived meanwhile; a trial that ends within the window costs one call less. `close()`
    drains the queue and raises the first error the thread met; `error` lets the caller stop early.
    `busy_s` is the wall time spent in MLflow calls (seconds), to see where time goes.

    reusable: run ids of unfinished runs by trial key, reused instead of creating a second run.
    """

    def __init__(self, store: SweepStore, parent_run_id: str, reusable: dict[str, str] | None = None, window_s: float = 0.25):
        self.store = store
        self.parent_run_id = parent_run_id
        self.reusable = dict(reusable or {})
        self.run_ids: dict[str, str] = {}
        self._params_pending: dict[str, bool] = {}  # trial key -> params and sizes still to log at its end
        self.error: BaseException | None = None
        self.busy_s = 0.0
        self.window_s = window_s
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="scalesweep-recorder", daemon=True)
        self._thread.start()

    def started(self, trials: Sequence) -> None:
        self._queue.put(("start", list(trials)))

    def finished(self, trial, result) -> None:
        self._queue.put(("finish", (trial, result)))

    def close(self, timeout_s: float | None = None, raise_error: bool = True) -> None:
        """Wait until everything queued is recorded; raise the recorder's error if it met one."""
        if self._thread.is_alive():
            self._queue.put(("stop", None))
            self._thread.join(timeout_s)
        if raise_error and self.error is not None:
            raise self.error

    def _take_queued(self, items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """Move what has queued up onto the end of `items` (a big pack's ends can arrive while its
        starts are still being recorded); return what was moved."""
        taken = []
        while True:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                items.extend(taken)
                return taken

    def _loop(self) -> None:
        stop = False
        while not stop:
            # Take what arrives within a short window: a short trial's end then comes with its start.
            items = [self._queue.get()]
            window_end = time.monotonic() + self.window_s
            while items[-1][0] != "stop":
                try:
                    items.append(self._queue.get(timeout=max(window_end - time.monotonic(), 0)))
                except queue.Empty:
                    break
            if self.error is None:
                started = time.perf_counter()
                try:
                    self._record(items)
                except Exception as err:  # kept for close(); the driver checks it between packs
                    self.error = err
                self.busy_s += time.perf_counter() - started
            stop = any(kind == "stop" for kind, _ in items)

    def _finish(self, finished: list) -> None:
        self.store.finish_trials(finished, parent_run_id=self.parent_run_id)

    def _record(self, items: list[tuple[str, Any]]) -> None:
        """Record `items`, and whatever queues up meanwhile (it joins `items`), one round at a time:
        every start of a round first (a trial's end is queued after its start, never before), so
        their runs are created together, then its ends."""
        # A trial whose start and end arrive together (short trials, a recorder behind) gets its
        # params with its metrics: three MLflow calls instead of four.
        ending = _ending_keys(items)
        finished: list[tuple[str, Any, list, list]] = []
        done = 0
        while done < len(items):
            round_, done = items[done:], len(items)
            # A pack retried after its worker died keeps the runs its first dispatch opened.
            fresh = {t.key: t for kind, payload in round_ if kind == "start" for t in payload if t.key not in self.run_ids}
            for chunk in _chunks(list(fresh.values()), START_CHUNK):
                ending |= _ending_keys(self._take_queued(items))  # a big pack's ends may be in already
                for log_params in (True, False):
                    group = [trial for trial in chunk if (trial.key in ending) != log_params]
                    if group:
                        self.run_ids.update(self.store.start_trials(self.parent_run_id, group, self.reusable, log_params))
                        self._params_pending.update((trial.key, not log_params) for trial in group)
            for kind, payload in round_:
                if kind == "finish":
                    trial, result = payload
                    pending = self._params_pending.pop(trial.key, False)
                    entities = (schema.trial_params(trial), schema.size_metrics(trial)) if pending else ([], [])
                    finished.append((self.run_ids[trial.key], result, *entities))
            if len(finished) >= START_CHUNK:  # while trials keep coming, end runs as we go
                self._finish(finished)
                finished = []
        if finished:
            self._finish(finished)
