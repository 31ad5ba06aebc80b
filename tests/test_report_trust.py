"""Figures that cannot be trusted say so: discrimination on too few rows of a class (summary, printed line,
report), macro averages that state how many labels they averaged, and intervals of no width explained."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ehrseq.evaluate import metrics as M
from ehrseq.evaluate import survival as S
from ehrseq.evaluate.bootstrap import DEGENERATE_ALL, bootstrap_ci
from ehrseq.evaluate.report import build_report, write_report
from ehrseq.evaluate.sample_size import SMALL_SAMPLE, class_counts
from ehrseq.evaluate.subgroups import format_ci
from ehrseq.evaluate.summary import fmt, split_figures, summarize

CARD = {"name": "tiny", "target_definition": "toy"}
FAST = {"n_boot": 20, "min_group_size": 2}


def _binary(n: int = 8, n_pos: int = 3, seed: int = 0, prefix: str = "p") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos), np.zeros(n - n_pos)].astype(int)
    return pd.DataFrame({"subject_id": [f"{prefix}{i}" for i in range(n)], "y_true": y,
                         "y_prob": np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1)})


def _biopsy(n: int = 8) -> pd.DataFrame:
    """8 biopsy reports, 4 labels; only 'gca' has both classes (3 positives)."""
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"subject_id": np.arange(n)})
    for lab, y in {"gca": [1, 0, 0, 1, 0, 0, 0, 1], "giant_cells": [0] * n, "intima": [0] * n,
                   "adventitia": [1] * n}.items():
        df[f"y_true_{lab}"] = y
        df[f"y_prob_{lab}"] = rng.random(n)
    return df


# ------------------------------------------------------------------------------------- 1. small samples


def test_summary_flags_auroc_on_three_positives_and_the_printed_line_carries_it(caplog) -> None:
    with caplog.at_level("WARNING", logger="ehrseq.evaluate"):
        m = summarize(_binary(), "binary", n_bootstrap=20)
    (w,) = [w for w in m["warnings"] if w["code"] == SMALL_SAMPLE]
    assert w["metrics"] == ["auroc", "auprc"] and w["label"] is None
    assert w["counts"] == {"positives": 3, "negatives": 5} and w["min_per_class"] == 10
    assert "AUROC and AUPRC rest on 3 positives and 5 negatives" in w["message"]
    assert "more held-out rows" in w["message"]
    assert any("3 positives" in r.getMessage() for r in caplog.records)
    assert m["auroc"][SMALL_SAMPLE] == "3 positives, 5 negatives" and SMALL_SAMPLE not in m["brier"]
    assert fmt(m["auroc"]).endswith("[few rows: 3 positives, 5 negatives]")
    line = "  ".join(split_figures(m))
    assert re.search(r"auroc=0\.\d{3} \(.*\) \[few rows: 3 positives", line)


def test_min_per_class_is_a_parameter_and_large_splits_are_not_flagged() -> None:
    assert not [w for w in summarize(_binary(), "binary", n_bootstrap=5, min_per_class=3)["warnings"]
                if w["code"] == SMALL_SAMPLE]
    big = summarize(_binary(200, 60), "binary", n_bootstrap=5)
    assert big["warnings"] == [] and SMALL_SAMPLE not in big["auroc"]
    assert "few rows" not in fmt(big["auroc"])


def test_report_leads_with_the_small_sample_warning_and_flags_the_figures(tmp_path: Path) -> None:
    report = build_report(_binary(), "binary", CARD, external=_binary(12, 2, seed=3, prefix="x"), **FAST)
    codes = [(w["code"], w["message"].split(":")[0]) for w in report["warnings"]]
    assert (SMALL_SAMPLE, "external") in codes and sum(c == SMALL_SAMPLE for c, _ in codes) == 2
    assert report["overall"]["auroc"][SMALL_SAMPLE] == "3 positives, 5 negatives"
    assert report["external"]["overall"]["auroc"][SMALL_SAMPLE] == "2 positives"
    assert report["meta"]["min_per_class"] == 10 and report["data"]["class_counts"] == {"positives": 3,
                                                                                       "negatives": 5}
    paths = write_report(report, tmp_path, plots=False)
    md = paths["markdown"].read_text()
    assert md.index("## Warnings") < md.index("## Overall metrics")
    overall = md[md.index("## Overall metrics"):md.index("## Operating points")]
    assert re.search(r"\| auroc \| 0\.\d{3} .*\[few rows: 3 positives, 5 negatives\]", overall)
    assert "Figures marked 'few rows' rest on fewer than 10 rows of a class" in md
    page = paths["html"].read_text()
    assert "AUROC and AUPRC rest on 3 positives and 5 negatives" in page
    assert page.index('id="warnings"') < page.index('id="overall"')
    assert "[few rows: 2 positives]" in page[page.index('id="external"'):]  # the external column too


def test_survival_c_index_on_few_events_is_flagged_in_report_and_printed_line() -> None:
    df = pd.DataFrame({"subject_id": np.arange(30), "duration": np.linspace(10, 300, 30),
                       "event": (np.arange(30) % 5 == 0).astype(int), "risk": -np.linspace(0, 1, 30)})
    report = build_report(df, "survival", CARD, **FAST)
    assert report["overall"]["concordance"][SMALL_SAMPLE] == "6 events"
    (w,) = [w for w in report["warnings"] if w["code"] == SMALL_SAMPLE]
    assert w["counts"] == {"events": 6} and "Harrell's C rests on 6 events" in w["message"]
    stored = {"n_rows": 30, "n_events": 4, "harrell_c": {"value": 0.61, "lo": 0.4, "hi": 0.8},
              "c_td": {"value": 0.6, "undefined": None, "n": 30}}  # as a survival fine-tune stores them
    figs = split_figures(stored)
    assert "harrell_c=0.610 (0.400-0.800) [few rows: 4 events]" in figs
    assert "c_td=0.600 [few rows: 4 events]" in figs
    assert "few rows" not in " ".join(split_figures({**stored, "n_events": 40}))


def test_cli_prints_the_flags_of_text_classifier_labels_and_macro(capsys) -> None:
    from ehrseq.cli import _print_metrics

    held_out = {"gca": {"auroc": 0.525, "f1": 0.4, "n": 8, "n_positive": 3},
                "intima": {"auroc": None, "f1": 0.0, "n": 8, "n_positive": 0},
                "macro": {"auroc": 0.525, "auprc": 1.0, "f1": 0.2}, "split_sizes": {"held_out": 8}}
    _print_metrics({"held_out": held_out})
    out = capsys.readouterr().out
    assert "gca: auroc=0.525 [few rows: 3 positives, 5 negatives]" in out
    assert "intima: auroc=undefined (one class)" in out
    assert "macro: auroc=0.525 f1=0.200 [macro over 1/2 labels (label 'gca' alone, not an average)]" in out


def test_class_counts_per_task() -> None:
    assert class_counts(_biopsy(), "multilabel")["gca"] == {"positives": 3, "negatives": 5}
    assert class_counts(_binary(), "regression") == {}


# ------------------------------------------------------------------------------------- 2. macro averages


def test_macro_note_always_says_how_many_labels_it_averaged() -> None:
    y = np.array([[0, 1], [1, 0], [0, 1], [1, 0]])
    s = np.array([[0.1, 0.5], [0.9, 0.4], [0.2, 0.3], [0.7, 0.9]])
    assert M.macro_auroc(y, s).note == "macro over 2/2 labels"
    one = M.macro(M.auroc, np.c_[y[:, 0], np.ones(4)], s, labels=["gca", "intima"])
    assert one.value == M.auroc(y[:, 0], s[:, 0]).value
    assert one.note.startswith("macro over 1/2 labels (label 'gca' alone, not an average); skipped intima")
    res = bootstrap_ci(M.macro_auroc, y, s, n_boot=10)  # the point estimate's note survives the bootstrap
    assert res.note.startswith("macro over 2/2 labels")


def test_single_label_macro_is_named_in_summary_report_md_and_html(tmp_path: Path) -> None:
    df = _biopsy()
    m = summarize(df, "multilabel", n_bootstrap=20)
    assert "[macro over 1/4 labels (label 'gca' alone, not an average)]" in fmt(m["macro_auroc"])
    assert "gca: 3 positives, 5 negatives" in m["macro_auroc"][SMALL_SAMPLE]
    report = build_report(df, "multilabel", CARD, **FAST)
    assert report["per_label"]["gca"]["auroc"][SMALL_SAMPLE] == "3 positives, 5 negatives"
    assert any(w["code"] == SMALL_SAMPLE and w["label"] == "gca" for w in report["warnings"])
    paths = write_report(report, tmp_path, plots=False)
    md, page = paths["markdown"].read_text(), paths["html"].read_text()
    for text in (md, page):
        row = text[text.index("macro_auroc"):][:1500]
        assert "macro over 1/4 labels (label &#x27;gca&#x27; alone" in row or \
               "macro over 1/4 labels (label 'gca' alone" in row
        assert "is not an average: only 1 of the 4 labels" in text
    assert "| gca | 3 / 5 |" in md  # the per-label table shows the counts behind each label


# ------------------------------------------------------------------------------------- 3. degenerate CIs


def test_interval_of_no_width_is_explained_not_shown_as_certainty(tmp_path: Path) -> None:
    y = np.array([1, 1, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.1, 0.2, 0.3, 0.1, 0.4])
    res = bootstrap_ci(M.auprc, y, p, n_boot=30)
    assert res.estimate == res.lo == res.hi == 1.0 and res.ci_degenerate == DEGENERATE_ALL
    assert res.to_summary()["ci_degenerate"] == DEGENERATE_ALL
    assert bootstrap_ci(M.auprc, *_binary(200, 60)[["y_true", "y_prob"]].T.to_numpy(), n_boot=30).ci_degenerate \
        is None
    df = pd.DataFrame({"subject_id": np.arange(7), "y_true": y, "y_prob": p})
    m = summarize(df, "binary", n_bootstrap=30)
    assert fmt(m["auprc"]).startswith("1.000 (every resample identical: too few rows")
    report = build_report(df, "binary", CARD, **FAST)
    assert format_ci(report["overall"]["auprc"]).startswith("1.000 [every resample identical")
    md = write_report(report, tmp_path, plots=False)["markdown"].read_text()
    assert "1.000 [1.000, 1.000]" not in md and "is not certainty" in md


# ------------------------------------------------------------------------------------- 4. leftovers


def test_km_at_is_public_and_reads_the_step_function() -> None:
    km = S.kaplan_meier([2.0, 4.0, 4.0, 6.0], [1, 1, 0, 1])
    assert S.km_at(km, [0.0, 2.0, 3.0, 10.0]).tolist() == pytest.approx([1.0, 0.75, 0.75, 0.0])
    assert S.km_at(km, [2.0], left_limit=True).tolist() == [1.0]
    assert S.km_at(km, [3.0], column="lower")[0] < 0.75 < S.km_at(km, [3.0], column="upper")[0]
    assert S.km_at.__doc__ and not hasattr(S, "_km_at")


def test_external_site_gets_its_own_survival_section(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)

    def rows(n: int, prefix: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        risk = rng.normal(size=n)
        t_ev, t_c = rng.exponential(300 * np.exp(-risk)), rng.uniform(0, 700, n)
        df = pd.DataFrame({"subject_id": [f"{prefix}{i}" for i in range(n)], "duration": np.minimum(t_ev, t_c),
                           "event": (t_ev <= t_c).astype(int), "risk": risk})
        times = np.unique(np.r_[np.quantile(df["duration"], np.linspace(0, 1, 30)), 90])
        return df, pd.DataFrame(np.exp(-np.outer(times / 300.0, np.exp(risk))), index=times)

    (df, curves), (ext, ext_curves) = rows(90, "a"), rows(70, "b")
    report = build_report(df, "survival", CARD, external=ext, survival_curves=curves, horizons=(90,),
                          external_survival_curves=ext_curves, external_name="site B", **FAST)
    sec = report["external"]["survival"]
    assert sec["has_survival_curves"] and sec["calibration"][0]["groups"] and sec["km_by_risk_group"]["groups"]
    side = {r["metric"]: r for r in report["external"]["side_by_side"]}
    assert side["concordance_td"]["external"]["estimate"] is not None
    md = write_report(report, tmp_path, plots=False)["markdown"].read_text()
    assert "## Calibration at horizon, site B" in md


def test_evaluate_external_survival_artifact_gets_the_section(tmp_path: Path) -> None:
    from ehrseq.cli import main
    from ehrseq.recipes.evaluate import evaluate_artifact

    meds, art = tmp_path / "c" / "meds", tmp_path / "flare"
    assert main(["synth", "--n-patients", "80", "--seed", "5", "--out", str(tmp_path / "c")]) == 0
    assert main(["finetune", "--target", "survival", "--event", "EVENT//FLARE", "--data", str(meds),
                 "--out", str(art), "--n-bootstrap", "5", "--epochs", "1"]) == 0
    evaluate_artifact(art, meds, tmp_path / "rep", external=meds, n_boot=5, plots=False, min_per_class=3)
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["meta"]["min_per_class"] == 3
    assert rep["external"]["survival"]["has_survival_curves"]
    assert rep["external"]["overall"]["concordance_td"]["estimate"] is not None


def test_figures_are_no_wider_than_their_image(tmp_path: Path) -> None:
    from ehrseq.evaluate import plots

    if not plots.plots_available():
        pytest.skip("matplotlib not installed")
    df = _binary(300, 100).assign(site=np.where(np.arange(300) < 150, "A", "B"))
    page = write_report(build_report(df, "binary", CARD, subgroup_columns=["site"], **FAST), tmp_path)["html"]
    figs = re.findall(r'<figure id="fig-([\w-]+)" style="max-width:min\(100%,(\d+)px\)"><img alt="[^"]*" '
                      r'src="data:image/png;base64,([^"]+)"', page.read_text())
    assert {"fig-forest_auroc"} <= {f"fig-{name}" for name, _, _ in figs}
    for _, width, b64 in figs:
        png = base64.b64decode(b64)
        assert int(width) == int.from_bytes(png[16:20], "big")
