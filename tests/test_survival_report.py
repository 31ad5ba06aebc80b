"""The survival part of the report: C-td and integrated Brier beside Harrell's C, calibration at horizons,
Kaplan-Meier by predicted risk group, and what is said when a model gives only a risk score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ehrseq.errors import DataValidationError
from ehrseq.evaluate import survival as S
from ehrseq.evaluate.report import build_report, write_report
from ehrseq.evaluate.survival_report import NO_CURVES, km_by_risk_group, survival_section

CARD = {"name": "toy-surv", "target_definition": "days to flare"}


@pytest.fixture(scope="module")
def rows() -> tuple[pd.DataFrame, pd.DataFrame]:
    """240 rows of 80 patients, exponential event times with a proportional-hazards risk, true curves."""
    rng = np.random.default_rng(7)
    n = 240
    risk = rng.normal(size=n)
    t_event, t_cens = rng.exponential(300 * np.exp(-risk)), rng.uniform(0, 700, n)
    df = pd.DataFrame({"subject_id": np.repeat(np.arange(80), 3), "duration": np.minimum(t_event, t_cens),
                       "event": (t_event <= t_cens).astype(int), "risk": risk})
    times = np.unique(np.r_[np.quantile(df["duration"], np.linspace(0, 1, 60)), 90, 365])
    return df, pd.DataFrame(np.exp(-np.outer(times / 300.0, np.exp(risk))), index=times)


def test_section_gives_ctd_ibs_and_calibration_at_each_horizon(rows) -> None:
    df, curves = rows
    sec = survival_section(df, curves, (90, 365, 5000), n_boot=20)
    ctd = sec["metrics"]["concordance_td"]
    assert ctd["estimate"] == pytest.approx(S.concordance_td(df["duration"], df["event"], curves))
    assert ctd["lo"] <= ctd["estimate"] <= ctd["hi"] and ctd["estimate"] > 0.6
    assert 0 < sec["metrics"]["integrated_brier"]["estimate"] < 0.25
    cal = {c["horizon"]: c for c in sec["calibration"]}
    assert [g["risk_group"] for g in cal[90]["groups"]] == [1, 2, 3]
    assert sum(g["n"] for g in cal[365]["groups"]) == len(df)
    # true curves: predicted and observed event-free survival agree within the KM intervals' reach
    assert cal[365]["mean_abs_gap"] < 0.1
    assert cal[5000]["groups"] == [] and "no evaluated row is followed up to 5000 days" in cal[5000]["note"]


def test_km_groups_order_by_risk_and_stop_at_their_follow_up(rows) -> None:
    df, _ = rows
    km = km_by_risk_group(df["duration"], df["event"], df["risk"], n_groups=3)
    low, high = km["groups"][0], km["groups"][-1]
    assert (low["group"], high["group"]) == (1, 3) and low["n"] + km["groups"][1]["n"] + high["n"] == len(df)
    assert low["survival"][len(high["time"]) // 2] > high["survival"][len(high["time"]) // 2]
    for g in km["groups"]:
        assert max(g["time"]) <= df["duration"].max() and len(g["time"]) == len(g["survival"]) == len(g["lower"])


def test_report_puts_ctd_beside_harrell_and_draws_km_and_calibration(rows, tmp_path: Path) -> None:
    df, curves = rows
    report = build_report(df, "survival", CARD, subgroup_columns=[], n_boot=10, survival_curves=curves,
                          horizons=(90, 365))
    assert list(report["overall"]) == ["concordance", "concordance_td", "integrated_brier"]
    lines = " ".join(report["plain_language"]["overall"])
    assert f"C-td {report['overall']['concordance_td']['estimate']:.2f}" in lines
    assert "At 365 days, the highest-risk group (3 of 3)" in " ".join(report["plain_language"]["survival"])
    paths = write_report(report, tmp_path)
    page = paths["html"].read_text()
    assert 'id="survival-calibration"' in page and "Calibration is judged at 90, 365 days." in page
    if "figure_km" in paths:
        assert 'id="fig-km"' in page and 'id="fig-survival_calibration"' in page


def test_risk_only_model_says_calibration_cannot_be_judged(rows, tmp_path: Path) -> None:
    df, _ = rows
    report = build_report(df, "survival", CARD, subgroup_columns=[], n_boot=10)
    assert report["survival"]["has_survival_curves"] is False and report["survival"]["calibration"] == []
    assert "concordance_td" not in report["overall"]
    assert NO_CURVES in report["plain_language"]["survival"]
    assert "absolute calibration (predicted vs observed survival) cannot" in write_report(report, tmp_path)[
        "markdown"].read_text()


def test_curves_that_do_not_match_the_rows_are_refused(rows) -> None:
    df, curves = rows
    with pytest.raises(DataValidationError, match="survival curves have 239 columns, predictions 240 rows"):
        survival_section(df, curves.iloc[:, :-1], (90,), n_boot=0)
