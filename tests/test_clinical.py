"""Operating points and decision curves against a confusion matrix worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from ehrseq.evaluate.clinical import (
    candidate_thresholds,
    confusion,
    decision_curve,
    net_benefit,
    operating_points,
    rates,
    threshold_for_sensitivity,
)

# 10 rows. At threshold 0.5 the flagged rows are p >= 0.5: 0.9 0.8 0.7 0.6 0.5
#   y:  1    1    0    1    0      -> TP 3 (0.9, 0.8, 0.6), FP 2 (0.7, 0.5)
# unflagged 0.4 0.3 0.2 0.1 0.05
#   y:  1    0    0    0    0      -> FN 1 (0.4), TN 4
# sensitivity 3/4, specificity 4/6, PPV 3/5, NPV 4/5, NNE 5/3
Y = np.array([1, 1, 0, 1, 0, 1, 0, 0, 0, 0])
P = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
PATIENTS = np.arange(10)


def test_confusion_and_rates_match_the_hand_count() -> None:
    c = confusion(Y, P, 0.5)
    assert c == {"tp": 3, "fp": 2, "tn": 4, "fn": 1}
    r = rates(c)
    assert r["sensitivity"] == pytest.approx(3 / 4) and r["specificity"] == pytest.approx(4 / 6)
    assert r["ppv"] == pytest.approx(3 / 5) and r["npv"] == pytest.approx(4 / 5)
    assert r["nne"] == pytest.approx(5 / 3)
    # weights act as repeated rows: doubling the first row adds one TP
    assert confusion(Y, P, 0.5, sample_weight=[2, 1, 1, 1, 1, 1, 1, 1, 1, 1])["tp"] == 4


def test_rates_are_none_where_a_denominator_is_zero() -> None:
    r = rates(confusion(Y, P, 0.95))  # nothing flagged
    assert r["ppv"] is None and r["nne"] is None and r["sensitivity"] == 0 and r["npv"] == pytest.approx(6 / 10)


def test_threshold_for_sensitivity_is_the_highest_that_reaches_it() -> None:
    # positives sorted: 0.9 0.8 0.6 0.4. Sensitivity >= 0.75 needs 3 of 4 -> threshold 0.6; 0.9 needs all -> 0.4
    assert threshold_for_sensitivity(Y, P, 0.75) == pytest.approx(0.6)
    assert threshold_for_sensitivity(Y, P, 0.90) == pytest.approx(0.4)
    assert rates(confusion(Y, P, 0.4))["sensitivity"] == 1.0
    assert threshold_for_sensitivity(np.zeros(3), [0.1, 0.2, 0.3], 0.9) is None


def test_candidate_thresholds_say_where_each_comes_from() -> None:
    default = candidate_thresholds(Y, P, None)
    assert [c["rule"] for c in default] == ["default 0.5", "sensitivity 0.90", "sensitivity 0.95", "prevalence"]
    assert default[0]["threshold"] == 0.5 and "no threshold stored" in default[0]["source"]
    assert default[-1]["threshold"] == pytest.approx(0.4)  # prevalence 4/10
    stored = candidate_thresholds(Y, P, 0.65)
    assert stored[0] == {"rule": "stored threshold", "threshold": 0.65, "source": "stored in the artifact"}


def test_operating_points_carry_hand_computed_estimates_and_bootstrap_cis() -> None:
    rows = operating_points(Y, P, PATIENTS, stored_threshold=0.5, n_boot=200, seed=1)
    first = rows[0]
    assert first["counts"] == {"tp": 3, "fp": 2, "tn": 4, "fn": 1} and first["share_flagged"] == 0.5
    for name, want in (("sensitivity", 3 / 4), ("specificity", 4 / 6), ("ppv", 3 / 5), ("npv", 4 / 5),
                       ("nne", 5 / 3)):
        m = first[name]
        assert m["estimate"] == pytest.approx(want), name
        assert m["lo"] is not None and m["lo"] <= m["estimate"] <= m["hi"], name
    # NNE's interval is the inverse of PPV's
    assert first["nne"]["lo"] == pytest.approx(1 / first["ppv"]["hi"])
    assert first["nne"]["hi"] == pytest.approx(1 / first["ppv"]["lo"])
    prevalence_row = rows[-1]
    assert prevalence_row["rule"] == "prevalence" and prevalence_row["counts"] == {"tp": 4, "fp": 2, "tn": 4, "fn": 0}


def test_operating_points_resample_patients_not_rows() -> None:
    y, p = np.repeat(Y, 5), np.repeat(P, 5)
    by_patient = operating_points(y, p, np.repeat(PATIENTS, 5), n_boot=300, seed=0)[0]["sensitivity"]
    by_row = operating_points(y, p, None, n_boot=300, seed=0)[0]["sensitivity"]
    assert by_patient["estimate"] == by_row["estimate"] == pytest.approx(3 / 4)
    assert by_patient["hi"] - by_patient["lo"] > by_row["hi"] - by_row["lo"]  # 10 patients, not 50 rows


def test_net_benefit_matches_the_formula() -> None:
    nb = net_benefit(Y, P, [0.5, 0.2])
    # pt 0.5: TP 3, FP 2, odds 1 -> 3/10 - 2/10 = 0.1; treat all: 0.4 - 0.6 = -0.2
    assert nb["model"][0] == pytest.approx(0.1) and nb["treat_all"][0] == pytest.approx(-0.2)
    # pt 0.2: flagged p >= 0.2 -> TP 4, FP 4, odds 0.25 -> 0.4 - 0.1 = 0.3; treat all: 0.4 - 0.15 = 0.25
    assert nb["model"][1] == pytest.approx(0.3) and nb["treat_all"][1] == pytest.approx(0.25)
    assert nb["treat_none"] == [0.0, 0.0]


def test_decision_curve_finds_where_the_model_helps() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(size=4000)
    y = (rng.uniform(size=4000) < p).astype(int)  # perfectly calibrated: useful at every threshold
    dc = decision_curve(y, p)
    assert len(dc["threshold"]) == 99 and dc["threshold"][0] == 0.01 and dc["threshold"][-1] == 0.99
    lo, hi = dc["useful_ranges"][0]
    assert lo <= 0.2 and hi >= 0.8  # near 0 the model and treat-all differ by less than the margin
    noise = decision_curve(y, rng.uniform(size=4000))  # predictions unrelated to the outcome
    assert sum(b - a for a, b in noise["useful_ranges"]) < 0.1


def test_nne_upper_limit_is_unbounded_when_ppv_can_be_zero() -> None:
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0])  # one positive, flagged along with three negatives
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.1, 0.1, 0.1, 0.1])
    nne = operating_points(y, p, np.arange(8), stored_threshold=0.5, n_boot=200, seed=0)[0]["nne"]
    assert nne["estimate"] == pytest.approx(4.0)
    assert nne["unbounded_above"] and nne["hi"] is None and 1.0 <= nne["lo"] < 4.0
