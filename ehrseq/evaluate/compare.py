"""Several models on the same rows, side by side: each metric with its CI and its paired difference to a reference.

Site transfer is judged by comparing the model trained at site A as it is, the model adapted with a little of
site B's data, and a model trained at B alone, on the same held-out rows of B. Scored on different rows, their
figures differ by the rows as much as by the models. :func:`compare_frames` takes one evaluation frame per model
(see :mod:`ehrseq.evaluate.report` for the columns), keeps the rows every model scored, checks that the models
agree on the truth (the same task), and reports for each model and metric the estimate with a patient-bootstrap
CI, and the difference to the first (reference) model with a *paired* CI: each resample draws the same patients
for every model, so the rows' own difficulty cancels out of the difference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ehrseq.errors import DataValidationError
from ehrseq.evaluate import metrics as M
from ehrseq.evaluate.bootstrap import _accepts_weight, bootstrap_ci
from ehrseq.evaluate.columns import Task, task_spec

KEY = ["subject_id", "prediction_time"]
LOWER_IS_BETTER = {"brier", "log_loss", "mae", "rmse", "macro_brier"}


def _cols(c: Any) -> list[str]:
    return [c] if isinstance(c, str) else list(c)


def _common_rows(frames: Mapping[str, pd.DataFrame], yt: list[str], yp: list[str]) -> tuple[pd.DataFrame, dict]:
    """One frame with the truth once and each model's predictions as ``<name>::<column>``, on shared rows."""
    counts = {name: len(f) for name, f in frames.items()}
    joined: pd.DataFrame | None = None
    for name, f in frames.items():
        missing = [c for c in KEY + yt + yp if c not in f.columns]
        if missing:
            raise DataValidationError(f"predictions of '{name}' lack column(s) {', '.join(missing)}",
                                      hint="pass evaluation frames (ehrseq.scoring.prediction.Prediction.eval_frame)")
        if f.duplicated(KEY).any():
            raise DataValidationError(f"predictions of '{name}' hold a (subject_id, prediction_time) twice",
                                      n_rows=int(f.duplicated(KEY).sum()))
        part = f[KEY + yt + yp].rename(columns={c: f"{name}::{c}" for c in yt + yp})
        joined = part if joined is None else joined.merge(part, on=KEY, how="inner")
    assert joined is not None
    first = next(iter(frames))
    for name in frames:
        for c in yt:
            a, b = joined[f"{first}::{c}"].to_numpy(float), joined[f"{name}::{c}"].to_numpy(float)
            if not np.allclose(a, b, equal_nan=True):
                raise DataValidationError(
                    f"'{name}' and '{first}' disagree on the truth ({c}) of {int((~np.isclose(a, b)).sum())} "
                    "shared rows: they were built for different tasks and cannot be compared",
                    hint="compare artifacts of one task, or pass the same --labels to all of them")
    out = joined[KEY].copy()
    for c in yt:
        out[c] = joined[f"{first}::{c}"].to_numpy()
    for name in frames:
        for c in yp:
            out[f"{name}::{c}"] = joined[f"{name}::{c}"].to_numpy()
    return out.sort_values(KEY, ignore_index=True), counts


def _difference(fn: M.MetricFn, k: int) -> Callable[..., float]:
    """metric(model) - metric(reference) on a (n, 2k) prediction array [reference | model]."""
    def value(r: M.MetricResult | float) -> float:
        return float(r) if r is not None else float("nan")

    if _accepts_weight(fn):
        def diff_w(y: Any, p: Any, sample_weight: Any = None) -> float:
            p = np.asarray(p)
            return value(fn(y, _take(p[:, k:], k), sample_weight=sample_weight)) - value(
                fn(y, _take(p[:, :k], k), sample_weight=sample_weight))
        return diff_w

    def diff(y: Any, p: Any) -> float:
        p = np.asarray(p)
        return value(fn(y, _take(p[:, k:], k))) - value(fn(y, _take(p[:, :k], k)))
    return diff


def _take(p: np.ndarray, k: int) -> np.ndarray:
    return p[:, 0] if k == 1 else p


