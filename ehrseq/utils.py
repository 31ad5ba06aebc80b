"""Small shared helpers: seeding and content hashes."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Sequence

import numpy as np
import pandas as pd


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so the same seed gives the same run on the same machine."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


EVENT_HASH_COLUMNS = ("subject_id", "time", "code", "numeric_value")  # an artifact's data_hash covers these


class FrameHasher:
    """:func:`frame_hash` of a frame given in consecutive pieces (:meth:`add`), e.g. batches streamed from
    disk: the pieces' hash equals that of their concatenation."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        self.h = hashlib.sha256()
        self.h.update(",".join(self.columns).encode())

    def add(self, df: pd.DataFrame) -> FrameHasher:
        """Hash the next rows (returns self)."""
        self.h.update(pd.util.hash_pandas_object(df[self.columns], index=False).to_numpy().tobytes())
        return self

    def hexdigest(self) -> str:
        """The hash of every row added so far (16 hex digits)."""
        return self.h.hexdigest()[:16]


def frame_hash(df: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """A stable sha256 (16 hex) of a frame's contents, for recording what an artifact was trained on."""
    return FrameHasher(columns or list(df.columns)).add(df).hexdigest()


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def fix_mmap_threshold(nbytes: int = 8 * 1024 * 1024) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` for this process: allocations at least that large are mapped
    and unmapped on their own instead of being carved from the heap. glibc otherwise raises the threshold as
    large blocks are freed, so a long training loop's batch-sized temporaries end up in a heap that grows with
    the number of batches seen. 8 MiB bounds streamed pretraining's heap at no measured cost in speed; small
    thresholds (128 KiB) bound it further but map so often that training slows down
    (``benchmarks/results/memory.md``). Returns False (nothing changed) where the C library has no
    ``mallopt``."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        mallopt = getattr(ctypes.CDLL(name), "mallopt", None) if name else None
    except OSError:
        mallopt = None
    return bool(mallopt is not None and mallopt(_M_MMAP_THRESHOLD, int(nbytes)) == 1)
