"""Metrics agree with sklearn, never raise on undefined input, and the bootstrap resamples patients."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn import metrics as skm

from ehrseq.evaluate import metrics as M
from ehrseq.evaluate.bootstrap import bootstrap_ci


def _binary(n: int = 500, seed: int = 0, ties: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(rng.random(n) * 0.8 + 0.15 * y + 0.02, 0.01, 0.99)
    if ties:
        p = np.round(p, 1)
    w = rng.integers(0, 4, n).astype(float)
    return y, p, w


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_metrics_match_sklearn(ties: bool, weighted: bool) -> None:
    y, p, w = _binary(ties=ties)
    sw = w if weighted else None
    assert M.auroc(y, p, sw).value == pytest.approx(skm.roc_auc_score(y, p, sample_weight=sw), abs=1e-10)
    assert M.auprc(y, p, sw).value == pytest.approx(
        skm.average_precision_score(y, p, sample_weight=sw), abs=1e-10
    )
    assert M.brier(y, p, sw).value == pytest.approx(skm.brier_score_loss(y, p, sample_weight=sw), abs=1e-10)
    assert M.log_loss(y, p, sw).value == pytest.approx(skm.log_loss(y, p, sample_weight=sw), abs=1e-10)


def test_integer_weights_equal_row_duplication() -> None:
    y, p, w = _binary(ties=True)
    idx = np.repeat(np.arange(len(y)), w.astype(int))
    for fn in (M.auroc, M.auprc, M.brier, M.log_loss):
        assert fn(y, p, w).value == pytest.approx(fn(y[idx], p[idx]).value, abs=1e-12)


def test_regression_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=300)
    yp = y + rng.normal(scale=0.5, size=300)
    assert M.mae(y, yp).value == pytest.approx(skm.mean_absolute_error(y, yp), abs=1e-10)
    assert M.rmse(y, yp).value == pytest.approx(np.sqrt(skm.mean_squared_error(y, yp)), abs=1e-10)
    assert M.r2(y, yp).value == pytest.approx(skm.r2_score(y, yp), abs=1e-10)


def test_multilabel_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, (400, 5))
    y[np.arange(400), rng.integers(0, 5, 400)] = 1  # every row has a positive (sklearn scores empty rows as 0)
    s = np.round(np.clip(rng.random((400, 5)) + 0.3 * y, 0, 1), 2)  # with ties inside rows
    assert M.macro_auroc(y, s).value == pytest.approx(skm.roc_auc_score(y, s, average="macro"), abs=1e-10)
    assert M.macro_auprc(y, s).value == pytest.approx(skm.average_precision_score(y, s, average="macro"), abs=1e-10)
    assert M.samples_average_precision(y, s).value == pytest.approx(
        skm.average_precision_score(y, s, average="samples"), abs=1e-10
    )
    labels = list("abcde")
    per = M.per_label(M.auroc, y, s, labels=labels)
    assert list(per) == labels
    assert per["c"].value == pytest.approx(skm.roc_auc_score(y[:, 2], s[:, 2]), abs=1e-10)


@pytest.mark.parametrize(
    ("y", "p", "reason"),
    [
        ([], [], "empty"),
        ([0, 0, 0], [0.1, 0.2, 0.3], "all 0"),
        ([1, 1], [0.1, 0.2], "all 1"),
        ([0, 1], [0.1, np.nan], "non-finite"),
        ([0, 2], [0.1, 0.2], "other than 0 and 1"),
        ([0, 1, 1], [0.1, 0.2], "same"),
    ],
)
def test_undefined_auroc_returns_reason_instead_of_raising(y: list, p: list, reason: str) -> None:
    res = M.auroc(y, p)
    assert res.value is None and not res.defined
    assert reason in res.undefined
    assert np.isnan(float(res))
    assert res.to_dict()["value"] is None


def test_macro_skips_undefined_labels_with_note() -> None:
    y = np.array([[0, 1], [1, 1], [0, 1], [1, 1]])
    s = np.array([[0.1, 0.5], [0.9, 0.4], [0.2, 0.3], [0.7, 0.9]])
    res = M.macro_auroc(y, s)
    assert res.value == pytest.approx(1.0)
    assert "1/2 labels" in res.note
    assert M.macro_auroc(np.ones((3, 2)), np.ones((3, 2))).value is None


def test_bootstrap_point_estimate_equals_metric_and_is_reproducible() -> None:
    y, p, _ = _binary(300)
    groups = np.arange(300) // 3
    a = bootstrap_ci(M.auroc, y, p, groups=groups, n_boot=200, seed=7)
    b = bootstrap_ci(M.auroc, y, p, groups=groups, n_boot=200, seed=7)
    assert a.estimate == M.auroc(y, p).value
    assert a == b
    assert a.lo < a.estimate < a.hi
    assert a.n_boot_used == 200 and a.n_clusters == 100


def test_patient_bootstrap_is_wider_than_row_bootstrap_for_correlated_rows() -> None:
    # 150 patients x 10 rows; label and score are mostly patient-level, so rows of a patient are near copies
    rng = np.random.default_rng(3)
    n_pat, k = 150, 10
    pid = np.repeat(np.arange(n_pat), k)
    y_pat = rng.integers(0, 2, n_pat)
    score_pat = rng.normal(size=n_pat) + 0.8 * y_pat
    y = y_pat[pid]
    s = score_pat[pid] + rng.normal(scale=0.05, size=n_pat * k)
    by_patient = bootstrap_ci(M.auroc, y, s, groups=pid, n_boot=300, seed=0)
    by_row = bootstrap_ci(M.auroc, y, s, groups=None, n_boot=300, seed=0)
    assert by_patient.estimate == by_row.estimate == M.auroc(y, s).value
    width_patient = by_patient.hi - by_patient.lo
    width_row = by_row.hi - by_row.lo
    assert width_patient > 2 * width_row


def test_bootstrap_skips_undefined_resamples_and_counts_them() -> None:
    y = np.array([1] + [0] * 19)  # one positive patient: many resamples have none
    p = np.linspace(0, 1, 20)
    res = bootstrap_ci(M.auroc, y, p, groups=np.arange(20), n_boot=200, seed=0)
    assert 0 < res.n_boot_used < 200
    assert "skipped" in res.note


def test_bootstrap_of_undefined_metric_does_not_raise() -> None:
    res = bootstrap_ci(M.auroc, [0, 0, 0], [0.1, 0.2, 0.3], groups=[1, 1, 2], n_boot=50)
    assert res.estimate is None and res.lo is None and "one class" in res.undefined


def test_bootstrap_accepts_plain_float_metric_without_weights() -> None:
    y, p, _ = _binary(200)
    res = bootstrap_ci(skm.roc_auc_score, y, p, groups=np.arange(200) // 2, n_boot=100)
    weighted = bootstrap_ci(M.auroc, y, p, groups=np.arange(200) // 2, n_boot=100)
    assert res.estimate == pytest.approx(weighted.estimate, abs=1e-12)
    assert res.lo == pytest.approx(weighted.lo, abs=1e-12)  # same draws, duplication == weights


def test_thousand_patient_resamples_of_auroc_on_5k_rows_take_seconds() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 5000)
    p = rng.random(5000) + 0.2 * y
    t0 = time.perf_counter()
    res = bootstrap_ci(M.auroc, y, p, groups=rng.integers(0, 1500, 5000), n_boot=1000)
    assert time.perf_counter() - t0 < 10
    assert res.n_boot_used == 1000


def test_curve_points_are_thinned_and_monotone() -> None:
    y, p, _ = _binary(2000)
    roc = M.roc_curve_points(y, p, max_points=100)
    assert len(roc["fpr"]) <= 100 and roc["fpr"][0] == 0 and roc["tpr"][-1] == 1
    assert np.all(np.diff(roc["fpr"]) >= 0)
    assert M.roc_curve_points([0, 0], [0.1, 0.2]) is None
    assert M.pr_curve_points(y, p)["recall"][-1] == 1


def test_too_few_defined_resamples_leave_the_interval_undefined_but_keep_the_estimate() -> None:
    y = np.array([1] + [0] * 19)  # one positive patient: about a third of the resamples have none
    p = np.linspace(0, 1, 20)
    res = bootstrap_ci(M.auroc, y, p, groups=np.arange(20), n_boot=200, seed=0)
    assert res.estimate == M.auroc(y, p).value
    assert res.lo is None and res.hi is None
    assert f"only {res.n_boot_used} of 200 resamples" in res.ci_undefined
    assert "only one class (all 0) in y_true: " in res.note  # skipped resamples are counted by reason
    summary = res.to_summary()
    assert summary["value"] == res.estimate and summary["lo"] is None and "ci_undefined" in summary
    # a lower bar reports the interval over the defined resamples
    loose = bootstrap_ci(M.auroc, y, p, groups=np.arange(20), n_boot=200, seed=0, min_defined=0.5)
    assert loose.lo is not None and loose.ci_undefined is None


def test_a_metric_that_raises_in_a_resample_is_skipped_and_counted_not_a_crash() -> None:
    from ehrseq.errors import UndefinedMetricError

    def picky(y_true, y_pred, sample_weight=None):  # undefined (raises) when patient 0 is not drawn
        if sample_weight is not None and sample_weight[0] == 0:
            raise UndefinedMetricError("patient 0 missing")
        return M.auroc(y_true, y_pred, sample_weight)

    y, p, _ = _binary(40)
    res = bootstrap_ci(picky, y, p, groups=np.arange(40), n_boot=100, seed=1)
    assert res.estimate == M.auroc(y, p).value
    assert 50 < res.n_boot_used < 100  # P(patient 0 drawn) = 1 - (39/40)**40 ~ 0.64
    assert f"{100 - res.n_boot_used} of 100 resamples skipped" in res.note and "patient 0 missing" in res.note


def test_a_point_estimate_that_raises_undefined_is_reported_with_its_reason() -> None:
    from ehrseq.errors import UndefinedMetricError

    def never(y_true, y_pred):
        raise UndefinedMetricError("no comparable pairs")

    res = bootstrap_ci(never, [0, 1], [0.2, 0.4], n_boot=10)
    assert res.estimate is None and res.undefined == "no comparable pairs"
