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

Discrimination metrics that rest on fewer than ``min_per_class`` rows of a class carry ``small_sample`` and a
``small_sample`` warning (:mod:`ehrseq.evaluate.sample_size`); a macro average carries ``note`` ("macro over
k/L labels") and an interval of no width ``ci_degenerate``: :func:`fmt` prints all three beside the figure.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ehrseq.evaluate.columns import task_spec
from ehrseq.evaluate.sample_size import MIN_PER_CLASS, few_rows_text, flag_counts, flag_small_samples
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


def summarize(preds: pd.DataFrame, task: str, *, n_bootstrap: int = 200, seed: int = 0,
              min_per_class: int = MIN_PER_CLASS) -> dict[str, Any]:
    """{"n_rows", "n_patients", "prevalence" (binary), metric: {"value", "lo", "hi"} or {"value": None,
    "undefined": reason}, "prediction_spread": {column: {n, n_distinct, std, min, max}}, "warnings": [...]}.

    A metric dict may also hold ``note`` (e.g. "macro over 2/4 labels; skipped ..."), ``ci_degenerate`` (why
    an interval has no width) and ``small_sample`` ("3 positives": fewer than ``min_per_class`` rows of a
    class; 0 turns the check off). ``warnings`` holds one ``near_constant_predictions`` entry per
    near-constant prediction column (see the module docstring for the rule) and one ``small_sample`` entry
    per short label (see :mod:`ehrseq.evaluate.sample_size`), each also logged as a warning.
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
            out[name].update({k: r[k] for k in ("note", "ci_degenerate") if r.get(k)})
    out["prediction_spread"], out["warnings"] = prediction_spread(preds, task)
    out["warnings"] += flag_small_samples(preds, task, out, min_per_class=min_per_class)
    for w in out["warnings"]:
        logger.warning("%s", w["message"])
    return out


def fmt(m: dict[str, Any]) -> str:
    """'0.842 (0.830-0.853)' or 'undefined: reason', with the flags a reader must see beside the figure:
    '0.525 (0.310-0.720) [few rows: 3 positives]', '1.000 (every resample identical: too few rows, ...)',
    '0.000 (...) [macro over 1/4 labels (label 'x' alone, not an average)]'."""
    if m.get("value") is None:
        return f"undefined: {m.get('undefined')}"
    if m.get("lo") is None:
        text = f"{m['value']:.3f}"
    elif m.get("ci_degenerate"):
        text = f"{m['value']:.3f} ({m['ci_degenerate']})"
    else:
        text = f"{m['value']:.3f} ({m['lo']:.3f}-{m['hi']:.3f})"
    macro = next((p.strip() for p in str(m.get("note") or "").split(";") if p.strip().startswith("macro over")), None)
    return text + few_rows_text(m) + (f" [{macro}]" if macro else "")


def _text_label(name: str, v: Mapping[str, Any], min_per_class: int) -> str:
    auroc = "undefined (one class)" if v.get("auroc") is None else f"{v['auroc']:.3f}"
    flag = ""
    if v.get("auroc") is not None and "n_positive" in v and "n" in v:
        m = {"auroc": {"value": v["auroc"]}}
        flag_counts("binary", {None: {"positives": v["n_positive"], "negatives": v["n"] - v["n_positive"]}}, m,
                    min_per_class=min_per_class)
        flag = few_rows_text(m["auroc"])
    return f"{name}: auroc={auroc}{flag} f1={v['f1']:.3f}"


def split_figures(metrics: Mapping[str, Any], min_per_class: int = MIN_PER_CLASS) -> list[str]:
    """The figures the command line prints for one split's metrics (as ``finetune`` stores them): every
    ``{"value", ...}`` metric through :func:`fmt` (so its small-sample, macro and degenerate-interval flags
    show), a survival fine-tune's Harrell's C and C-td flagged from its ``n_events``, and the text
    classifier's per-label lines flagged from ``n`` / ``n_positive``, its ``macro`` line saying over how many
    labels it averaged."""
    m = copy.deepcopy(dict(metrics))
    if isinstance(m.get("n_events"), int):
        flag_counts("survival", {None: {"events": m["n_events"]}}, m, min_per_class=min_per_class)
    figs = [f"{k}={fmt(v)}" for k, v in m.items() if isinstance(v, dict) and "value" in v]
    labels = {k: v for k, v in m.items() if isinstance(v, dict) and "n_positive" in v and "f1" in v}
    figs += [_text_label(k, v, min_per_class) for k, v in labels.items()]
    macro = m.get("macro")
    if isinstance(macro, dict) and isinstance(macro.get("auroc"), float) and labels:
        scored = [k for k, v in labels.items() if v.get("auroc") is not None]
        over = f"macro over {len(scored)}/{len(labels)} labels"
        if len(scored) == 1 and len(labels) > 1:
            over += f" (label '{scored[0]}' alone, not an average)"
        f1 = f" f1={macro['f1']:.3f}" if isinstance(macro.get("f1"), float) else ""
        figs.append(f"macro: auroc={macro['auroc']:.3f}{f1} [{over}]")
    return figs
