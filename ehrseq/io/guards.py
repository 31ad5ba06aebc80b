"""Checks made before any data is read: where outputs go, who writes them, and whether a cohort can train.

- :func:`check_output`: an existing output is never replaced without ``overwrite`` (``--overwrite``); a
  location that cannot be written (read-only parent, a file where a directory should be) is refused at once,
  not after training.
- :class:`OutputLock`: one writer per output directory (``ehrseq score --out``): a lock file created with
  ``O_EXCL``; a second writer is refused cleanly; a lock left by a process that no longer runs is taken over,
  with a warning in the log.
- :func:`atomic_file` and :func:`replace_directory`: a file or directory appears whole, or not at all.
- :func:`check_training_cohort`: a minimum number of train subjects and of label rows per class
  (``FinetuneConfig.min_train_subjects`` / ``min_class_count``), checked before the featurizer is fitted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import numpy as np
import pandas as pd

from ehrseq.errors import EhrseqError, TargetError

log = logging.getLogger("ehrseq.io")


class OutputExistsError(EhrseqError, FileExistsError):
    """The output already exists and ``overwrite`` (``--overwrite``) was not given."""


class OutputNotWritableError(EhrseqError, PermissionError):
    """The output location cannot be written (read-only, or a file where a directory is needed)."""


class OutputLockedError(EhrseqError, RuntimeError):
    """Another running process is writing to the same output directory."""


def _nearest_existing(p: Path) -> Path:
    q = p
    while not q.exists() and q != q.parent:
        q = q.parent
    return q


def _probe(directory: Path, out: Path) -> None:
    if not directory.is_dir():
        raise OutputNotWritableError(f"cannot write to {out}: {directory} is a file, not a directory; choose "
                                     "another --out")
    try:
        Path(tempfile.mkdtemp(prefix=".ehrseq-write-check-", dir=directory)).rmdir()
    except OSError as e:
        raise OutputNotWritableError(f"cannot write to {out}: {directory} is not writable ({e.strerror}); fix its "
                                     "permissions or choose another --out") from None


def check_output(out: str | Path, *, overwrite: bool, what: str = "an ehrseq artifact",
                 is_ours: Callable[[Path], bool] | None = None) -> Path:
    """Refuse, before anything is read or trained, an output that exists (unless ``overwrite``) or cannot be
    written. ``is_ours(path)`` says whether an existing, non-empty directory is one this kind of command wrote;
    a directory that is not is never replaced, even with ``overwrite`` (``--out ~`` must not delete a home).
    Returns ``out`` as a Path."""
    p = Path(out)
    if p.exists():
        if not p.is_dir():
            raise OutputExistsError(f"{p} exists and is a file, not a directory; choose another --out")
        if any(p.iterdir()):
            if not overwrite:
                raise OutputExistsError(f"{p} already holds {what}; pass --overwrite (overwrite=True in Python) "
                                        "to replace it, or choose another --out")
            if is_ours is not None and not is_ours(p):
                raise OutputExistsError(f"{p} is a non-empty directory that does not hold {what}; refusing to "
                                        "replace it even with --overwrite: choose a new or empty --out")
        _probe(p, p)
    _probe(_nearest_existing(p.parent), p)
    return p


def check_output_file(out: str | Path, *, overwrite: bool) -> Path:
    """:func:`check_output` for a single output file (a CSV table, a label file)."""
    p = Path(out)
    if p.is_dir():
        raise OutputExistsError(f"{p} is a directory; pass a file name")
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{p} exists; pass --overwrite (overwrite=True in Python) to replace it, or choose "
                                "another name")
    _probe(_nearest_existing(p.parent), p)
    return p


# ------------------------------------------------------------------------------------------------ lock
def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:  # a zombie (exited, not yet reaped) holds no lock
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class OutputLock:
    """``with OutputLock(out / "_lock"):`` -- one writer per output directory.

    The lock file holds the pid, host and start time of its owner. A second writer gets
    :class:`OutputLockedError` naming that pid; a lock whose process no longer runs on this host is taken over
    (logged as a warning). A lock from another host is never assumed dead: its message says to delete it by hand.
    """

    def __init__(self, path: str | Path, what: str = "output directory") -> None:
        self.path, self.what = Path(path), what
        self.held = False

    def _owner(self) -> dict[str, object]:
        try:
            return dict(json.loads(self.path.read_text()))
        except (OSError, ValueError, TypeError):
            return {}

    def acquire(self) -> OutputLock:
        """Take the lock or raise OutputLockedError (taking over a stale one)."""
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                pid, host = int(owner.get("pid", 0) or 0), str(owner.get("host", ""))
                young = time.time() - self._mtime() < 5
                if not owner and young:  # being written right now by its owner
                    time.sleep(0.2)
                    continue
                if owner and (host != me["host"] or _alive(pid)):
                    where = f"pid {pid}" + (f" on host {host}" if host != me["host"] else "")
                    raise OutputLockedError(
                        f"{self.path.parent} is being written by another ehrseq process ({where}, since "
                        f"{owner.get('started')}); wait for it to finish or choose another --out (if that process "
                        f"is gone, delete {self.path})") from None
                log.warning("taking over the stale lock %s of pid %s, which no longer runs", self.path, pid or "?")
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(me))
            self.held = True
            return self
        raise OutputLockedError(f"{self.path.parent}: could not take the lock {self.path}; another process keeps "
                                "taking it. Choose another --out")

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0

    def release(self) -> None:
        """Remove the lock file if this process holds it."""
        if self.held and int(self._owner().get("pid", -1) or -1) == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


# ---------------------------------------------------------------------------------------------- cohort
def check_training_cohort(labels: pd.DataFrame, kind: str, train_ids: object, *, task: str,
                          min_train_subjects: int, min_class_count: int) -> None:
    """Refuse, before the featurizer is fitted, a train split too small to learn from.

    ``labels``: the task's label rows (subject_id plus the value columns of ``kind``); ``train_ids``: the train
    split's subject ids. Needs ``min_train_subjects`` train subjects with a label row, and ``min_class_count``
    train rows of each class (binary), of at least two classes (multiclass) or events (survival).
    """
    train = labels.loc[labels["subject_id"].isin(pd.Index(np.asarray(train_ids)))]
    n_subj = int(train["subject_id"].nunique())
    if n_subj < min_train_subjects:
        raise TargetError(f"'{task}': only {n_subj} train subject(s) have a label row, fewer than "
                          f"min_train_subjects={min_train_subjects}; a model trained on so few patients would not "
                          "generalise. Use more data (or a larger train fraction), or lower min_train_subjects in "
                          "the config")
    counts: dict[str, int] = {}
    if kind == "binary":
        y = train["boolean_value"].astype("boolean")
        counts = {"true": int((y == True).sum()), "false": int((y == False).sum())}  # noqa: E712
        short = {k: v for k, v in counts.items() if v < min_class_count}
    elif kind == "multiclass":
        counts = {str(k): int(v) for k, v in train["integer_value"].value_counts().items()}
        enough = [k for k, v in counts.items() if v >= min_class_count]
        short = {} if len(enough) >= 2 else {k: v for k, v in counts.items() if v < min_class_count} or counts
    elif kind == "survival":
        counts = {"events": int(train["event"].astype(bool).sum())}
        short = {k: v for k, v in counts.items() if v < min_class_count}
    else:
        return
    if short:
        need = {"binary": "each class", "multiclass": "two classes"}.get(kind, "events")
        raise TargetError(f"'{task}': the train split has too few label rows per class ({counts}; needs "
                          f"min_class_count={min_class_count} rows of {need}); check the task definition or the "
                          "split, or lower min_class_count in the config")

__all__ = ["OutputExistsError", "OutputLock", "OutputLockedError", "OutputNotWritableError", "atomic_file",
           "check_output", "check_output_file", "check_training_cohort", "replace_directory"]


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once the block ends without an error it is renamed to ``path``
    in one step (readers see the old file or the new one, whole); on an error it is removed and ``path`` is
    left as it was."""
    p = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)


def replace_directory(tmp: Path, out: Path) -> None:
    """Put the finished directory ``tmp`` at ``out``: an existing ``out`` is moved aside first and removed only
    once ``tmp`` is in place, so a failure at any point leaves either the old output or the new one, whole."""
    import shutil

    out = Path(out)
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
