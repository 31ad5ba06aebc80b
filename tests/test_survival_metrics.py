"""Survival metrics against brute-force references, pycox, and (when installed) scikit-survival."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import scipy.integrate

from ehrseq.errors import DataValidationError
from ehrseq.evaluate import survival as sv


def _exp_data(n: int, seed: int = 0, ties: bool = False):
    """Exponential PH data with true log-risk x0; returns (x0, durations, events, true survival frame)."""
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=n)
    t_event = rng.exponential(1.0 / np.exp(x0))
    t_cens = rng.exponential(2.0, size=n)
    t = np.minimum(t_event, t_cens)
    if ties:
        t = np.ceil(t * 4) / 4
    e = (t_event <= t_cens).astype(float)
    grid = np.unique(np.r_[t, np.linspace(0.01, t.max(), 50)])
    surv = pd.DataFrame(np.exp(-np.outer(grid, np.exp(x0))), index=grid)
    return x0, t, e, surv


def _comparable(ti, tj, ei, ej) -> bool:
    return bool(ei == 1 and (ti < tj or (ti == tj and ej == 0)))


def _harrell_reference(t, e, r) -> float:
    num = den = 0.0
    for i in range(len(t)):
        for j in range(len(t)):
            if i != j and _comparable(t[i], t[j], e[i], e[j]):
                den += 1
                num += 1.0 if r[i] > r[j] else 0.5 if r[i] == r[j] else 0.0
    return num / den


def test_harrell_c_matches_brute_force_with_tied_times_and_risks() -> None:
    x0, t, e, _ = _exp_data(120, seed=1, ties=True)
    risk = np.round(x0, 1)  # many tied risks
    assert sv.concordance_index(t, e, risk) == pytest.approx(_harrell_reference(t, e, risk), abs=1e-12)


def test_harrell_c_extremes_and_chunking(monkeypatch) -> None:
    _, t, e, _ = _exp_data(80, seed=2)
    assert sv.concordance_index(t, e, -t) == 1.0
    assert sv.concordance_index(t, e, t) == 0.0
    assert sv.concordance_index(t, e, np.zeros_like(t)) == 0.5
    monkeypatch.setattr(sv, "_CHUNK_CELLS", 7)  # force many tiny blocks
    x0 = np.random.default_rng(0).normal(size=80)
    assert sv.concordance_index(t, e, x0) == pytest.approx(_harrell_reference(t, e, x0), abs=1e-12)


def test_concordance_td_matches_brute_force_and_pycox() -> None:
    _, t, e, surv = _exp_data(90, seed=3)
    s = surv.to_numpy()
    idx = np.searchsorted(surv.index.to_numpy(), t, side="right") - 1
    num = den = 0.0
    for i in range(len(t)):
        for j in range(len(t)):
            if i != j and _comparable(t[i], t[j], e[i], e[j]):
                den += 1
                a, b = s[idx[i], i], s[idx[i], j]
                num += 1.0 if a < b else 0.5 if a == b else 0.0
    got = sv.concordance_td(t, e, surv)
    assert got == pytest.approx(num / den, abs=1e-12)
    pycox_conc = pytest.importorskip("pycox.evaluation.concordance")
    ref = pycox_conc.concordance_td(t, e.astype(int), np.ascontiguousarray(s), idx, "antolini")
    assert got == pytest.approx(ref, abs=1e-12)  # no ties in S here, so conventions agree


def test_kaplan_meier_matches_hand_computation() -> None:
    km = sv.kaplan_meier([1, 2, 2, 3, 4, 5], [1, 1, 0, 1, 0, 1])
    # t=1: 6 at risk, 1 death -> 5/6; t=2: 5 at risk, 1 death -> *4/5; t=3: 3 at risk -> *2/3; t=5: 1 -> 0
    want = np.array([5 / 6, 5 / 6 * 4 / 5, 5 / 6 * 4 / 5 * 2 / 3, 5 / 6 * 4 / 5 * 2 / 3, 0.0])
    np.testing.assert_allclose(km["survival"], want)
    assert list(km["n_at_risk"]) == [6, 5, 3, 2, 1]
    assert (km["lower"] <= km["survival"]).all() and (km["survival"] <= km["upper"]).all()


def test_brier_score_matches_brute_force_ipcw_loop() -> None:
    _, t, e, surv = _exp_data(60, seed=4, ties=True)
    grid = np.array([0.25, 0.5, 1.0])
    cens = sv.kaplan_meier(t, 1 - e)

    def g(s, left=False):
        times = cens.index.to_numpy()
        below = times[times < s] if left else times[times <= s]
        return 1.0 if len(below) == 0 else cens["survival"].loc[below[-1]]

    def s_hat(s, i):
        times = surv.index.to_numpy()
        below = np.flatnonzero(times <= s)
        return 1.0 if len(below) == 0 else surv.iat[below[-1], i]

    want = []
    for s in grid:
        total = 0.0
        for i in range(len(t)):
            if t[i] <= s and e[i] == 1:
                total += s_hat(s, i) ** 2 / g(t[i], left=True)
            elif t[i] > s:
                total += (1 - s_hat(s, i)) ** 2 / g(s)
        want.append(total / len(t))
    np.testing.assert_allclose(sv.brier_score(t, e, surv, grid).to_numpy(), want, rtol=1e-12)


def test_brier_score_agrees_with_scikit_survival() -> None:
    metrics = pytest.importorskip("sksurv.metrics")
    from sksurv.util import Surv

    _, t, e, surv = _exp_data(200, seed=5)
    grid = np.quantile(t, [0.2, 0.4, 0.6])
    y = Surv.from_arrays(e.astype(bool), t)
    est = np.stack([sv.survival_at(surv, s) for s in grid], axis=1)
    _, ref = metrics.brier_score(y, y, est, grid)
    np.testing.assert_allclose(sv.brier_score(t, e, surv, grid).to_numpy(), ref, rtol=1e-8)


def test_integrated_brier_score_works_on_this_scipy() -> None:
    """pycox 0.3.0's IBS calls scipy.integrate.simps, which current SciPy removed; ours must still work."""
    x0, t, e, surv = _exp_data(300, seed=6)
    ibs_true = sv.integrated_brier_score(t, e, surv)
    km = sv.kaplan_meier(t, e)
    null = pd.DataFrame(np.repeat(km["survival"].to_numpy()[:, None], len(t), axis=1), index=km.index)
    ibs_null = sv.integrated_brier_score(t, e, null)
    assert np.isfinite(ibs_true) and 0.0 <= ibs_true <= 0.25
    assert ibs_true < ibs_null <= 0.25
    if not hasattr(scipy.integrate, "simps"):
        from pycox.evaluation import EvalSurv

        ev = EvalSurv(surv, t, e.astype(int), censor_surv="km")
        with pytest.raises(AttributeError, match="simps"):
            ev.integrated_brier_score(sv.default_time_grid(t))


