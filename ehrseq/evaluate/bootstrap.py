"""Percentile bootstrap confidence intervals that resample patients, not rows.

Rows of one patient are correlated (several prediction times, one person), so resampling rows pretends there
is more information than there is and gives intervals that are too narrow. Here each resample draws patients
with replacement and every row of a drawn patient comes along; a patient drawn k times weighs k. Metrics that
accept ``sample_weight`` (all of :mod:`ehrseq.evaluate.metrics`) get those counts as weights, so no rows are
copied; other callables get the rows repeated.

A resample where the metric is undefined (an undefined :class:`MetricResult`, NaN, or a ``ValueError`` such as
:class:`~ehrseq.errors.UndefinedMetricError` "no comparable pairs") is skipped and counted, never a crash. When
fewer than ``min_defined`` of the resamples are defined the interval is reported as undefined (``lo`` and
``hi`` None, ``ci_undefined`` saying why) while the point estimate is kept: an interval over only the resamples
where the metric happens to exist would be biased.

An interval of no width (``lo == hi``, e.g. AP 1.000 [1.000, 1.000] on a handful of rows) is not certainty: it
means the rows are too few for resampling to move the figure. It keeps its numbers and ``ci_degenerate``
says why (:data:`DEGENERATE_ALL` when every resample gave the same value); the report and the printed
summaries show that reason instead of the interval.
"""

from __future__ import annotations

import inspect
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from ehrseq.errors import UndefinedMetricError
from ehrseq.evaluate.metrics import MetricResult

# what a metric raises on a resample where it is not defined (the point estimate on the same rows succeeded)
UNDEFINED_IN_RESAMPLE = (ValueError, ZeroDivisionError, FloatingPointError)
MIN_DEFINED = 0.8  # share of resamples that must be defined for an interval to be reported
DEGENERATE_ALL = "every resample identical: too few rows, or predictions that do not vary"
DEGENERATE_MOST = "most resamples identical, so the interval has no width: too few rows"


@dataclass(frozen=True)
class BootstrapResult:
    """Point estimate on all rows and a percentile interval ``[lo, hi]`` at level ``1 - alpha``.

    ``n_boot_used`` counts resamples where the metric was defined; the rest were skipped (e.g. a resample with
    no positive patient) and ``note`` says how many and why. ``undefined`` holds the reason when the point
    estimate itself is undefined; ``ci_undefined`` the reason when the interval is (too few defined resamples,
    or none asked for), with ``lo`` and ``hi`` None. ``ci_degenerate`` is set when ``lo == hi`` (see the
    module docstring). ``note`` also carries the point estimate's own note (e.g. "macro over 2/4 labels").
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
    ci_undefined: str | None = None
    ci_degenerate: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Every field, as a plain dict."""
        return asdict(self)

    def to_summary(self) -> dict[str, Any]:
        """The metrics.json form: ``{"value", "lo", "hi"}`` plus ``undefined`` / ``ci_undefined`` /
        ``ci_degenerate`` / ``note`` / ``n_boot_used`` where they carry something."""
        out: dict[str, Any] = {"value": self.estimate, "lo": self.lo, "hi": self.hi}
        if self.undefined:
            out["undefined"] = self.undefined
        if self.ci_undefined:
            out["ci_undefined"] = self.ci_undefined
        if self.ci_degenerate:
            out["ci_degenerate"] = self.ci_degenerate
        if self.note:
            out["note"] = self.note
        if self.n_boot:
            out["n_boot_used"] = self.n_boot_used
        return out


def _value(result: MetricResult | float | None) -> float | None:
    if isinstance(result, MetricResult):
        return result.value
    if result is None or not math.isfinite(float(result)):
        return None
    return float(result)


def _reason(result: MetricResult | float | None) -> str:
    if isinstance(result, MetricResult) and result.undefined:
        return result.undefined
    return "metric not finite"


