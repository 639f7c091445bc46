"""One driver per sweep: a lease held in the parent run's tags and renewed by a heartbeat.

MLflow has no compare-and-set, so a driver takes the lease by writing its id, waiting SETTLE_S and
reading the tag back: of drivers that start in the same second the last writer keeps it and the
others see its id and step back. The holder renews `scalesweep.heartbeat` every HEARTBEAT_S and
checks that the id is still its own; a driver that finds another's id there (a `--force-takeover`)
stops. A lease is free once released (heartbeat 0); it is stale, and taken over (saying so), when its
holder ran on this host and its process is gone, or ran elsewhere and its heartbeat is older than
STALE_S.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from mlflow.entities import RunTag

log = logging.getLogger(__name__)

DRIVER_TAG = "scalesweep.driver"  # the holder's id: host, pid and a nonce, as JSON
HEARTBEAT_TAG = "scalesweep.heartbeat"  # unix milliseconds of the holder's last renewal
HEARTBEAT_S = 10.0
STALE_S = 60.0
SETTLE_S = 2.0

# Nonces of the leases this process holds now: a lease of this pid whose nonce is not here was left
# by an earlier driver in this process (say, one stopped by an outage before it could release).
_HELD_HERE: set[str] = set()


class SweepLocked(RuntimeError):
    """Another live driver holds the sweep's lease."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: `host`, `pid` and a `nonce` that tells two drivers of one pid apart."""

    host: str
    pid: int
    nonce: str
    started_ms: int

    @classmethod
    def me(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(), uuid.uuid4().hex[:12], int(time.time() * 1000))

    @classmethod
    def parse(cls, text: str | None) -> Holder | None:
        try:
            data = json.loads(text or "")
            return cls(str(data["host"]), int(data["pid"]), str(data["nonce"]), int(data.get("started_ms", 0)))
        except (ValueError, KeyError, TypeError):
            return None

    def dump(self) -> str:
        return json.dumps({"host": self.host, "pid": self.pid, "nonce": self.nonce, "started_ms": self.started_ms})

    def alive_here(self) -> bool | None:
        """Whether the holder's process runs, when it ran on this host; None when it ran elsewhere."""
        if self.host != socket.gethostname():
            return None
        if self.pid == os.getpid():
            return self.nonce in _HELD_HERE
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        try:  # a recycled pid: the process must have started before the lease was written
            import psutil

            return psutil.Process(self.pid).create_time() * 1000 <= self.started_ms + 1000
        except Exception:
            return True


def describe(holder: Holder, heartbeat_ms: int | None, now_ms: int) -> str:
    beat = f"last heartbeat {(now_ms - heartbeat_ms) / 1000:.0f} s ago" if heartbeat_ms else "no heartbeat yet"
    return f"host {holder.host}, pid {holder.pid}, {beat}"


class Lease:
    """The lease of one parent run. `acquire()` takes it or raises SweepLocked; `start()` renews it
    from a daemon thread; `lost` says another driver took it over; `release()` gives it up."""

    def __init__(self, client, parent_run_id: str, settle_s: float = SETTLE_S, stale_s: float = STALE_S, heartbeat_s: float = HEARTBEAT_S):
        self.client = client
        self.parent_run_id = parent_run_id
        self.me = Holder.me()
        self.settle_s, self.stale_s, self.heartbeat_s = settle_s, stale_s, heartbeat_s
        self.took_over: str | None = None  # whom this driver took the lease from, said to the user
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> tuple[Holder | None, int | None]:
        tags = self.client.get_run(self.parent_run_id).data.tags
        beat = tags.get(HEARTBEAT_TAG)
        return Holder.parse(tags.get(DRIVER_TAG)), int(beat) if beat and beat.isdigit() else None

    def _write(self) -> None:
        now = str(int(time.time() * 1000))
        self.client.log_batch(self.parent_run_id, tags=[RunTag(DRIVER_TAG, self.me.dump()), RunTag(HEARTBEAT_TAG, now)])

    def holder_if_live(self) -> tuple[Holder, int | None] | None:
        """The current holder and its heartbeat when it is another driver that still runs, else None.

        A released lease (heartbeat 0) is free; a holder on this host is judged by its process, one
        elsewhere by its heartbeat (or its start, before the first beat)."""
        holder, beat = self._read()
        if holder is None or holder == self.me or beat == 0:
            return None
        alive = holder.alive_here()
        if alive is not None:
            return (holder, beat) if alive else None
        last = beat or holder.started_ms
        return (holder, beat) if time.time() * 1000 - last <= self.stale_s * 1000 else None

    def acquire(self, force: bool = False) -> None:
        """Take the lease: refused while another live driver holds it, unless `force`."""
        holder, beat = self._read()
        live = self.holder_if_live()
        if live is not None and not force:
            raise SweepLocked(
                f"another driver is running this sweep ({describe(*live, int(time.time() * 1000))}); wait for it to "
                "finish, or pass --force-takeover if you know it is gone"
            )
        if holder is not None and holder != self.me and beat != 0:  # it never released the lease
            self.took_over = describe(holder, beat, int(time.time() * 1000))
        self._write()
        time.sleep(self.settle_s)  # let a driver that wrote in the same moment write too, then read back
        winner, beat = self._read()
        if winner == self.me:
            _HELD_HERE.add(self.me.nonce)
        else:
            raise SweepLocked(
                f"another driver started this sweep at the same time and holds it ({describe(winner, beat, int(time.time() * 1000))})"
                if winner
                else "the sweep's lease could not be taken (its tag did not hold); run again"
            )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="scalesweep-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                holder, beat = self._read()
                if holder != self.me:
                    self.lost = f"another driver took the sweep over ({describe(holder, beat, int(time.time() * 1000))})" if holder else "the sweep's lease was cleared"
                    return
                self.client.log_batch(self.parent_run_id, tags=[RunTag(HEARTBEAT_TAG, str(int(time.time() * 1000)))])
            except Exception as err:  # an outage: the recorder's own retries decide whether the sweep stops
                log.debug("lease heartbeat failed: %s", err)

    def release(self) -> None:
        """Stop renewing and mark the lease released (heartbeat 0), if it is still ours. The holder's
        id stays: readers tell from it which driver wrote the sweep last."""
        self._stop.set()
        _HELD_HERE.discard(self.me.nonce)
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            holder, _ = self._read()
            if holder == self.me:
                self.client.log_batch(self.parent_run_id, tags=[RunTag(HEARTBEAT_TAG, "0")])
        except Exception as err:
            log.debug("could not release the lease: %s", err)
