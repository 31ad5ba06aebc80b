"""Percentile bootstrap confidence intervals that resample patients, not rows.

Rows of one patient are correlated (several prediction times, one person), so resampling rows pretends there
is more information than there is and gives intervals that are too narrow. Here each resample draws patients
with replacement and every row of a drawn patient comes along; a patient drawn k times weighs k. Metrics that
accept ``sample_weight`` (all of :mod:`ehrseq.evaluate.metrics`) get those counts as weights, so no rows are
copied; other callables get the rows repeated.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from ehrseq.evaluate.metrics import MetricResult


@dataclass(frozen=True)
class BootstrapResult:
    """Point estimate on all rows and a percentile interval ``[lo, hi]`` at level ``1 - alpha``.

    ``n_boot_used`` counts resamples where the metric was defined; the rest were skipped (e.g. a resample with
    no positive patient). ``undefined`` holds the reason when the point estimate itself is undefined.
    """

    estimate: float | None
    lo: float | None
    hi: float | None
    n_boot: int
    n_boot_used: int
    alpha: float
    n_clusters: int
    undefined: str | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _value(result: MetricResult | float | None) -> float | None:
    if isinstance(result, MetricResult):
        return result.value
    if result is None or not math.isfinite(float(result)):
        return None
    return float(result)


def _accepts_weight(fn: Callable[..., Any]) -> bool:
    try:
        return "sample_weight" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def bootstrap_ci(
    metric_fn: Callable[..., MetricResult | float],
    y_true: Any,
    y_pred: Any,
    groups: Any | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> BootstrapResult:
    """Cluster (patient) bootstrap CI for ``metric_fn(y_true, y_pred)``.

    Args:
        metric_fn: returns a :class:`MetricResult` (or a float, NaN meaning undefined).
        y_true, y_pred: arrays whose first axis is rows, shape (n,) or (n, L).
        groups: (n,) cluster id of each row, normally ``subject_id``; None resamples rows.
        n_boot: number of resamples; 0 gives the point estimate only.
        alpha: 0.05 gives a 95% interval (2.5th and 97.5th percentiles).
        seed: seed of the numpy Generator; the same seed gives the same interval.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    n = len(y_true)
    codes = np.arange(n) if groups is None else pd.factorize(np.asarray(groups))[0]
    n_clusters = int(codes.max()) + 1 if n else 0
    point = metric_fn(y_true, y_pred)
    estimate = _value(point)
    reason = point.undefined if isinstance(point, MetricResult) else None
    if estimate is None:
        return BootstrapResult(None, None, None, n_boot, 0, alpha, n_clusters, reason or "metric undefined")
    weighted = _accepts_weight(metric_fn)
    rng = np.random.default_rng(seed)
    values: list[float] = []
    chunk = max(1, min(n_boot, 2_000_000 // max(n_clusters, 1)))  # bound the (chunk, clusters) count matrix
    done = 0
    while done < n_boot:
        size = min(chunk, n_boot - done)
        counts = rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=size)
        for row_counts in counts:
            w = row_counts[codes]
            if weighted:
                v = _value(metric_fn(y_true, y_pred, sample_weight=w))
            else:
                idx = np.repeat(np.arange(n), w)
                v = _value(metric_fn(y_true[idx], y_pred[idx]))
            if v is not None:
                values.append(v)
        done += size
    note = None
    if len(values) < n_boot:
        note = f"{n_boot - len(values)} of {n_boot} resamples skipped (metric undefined in them)"
    if not values:
        return BootstrapResult(estimate, None, None, n_boot, 0, alpha, n_clusters, None, note)
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return BootstrapResult(estimate, float(lo), float(hi), n_boot, len(values), alpha, n_clusters, None, note)
