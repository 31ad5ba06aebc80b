"""End to end through the CLI on a small synthetic cohort: synth -> finetune -> evaluate, and errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ehrseq import api, codes
from ehrseq.cli import main
from ehrseq.errors import TargetError

FAST = ["--preset", "tiny", "--epochs", "2", "--no-progress", "--n-bootstrap", "20"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    assert main(["synth", "--n-patients", "160", "--seed", "5", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def artifact(cohort, tmp_path_factory):
    art = tmp_path_factory.mktemp("art") / "cdai_rnn"
    assert main(["finetune", "--target", "cdai", "--data", str(cohort / "meds"), "--out", str(art), "--seed", "1", *FAST]) == 0
    return art


def test_synth_writes_meds_extract_and_truth(cohort):
    assert (cohort / "meds" / "metadata" / "subject_splits.parquet").exists()
    assert (cohort / "meds" / "truth" / "cdai_next.parquet").exists()
    assert (cohort / "extract" / "patients.csv").exists()
    meds = api.load_data(cohort / "meds")
    ext = api.load_data(cohort / "extract")
    assert meds.events["subject_id"].nunique() == ext.events["subject_id"].nunique() == 160


def test_finetune_writes_a_complete_artifact(artifact):
    names = {p.name for p in artifact.iterdir()}
    assert {"model.safetensors", "config.json", "featurizer.json", "metrics.json", "manifest.json",
            "calibrator.json", "conformal.json"} <= names
    assert not any(n.endswith((".pt", ".pkl", ".bin")) for n in names)
    m = json.loads((artifact / "metrics.json").read_text())
    assert 0.5 < m["held_out"]["auroc"]["value"] <= 1.0
    assert m["held_out"]["auroc"]["lo"] <= m["held_out"]["auroc"]["value"] <= m["held_out"]["auroc"]["hi"]
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["data_hash"] and manifest["split_hash"]


def test_same_seed_gives_same_metrics(cohort, artifact, tmp_path):
    again = tmp_path / "again"
    assert main(["finetune", "--target", "cdai", "--data", str(cohort / "meds"), "--out", str(again), "--seed", "1", *FAST]) == 0
    a = json.loads((artifact / "metrics.json").read_text())["held_out"]
    b = json.loads((again / "metrics.json").read_text())["held_out"]
    assert a == b


def test_predictions_ignore_events_after_prediction_time(cohort, artifact):
    """Adding events after each row's prediction_time never changes that row's prediction."""
    d = api.load_data(cohort / "meds")
    labels = api.predict(artifact, d)[["subject_id", "prediction_time"]].iloc[::7].reset_index(drop=True)
    base = api.predict(artifact, d, labels=labels)
    rng = np.random.default_rng(0)
    extra = []
    last = labels.groupby("subject_id")["prediction_time"].max()  # after every row of that subject
    for sid, t in last.items():
        for code, val in ((codes.CDAI, 70.0), (codes.CRP, 90.0), ("RX//RITUXIMAB", np.nan), (codes.VISIT, np.nan)):
            extra.append((sid, t + pd.Timedelta(seconds=int(rng.integers(1, 10**6))), code, val))
    ex = pd.DataFrame(extra, columns=["subject_id", "time", "code", "numeric_value"])
    ex["time"] = ex["time"].astype("datetime64[us]")
    ex["numeric_value"] = ex["numeric_value"].astype("float32")
    ev = pd.concat([d.events, ex], ignore_index=True).sort_values(["subject_id", "time"], kind="stable", na_position="first")
    after = api.predict(artifact, api.LoadedData(ev, d.splits, None, "test"), labels=labels)
    np.testing.assert_allclose(after["predicted_boolean_probability"].to_numpy(),
                               base["predicted_boolean_probability"].to_numpy(), atol=1e-6)


def test_transfer_from_artifact_keeps_its_featurizer(cohort, artifact, tmp_path):
    out = tmp_path / "transfer"
    rc = main(["finetune", "--target", "cdai", "--data", str(cohort / "meds"), "--out", str(out), "--init", str(artifact),
               "--sites", "B", "--train-fraction", "0.5", *FAST])
    assert rc == 0
    assert json.loads((out / "featurizer.json").read_text()) == json.loads((artifact / "featurizer.json").read_text())


def test_evaluate_writes_reports(cohort, artifact, tmp_path):
    rc = main(["evaluate", "--artifact", str(artifact), "--data", str(cohort / "meds"), "--out", str(tmp_path / "rep"),
               "--n-boot", "20", "--min-group-size", "5", "--no-plots"])
    assert rc == 0
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["model_card"]["data_hash"]
    assert (tmp_path / "rep" / "report.md").read_text().count("auroc") >= 1


def test_target_the_data_cannot_support_is_a_clear_error(cohort, tmp_path, capsys):
    d = api.load_data(cohort / "meds")
    no_cdai = d.events.loc[d.events["code"] != codes.CDAI]
    with pytest.raises(Exception, match="SCORE//CDAI"):
        api.finetune(api.LoadedData(no_cdai, d.splits, None, "t"), target="cdai", preset="tiny")
    rc = main(["finetune", "--target", "nonsense", "--data", str(cohort / "meds"), "--out", str(tmp_path / "x"), *FAST])
    assert rc == 2
    assert "unknown target 'nonsense'" in capsys.readouterr().err


def test_missing_data_path_is_a_clear_error(tmp_path, capsys):
    rc = main(["finetune", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "x"), *FAST])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err


def test_permutation_importance_finds_the_cdai_history(cohort, artifact):
    from ehrseq.explain import explain_artifact

    imp = explain_artifact(artifact, cohort / "meds", split="all", n_repeats=2)
    top = imp.set_index("group")["importance"]
    assert "SCORE//CDAI" in imp["group"].iloc[:2].tolist()
    assert top["SCORE//CDAI"] > top["sex"] + 0.01
    assert {"age", "sex", "days since previous step"} <= set(imp["group"])


def test_survival_finetune_then_evaluate(cohort, tmp_path):
    art = tmp_path / "flare"
    rc = main(["finetune", "--target", "survival", "--event", "EVENT//FLARE", "--data", str(cohort / "meds"),
               "--out", str(art), "--n-bootstrap", "10"])
    assert rc == 0
    assert {"baseline_hazard.json", "scaler.json", "featurizer.json"} <= {p.name for p in art.iterdir()}
    rc = main(["evaluate", "--artifact", str(art), "--data", str(cohort / "meds"), "--out", str(tmp_path / "rep"),
               "--n-boot", "10", "--no-plots", "--split", "all"])
    assert rc == 0
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["meta"]["task"] == "survival"
    assert rep["overall"]["concordance"]["estimate"] is not None


def test_biopsy_finetune_then_evaluate(tmp_path):
    c = tmp_path / "bx"
    assert main(["synth", "--n-patients", "240", "--seed", "2", "--biopsy-rate", "0.5", "--no-extract",
                 "--out", str(c)]) == 0
    res = api.finetune(c / "meds", target="biopsy", preset="tiny", out=tmp_path / "art",
                       model_overrides={"epochs": 2, "mlm_epochs": 1})
    assert 0.0 <= res.metrics["held_out"]["macro"]["auroc"] <= 1.0
    rc = main(["evaluate", "--artifact", str(tmp_path / "art"), "--data", str(c / "meds"), "--out", str(tmp_path / "rep"),
               "--split", "all", "--n-boot", "10", "--no-plots", "--min-group-size", "5"])
    assert rc == 0
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["meta"]["task"] == "multilabel"
    assert "gca" in json.dumps(rep["per_label"])
    assert rep["overall"]["macro_auroc"]["estimate"] is not None


def test_biopsy_finetune_at_one_site_self_trained_towards_another(tmp_path, capsys):
    from ehrseq.artifacts import load_artifact

    c = tmp_path / "bx"
    assert main(["synth", "--n-patients", "300", "--seed", "3", "--biopsy-rate", "0.6", "--no-extract",
                 "--out", str(c)]) == 0
    cfg = tmp_path / "bx.yaml"
    cfg.write_text("target: biopsy\nmodel: text\npreset: tiny\nmodel_overrides:\n  epochs: 1\n  mlm_epochs: 1\n")
    out = tmp_path / "art"
    rc = main(["finetune", "--config", str(cfg), "--data", str(c / "meds"), "--out", str(out),
               "--sites", "A", "--adapt-sites", "B"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "held_out_adapt_sites" in printed  # site B's held-out reports are scored with their labels
    art = load_artifact(out)
    assert art.metrics["split_sizes"]["adapt_to"] > 0
    assert 0.0 <= art.metrics["held_out_adapt_sites"]["macro"]["auroc"] <= 1.0
    assert any(h.get("self_train_round") == 1 for h in art.extras["history"])
    with pytest.raises(TargetError, match="other sites"):
        api.finetune(c / "meds", config=cfg, sites=["A"], adapt_sites=["A"], out=tmp_path / "no")
    assert not (tmp_path / "no").exists()  # refused before any training or writing


def test_pretrain_with_prefixes_then_finetune_behrt_with_a_weightless_override(cohort, tmp_path):
    from ehrseq.artifacts import load_artifact

    mlm = tmp_path / "mlm"
    rc = main(["pretrain", "--data", str(cohort / "meds"), "--out", str(mlm), "--preset", "tiny", "--epochs", "1",
               "--no-progress", "--prefixes", "3"])
    assert rc == 0
    pre = load_artifact(mlm)
    assert pre.config["prefixes_per_subject"] == 3
    cfg = tmp_path / "behrt.yaml"
    cfg.write_text("model: behrt\nmodel_overrides:\n  pooling: mean\n")  # carries no weights: allowed on --init
    out = tmp_path / "behrt"
    rc = main(["finetune", "--target", "cdai", "--config", str(cfg), "--init", str(mlm), "--data",
               str(cohort / "meds"), "--out", str(out), "--preset", "tiny", "--epochs", "1", "--no-progress",
               "--n-bootstrap", "20"])
    assert rc == 0
    art = load_artifact(out)
    assert art.config["model"]["pooling"] == "mean"
    # argparse: a clear usage error (exit code 2), before any work
    assert main(["pretrain", "--data", str(cohort / "meds"), "--out", str(tmp_path / "x"), "--prefixes", "0"]) == 2


def test_behrt_artifacts_saved_before_pooling_existed_read_the_cls_token():
    from ehrseq.registry import saved_behrt_config as _saved_behrt_config

    old = _saved_behrt_config({"vocab_size": 40, "transformers_version": "4.0", "architectures": ["BehrtModel"]})
    assert old == {"pooling": "cls", "vocab_size": 40}
    assert _saved_behrt_config({"pooling": "last"})["pooling"] == "last"
