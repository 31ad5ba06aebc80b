"""Tasks of one's own on real data: MEDS label files through finetune, evaluate, score and predict.

The data is the MIMIC-IV demo slice (tests/fixtures/mimic_demo_slice, read with a column map). Labels are
made here from its admissions and discharges, so these tests do not depend on the ACES wrapper.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import MIMIC_COLUMN_MAP

from ehrseq import api
from ehrseq.cli import main
from ehrseq.errors import DataValidationError, TargetError
from ehrseq.io import read_meds
from ehrseq.tasks.label_files import TaskLabels, match_labels, read_task_labels, write_task_labels
from ehrseq.tasks.spec import TaskSpec

TINY = {"preset": "tiny", "train": {"epochs": 2, "progress": False}, "n_bootstrap": 20,
        "split": {"strategy": "random", "seed": 0}}


@pytest.fixture(scope="module")
def events(mimic_slice) -> pd.DataFrame:
    return read_meds(mimic_slice, column_map=MIMIC_COLUMN_MAP).events


@pytest.fixture(scope="module")
def stays(events) -> pd.DataFrame:
    """One row per hospital admission: subject_id, prediction_time (the admission) and los (days)."""
    adm = events.loc[events["code"].str.startswith("HOSPITAL_ADMISSION//"), ["subject_id", "time"]].drop_duplicates()
    dis = events.loc[events["code"].str.startswith("HOSPITAL_DISCHARGE//"), ["subject_id", "time"]].drop_duplicates()
    m = pd.merge_asof(adm.sort_values("time"), dis.sort_values("time").rename(columns={"time": "discharge"}),
                      left_on="time", right_on="discharge", by="subject_id", direction="forward")
    m = m.dropna(subset=["discharge"]).rename(columns={"time": "prediction_time"})
    m["los"] = (m["discharge"] - m["prediction_time"]).dt.total_seconds() / 86400
    return m.sort_values(["subject_id", "prediction_time"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def label_files(stays, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("labels")
    base = stays[["subject_id", "prediction_time"]]
    files = {
        "long_stay": base.assign(boolean_value=stays["los"] > 3),
        "los": base.assign(float_value=stays["los"]),
        "los_band": base.assign(categorical_value=pd.cut(stays["los"], [-1, 2, 5, 1e9],
                                                         labels=["short", "medium", "long"]).astype(str)),
        "discharge_7d": base.assign(float_value=np.minimum(stays["los"], 7.0).clip(lower=0.01),
                                    boolean_value=stays["los"] <= 7),
    }
    out = {}
    for name, frame in files.items():
        out[name] = d / f"{name}.parquet"
        frame.to_parquet(out[name], index=False)
    return out


# ------------------------------------------------------------------------------------------ label files
def test_the_value_column_sets_the_kind(label_files):
    assert read_task_labels(label_files["long_stay"]).spec.kind == "binary"
    assert read_task_labels(label_files["los"]).spec.kind == "regression"
    band = read_task_labels(label_files["los_band"])
    assert band.spec.kind == "multiclass" and band.spec.classes == ("long", "medium", "short")
    assert set(band.frame["integer_value"]) == {0, 1, 2}


def test_time_to_event_needs_to_be_said_and_then_round_trips(label_files, tmp_path):
    with pytest.raises(DataValidationError, match="--label-kind survival"):
        read_task_labels(label_files["discharge_7d"])
    tl = read_task_labels(label_files["discharge_7d"], kind="survival")
    assert list(tl.frame.columns) == ["subject_id", "prediction_time", "duration", "event"]
    assert tl.frame["duration"].max() == 7.0 and set(tl.frame["event"]) == {0, 1}
    path = write_task_labels(tl, tmp_path / "out")
    back = read_task_labels(path)  # the kind travels in the file's metadata
    assert back.spec.kind == "survival"
    pd.testing.assert_frame_equal(back.frame, tl.frame)
    meds = pq.read_table(path)
    assert meds.schema.field("prediction_time").type.unit == "us"
    assert meds.column("float_value").to_pylist() == tl.frame["duration"].tolist()


@pytest.mark.parametrize("bad, problem", [
    (lambda f: f.assign(boolean_value=f["boolean_value"].astype(object).where(f.index != 2, None)), "without a label"),
    (lambda f: pd.concat([f, f.iloc[:1]]), "more than one label row"),
    (lambda f: f.assign(prediction_time=f["prediction_time"].where(f.index != 0, pd.NaT)), "empty prediction"),
    (lambda f: f.assign(float_value=1.0), "fills both"),
])
def test_bad_label_files_name_the_file_and_column(label_files, tmp_path, bad, problem):
    frame = bad(pd.read_parquet(label_files["long_stay"]))
    path = tmp_path / "bad.parquet"
    frame.to_parquet(path, index=False)
    with pytest.raises(DataValidationError, match=problem) as e:
        read_task_labels(path)
    assert str(path) in str(e.value)


def test_rows_the_data_cannot_support_are_counted_then_refused(events, stays):
    spec = TaskSpec(name="x", kind="binary")
    frame = stays[["subject_id", "prediction_time"]].assign(boolean_value=True)
    early = frame.iloc[:1].assign(prediction_time=pd.Timestamp("1900-01-01"))  # before any event
    stranger = frame.iloc[:1].assign(subject_id=1)
    tl = TaskLabels(pd.concat([frame, early, stranger], ignore_index=True), spec)
    kept, counts = match_labels(tl, events, max_unmatched_fraction=0.05)
    assert counts == {"rows": len(frame) + 2, "kept": len(frame), "unknown_subject": 1, "no_history": 1}
    assert len(kept) == len(frame)
    with pytest.raises(DataValidationError, match="do not match the data"):
        match_labels(tl, events, max_unmatched_fraction=0.01, file="mine.parquet")


# ----------------------------------------------------------------------------------- every command
@pytest.fixture(scope="module")
def rnn_long_stay(mimic_slice, label_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("art") / "long_stay"
    res = api.finetune(mimic_slice, labels=label_files["long_stay"], column_map=MIMIC_COLUMN_MAP, model="rnn",
                       out=out, **TINY)
    return res


def test_finetune_on_a_label_file_records_the_task(rnn_long_stay, label_files):
    cfg = json.loads((rnn_long_stay.artifact / "config.json").read_text())
    assert cfg["task_spec"]["name"] == "long_stay" and cfg["task_spec"]["kind"] == "binary"
    assert cfg["task"] == "binary" and cfg["finetune"]["labels"] == str(label_files["long_stay"])
    m = rnn_long_stay.metrics
    assert m["label_match"]["kept"] == m["label_match"]["rows"]
    assert m["held_out"]["n_rows"] > 0 and "auroc" in m["held_out"]


def test_evaluate_describes_the_task_and_writes_meds_evaluation_predictions(rnn_long_stay, mimic_slice,
                                                                            label_files, tmp_path, capsys):
    from meds_evaluation.evaluate import evaluate_binary_classification
    from meds_evaluation.schema import PredictionSchema

    rc = main(["evaluate", "--artifact", str(rnn_long_stay.artifact), "--data", str(mimic_slice),
               "--column-map", "value=numeric_value", "--labels", str(label_files["long_stay"]), "--split", "all",
               "--out", str(tmp_path / "rep"), "--n-boot", "20", "--no-plots"])
    assert rc == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "long_stay" in md and "rheumatoid" not in md.lower() and "disease-activity" not in md
    assert "evaluated patients trained this model" in md  # --split all includes the train patients: said so
    table = pq.read_table(tmp_path / "rep" / "predictions.parquet")
    aligned = PredictionSchema.align(table)  # raises on extra or mistyped columns
    assert aligned.num_rows == len(pd.read_parquet(label_files["long_stay"]))
    assert "binary_accuracy" in str(evaluate_binary_classification(aligned.to_pandas().pipe(_polars)))


def _polars(df: pd.DataFrame):
    import polars as pl

    return pl.from_pandas(df)


def test_score_with_labels_carries_the_truth_and_without_them_says_what_to_pass(rnn_long_stay, mimic_slice,
                                                                               label_files, tmp_path, capsys):
    out = tmp_path / "scores"
    rc = main(["score", "--artifact", str(rnn_long_stay.artifact), "--data", str(mimic_slice),
               "--column-map", "value=numeric_value", "--labels", str(label_files["long_stay"]), "--out", str(out)])
    assert rc == 0
    got = pd.read_parquet(out)
    lab = pd.read_parquet(label_files["long_stay"])
    assert len(got) == len(lab) and {"boolean_value", "predicted_boolean_probability"} <= set(got)
    m = got.merge(lab, on=["subject_id", "prediction_time"], suffixes=("", "_file"))
    assert (m["boolean_value"] == m["boolean_value_file"]).all()
    want = api.predict(rnn_long_stay.artifact, mimic_slice, labels=label_files["long_stay"],
                       column_map=MIMIC_COLUMN_MAP)
    key = ["subject_id", "prediction_time"]
    assert list(want.columns) == list(got.columns)  # api.predict returns what score writes
    pd.testing.assert_frame_equal(got.sort_values(key, ignore_index=True), want.sort_values(key, ignore_index=True),
                                  check_exact=False, atol=1e-6)
    capsys.readouterr()
    rc = main(["score", "--artifact", str(rnn_long_stay.artifact), "--data", str(mimic_slice),
               "--column-map", "value=numeric_value", "--out", str(tmp_path / "nolabels")])
    err = capsys.readouterr().err
    assert rc == 2 and "--labels" in err and len(err.strip().splitlines()) == 1


def test_predict_without_labels_for_a_label_file_task_is_refused(rnn_long_stay, mimic_slice):
    with pytest.raises(TargetError, match="came from a label file"):
        api.predict(rnn_long_stay.artifact, mimic_slice, column_map=MIMIC_COLUMN_MAP)


def test_regression_and_multiclass_tasks_train_rnn_and_behrt(mimic_slice, label_files, tmp_path):
    reg = api.finetune(mimic_slice, labels=label_files["los"], column_map=MIMIC_COLUMN_MAP, model="rnn", **TINY)
    assert {"mae", "rmse", "r2"} <= set(reg.metrics["held_out"])
    band = api.finetune(mimic_slice, labels=label_files["los_band"], column_map=MIMIC_COLUMN_MAP, model="behrt",
                        out=tmp_path / "band", **TINY)
    assert "macro_auroc" in band.metrics["held_out"]
    probs = band.predictions["held_out"].filter(like="y_prob_")
    assert list(probs.columns) == ["y_prob_long", "y_prob_medium", "y_prob_short"]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)  # softmax over the classes
    meds = api.predict(tmp_path / "band", mimic_slice, labels=label_files["los_band"],
                       column_map=MIMIC_COLUMN_MAP)
    assert set(meds["predicted_categorical_value"]) <= {"long", "medium", "short"}
    best = meds[["predicted_long_probability", "predicted_medium_probability", "predicted_short_probability"]]
    assert (best.to_numpy().argmax(1) == meds["predicted_integer_value"].to_numpy()).all()


def test_a_time_to_event_label_file_trains_deepsurv_and_scores_at_horizons(mimic_slice, label_files, tmp_path):
    res = api.finetune(mimic_slice, labels=label_files["discharge_7d"], label_kind="survival",
                       column_map=MIMIC_COLUMN_MAP, out=tmp_path / "ds", n_bootstrap=20,
                       split={"strategy": "random", "seed": 0}, train={"epochs": 5})
    assert res.metrics["held_out"]["harrell_c"]["value"] is not None
    cfg = json.loads((tmp_path / "ds" / "config.json").read_text())
    assert cfg["model_type"] == "deepsurv" and cfg["task_spec"]["kind"] == "survival"
    assert cfg["model"]["epochs"] == 5  # --epochs reaches DeepSurv (it used to be ignored)
    from ehrseq.scoring import score

    s = score(tmp_path / "ds", mimic_slice, tmp_path / "scores", labels=label_files["discharge_7d"],
              column_map=MIMIC_COLUMN_MAP, horizons=[1, 3.5])
    got = pd.read_parquet(tmp_path / "scores")
    assert s.predictions_written == len(got) == len(pd.read_parquet(label_files["discharge_7d"]))
    assert {"predicted_risk", "predicted_survival_1d", "predicted_survival_3_5d", "float_value"} <= set(got)
    assert (got["predicted_survival_3_5d"] <= got["predicted_survival_1d"] + 1e-12).all()  # S(t) falls with t


def test_cli_refuses_two_task_sources_in_one_line(mimic_slice, label_files, tmp_path, capsys):
    rc = main(["finetune", "--data", str(mimic_slice), "--column-map", "value=numeric_value", "--out",
               str(tmp_path / "x"), "--labels", str(label_files["long_stay"]), "--target", "next_visit_dx"])
    err = capsys.readouterr().err
    assert rc == 2 and "keep one" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_evaluate_finds_the_held_out_patients_in_the_artifact_when_the_data_has_no_split(
        rnn_long_stay, mimic_slice, label_files, tmp_path):
    from ehrseq.recipes.evaluate import evaluate_artifact

    split = json.loads((rnn_long_stay.artifact / "split.json").read_text())
    assert set(split) == {"train", "tuning", "held_out"}
    assert not set(split["train"]) & set(split["held_out"])
    evaluate_artifact(rnn_long_stay.artifact, mimic_slice, tmp_path / "rep", labels=label_files["long_stay"],
                      column_map=MIMIC_COLUMN_MAP, n_boot=10, plots=False)
    got = pd.read_parquet(tmp_path / "rep" / "predictions.parquet")
    assert set(got["subject_id"]) <= set(split["held_out"])
    assert "trained this model" not in (tmp_path / "rep" / "report.md").read_text()
    assert len(got) == rnn_long_stay.metrics["held_out"]["n_rows"]
    np.testing.assert_allclose(np.sort(got["predicted_boolean_probability"]),
                               np.sort(rnn_long_stay.predictions["held_out"]["y_prob"]), atol=1e-6)


MIMIC_TASKS = Path(__file__).parents[1] / "configs" / "tasks" / "mimic"


def test_a_task_file_runs_through_every_command(mimic_slice, tmp_path, capsys):
    """labels -> finetune --labels; finetune --task in one step; score and evaluate rebuild the task's rows
    from the task file the artifact recorded, so they need no label file."""
    data = ["--data", str(mimic_slice), "--column-map", "value=numeric_value"]
    task = ["--task", str(MIMIC_TASKS / "long_los.yaml"), "--predicates", str(MIMIC_TASKS / "predicates.yaml")]
    assert main(["labels", *task, *data, "--out", str(tmp_path / "labels")]) == 0
    from_file = read_task_labels(tmp_path / "labels")
    assert from_file.spec.kind == "binary" and from_file.spec.name == "long_los"
    tiny = ["--preset", "tiny", "--epochs", "1", "--n-bootstrap", "10", "--no-progress", "--split", "random"]
    assert main(["finetune", *task, *data, *tiny, "--out", str(tmp_path / "art")]) == 0
    cfg = json.loads((tmp_path / "art" / "config.json").read_text())
    assert cfg["task_spec"]["source"].startswith("task:") and "long" in cfg["task_spec"]["definition"].lower()
    assert main(["score", "--artifact", str(tmp_path / "art"), *data, "--out", str(tmp_path / "scores")]) == 0
    got = pd.read_parquet(tmp_path / "scores")
    pd.testing.assert_frame_equal(got[["subject_id", "prediction_time"]].sort_values(["subject_id", "prediction_time"])
                                  .reset_index(drop=True), from_file.frame[["subject_id", "prediction_time"]])
    assert main(["evaluate", "--artifact", str(tmp_path / "art"), *data, "--out", str(tmp_path / "rep"),
                 "--n-boot", "10", "--no-plots"]) == 0
    assert "long_los" in (tmp_path / "rep" / "report.md").read_text()


def test_a_bad_task_file_fails_in_one_line_before_the_data_is_read(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text((MIMIC_TASKS / "long_los.yaml").read_text().replace("trigger:", "triger:"))
    rc = main(["finetune", "--task", str(bad), "--predicates", str(MIMIC_TASKS / "predicates.yaml"),
               "--data", str(tmp_path / "does-not-exist"), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and str(bad) in err and len(err.strip().splitlines()) == 1 and "does-not-exist" not in err


def test_every_family_takes_the_train_knobs_it_has_and_refuses_the_others():
    from ehrseq.config import load_config
    from ehrseq.errors import ConfigError
    from ehrseq.recipes.survival import deepsurv_config
    from ehrseq.recipes.text import text_config

    ds = deepsurv_config(load_config(None, train={"epochs": 7, "lr": 0.05}))
    assert (ds.epochs, ds.lr, ds.hidden_sizes) == (7, 0.05, (32, 32))
    assert deepsurv_config(load_config(None)).lr == 1e-2  # the preset's, stated in the registry
    tx = text_config(load_config(None, preset="tiny", train={"epochs": 2, "batch_size": 4}))
    assert (tx.epochs, tx.batch_size, tx.dim) == (2, 4, 32)
    with pytest.raises(ConfigError, match="train.patience does not apply to the text model"):
        text_config(load_config(None, train={"patience": 2}))
    with pytest.raises(ConfigError, match="train.grad_clip does not apply to the deepsurv model"):
        deepsurv_config(load_config(None, train={"grad_clip": 0.5}))
    with pytest.raises(ConfigError, match="unknown text preset 'base'"):
        text_config(load_config(None, preset="base"))
    with pytest.raises(ConfigError, match="both in train"):
        deepsurv_config(load_config(None, train={"lr": 0.1}, model_overrides={"lr": 0.2}))


def test_init_from_an_artifact_whose_patients_are_now_held_out_is_refused_or_reported(
        rnn_long_stay, mimic_slice, label_files, tmp_path):
    from ehrseq.errors import LeakageError
    from ehrseq.recipes.evaluate import evaluate_artifact

    other = {**TINY, "split": {"strategy": "random", "seed": 5}}  # another split: train patients move
    with pytest.raises(LeakageError, match="held_out"):
        api.finetune(mimic_slice, labels=label_files["long_stay"], column_map=MIMIC_COLUMN_MAP, model="rnn",
                     init=rnn_long_stay.artifact, **other)
    res = api.finetune(mimic_slice, labels=label_files["long_stay"], column_map=MIMIC_COLUMN_MAP, model="rnn",
                       init=rnn_long_stay.artifact, allow_init_overlap=True, out=tmp_path / "again", **other)
    assert res.metrics["init_overlap"]["allowed"] and sum(res.metrics["init_overlap"]["overlap"].values()) > 0
    evaluate_artifact(tmp_path / "again", mimic_slice, tmp_path / "rep", labels=label_files["long_stay"],
                      column_map=MIMIC_COLUMN_MAP, n_boot=10, plots=False)
    assert "--allow-init-overlap" in (tmp_path / "rep" / "report.md").read_text()


def test_a_failing_evaluate_leaves_the_old_report_whole(rnn_long_stay, mimic_slice, label_files, tmp_path,
                                                        monkeypatch):
    import ehrseq.recipes.evaluate as ev

    kw = {"labels": label_files["long_stay"], "column_map": MIMIC_COLUMN_MAP, "n_boot": 5, "plots": False}
    ev.evaluate_artifact(rnn_long_stay.artifact, mimic_slice, tmp_path / "rep", **kw)
    before = {p.name: p.read_bytes() for p in (tmp_path / "rep").iterdir()}

    def half_written(report, out, **_):
        (out / "report.json").write_text("{")
        raise OSError("disk full")

    monkeypatch.setattr("ehrseq.evaluate.report.write_report", half_written)
    with pytest.raises(OSError, match="disk full"):
        ev.evaluate_artifact(rnn_long_stay.artifact, mimic_slice, tmp_path / "rep", **kw)
    assert {p.name: p.read_bytes() for p in (tmp_path / "rep").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]  # no temporary directory left behind
