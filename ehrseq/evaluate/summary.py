"""The headline figures of a predictions frame, each with a patient-bootstrap 95% CI.

Used by ``finetune`` (metrics.json) and the benchmarks, so every model is summarised the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ehrseq.evaluate import metrics as M
from ehrseq.evaluate.bootstrap import bootstrap_ci

METRICS = {
    "binary": {"auroc": M.auroc, "auprc": M.auprc, "brier": M.brier, "log_loss": M.log_loss},
    "regression": {"mae": M.mae, "rmse": M.rmse, "r2": M.r2},
    "multilabel": {
        "macro_auroc": M.macro_auroc,
        "macro_auprc": M.macro_auprc,
        "samples_ap": M.samples_average_precision,
    },
}


def arrays(preds: pd.DataFrame, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, y_score) from a predictions frame (see ``api.predictions_frame`` for its columns)."""
    if task == "multilabel":
        names = [c[len("y_prob_"):] for c in preds.columns if c.startswith("y_prob_")]
        return (preds[[f"y_true_{n}" for n in names]].to_numpy(float), preds[[f"y_prob_{n}" for n in names]].to_numpy(float))
    return preds["y_true"].to_numpy(float), preds["y_pred" if task == "regression" else "y_prob"].to_numpy(float)


def summarize(preds: pd.DataFrame, task: str, *, n_bootstrap: int = 200, seed: int = 0) -> dict[str, Any]:
    """{"n_rows", "n_patients", metric: {"value", "lo", "hi"} or {"value": None, "undefined": reason}}."""
    if task not in METRICS:
        raise ValueError(f"no summary for task '{task}'")
    out: dict[str, Any] = {"n_rows": int(len(preds)), "n_patients": int(preds["subject_id"].nunique())}
    if len(preds) == 0:
        return out | {"undefined": "no rows"}
    y, s = arrays(preds, task)
    if task == "binary":
        out["prevalence"] = float(np.mean(y))
    for name, fn in METRICS[task].items():
        r = bootstrap_ci(fn, y, s, groups=preds["subject_id"].to_numpy(), n_boot=n_bootstrap, seed=seed)
        if r.estimate is None:
            out[name] = {"value": None, "undefined": r.undefined}
        else:
            out[name] = {"value": r.estimate, "lo": r.lo, "hi": r.hi}
    return out


def fmt(m: dict[str, Any]) -> str:
    """'0.842 (0.830-0.853)' or 'undefined: reason'."""
    if m.get("value") is None:
        return f"undefined: {m.get('undefined')}"
    if m.get("lo") is None:
        return f"{m['value']:.3f}"
    return f"{m['value']:.3f} ({m['lo']:.3f}-{m['hi']:.3f})"