def test_calibration_at_horizon_of_true_model_is_close() -> None:
    _, t, e, surv = _exp_data(1000, seed=7)
    cal = sv.calibration_at_horizon(t, e, surv, horizon=0.5, n_groups=5)
    assert list(cal.columns) == [
        "risk_group", "n", "n_events", "predicted", "observed", "observed_lower", "observed_upper"
    ]
    assert cal["n"].sum() == 1000 and (cal["n"] == 200).all()
    assert (np.diff(cal["predicted"]) < 0).all()  # group 0 = lowest risk
    assert np.abs(cal["predicted"] - cal["observed"]).max() < 0.08


def test_metrics_reject_mismatched_or_invalid_labels() -> None:
    with pytest.raises(DataValidationError, match="different lengths"):
        sv.concordance_index([1.0, 2.0], [1, 0, 1], [0.1, 0.2])
    with pytest.raises(DataValidationError, match="events must be 0/1"):
        sv.concordance_index([1.0, 2.0], [1, 2], [0.1, 0.2])
    with pytest.raises(DataValidationError, match="no comparable pairs"):
        sv.concordance_index([1.0, 2.0], [0, 0], [0.1, 0.2])
    with pytest.raises(DataValidationError, match="columns"):
        sv.concordance_td([1.0, 2.0], [1, 0], pd.DataFrame(np.ones((2, 3)), index=[1.0, 2.0]))


