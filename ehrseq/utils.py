"""Small shared helpers: seeding and content hashes."""

from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import pandas as pd


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so the same seed gives the same run on the same machine."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def frame_hash(df: pd.DataFrame, columns: list[str] | None = None) -> str:
    """A stable sha256 (16 hex) of a frame's contents, for recording what an artifact was trained on."""
    cols = columns or list(df.columns)
    h = hashlib.sha256()
    h.update(",".join(cols).encode())
    hashed = pd.util.hash_pandas_object(df[cols], index=False).to_numpy()
    h.update(hashed.tobytes())
    return h.hexdigest()[:16]


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
