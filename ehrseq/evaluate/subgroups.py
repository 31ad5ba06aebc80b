"""Subgroup report card: every metric by group, with patient-bootstrap CIs and the gap to the overall figure.

Groups with fewer than ``min_group_size`` distinct patients are suppressed: no metrics and no exact count are
shown (small cells can identify people and their metrics are noise anyway).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ehrseq.evaluate.bootstrap import bootstrap_ci
from ehrseq.evaluate.metrics import MetricFn

MISSING = "missing"


def age_band(ages: Any, edges: Sequence[float] = (0, 40, 60, 75, 200)) -> pd.Series:
    """Bucket ages (years) into labelled bands ``[edge_i, edge_i+1)``: "0-39", "40-59", "60-74", "75+".

    The last band is written "lo+" when its upper edge is 120 or more. Ages that are missing or outside the
    edges become "missing". Returns a string Series aligned with ``ages``.
    """
    a = pd.Series(np.asarray(ages, dtype=float), index=getattr(ages, "index", None))
    e = list(edges)
    labels = []
    for i, (lo, hi) in enumerate(zip(e[:-1], e[1:])):
        last = i == len(e) - 2
        labels.append(f"{lo:g}+" if last and hi >= 120 else f"{lo:g}-{hi - 1:g}")
    bands = pd.cut(a, bins=e, right=False, labels=labels)
    return bands.astype(object).where(bands.notna(), MISSING).astype(str)


def _columns(df: pd.DataFrame, cols: str | Sequence[str]) -> np.ndarray:
    return df[cols].to_numpy(dtype=float) if isinstance(cols, str) else df[list(cols)].to_numpy(dtype=float)


def _ci_dict(res: Any, overall: float | None) -> dict[str, Any]:
    est = res.estimate
    return {
        "estimate": est,
        "lo": res.lo,
        "hi": res.hi,
        "gap": None if est is None or overall is None else est - overall,
        "n_boot_used": res.n_boot_used,
        "undefined": res.undefined,
        "note": res.note,
        "ci_degenerate": res.ci_degenerate,
    }


def metrics_with_ci(
    df: pd.DataFrame,
    metrics: Mapping[str, MetricFn],
    *,
    y_true: str | Sequence[str] = "y_true",
    y_pred: str | Sequence[str] = "y_pred",
    subject_col: str = "subject_id",
    n_boot: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    overall: Mapping[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Each metric on ``df`` with a patient-bootstrap CI; ``gap`` is relative to ``overall`` when given."""
    yt, yp = _columns(df, y_true), _columns(df, y_pred)
    groups = df[subject_col].to_numpy()
    out = {}
    for name, fn in metrics.items():
        res = bootstrap_ci(fn, yt, yp, groups=groups, n_boot=n_boot, alpha=alpha, seed=seed)
        ref = None if overall is None else overall.get(name, {}).get("estimate")
        out[name] = _ci_dict(res, ref)
    return out


def subgroup_card(
    df: pd.DataFrame,
    metrics: Mapping[str, MetricFn],
    group_columns: Sequence[str],
    *,
    y_true: str | Sequence[str] = "y_true",
    y_pred: str | Sequence[str] = "y_pred",
    subject_col: str = "subject_id",
    min_group_size: int = 30,
    n_boot: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics overall and for every value of every group column.

    Returns ``{"min_group_size", "alpha", "overall": {metric: ci}, "rows": [...]}`` where each row is
    ``{"column", "group", "n_patients", "n_rows", "suppressed", "note", "metrics"}``; suppressed rows have
    ``n_patients``/``n_rows`` None, ``note`` "suppressed (n<30)" and no metrics. A patient whose rows fall in
    several groups (e.g. age bands over time) counts in each.
    """
    kw = dict(y_true=y_true, y_pred=y_pred, subject_col=subject_col, n_boot=n_boot, alpha=alpha, seed=seed)
    overall = metrics_with_ci(df, metrics, **kw)  # type: ignore[arg-type]
    rows: list[dict[str, Any]] = []
    for col in group_columns:
        if col not in df.columns:
            rows.append({"column": col, "group": None, "n_patients": None, "n_rows": None,
                         "suppressed": False, "note": f"column '{col}' not in predictions", "metrics": {}})
            continue
        values = df[col].astype(object).where(df[col].notna(), MISSING).astype(str)
        for group in sorted(values.unique()):
            sub = df[values.to_numpy() == group]
            n_patients = int(sub[subject_col].nunique())
            if n_patients < min_group_size:
                rows.append({"column": col, "group": group, "n_patients": None, "n_rows": None,
                             "suppressed": True, "note": f"suppressed (n<{min_group_size})", "metrics": {}})
                continue
            rows.append({
                "column": col,
                "group": group,
                "n_patients": n_patients,
                "n_rows": int(len(sub)),
                "suppressed": False,
                "note": None,
                "metrics": metrics_with_ci(sub, metrics, overall=overall, **kw),  # type: ignore[arg-type]
            })
    return {"min_group_size": min_group_size, "alpha": alpha, "overall": overall, "rows": rows}


def card_to_frame(card: Mapping[str, Any], digits: int = 3) -> pd.DataFrame:
    """Flatten a subgroup card to one row per group with "est [lo, hi]" and gap columns per metric."""
    records = []
    for row in card["rows"]:
        rec: dict[str, Any] = {"column": row["column"], "group": row["group"],
                               "patients": row["n_patients"] if not row["suppressed"] else row["note"]}
        for name, m in row["metrics"].items():
            rec[name] = format_ci(m, digits)
            rec[f"{name} gap"] = "" if m["gap"] is None else f"{m['gap']:+.{digits}f}"
        if row["note"] and not row["suppressed"]:
            rec["patients"] = row["note"]
        records.append(rec)
    return pd.DataFrame.from_records(records)


def format_ci(m: Mapping[str, Any], digits: int = 3) -> str:
    """'0.812 [0.790, 0.833]', or the reason a value is missing; an interval of no width is replaced by why
    ('1.000 [every resample identical: too few rows]')."""
    if m.get("estimate") is None:
        return f"undefined: {m.get('undefined') or 'n/a'}"
    if m.get("lo") is None:
        return f"{m['estimate']:.{digits}f}"
    if m.get("ci_degenerate"):
        return f"{m['estimate']:.{digits}f} [{m['ci_degenerate']}]"
    return f"{m['estimate']:.{digits}f} [{m['lo']:.{digits}f}, {m['hi']:.{digits}f}]"