def _exception_reason(e: Exception) -> str:
    problem = getattr(e, "problem", None)  # DataValidationError and its UndefinedMetricError
    if problem:
        return str(problem)
    first = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _skipped_note(skipped: Counter[str], n_boot: int) -> str | None:
    n = sum(skipped.values())
    if not n:
        return None
    why = "; ".join(f"{r}: {k}" for r, k in skipped.most_common(3))
    more = f"; {len(skipped) - 3} other reason(s)" if len(skipped) > 3 else ""
    return f"{n} of {n_boot} resamples skipped (metric undefined in them: {why}{more})"


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
    min_defined: float = MIN_DEFINED,
) -> BootstrapResult:
    """Cluster (patient) bootstrap CI for ``metric_fn(y_true, y_pred)``.

    Args:
        metric_fn: returns a :class:`MetricResult` (or a float, NaN meaning undefined).
        y_true, y_pred: arrays whose first axis is rows, shape (n,) or (n, L).
        groups: (n,) cluster id of each row, normally ``subject_id``; None resamples rows.
        n_boot: number of resamples; 0 gives the point estimate only.
        alpha: 0.05 gives a 95% interval (2.5th and 97.5th percentiles).
        seed: seed of the numpy Generator; the same seed gives the same interval.
        min_defined: share of the resamples in which the metric must be defined for ``[lo, hi]`` to be
            reported; below it the interval is None and ``ci_undefined`` says why.

    A point estimate that raises :class:`~ehrseq.errors.UndefinedMetricError` is reported undefined with its
    message; a resample that raises it (or another ValueError) is skipped and counted in ``note``.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    n = len(y_true)
    codes = np.arange(n) if groups is None else pd.factorize(np.asarray(groups))[0]
    n_clusters = int(codes.max()) + 1 if n else 0
    try:
        point: MetricResult | float | None = metric_fn(y_true, y_pred)
    except UndefinedMetricError as e:
        point = MetricResult(None, e.problem, n)
    estimate = _value(point)
    reason = point.undefined if isinstance(point, MetricResult) else None
    if estimate is None:
        return BootstrapResult(None, None, None, n_boot, 0, alpha, n_clusters, reason or "metric undefined")
    weighted = _accepts_weight(metric_fn)
    rng = np.random.default_rng(seed)
    values: list[float] = []
    skipped: Counter[str] = Counter()
    chunk = max(1, min(n_boot, 2_000_000 // max(n_clusters, 1)))  # bound the (chunk, clusters) count matrix
    done = 0
    while done < n_boot:
        size = min(chunk, n_boot - done)
        counts = rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=size)
        for row_counts in counts:
            w = row_counts[codes]
            try:
                if weighted:
                    r = metric_fn(y_true, y_pred, sample_weight=w)
                else:
                    idx = np.repeat(np.arange(n), w)
                    r = metric_fn(y_true[idx], y_pred[idx])
            except UNDEFINED_IN_RESAMPLE as e:
                skipped[_exception_reason(e)] += 1
                continue
            v = _value(r)
            if v is None:
                skipped[_reason(r)] += 1
            else:
                values.append(v)
        done += size
    own = point.note if isinstance(point, MetricResult) else None
    note = "; ".join(x for x in (own, _skipped_note(skipped, n_boot)) if x) or None
    if n_boot <= 0:
        return BootstrapResult(estimate, None, None, n_boot, 0, alpha, n_clusters, None, own,
                               "no resamples asked for (n_boot=0)")
    if not values or len(values) < min_defined * n_boot:
        why = (f"only {len(values)} of {n_boot} resamples had the metric defined (fewer than {min_defined:.0%}); "
               "an interval over those alone would be biased")
        return BootstrapResult(estimate, None, None, n_boot, len(values), alpha, n_clusters, None, note, why)
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    degenerate = None
    if hi - lo <= 1e-12 * max(1.0, abs(float(lo))):
        degenerate = DEGENERATE_ALL if np.ptp(values) == 0 else DEGENERATE_MOST
    return BootstrapResult(estimate, float(lo), float(hi), n_boot, len(values), alpha, n_clusters, None, note,
                           None, degenerate)
