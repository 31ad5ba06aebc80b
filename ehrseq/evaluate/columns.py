"""Which columns of a predictions frame hold the truth and the prediction for each task, and which headline
metrics apply (shared by the summary, the report and the subgroup cards)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from ehrseq.errors import DataValidationError
from ehrseq.evaluate import metrics as M

Task = Literal["binary", "multilabel", "regression", "survival"]


def concordance(y_true: Any, y_pred: Any) -> M.MetricResult:
    """Harrell's C via :mod:`ehrseq.evaluate.survival`; ``y_true`` is (n, 2) [duration, event], y_pred risk."""
    try:
        from ehrseq.evaluate.survival import concordance_index
    except ImportError:
        return M.MetricResult(None, "ehrseq.evaluate.survival is not available")
    y = np.asarray(y_true, dtype=float)
    try:
        return M.MetricResult(float(concordance_index(y[:, 0], y[:, 1], y_pred)), n=len(y))
    except (ValueError, IndexError) as err:
        return M.MetricResult(None, str(err), n=len(y))


def _labels(df: pd.DataFrame) -> list[str]:
    return [c[len("y_prob_"):] for c in df.columns if c.startswith("y_prob_")]


def task_spec(task: Task, df: pd.DataFrame, labels: Sequence[str] | None) -> tuple[Any, Any, dict[str, M.MetricFn]]:
    """(y_true column(s), y_pred column(s), headline metrics) for a task."""
    if task == "binary":
        pred = "y_prob" if "y_prob" in df.columns else "y_pred"
        return "y_true", pred, dict(M.BINARY_METRICS)
    if task == "multilabel":
        labs = list(labels or _labels(df))
        if not labs:
            raise DataValidationError("no y_prob_<label> columns", hint="multilabel predictions need one per label")
        fns = {**M.MULTILABEL_METRICS, **{k: M.labelled_macro(m, labs) for k, m in M.MACRO_BASE.items()}}
        return [f"y_true_{lab}" for lab in labs], [f"y_prob_{lab}" for lab in labs], fns
    if task == "regression":
        return "y_true", "y_pred", dict(M.REGRESSION_METRICS)
    if task == "survival":
        return ["duration", "event"], "risk", {"concordance": concordance}
    raise ValueError(f"unknown task '{task}'; expected binary, multilabel, regression or survival")