def compare_frames(frames: Mapping[str, pd.DataFrame], task: Task, *, labels: Sequence[str] | None = None,
                   n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> dict[str, Any]:
    """Compare models (name -> evaluation frame, the first is the reference) on the rows all of them scored.

    Returns ``{"task", "reference", "n_rows", "n_patients", "rows_per_model" (rows each model scored before the
    intersection), "metrics": {metric: {model: {"value", "lo", "hi", ...}}}, "difference": {metric: {model:
    {"value", "lo", "hi", ...}}} (model minus reference, paired patient bootstrap), "lower_is_better": [...]}``.
    Raises :class:`~ehrseq.errors.DataValidationError` for fewer than two models, no shared rows, or models
    that disagree on the truth.
    """
    if len(frames) < 2:
        raise DataValidationError("a comparison needs at least two models", hint="pass two or more artifacts")
    sample = next(iter(frames.values()))
    yt_c, yp_c, fns = task_spec(task, sample, labels)
    yt, yp = _cols(yt_c), _cols(yp_c)
    df, counts = _common_rows(frames, yt, yp)
    if df.empty:
        raise DataValidationError("the models share no scored row (subject_id, prediction_time)",
                                  hint="score them on the same data and split")
    groups = df["subject_id"].to_numpy()
    y = df[yt].to_numpy(float) if len(yt) > 1 else df[yt[0]].to_numpy(float)
    names = list(frames)
    ref = names[0]
    k = len(yp)

    def pred(name: str) -> np.ndarray:
        cols = [f"{name}::{c}" for c in yp]
        return df[cols].to_numpy(float) if k > 1 else df[cols[0]].to_numpy(float)

    metrics: dict[str, dict[str, Any]] = {}
    difference: dict[str, dict[str, Any]] = {}
    for mname, fn in fns.items():
        metrics[mname] = {n: bootstrap_ci(fn, y, pred(n), groups=groups, n_boot=n_boot, alpha=alpha,
                                          seed=seed).to_summary() for n in names}
        difference[mname] = {}
        for n in names[1:]:
            both = np.column_stack([pred(ref).reshape(len(df), -1), pred(n).reshape(len(df), -1)])
            difference[mname][n] = bootstrap_ci(_difference(fn, k), y, both, groups=groups, n_boot=n_boot,
                                                alpha=alpha, seed=seed).to_summary()
    return {"task": task, "reference": ref, "models": names, "n_rows": int(len(df)),
            "n_patients": int(pd.Series(groups).nunique()), "rows_per_model": counts, "metrics": metrics,
            "difference": difference, "lower_is_better": sorted(LOWER_IS_BETTER & set(fns)), "alpha": alpha,
            "n_boot": n_boot}


def _ci(m: Mapping[str, Any], signed: bool = False) -> str:
    v = m.get("value")
    if v is None:
        return "undefined"
    s = f"{v:+.3f}" if signed else f"{v:.3f}"
    if m.get("lo") is not None and m.get("hi") is not None:
        s += f" [{m['lo']:+.3f}, {m['hi']:+.3f}]" if signed else f" [{m['lo']:.3f}, {m['hi']:.3f}]"
    return s


def comparison_markdown(cmp: Mapping[str, Any]) -> str:
    """The comparison as a Markdown table: one row per model, each metric with its CI and its paired
    difference to the reference."""
    metrics = list(cmp["metrics"])
    head = ["model", *[f"{m} [{1 - cmp['alpha']:.0%} CI]" for m in metrics],
            *[f"Δ {m} vs {cmp['reference']}" for m in metrics]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in cmp["models"]:
        cells = [n, *[_ci(cmp["metrics"][m][n]) for m in metrics]]
        cells += ["(reference)" if n == cmp["reference"] else _ci(cmp["difference"][m][n], signed=True)
                  for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    lower = ", ".join(cmp["lower_is_better"]) or "none"
    per = ", ".join(f"{n} {c}" for n, c in cmp["rows_per_model"].items())
    return ("\n".join(lines) + f"\n\nAll models on the same {cmp['n_rows']} rows of {cmp['n_patients']} patients "
            f"(rows each scored before keeping the shared ones: {per}). Δ is the model minus the reference; "
            f"its interval comes from a paired patient bootstrap ({cmp['n_boot']} resamples: the same patients "
            f"for every model), so an interval that excludes 0 is a difference the rows do not explain. Lower "
            f"is better for: {lower}.\n")


__all__ = ["compare_frames", "comparison_markdown"]
