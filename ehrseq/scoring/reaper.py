"""A watchdog that stops the processes a scoring job started when the job itself is killed.

``ray.init()`` starts a local cluster (GCS server, raylet, workers) as children of the driver. They are stopped
by ``ray.shutdown()``, which a ``kill -9`` of the driver never reaches: the workers live on, holding CPUs and
memory. :class:`Reaper` starts a small separate process (its own session, so Ctrl-C in the terminal does not
stop it first) that records the driver's descendants twice a second. The driver holds the write end of a pipe
to it. A clean end writes ``done`` and the watchdog exits without touching anything; when the pipe closes
without ``done`` (the driver died: the kernel closes its file descriptors, even after ``kill -9``), the
watchdog sends SIGTERM, then SIGKILL after a grace period, to every recorded descendant still alive whose start
time matches the one recorded (a pid reused by an unrelated process is never signalled).

Linux only (it reads ``/proc``); elsewhere :class:`Reaper` does nothing and says so in the log.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger("ehrseq.scoring")
POLL_SECONDS = 0.5
GRACE_SECONDS = 3.0
PROC = Path("/proc")


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of ``pid``, or None when it is gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every live descendant of ``root`` -> its start time (one pass over ``/proc``)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for d in PROC.iterdir():
        if d.name.isdigit():
            st = _stat(int(d.name))
            if st is not None:
                children.setdefault(st[0], []).append((int(d.name), st[1]))
    out: dict[int, int] = {}
    todo = [root]
    while todo:
        for pid, start in children.get(todo.pop(), []):
            if pid not in out:
                out[pid] = start
                todo.append(pid)
    return out


def _same(pid: int, start: int) -> bool:
    st = _stat(pid)
    return st is not None and st[1] == start


def _kill(procs: dict[int, int], sig: int) -> int:
    hit = 0
    for pid, start in procs.items():
        if _same(pid, start):
            try:
                os.kill(pid, sig)
                hit += 1
            except OSError:
                pass
    return hit


def watch(driver: int) -> None:
    """The watchdog's loop (runs in its own process): see the module docstring."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    me = os.getpid()
    st = _stat(driver)
    if st is None:
        return
    driver_start = st[1]
    seen: dict[int, int] = {}
    buf = b""
    while _same(driver, driver_start):  # also ends if a forked child keeps the pipe open after the driver died
        seen.update({p: s for p, s in descendants(driver).items() if p != me})
        ready, _, _ = select.select([sys.stdin.buffer], [], [], POLL_SECONDS)
        if ready:
            chunk = os.read(sys.stdin.fileno(), 64)
            if not chunk:
                break
            buf += chunk
            if b"done" in buf:
                return
    if _kill(seen, signal.SIGTERM):
        deadline = time.monotonic() + GRACE_SECONDS
        while time.monotonic() < deadline and any(_same(p, s) for p, s in seen.items()):
            time.sleep(0.1)
        _kill(seen, signal.SIGKILL)


class Reaper:
    """Context manager: while open, a killed driver takes the processes it started with it (see module doc)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Reaper:
        if not PROC.is_dir():
            log.info("no /proc on this system: processes a killed scoring job started are not stopped for it")
            return self
        # run as a plain script (stdlib only, no package import): it watches within milliseconds
        self._proc = subprocess.Popen([sys.executable, "-I", __file__, str(os.getpid())],
                                      stdin=subprocess.PIPE, start_new_session=True, close_fds=True)
        return self

    def release(self) -> None:
        """A clean end: the watchdog exits and signals nothing."""
        if self._proc is not None and self._proc.stdin is not None:
            try:
                self._proc.stdin.write(b"done")
                self._proc.stdin.close()
            except OSError:
                pass
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


if __name__ == "__main__":
    watch(int(sys.argv[1]))
