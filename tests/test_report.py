"""The report builds for every task, suppresses small groups, and renders as a self-contained page."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ehrseq.evaluate import plots
from ehrseq.evaluate.conformal import SplitConformalClassifier, SplitConformalRegressor
from ehrseq.evaluate.metrics import auroc
from ehrseq.evaluate.report import build_report, write_report
from ehrseq.evaluate.subgroups import age_band, subgroup_card

CARD = {"name": "toy-model", "data_hash": "abc123", "split_hash": "def456",
        "target_definition": "flare within 90 days", "intended_use": "research only",
        "limitations": "synthetic data"}
FAST = {"n_boot": 20, "min_group_size": 30}


def _frame(n_patients: int = 150, seed: int = 0, small_site: int = 12, prefix: str = "p") -> pd.DataFrame:
    """Patients with 3 rows each; site 'C' has only ``small_site`` patients."""
    rng = np.random.default_rng(seed)
    pid = np.repeat(np.arange(n_patients), 3)
    site = np.where(np.arange(n_patients) < small_site, "C", rng.choice(["A", "B"], n_patients))[pid]
    logit = rng.normal(size=len(pid))
    y = (rng.random(len(pid)) < 1 / (1 + np.exp(-logit))).astype(int)
    df = pd.DataFrame({
        "subject_id": [f"{prefix}{i}" for i in pid],
        "prediction_time": pd.Timestamp("2020-01-01") + pd.to_timedelta(np.tile([0, 90, 180], n_patients), "D"),
        "y_true": y,
        "y_prob": 1 / (1 + np.exp(-2 * logit)),
        "sex": rng.choice(["F", "M"], n_patients)[pid],
        "age": rng.uniform(20, 90, n_patients)[pid],
        "site": site,
    })
    return df


def _multilabel(seed: int = 1) -> pd.DataFrame:
    df = _frame(seed=seed).drop(columns=["y_true", "y_prob"])
    rng = np.random.default_rng(seed)
    for lab in ("flare", "remission", "switch"):
        z = rng.normal(size=len(df))
        df[f"y_true_{lab}"] = (rng.random(len(df)) < 1 / (1 + np.exp(-z))).astype(int)
        df[f"y_prob_{lab}"] = 1 / (1 + np.exp(-z))
    return df


def _regression(seed: int = 2) -> pd.DataFrame:
    df = _frame(seed=seed).drop(columns=["y_true", "y_prob"])
    rng = np.random.default_rng(seed)
    df["y_pred"] = rng.normal(10, 3, len(df))
    df["y_true"] = df["y_pred"] + rng.normal(0, 2, len(df))
    return df


def test_age_band_labels_and_missing() -> None:
    bands = age_band(pd.Series([5, 39.9, 40, 74, 75, 101, np.nan, 250]))
    assert bands.tolist() == ["0-39", "0-39", "40-59", "60-74", "75+", "75+", "missing", "missing"]


def test_subgroup_card_suppresses_small_groups_and_reports_gap() -> None:
    df = _frame()
    card = subgroup_card(df, {"auroc": auroc}, ["site", "sex"], y_pred="y_prob", n_boot=20)
    rows = {(r["column"], r["group"]): r for r in card["rows"]}
    small = rows[("site", "C")]
    assert small["suppressed"] and small["note"] == "suppressed (n<30)"
    assert small["metrics"] == {} and small["n_patients"] is None
    big = rows[("site", "A")]
    m = big["metrics"]["auroc"]
    assert m["gap"] == pytest.approx(m["estimate"] - card["overall"]["auroc"]["estimate"])
    assert m["lo"] <= m["estimate"] <= m["hi"]
    loose = subgroup_card(df, {"auroc": auroc}, ["site"], y_pred="y_prob", n_boot=0, min_group_size=5)
    assert not any(r["suppressed"] for r in loose["rows"])


def test_binary_report_has_every_section_and_writes_html_with_images(tmp_path: Path) -> None:
    df = _frame()
    conformal = SplitConformalClassifier(alpha=0.1).fit(df["y_prob"].to_numpy(), df["y_true"].to_numpy())
    report = build_report(df, "binary", CARD, external=_frame(80, seed=9, small_site=0, prefix="x"),
                          conformal=conformal, **FAST)
    assert report["overall"]["auroc"]["lo"] <= report["overall"]["auroc"]["estimate"] <= report["overall"]["auroc"]["hi"]
    assert report["model_card"]["target_definition"] == "flare within 90 days"
    assert report["model_card"]["evaluation_data_hash"]
    assert report["calibration"]["fit"]["slope"] < 1  # the toy model is over-confident
    assert report["conformal"]["nominal"] == pytest.approx(0.9)
    assert {r["metric"] for r in report["external"]["side_by_side"]} == {"auroc", "auprc", "brier", "log_loss"}
    assert any(r["column"] == "age_band" and r["group"] == "40-59" for r in report["subgroups"]["rows"])
    assert any(r["note"] == "suppressed (n<30)" for r in report["subgroups"]["rows"])

    paths = write_report(report, tmp_path)
    assert json.loads(paths["json"].read_text())["meta"]["task"] == "binary"
    page = paths["html"].read_text()
    for section in ("model-card", "overall", "calibration", "conformal", "subgroups", "external", "figures"):
        assert f'id="{section}"' in page
    if plots.plots_available():
        assert page.count('<img alt="') >= 4 and "data:image/png;base64," in page
    assert "suppressed (n&lt;30)" in page
    md = paths["markdown"].read_text()
    assert "## Overall metrics" in md and "suppressed (n<30)" in md


def test_multilabel_report_has_per_label_metrics_and_calibration(tmp_path: Path) -> None:
    report = build_report(_multilabel(), "multilabel", CARD, **FAST)
    assert set(report["per_label"]) == {"flare", "remission", "switch"}
    assert set(report["overall"]) == {"macro_auroc", "macro_auprc", "macro_brier", "samples_ap"}
    assert set(report["calibration"]) == {"flare", "remission", "switch"}
    page = write_report(report, tmp_path)["html"].read_text()
    assert 'id="per-label"' in page


def test_regression_report_with_conformal_intervals(tmp_path: Path) -> None:
    df = _regression()
    conformal = SplitConformalRegressor(alpha=0.1).fit(df["y_pred"], df["y_true"])
    report = build_report(df, "regression", CARD, conformal=conformal, **FAST)
    assert report["overall"]["mae"]["estimate"] > 0
    assert report["conformal"]["coverage"] >= 0.9
    assert report["calibration"] == {}
    paths = write_report(report, tmp_path)
    assert "rmse" in paths["markdown"].read_text()


def test_survival_report_uses_concordance_when_available(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    df = _frame().drop(columns=["y_true", "y_prob"])
    risk = rng.normal(size=len(df))
    df["duration"] = rng.exponential(np.exp(-risk))
    df["event"] = (rng.random(len(df)) < 0.7).astype(int)
    df["risk"] = risk
    report = build_report(df, "survival", CARD, n_boot=10)
    c = report["overall"]["concordance"]
    assert 0.5 < c["estimate"] <= 1  # risk is the true log-hazard: concordant more often than chance
    write_report(report, tmp_path)


def test_report_without_matplotlib_still_writes_json_and_markdown(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(plots, "plots_available", lambda: False)
    report = build_report(_frame(), "binary", CARD, subgroup_columns=["sex"], **FAST)
    paths = write_report(report, tmp_path)
    assert paths["json"].exists() and paths["markdown"].exists()
    page = paths["html"].read_text()
    assert "<img" not in page and "pip install &#x27;ehrseq[plots]&#x27;" in page


def test_missing_columns_give_a_clear_error() -> None:
    from ehrseq.errors import DataValidationError

    with pytest.raises(DataValidationError, match="y_true"):
        build_report(_frame().drop(columns=["y_true"]), "binary", CARD, **FAST)


def test_report_html_renders_in_headless_chromium_without_console_errors(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if chromium is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    report = build_report(_frame(), "binary", CARD, **FAST)
    html_path = write_report(report, tmp_path / "out")["html"]
    shot = tmp_path / "shot.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
           f"--screenshot={shot}", "--window-size=1200,2000", html_path.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert shot.exists() and shot.stat().st_size > 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "Uncaught" in line or "ERROR:CONSOLE" in line]
    assert not console, console


# ------------------------------------------------------------------------------ near-constant predictions


def _near_constant(df: pd.DataFrame, sd: float, seed: int = 4) -> pd.DataFrame:
    """The same rows with probabilities collapsed around the base rate (BEHRT on a real task: std 0.002)."""
    rng = np.random.default_rng(seed)
    return df.assign(y_prob=np.clip(df["y_true"].mean() + rng.normal(0, sd, len(df)), 0, 1))


@pytest.mark.parametrize("sd", [0.0, 0.002])
def test_near_constant_predictions_are_flagged_in_summary_log_and_report(tmp_path: Path, caplog, sd: float) -> None:
    from ehrseq.evaluate.summary import NEAR_CONSTANT, summarize

    df = _near_constant(_frame(), sd)
    with caplog.at_level("WARNING", logger="ehrseq.evaluate"):
        m = summarize(df, "binary", n_bootstrap=10, seed=0)  # as api.finetune calls it
    assert [w["code"] for w in m["warnings"]] == [NEAR_CONSTANT]
    assert m["prediction_spread"]["y_prob"]["std"] == pytest.approx(df["y_prob"].std(ddof=0))
    assert any("near-constant" in r.getMessage() for r in caplog.records)

    report = build_report(df, "binary", CARD, external=_near_constant(_frame(80, seed=9, prefix="x"), sd), **FAST)
    assert len(report["warnings"]) == 2 and report["warnings"][1]["message"].startswith("external: ")
    paths = write_report(report, tmp_path)
    assert json.loads(paths["json"].read_text())["warnings"][0]["code"] == NEAR_CONSTANT
    md = paths["markdown"].read_text()
    assert md.index("## Warnings") < md.index("## Model card") and "> **Warning:** y_prob is near-constant" in md
    page = paths["html"].read_text()
    assert 'id="warnings"' in page and page.index('id="warnings"') < page.index('id="model-card"')


def test_varied_predictions_carry_their_spread_and_no_warning(tmp_path: Path, caplog) -> None:
    from ehrseq.evaluate.summary import summarize

    df = _frame()
    with caplog.at_level("WARNING", logger="ehrseq.evaluate"):
        m = summarize(df, "binary", n_bootstrap=10, seed=0)
        report = build_report(df, "binary", CARD, **FAST)
    assert m["warnings"] == [] and report["warnings"] == []
    assert m["prediction_spread"]["y_prob"]["n_distinct"] > 100 and m["prediction_spread"]["y_prob"]["std"] > 0.1
    assert not [r for r in caplog.records if "near-constant" in r.getMessage()]
    paths = write_report(report, tmp_path)
    assert "## Warnings" not in paths["markdown"].read_text() and 'id="warnings"' not in paths["html"].read_text()


def test_near_constant_rule_per_task() -> None:
    from ehrseq.evaluate.summary import prediction_spread

    ml = _multilabel().assign(y_prob_remission=0.4)
    _, w = prediction_spread(ml, "multilabel")
    assert [x["column"] for x in w] == ["y_prob_remission"]
    reg = _regression()
    assert prediction_spread(reg, "regression")[1] == []
    _, w = prediction_spread(reg.assign(y_pred=10 + 1e-3 * reg["y_pred"]), "regression")  # std 0.003 vs 3.6
    assert len(w) == 1
    surv = pd.DataFrame({"subject_id": [1, 2, 3], "duration": [1.0, 2, 3], "event": [1, 0, 1], "risk": [0.5] * 3})
    assert len(prediction_spread(surv, "survival")[1]) == 1
    assert prediction_spread(surv.assign(risk=[0.1, 0.2, 0.3]), "survival")[1] == []


# ------------------------------------------------------------------------------ clinician-facing content


def test_binary_report_explains_its_own_numbers_and_has_operating_points_and_decision_curve(tmp_path: Path) -> None:
    df = _frame()
    report = build_report(df, "binary", CARD, decision_threshold=0.4, **FAST,
                          task_info={"name": "flare90", "kind": "binary", "definition": "Flare within 90 days.",
                                     "source": "labels:/x/flare90.parquet"})
    ops = report["operating_points"]
    assert [o["rule"] for o in ops] == ["stored threshold", "sensitivity 0.90", "sensitivity 0.95", "prevalence"]
    assert ops[0]["threshold"] == 0.4 and ops[1]["sensitivity"]["estimate"] >= 0.9
    dc = report["decision_curve"]
    assert len(dc["threshold"]) == len(dc["model"]) == len(dc["treat_all"]) == 99
    words = report["plain_language"]
    cal = report["calibration"]
    assert f"ECE {cal['ece']['value']:.3f}" in " ".join(words["calibration"])
    assert f"Calibration slope {cal['fit']['slope']:.2f} (ideal 1): predictions are too extreme" in " ".join(
        words["calibration"])
    assert f"AUROC {report['overall']['auroc']['estimate']:.2f}" in words["overall"][0]
    assert "At the threshold stored with the model, 0.4, the model flags" in words["operating-points"][0]
    task = report["task"]["description"]
    assert task[0] == "What is predicted: Flare within 90 days." and "the label file /x/flare90.parquet" in task[1]
    assert "Decision threshold: 0.4, stored with the model" in " ".join(task)
    page = write_report(report, tmp_path)["html"].read_text()
    for section in ("task", "operating-points"):
        assert f'id="{section}"' in page
    assert '<p class="explain">ECE ' in page and "NNE (1/PPV)" in page
    if plots.plots_available():
        assert 'id="fig-decision_curve"' in page and "AUC is in the legend" in page


def test_without_a_stored_threshold_the_report_says_it_used_half() -> None:
    report = build_report(_frame(), "binary", CARD, subgroup_columns=[], **FAST)
    assert report["operating_points"][0]["rule"] == "default 0.5"
    assert "No decision threshold is stored with the model" in " ".join(report["task"]["description"])


def test_subgroup_counts_say_patients_change_age_band_between_predictions() -> None:
    df = _frame()
    df["age"] = df["age"] + np.tile([0.0, 6.0, 12.0], len(df) // 3)  # three predictions over 12 years
    moved = int(pd.Series(age_band(df["age"]).to_numpy()).groupby(df["subject_id"].to_numpy()).nunique().gt(1).sum())
    report = build_report(df, "binary", CARD, subgroup_columns=["sex", "age_band"], **FAST)
    col = report["subgroups"]["columns"]
    assert col["age_band"] == {"n_patients": 150, "n_rows": 450, "n_patients_in_several_groups": moved} and moved > 0
    assert col["sex"]["n_patients_in_several_groups"] == 0
    text = " ".join(report["plain_language"]["subgroups"])
    assert "predictions (rows: 450) and of distinct patients (150)" in text
    assert f"{moved} of the 150 patients have predictions in more than one age_band group" in text
    assert "sex can change" not in text


def test_multilabel_operating_points_are_per_label_with_their_stored_thresholds() -> None:
    report = build_report(_multilabel(), "multilabel", CARD, decision_threshold={"flare": 0.3}, **FAST)
    ops = report["operating_points"]
    assert set(ops) == {"flare", "remission", "switch"}
    assert ops["flare"][0]["rule"] == "stored threshold" and ops["flare"][0]["threshold"] == 0.3
    assert ops["switch"][0]["rule"] == "default 0.5"
    assert "decision_curve" not in report


@pytest.mark.parametrize(("info", "must", "must_not"), [
    ({"name": "cdai", "kind": "binary", "source": "builtin:cdai"}, "rheumatoid arthritis disease activity", "biopsy"),
    ({"name": "biopsy", "kind": "multilabel", "source": "builtin:biopsy"}, "temporal artery biopsy", "CDAI"),
    ({"name": "survival", "kind": "survival", "source": "builtin:survival", "event": "EVENT//FLARE"},
     "time to the first 'EVENT//FLARE'", "CDAI"),
    ({"name": "long_los", "kind": "binary", "source": "task:configs/tasks/mimic/long_los.yaml"},
     "the binary task 'long_los'", "rheumat"),
    ({"name": "death", "kind": "survival", "source": "labels:d.parquet", "horizon_days": 365.0},
     "(follow-up up to 365 days)", "rheumat"),
])
def test_intended_use_fits_the_task(info: dict, must: str, must_not: str) -> None:
    from ehrseq.evaluate.plain import intended_use

    text = intended_use(info)
    assert must in text and must_not.lower() not in text.lower() and "Not for clinical decisions" in text
