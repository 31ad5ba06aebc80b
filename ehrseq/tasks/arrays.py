"""Training targets of a task's label rows as arrays (what the sequence models' heads read)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehrseq.errors import TargetError
from ehrseq.tasks.spec import TaskSpec


def target_arrays(spec: TaskSpec, frame: pd.DataFrame, label_names: list[str] | None) -> np.ndarray:
    """(N, K) float32 training targets of a task's label rows (multiclass: the class index, K = 1)."""
    if spec.kind == "binary":
        return frame["boolean_value"].to_numpy(np.float32)[:, None]
    if spec.kind == "regression":
        return frame["float_value"].to_numpy(np.float32)[:, None]
    if spec.kind == "multiclass":
        return frame["integer_value"].to_numpy(np.float32)[:, None]
    if spec.kind == "multilabel":
        pos = {c: i for i, c in enumerate(label_names or [])}
        y = np.zeros((len(frame), len(pos)), np.float32)
        for r, cs in enumerate(frame["codes"]):
            for c in cs:
                if c in pos:
                    y[r, pos[c]] = 1.0
        return y
    raise TargetError(f"a '{spec.kind}' task has no array form for sequence models")
