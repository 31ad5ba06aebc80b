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
