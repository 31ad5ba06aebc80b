"""Operating points and decision curves for binary risk predictions, as a clinician reads them.

At a threshold ``t`` a row is *flagged* when its predicted probability is ``>= t``. From the flagged and
unflagged rows and the truth:

* sensitivity = TP / (TP + FN): share of rows with the outcome that are flagged
* specificity = TN / (TN + FP): share of rows without the outcome that are not flagged
* PPV = TP / (TP + FP), NPV = TN / (TN + FN)
* number needed to evaluate (NNE) = 1 / PPV: flagged rows to work up to find one with the outcome

:func:`operating_points` reports these at the stored decision threshold (else 0.5, said so), at the
thresholds giving sensitivity 0.90 and 0.95 on the evaluated rows, and at the prevalence, each with a patient
bootstrap CI from :func:`ehrseq.evaluate.bootstrap.bootstrap_ci` (the threshold is held fixed across resamples;
thresholds chosen on the evaluated rows are optimistic). :func:`decision_curve` gives net benefit
(Vickers & Elkin 2006) against threshold probability, with the treat-all and treat-none references.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ehrseq.evaluate.bootstrap import bootstrap_ci
from ehrseq.evaluate.metrics import MetricResult

OPERATING_METRICS = ("sensitivity", "specificity", "ppv", "npv")
SENSITIVITY_TARGETS = (0.90, 0.95)


def _arrays(y_true: Any, y_prob: Any, sample_weight: Any | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=float).reshape(-1)
    p = np.asarray(y_prob, dtype=float).reshape(-1)
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float).reshape(-1)
    if len(p) != len(y) or len(w) != len(y):
        raise ValueError(f"y_true, y_prob and sample_weight differ in length ({len(y)}, {len(p)}, {len(w)})")
    return y, p, w


def confusion(y_true: Any, y_prob: Any, threshold: float, sample_weight: Any | None = None) -> dict[str, float]:
    """Weighted confusion matrix at ``threshold`` (flagged when ``y_prob >= threshold``): tp, fp, tn, fn."""
    y, p, w = _arrays(y_true, y_prob, sample_weight)
    flag, pos = p >= threshold, y == 1
    return {"tp": float(w[flag & pos].sum()), "fp": float(w[flag & ~pos].sum()),
            "tn": float(w[~flag & ~pos].sum()), "fn": float(w[~flag & pos].sum())}


_RATIOS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "sensitivity": (("tp",), ("tp", "fn"), "no rows with the outcome"),
    "specificity": (("tn",), ("tn", "fp"), "no rows without the outcome"),
    "ppv": (("tp",), ("tp", "fp"), "no row flagged"),
    "npv": (("tn",), ("tn", "fn"), "every row flagged"),
}


def rates(counts: dict[str, float]) -> dict[str, float | None]:
    """sensitivity, specificity, ppv, npv and nne from a confusion matrix; None where a denominator is 0."""
    out: dict[str, float | None] = {}
    for name, (num, den, _) in _RATIOS.items():
        d = sum(counts[k] for k in den)
        out[name] = sum(counts[k] for k in num) / d if d > 0 else None
    ppv = out["ppv"]
    out["nne"] = 1.0 / ppv if ppv else None
    return out


def rate_metric(name: str, threshold: float) -> Callable[..., MetricResult]:
    """A metric function ``(y_true, y_prob, sample_weight=None) -> MetricResult`` for one of
    :data:`OPERATING_METRICS` at a fixed threshold, for :func:`bootstrap_ci`."""
    num, den, why = _RATIOS[name]

    def fn(y_true: Any, y_prob: Any, sample_weight: Any | None = None) -> MetricResult:
        c = confusion(y_true, y_prob, threshold, sample_weight)
        d = sum(c[k] for k in den)
        n = len(np.asarray(y_true))
        return MetricResult(sum(c[k] for k in num) / d, None, n) if d > 0 else MetricResult(None, why, n)

    fn.__name__ = f"{name}_at_{threshold:g}"
    return fn


def threshold_for_sensitivity(y_true: Any, y_prob: Any, target: float) -> float | None:
    """The highest threshold (one of the predicted probabilities) whose sensitivity is at least ``target``
    on these rows; None without rows with the outcome."""
    y, p, _ = _arrays(y_true, y_prob, None)
    pos = np.sort(p[y == 1])[::-1]
    if len(pos) == 0:
        return None
    k = int(np.ceil(target * len(pos) - 1e-9))  # flag at least k of the positives
    return float(pos[max(k, 1) - 1])


def _ci(res: Any) -> dict[str, Any]:
    return {"estimate": res.estimate, "lo": res.lo, "hi": res.hi, "n_boot_used": res.n_boot_used,
            "undefined": res.undefined, "ci_degenerate": res.ci_degenerate}


def _nne(ppv: dict[str, Any]) -> dict[str, Any]:
    """1 / PPV; its percentile interval is the inverse of PPV's (a monotone map). Where PPV's lower limit is
    0 the upper limit has no bound: ``hi`` is None and ``unbounded_above`` True."""
    inv = [None if v is None or v <= 0 else 1.0 / v for v in (ppv["estimate"], ppv["hi"], ppv["lo"])]
    return {"estimate": inv[0], "lo": inv[1], "hi": inv[2], "n_boot_used": ppv["n_boot_used"],
            "ci_degenerate": ppv.get("ci_degenerate"), "unbounded_above": inv[1] is not None and inv[2] is None,
            "undefined": ppv["undefined"] or (None if inv[0] is not None else "PPV is 0")}


def candidate_thresholds(y_true: Any, y_prob: Any, stored: float | None) -> list[dict[str, Any]]:
    """The thresholds of the operating-point table: ``[{"rule", "threshold", "source"}]``."""
    y, p, _ = _arrays(y_true, y_prob, None)
    out = [{"rule": "stored threshold", "threshold": float(stored), "source": "stored in the artifact"}
           if stored is not None else
           {"rule": "default 0.5", "threshold": 0.5, "source": "no threshold stored; 0.5 used"}]
    for target in SENSITIVITY_TARGETS:
        t = threshold_for_sensitivity(y, p, target)
        if t is not None:
            out.append({"rule": f"sensitivity {target:.2f}", "threshold": t,
                        "source": "chosen on the evaluated rows (optimistic)"})
    if len(y):
        out.append({"rule": "prevalence", "threshold": float(y.mean()),
                    "source": "flag when the predicted risk exceeds the observed rate"})
    return out


def operating_points(y_true: Any, y_prob: Any, groups: Any | None = None, *, stored_threshold: float | None = None,
                     n_boot: int = 200, alpha: float = 0.05, seed: int = 0) -> list[dict[str, Any]]:
    """Sensitivity, specificity, PPV, NPV and NNE (1/PPV) with patient-bootstrap CIs at each threshold of
    :func:`candidate_thresholds`. Each row: rule, threshold, source, share_flagged, counts (tp, fp, tn, fn)
    and one CI dict (estimate, lo, hi, n_boot_used, undefined) per metric."""
    y, p, _ = _arrays(y_true, y_prob, None)
    rows = []
    for cand in candidate_thresholds(y, p, stored_threshold):
        t = cand["threshold"]
        counts = confusion(y, p, t)
        row: dict[str, Any] = {**cand, "share_flagged": float((p >= t).mean()) if len(p) else None,
                               "counts": {k: int(v) for k, v in counts.items()}}
        for name in OPERATING_METRICS:
            row[name] = _ci(bootstrap_ci(rate_metric(name, t), y, p, groups=groups, n_boot=n_boot, alpha=alpha,
                                         seed=seed))
        row["nne"] = _nne(row["ppv"])
        rows.append(row)
    return rows


def net_benefit(y_true: Any, y_prob: Any, thresholds: Sequence[float]) -> dict[str, list[float]]:
    """Net benefit of the model, of treating all and of treating none at each threshold probability ``pt``:
    NB = TP/n - FP/n * pt / (1 - pt), with rows flagged when ``y_prob >= pt``."""
    y, p, _ = _arrays(y_true, y_prob, None)
    n = max(len(y), 1)
    prev = float(y.mean()) if len(y) else 0.0
    model, treat_all = [], []
    for pt in thresholds:
        odds = pt / (1 - pt)
        c = confusion(y, p, pt)
        model.append(c["tp"] / n - c["fp"] / n * odds)
        treat_all.append(prev - (1 - prev) * odds)
    return {"threshold": [float(t) for t in thresholds], "model": model, "treat_all": treat_all,
            "treat_none": [0.0] * len(thresholds)}


def decision_curve(y_true: Any, y_prob: Any, max_threshold: float = 0.99, step: float = 0.01,
                   margin: float = 0.005) -> dict[str, Any]:
    """Net-benefit curves on the grid ``step .. max_threshold``, and ``useful_ranges``: the stretches of
    threshold ``[from, to]`` where the model beats both treat-all and treat-none by more than ``margin`` (net
    benefit units), longest first."""
    grid = np.round(np.arange(step, max_threshold + step / 2, step), 6)
    out: dict[str, Any] = net_benefit(y_true, y_prob, grid.tolist())
    better = [m > max(a, 0.0) + margin for m, a in zip(out["model"], out["treat_all"])]
    runs: list[list[float]] = []
    for i, b in enumerate(better):
        if b and (i == 0 or not better[i - 1]):
            runs.append([float(grid[i]), float(grid[i])])
        elif b:
            runs[-1][1] = float(grid[i])
    out["useful_ranges"] = sorted(runs, key=lambda r: r[0] - r[1])
    out["margin"] = margin
    return out
