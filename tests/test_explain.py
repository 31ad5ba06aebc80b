"""Importance per input group for every model family and task kind (ehrseq.explain).

The planted cohort: at every visit a subject has SIG//LEVEL (the label is a function of its latest value),
NOISE//LEVEL (random), CONST//LEVEL (always the same value), one of DX//A / DX//B, and even subjects also
ZZZ//ONLY_EVEN. Tiny models are trained once per (kind, family) and shared by the tests of this module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import MIMIC_COLUMN_MAP

from ehrseq import api
from ehrseq.artifacts import save_artifact
from ehrseq.cli import main
from ehrseq.data.loading import LoadedData
from ehrseq.errors import EhrseqError
from ehrseq.explain import explain_artifact, task_metric
from ehrseq.io import read_meds

FAST = {"train": {"epochs": 5, "lr": 1e-2, "batch_size": 32, "progress": False}, "n_bootstrap": 0,
        "split": {"strategy": "random", "seed": 0}, "preset": "tiny"}
CASES = [("binary", "rnn"), ("regression", "rnn"), ("multiclass", "rnn"), ("survival", "deepsurv"),
         ("binary", "behrt")]
METRIC = {"binary": "AUROC", "regression": "R^2", "multiclass": "macro AUROC (one-vs-rest)",
          "survival": "Harrell's C"}


def _planted(n: int = 160, visits: int = 4, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    rows, lab = [], []
    for s in range(1, n + 1):
        t0 = pd.Timestamp("2020-01-01") + pd.Timedelta(days=int(rng.integers(0, 300)))
        rows.append((s, pd.NaT, "SEX//F" if rng.random() < 0.5 else "SEX//M", np.nan))
        rows.append((s, t0 - pd.Timedelta(days=365 * int(rng.integers(30, 80))), "MEDS_BIRTH", np.nan))
        for v in range(visits):
            t = t0 + pd.Timedelta(days=30 * v)
            sig = float(rng.normal())
            rows += [(s, t, "SIG//LEVEL", np.exp(sig)), (s, t, "NOISE//LEVEL", float(np.exp(rng.normal()))),
                     (s, t, "CONST//LEVEL", 5.0), (s, t, "DX//A" if rng.random() < 0.5 else "DX//B", np.nan)]
            if s % 2 == 0:
                rows.append((s, t, "ZZZ//ONLY_EVEN", np.nan))
            if v >= 1:
                lab.append((s, t, sig))
    ev = pd.DataFrame(rows, columns=["subject_id", "time", "code", "numeric_value"])
    ev = pd.DataFrame({"subject_id": ev["subject_id"].astype("int64"),
                       "time": pd.to_datetime(ev["time"]).astype("datetime64[us]"),
                       "code": ev["code"].astype("string"), "numeric_value": ev["numeric_value"].astype("float32"),
                       "text_value": pd.array([None] * len(ev), dtype="string")})
    return ev, pd.DataFrame(lab, columns=["subject_id", "prediction_time", "sig"])


def _labels(lab: pd.DataFrame, kind: str) -> pd.DataFrame:
    """A MEDS label frame of the planted task of ``kind``."""
    base = lab[["subject_id", "prediction_time"]]
    if kind == "binary":
        return base.assign(boolean_value=(lab["sig"] > 0).to_numpy())
    if kind == "regression":
        return base.assign(float_value=lab["sig"].to_numpy())
    if kind == "multiclass":
        return base.assign(integer_value=np.digitize(lab["sig"], [-0.5, 0.5]))
    return base.assign(float_value=np.exp(-lab["sig"].to_numpy()) * 50, boolean_value=True)


@pytest.fixture(scope="module")
def planted() -> tuple[LoadedData, pd.DataFrame]:
    ev, lab = _planted()
    return LoadedData(ev, None, None, "planted"), lab


@pytest.fixture(scope="module")
def trained(planted, tmp_path_factory) -> Callable[[str, str], Path]:
    """(kind, model) -> artifact path, trained on first use."""
    d, lab = planted
    cache: dict[tuple[str, str], Path] = {}

    def get(kind: str, model: str) -> Path:
        if (kind, model) not in cache:
            out = tmp_path_factory.mktemp(f"{kind}_{model}")
            extra = {"label_kind": "survival"} if kind == "survival" else {}  # DeepSurv: its tiny preset
            api.finetune(d, labels=_labels(lab, kind), model=model, out=out, **{**FAST, **extra})
            cache[kind, model] = out
        return cache[kind, model]

    return get


def _explain(planted, art: Path, kind: str, *, events: pd.DataFrame | None = None, seed: int = 0) -> pd.DataFrame:
    d, lab = planted
    data = d if events is None else LoadedData(events, None, None, "planted")
    return explain_artifact(art, data, split="all", n_repeats=2, seed=seed, labels=_labels(lab, kind))


@pytest.mark.parametrize(("kind", "model"), CASES)
def test_planted_signal_ranks_first_with_the_kinds_metric(planted, trained, kind, model):
    imp = _explain(planted, trained(kind, model), kind)
    assert imp.attrs["metric"] == METRIC[kind]
    assert imp.attrs["baseline"] > 0.8
    assert list(imp.columns) == ["group", "kind", "n_columns", "importance", "sd"]
    if model == "behrt":
        assert set(imp["group"]) == {"SIG//*", "NOISE//*", "CONST//*", "DX//*", "ZZZ//*", "SEX//*", "age"}
        assert imp.set_index("group").loc["SEX//*", "kind"] == "static"
        assert imp["group"].iloc[0] == "SIG//*"
        assert (imp["sd"] == 0).all()  # occlusion is deterministic
    else:
        assert set(imp["group"]) == {"SIG//LEVEL", "NOISE//LEVEL", "CONST//LEVEL", "DX//*", "ZZZ//*",
                                     "days since previous step", "age", "sex"}
        assert imp["group"].iloc[0] == "SIG//LEVEL"
        assert imp.set_index("group").loc["DX//*", "n_columns"] == 2
    top, rest = imp["importance"].iloc[0], imp["importance"].iloc[1:]
    assert top > 0.2 and top > 10 * rest.abs().max()


@pytest.mark.parametrize(("kind", "model"), CASES)
def test_groups_the_model_cannot_use_have_no_importance(planted, trained, kind, model):
    d, _ = planted
    without = d.events.loc[~d.events["code"].str.startswith("ZZZ//")]
    imp = _explain(planted, trained(kind, model), kind, events=without).set_index("group")["importance"]
    assert imp["ZZZ//*"] == 0.0  # absent from the explained data
    if model != "behrt":  # a constant column keeps its value under any shuffle
        assert imp["CONST//LEVEL"] == 0.0


@pytest.mark.parametrize(("kind", "model"), [("binary", "rnn"), ("survival", "deepsurv"), ("binary", "behrt")])
def test_same_seed_gives_the_same_frame(planted, trained, kind, model):
    art = trained(kind, model)
    a, b = _explain(planted, art, kind, seed=1), _explain(planted, art, kind, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert a.attrs == b.attrs
    if model != "behrt":  # the seed draws the shuffles
        other = _explain(planted, art, kind, seed=2).set_index("group")["importance"]
        assert not np.allclose(other, a.set_index("group")["importance"].reindex(other.index))


def test_deepsurv_on_sequence_embeddings_has_one_embedding_group(planted, trained, tmp_path):
    d, lab = planted
    rnn = trained("binary", "rnn")
    out = tmp_path / "ds_emb"
    api.finetune(d, labels=_labels(lab, "survival"), label_kind="survival", model="deepsurv", init=rnn, out=out,
                 **{**FAST, "train": {"epochs": 1}})
    imp = _explain(planted, out, "survival").set_index("group")
    emb = imp.loc["sequence embeddings"]
    assert (emb["kind"], emb["n_columns"]) == ("embedding", 24)  # tiny RNN: hidden 16 + static 8
    # the embeddings of an RNN trained on the planted label carry the signal: they rank first, SIG//LEVEL next
    assert imp.index[:2].tolist() == ["sequence embeddings", "SIG//LEVEL"]
    assert emb["importance"] > 0.2


def test_multilabel_rnn_uses_macro_auroc(cohort, tmp_path):
    keep = cohort.events["subject_id"].isin(np.unique(cohort.events["subject_id"])[:120])
    d = LoadedData(cohort.events.loc[keep], None, None, "synth")
    out = tmp_path / "dx"
    api.finetune(d, target="next_visit_dx", model="rnn", out=out, min_label_count=5,
                 **{**FAST, "train": {"epochs": 2, "progress": False}})
    imp = explain_artifact(out, d, split="all", n_repeats=1)
    assert imp.attrs["metric"] == "macro AUROC"
    assert 0.4 < imp.attrs["baseline"] <= 1.0
    assert {"ICD10//*", "RX//*", "age", "sex", "baseline LAB//RF"} <= set(imp["group"])
    assert np.isfinite(imp["importance"]).all()


@pytest.mark.parametrize("model", ["rnn", "behrt"])
def test_mimic_slice_groups(mimic_slice, tmp_path, model):
    ev = read_meds(mimic_slice, column_map=MIMIC_COLUMN_MAP).events
    d = LoadedData(ev, None, None, "mimic")
    first = ev.loc[ev["code"].str.startswith("HOSPITAL_ADMISSION")].groupby("subject_id")["time"].min()
    dead = ev.loc[ev["code"] == "MEDS_DEATH", "subject_id"]
    lab = pd.DataFrame({"subject_id": first.index, "prediction_time": first.to_numpy() + pd.Timedelta(hours=24)})
    lab["boolean_value"] = lab["subject_id"].isin(dead).to_numpy()
    api.finetune(d, labels=lab, model=model, out=tmp_path / model, **{**FAST, "train": {"epochs": 1, "progress": False}})
    imp = explain_artifact(tmp_path / model, d, split="all", n_repeats=1, labels=lab)
    groups = imp.set_index("group")
    if model == "behrt":
        assert {"LAB//*", "MEDICATION//*", "age"} <= set(groups.index)
        assert groups.loc["GENDER//*", "kind"] == "static"
    else:
        assert {"sex", "age", "days since previous step"} <= set(groups.index)
        assert any(g.startswith("LAB//") for g in groups.index)
    assert np.isfinite(imp["importance"]).all() and 0 <= imp.attrs["baseline"] <= 1


def test_text_classifier_is_refused_with_a_clear_error(tmp_path, capsys):
    art = save_artifact(tmp_path / "text", state_dict={}, config={"model_type": "text_classifier", "target": "biopsy"})
    with pytest.raises(EhrseqError, match=r"sequence models \(rnn, behrt\) and the time-to-event models"):
        explain_artifact(art, tmp_path / "no_data")
    assert main(["explain", "--artifact", str(art), "--data", str(tmp_path / "no_data")]) == 2
    assert "deepsurv" in capsys.readouterr().err


def test_labels_without_truth_are_refused_and_the_recorded_split_is_used(planted, trained):
    d, lab = planted
    art = trained("binary", "rnn")
    with pytest.raises(EhrseqError, match="needs the truth.*boolean_value"):
        explain_artifact(art, d, split="all", labels=lab[["subject_id", "prediction_time"]])
    # data without subject_splits: the split the artifact was trained with decides (its split.json)
    imp = explain_artifact(art, d, split="held_out", labels=_labels(lab, "binary"))
    assert imp.attrs["metric"] and len(imp)
    with pytest.raises(EhrseqError, match="no 'validation' subjects"):
        explain_artifact(art, d, split="validation", labels=_labels(lab, "binary"))


def test_undefined_baseline_metric_is_a_clear_error(planted, trained):
    d, lab = planted
    one_class = _labels(lab, "binary").assign(boolean_value=True)
    with pytest.raises(EhrseqError, match="AUROC is undefined on the .* rows"):
        explain_artifact(trained("binary", "rnn"), d, split="all", labels=one_class)


def test_task_metric_matches_the_kinds():
    y = np.array([[0.0], [1.0], [2.0], [1.0]])
    logits = np.eye(3)[[0, 1, 2, 1]] * 4.0
    assert task_metric("multiclass", y, logits).value == 1.0
    assert task_metric("regression", y, y).value == 1.0
    surv = np.array([[1.0, 1.0], [2.0, 1.0], [3.0, 0.0]])
    assert task_metric("survival", surv, np.array([3.0, 2.0, 1.0])).value == 1.0
    assert task_metric("survival", surv, np.array([1.0, 2.0, 3.0])).value == 0.0
