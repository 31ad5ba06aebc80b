"""The headline figures of a predictions frame, each with a patient-bootstrap 95% CI.

Used by ``finetune`` (metrics.json) and the benchmarks, so every model is summarised the same way. The columns
and metrics per task come from :func:`ehrseq.evaluate.report.task_spec` and the bootstrap loop from
:func:`ehrseq.evaluate.subgroups.metrics_with_ci`, as in the evaluation report.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ehrseq.evaluate.report import task_spec
from ehrseq.evaluate.subgroups import metrics_with_ci

TASKS = ("binary", "regression", "multilabel")


def summarize(preds: pd.DataFrame, task: str, *, n_bootstrap: int = 200, seed: int = 0) -> dict[str, Any]:
    """{"n_rows", "n_patients", metric: {"value", "lo", "hi"} or {"value": None, "undefined": reason}}."""
    if task not in TASKS:
        raise ValueError(f"no summary for task '{task}'")
    out: dict[str, Any] = {"n_rows": int(len(preds)), "n_patients": int(preds["subject_id"].nunique())}
    if len(preds) == 0:
        return out | {"undefined": "no rows"}
    yt, yp, fns = task_spec(task, preds, None)
    if task == "binary":
        out["prevalence"] = float(np.mean(preds[yt].to_numpy(float)))
    for name, r in metrics_with_ci(preds, fns, y_true=yt, y_pred=yp, n_boot=n_bootstrap, seed=seed).items():
        if r["estimate"] is None:
            out[name] = {"value": None, "undefined": r["undefined"]}
        else:
            out[name] = {"value": r["estimate"], "lo": r["lo"], "hi": r["hi"]}
    return out


def fmt(m: dict[str, Any]) -> str:
    """'0.842 (0.830-0.853)' or 'undefined: reason'."""
    if m.get("value") is None:
        return f"undefined: {m.get('undefined')}"
    if m.get("lo") is None:
        return f"{m['value']:.3f}"
    return f"{m['value']:.3f} ({m['lo']:.3f}-{m['hi']:.3f})"
