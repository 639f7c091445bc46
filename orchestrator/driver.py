"""The driver process around a sweep: signals become exceptions, the local Ray goes down with the
driver however it dies, and a Ray address is checked before anything waits on it.

- SIGTERM raises `Terminated` in the main thread (Python's default would end the process mid-write);
  SIGINT raises KeyboardInterrupt as usual. While the driver cleans up after either, and in the CLI
  until the process has exited, a second signal ends it at once, quietly, after stopping the local Ray.
- A local Ray started for a sweep gets a reaper: a small process of its own that follows the driver's
  descendants (GCS, raylet, Ray's agents, workers) and kills them when the driver is gone, even by
  SIGKILL. Ray's own fate-sharing stops the GCS and raylet; its agents would linger for a minute and
  a worker mid-pack would train on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from typing import Callable, Iterator

EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143

REAPER = """
import sys, time
import psutil
driver, me, known = psutil.Process(int(sys.argv[1])), psutil.Process(), {}
while True:
    try:
        if driver.status() == psutil.STATUS_ZOMBIE:
            break
        for child in driver.children(recursive=True):
            known.setdefault(child.pid, child)
    except psutil.NoSuchProcess:
        break
    time.sleep(0.5)
for child in known.values():
    try:
        if child.pid != me.pid and child.is_running():  # is_running also checks the pid was not reused
            child.kill()
    except psutil.Error:
        pass
"""


class Terminated(BaseException):
    """The driver was sent SIGTERM. A BaseException, like KeyboardInterrupt: nothing catches it by accident."""


def interruption(err: BaseException) -> BaseException | None:
    """The KeyboardInterrupt or Terminated behind `err`, if any: a signal's exception raised while a C
    extension runs (Ray's core worker in ray.wait) comes back wrapped in a SystemError."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (KeyboardInterrupt, Terminated)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def descendants() -> list:
    import psutil

    return psutil.Process().children(recursive=True)


def kill_descendants() -> None:
    """Kill every process this one started (the local Ray), at once."""
    import psutil

    for process in descendants():
        with contextlib.suppress(psutil.Error):
            process.kill()


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[Callable[[], None]]:
    """SIGTERM raises Terminated; after the first SIGINT or SIGTERM, a second one stops the local Ray and
    exits at once (130 or 143) without a traceback. Only in the main thread (signals go nowhere else).

    Yields `reclaim()`, which installs these handlers again: ray.init replaces the SIGTERM handler with
    its own (sys.exit), and its core adds one that dumps a stack and aborts."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    received: list[int] = []

    def handle(signum, frame):
        if received:
            exit_now(EXIT_INTERRUPTED if signum == signal.SIGINT else EXIT_TERMINATED)
        received.append(signum)
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated()

    def reclaim() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handle)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    reclaim()
    try:
        yield reclaim
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def exit_at_once_on_signals(code: int) -> None:
    """For a process on its way out after a signal, which still shuts its local Ray down at exit: a
    further SIGINT or SIGTERM stops the local Ray and exits with `code` at once, without a traceback."""

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: exit_now(code))


def exit_now(code: int) -> None:
    """Stop the local Ray and end this process with `code`, at once and without a traceback."""
    kill_descendants()
    os._exit(code)


def start_reaper() -> subprocess.Popen:
    """The reaper of this driver's descendants (see the module docstring), in a session of its own so
    that a signal to the driver's process group does not stop it first."""
    return subprocess.Popen(
        [sys.executable, "-c", REAPER, str(os.getpid())],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (a Ray worker when its raylet goes)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def check_ray_address(address: str, timeout_s: float = 10.0) -> None:
    """Fail within timeout_s, with ConnectionError, when a 'host:port' Ray address does not accept
    connections ('auto', 'local' and ray:// client addresses are left to Ray)."""
    if address in ("auto", "local") or "://" in address or ":" not in address:
        return
    from orchestrator.spec import SpecError

    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise SpecError(f"--address: {address!r} is not HOST:PORT, 'auto' or a ray:// address")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return
    except OSError as err:
        raise ConnectionError(f"nothing answers at {address} within {timeout_s:g} s ({err.__class__.__name__}: {err})") from None