def test_plots_write_png_files(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    x0, t, e, surv = _exp_data(150, seed=8)
    p1 = sv.plot_survival_by_risk_group(t, e, x0, tmp_path / "km.png")
    cal = sv.calibration_at_horizon(t, e, surv, 0.5, n_groups=5)
    p2 = sv.plot_calibration(cal, tmp_path / "cal.png", horizon=0.5)
    for p in (p1, p2):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_without_matplotlib_name_the_extra(monkeypatch, tmp_path) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install ehrseq\[plots\]"):
        sv.plot_survival_by_risk_group([1.0, 2.0], [1, 0], [0.1, 0.2], tmp_path / "x.png")


def _few_comparable():
    """4 patients: one event (t=5) comparable only with patient 3 (followed to t=10); resamples without
    patient 3 but with patient 0 have events and no comparable pair."""
    y = np.array([[5.0, 1], [1.0, 0], [2.0, 0], [10.0, 0]])
    return y, np.array([0.9, 0.1, 0.2, 0.3])


def test_bootstrap_of_harrell_c_skips_resamples_without_comparable_pairs() -> None:
    from ehrseq.evaluate.bootstrap import bootstrap_ci
    from ehrseq.recipes.survival import _c_index  # what finetune --target survival bootstraps

    y, risk = _few_comparable()
    res = bootstrap_ci(_c_index, y, risk, groups=np.arange(4), n_boot=200, seed=0)
    assert res.estimate == 1.0
    assert "no comparable pairs" in res.note and res.n_boot_used < 200
    assert res.lo is None and "resamples had the metric defined" in res.ci_undefined
    same = bootstrap_ci(sv.harrell_c, y, risk, groups=np.arange(4), n_boot=200, seed=0)
    assert (same.estimate, same.n_boot_used) == (res.estimate, res.n_boot_used)


def test_harrell_c_result_weights_equal_repeated_rows_and_undefined_is_not_an_error() -> None:
    x0, t, e, _ = _exp_data(120, seed=5, ties=True)
    y = np.stack([t, e], axis=1)
    w = np.random.default_rng(0).integers(0, 4, len(t))
    idx = np.repeat(np.arange(len(t)), w)
    assert sv.harrell_c(y, x0, w).value == pytest.approx(sv.concordance_index(t[idx], e[idx], x0[idx]), abs=1e-12)
    assert sv.harrell_c(y, x0).value == pytest.approx(sv.concordance_index(t, e, x0), abs=1e-12)
    none = sv.harrell_c(np.array([[1.0, 0], [2.0, 0]]), [0.1, 0.2])
    assert none.value is None and none.undefined == "no events"
    late = sv.harrell_c(np.array([[3.0, 1], [1.0, 0]]), [0.1, 0.2])
    assert late.value is None and "no comparable pairs" in late.undefined


def test_survival_point_metrics_without_comparable_pairs_are_undefined_not_raised() -> None:
    from ehrseq.errors import UndefinedMetricError

    t, e = np.array([3.0, 1.0]), np.array([1, 0])
    surv = pd.DataFrame([[0.9, 0.8], [0.5, 0.7]], index=[1.0, 3.0])
    with pytest.raises(UndefinedMetricError, match="no comparable pairs"):
        sv.concordance_td(t, e, surv)
    res = sv.as_metric_result(sv.concordance_td, t, e, surv)
    assert res.value is None and "no comparable pairs" in res.undefined
    flat = sv.as_metric_result(sv.integrated_brier_score, [2.0, 2.0], [1, 0], surv)
    assert flat.value is None and "two increasing times" in flat.undefined
    assert sv.as_metric_result(sv.concordance_index, [1.0, 2.0], [1, 0], [0.9, 0.1]).value == 1.0


def test_the_default_time_grid_is_strictly_increasing_when_most_rows_share_one_duration() -> None:
    grid = sv.default_time_grid(np.full(20, 0.5))  # every row censored at a 0.5-day horizon
    assert grid.tolist() == [0.5]  # one time, not 100 copies of it (which predict_survival refuses)
    g2 = sv.default_time_grid(np.r_[np.full(19, 0.5), 0.2])  # one earlier event: a proper grid from 0.2
    assert len(g2) == 100 and (np.diff(g2) > 0).all()
    surv = pd.DataFrame(np.full((1, 20), 0.8), index=grid)
    res = sv.as_metric_result(sv.integrated_brier_score, np.full(20, 0.5), np.r_[1, np.zeros(19)], surv)
    assert res.value is None and "two increasing times" in res.undefined
