"""``ehrseq compare``: models of one task on the same rows, with paired differences; site transfer judged fairly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ehrseq import api
from ehrseq.cli import main
from ehrseq.errors import DataValidationError
from ehrseq.evaluate.compare import compare_frames
from ehrseq.evaluate.metrics import auroc

TINY = {"preset": "tiny", "train": {"epochs": 1, "progress": False}, "n_bootstrap": 0}


def _frame(subjects: np.ndarray, y: np.ndarray, p: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"subject_id": subjects, "prediction_time": pd.Timestamp("2020-01-01")
                         + pd.to_timedelta(np.arange(len(y)) % 3, "D"), "y_true": y, "y_prob": p})


def test_rows_are_shared_and_the_paired_difference_is_right() -> None:
    rng = np.random.default_rng(0)
    n = 300
    subj = np.arange(n) // 3
    y = rng.integers(0, 2, n).astype(float)
    good = np.clip(y * 0.6 + rng.normal(0.2, 0.2, n), 0, 1)
    bad = rng.uniform(size=n)
    ref = _frame(subj, y, bad)
    other = _frame(subj, y, good).iloc[30:]  # scored 30 rows fewer: only the shared 270 are compared
    cmp = compare_frames({"ref": ref, "better": other}, "binary", n_boot=200)
    assert cmp["n_rows"] == n - 30 and cmp["rows_per_model"] == {"ref": n, "better": n - 30}
    want = auroc(y[30:], good[30:]).value - auroc(y[30:], bad[30:]).value
    d = cmp["difference"]["auroc"]["better"]
    assert d["value"] == pytest.approx(want)
    assert 0 < d["lo"] < d["value"] < d["hi"]  # a real improvement: the paired interval excludes 0
    assert cmp["metrics"]["auroc"]["ref"]["value"] == pytest.approx(auroc(y[30:], bad[30:]).value)
    # the same model twice: a difference of exactly 0 with a zero-width interval
    same = compare_frames({"a": ref, "b": ref.copy()}, "binary", n_boot=50)["difference"]["brier"]["b"]
    assert same["value"] == 0 and same["lo"] == 0 and same["hi"] == 0


def test_models_of_different_tasks_or_no_shared_rows_are_refused() -> None:
    y = np.array([0.0, 1, 0, 1])
    a = _frame(np.arange(4), y, np.array([0.1, 0.9, 0.2, 0.8]))
    with pytest.raises(DataValidationError, match="disagree on the truth"):
        compare_frames({"a": a, "b": a.assign(y_true=1 - y)}, "binary", n_boot=0)
    with pytest.raises(DataValidationError, match="share no scored row"):
        compare_frames({"a": a, "b": a.assign(subject_id=a["subject_id"] + 100)}, "binary", n_boot=0)
    with pytest.raises(DataValidationError, match="at least two"):
        compare_frames({"a": a}, "binary")


@pytest.fixture(scope="module")
def site_models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    api.synthesize(200, out=tmp, seed=3, extract=False, biopsy_rate=0.0)
    meds = tmp / "meds"
    api.finetune(meds, out=tmp / "site_a", target="cdai", model="rnn", sites=["A"], **TINY)
    api.finetune(meds, out=tmp / "site_b", target="cdai", init=tmp / "site_a", sites=["B"], train_fraction=0.3,
                 train={"epochs": 1, "progress": False, "lr": 5e-4}, n_bootstrap=0)
    return tmp


def test_compare_scores_site_a_and_adapted_models_on_the_same_site_b_rows(site_models, capsys):
    tmp = site_models
    out = tmp / "cmp"
    rc = main(["compare", "--artifacts", str(tmp / "site_a"), str(tmp / "site_b"), "--names", "A as is", "adapted",
               "--data", str(tmp / "meds"), "--sites", "B", "--n-boot", "50", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| A as is |" in printed and "| adapted |" in printed
    cmp = json.loads((out / "compare.json").read_text())
    assert cmp["models"] == ["A as is", "adapted"] and cmp["sites"] == ["B"]
    # the rows are B's held-out rows, all of them, each scored by both models
    d = api.load_data(tmp / "meds")
    b_held = set(d.splits.loc[d.splits["split"] == "held_out", "subject_id"]) & set(
        d.events.loc[d.events["code"] == "SITE//B", "subject_id"])
    preds = api.predict(tmp / "site_b", d)
    want = preds.loc[preds["subject_id"].isin(b_held)]
    assert cmp["n_rows"] == len(want) and cmp["rows_per_model"] == {"A as is": len(want), "adapted": len(want)}
    assert cmp["patients_dropped_trained_a_model"] == {"A as is": 0, "adapted": 0}
    assert set(cmp["metrics"]) >= {"auroc", "brier"} and "adapted" in cmp["difference"]["auroc"]
    html = (out / "compare.html").read_text()
    assert "<table>" in html and "A as is" in html
    # existing output: refused without --overwrite, before any data is read
    rc = main(["compare", "--artifacts", str(tmp / "site_a"), str(tmp / "site_b"), "--data", str(tmp / "nowhere"),
               "--out", str(out)])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err


def test_compare_drops_patients_who_trained_a_model(site_models, capsys):
    tmp = site_models
    rc = main(["compare", "--artifacts", str(tmp / "site_a"), str(tmp / "site_b"), "--data", str(tmp / "meds"),
               "--split", "all", "--n-boot", "10", "--out", str(tmp / "all")])
    assert rc == 0
    cmp = json.loads((tmp / "all" / "compare.json").read_text())
    assert cmp["patients_dropped_trained_a_model"]["site_a"] > 0
    assert cmp["patients_dropped_trained_a_model"]["site_b"] >= cmp["patients_dropped_trained_a_model"]["site_a"]
