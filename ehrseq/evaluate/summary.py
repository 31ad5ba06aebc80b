"""The headline figures of a predictions frame, each with a patient-bootstrap 95% CI.

Used by ``finetune`` (metrics.json) and the benchmarks, so every model is summarised the same way. The columns
and metrics per task come from :func:`ehrseq.evaluate.report.task_spec` and the bootstrap loop from
:func:`ehrseq.evaluate.subgroups.metrics_with_ci`, as in the evaluation report.

Every summary also carries the spread of the predictions and a warning when they are near-constant (a model
that learned only the base rate can still print a plausible AUROC CI on a small split). The rule
(:func:`prediction_spread`): probabilities (binary, each multilabel label) are near-constant when their standard
deviation is below 0.01 or they take fewer than 2 distinct values; regression predictions when their standard
deviation is below 1% of the targets' or fewer than 2 distinct values; survival risks when fewer than 2 distinct
values (their scale is arbitrary).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from ehrseq.evaluate.columns import task_spec
from ehrseq.evaluate.subgroups import metrics_with_ci

TASKS = ("binary", "regression", "multilabel")
PROB_STD_MIN = 0.01  # probabilities with a smaller standard deviation are near-constant
REGRESSION_STD_RATIO_MIN = 0.01  # regression: std(y_pred) below this fraction of std(y_true) is near-constant
NEAR_CONSTANT = "near_constant_predictions"

logger = logging.getLogger("ehrseq.evaluate")


def _spread(values: np.ndarray) -> dict[str, Any]:
    v = values[np.isfinite(values)]
    if not len(v):
        return {"n": 0, "n_distinct": 0, "std": None, "min": None, "max": None}
    return {"n": int(len(v)), "n_distinct": int(len(np.unique(v))), "std": float(v.std()),
            "min": float(v.min()), "max": float(v.max())}


def prediction_spread(preds: pd.DataFrame, task: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(spread, warnings) of a predictions frame: per prediction column n, n_distinct, std, min, max, and a
    ``near_constant_predictions`` warning per column that is near-constant under the module's rule."""
    if task == "survival":
        cols, targets = {"risk": "risk"}, {}
    else:
        yt, yp, _ = task_spec(task, preds, None)
        yp, yt = ([yp], [yt]) if isinstance(yp, str) else (list(yp), list(yt))
        cols, targets = dict(zip(yp, yp, strict=True)), dict(zip(yp, yt, strict=True))
    spread: dict[str, Any] = {}
    warnings: list[dict[str, Any]] = []
    for col in cols:
        s = _spread(preds[col].to_numpy(float)) if col in preds else _spread(np.zeros(0))
        spread[col] = s
        if s["n"] == 0:
            continue
        if task in ("binary", "multilabel"):
            rule, bad = f"std < {PROB_STD_MIN:g} or < 2 distinct values", s["std"] < PROB_STD_MIN
        elif task == "regression":
            y = preds[targets[col]].to_numpy(float)
            y_sd = float(np.nanstd(y)) if np.isfinite(y).any() else 0.0
            rule = f"std < {REGRESSION_STD_RATIO_MIN:g} x std(y_true) or < 2 distinct values"
            bad = y_sd > 0 and s["std"] < REGRESSION_STD_RATIO_MIN * y_sd
        else:
            rule, bad = "< 2 distinct values", False
        if bad or s["n_distinct"] < 2:
            warnings.append({
                "code": NEAR_CONSTANT, "column": col, "rule": rule, "std": s["std"], "n_distinct": s["n_distinct"],
                "message": f"{col} is near-constant over {s['n']} rows (std {s['std']:.2g}, {s['n_distinct']} "
                           f"distinct value(s), range {s['min']:.4g}-{s['max']:.4g}): the model may have learned "
                           "only the base rate; treat its metrics with caution and check training (learning rate, "
                           "epochs, the token window, class balance).",
            })
    return spread, warnings


def summarize(preds: pd.DataFrame, task: str, *, n_bootstrap: int = 200, seed: int = 0) -> dict[str, Any]:
    """{"n_rows", "n_patients", "prevalence" (binary), metric: {"value", "lo", "hi"} or {"value": None,
    "undefined": reason}, "prediction_spread": {column: {n, n_distinct, std, min, max}}, "warnings": [...]}.

    ``warnings`` holds one ``near_constant_predictions`` entry per near-constant prediction column (see the
    module docstring for the rule), each also logged as a warning; it is empty otherwise.
    """
    if task not in TASKS:
        raise ValueError(f"no summary for task '{task}'")
    out: dict[str, Any] = {"n_rows": int(len(preds)), "n_patients": int(preds["subject_id"].nunique())}
    if len(preds) == 0:
        return out | {"undefined": "no rows", "warnings": []}
    yt, yp, fns = task_spec(task, preds, None)
    if task == "binary":
        out["prevalence"] = float(np.mean(preds[yt].to_numpy(float)))
    for name, r in metrics_with_ci(preds, fns, y_true=yt, y_pred=yp, n_boot=n_bootstrap, seed=seed).items():
        if r["estimate"] is None:
            out[name] = {"value": None, "undefined": r["undefined"]}
        else:
            out[name] = {"value": r["estimate"], "lo": r["lo"], "hi": r["hi"]}
    out["prediction_spread"], out["warnings"] = prediction_spread(preds, task)
    for w in out["warnings"]:
        logger.warning("%s", w["message"])
    return out


def fmt(m: dict[str, Any]) -> str:
    """'0.842 (0.830-0.853)' or 'undefined: reason'."""
    if m.get("value") is None:
        return f"undefined: {m.get('undefined')}"
    if m.get("lo") is None:
        return f"{m['value']:.3f}"
    return f"{m['value']:.3f} ({m['lo']:.3f}-{m['hi']:.3f})"
