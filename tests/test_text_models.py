"""The scope-marked TF-IDF biopsy model as an ehrseq artifact: round trip, CLI finetune / score / evaluate,
refusal of tampered, incomplete and inconsistent artifacts, config errors, per-site threshold re-tuning."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ehrseq import api, names  # noqa: E402
from ehrseq.artifacts import load_artifact, save_artifact  # noqa: E402
from ehrseq.cli import main  # noqa: E402
from ehrseq.config import load_config  # noqa: E402
from ehrseq.errors import ArtifactError, ConfigError, DataValidationError, TargetError  # noqa: E402
from ehrseq.models.text_features import TfidfScope, TfidfScopeConfig  # noqa: E402
from ehrseq.models.text_models import (  # noqa: E402
    TEXT_MODELS,
    load_text_model,
    retune_thresholds,
    save_tfidf_scope,
)
from ehrseq.recipes.text import text_config  # noqa: E402
from ehrseq.synth.reports import REPORT_LABELS, generate_reports  # noqa: E402

LABELS = list(REPORT_LABELS)


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {"train": pd.concat([generate_reports(50, seed=1, site="A"), generate_reports(50, seed=1, site="B")]),
            "tuning": pd.concat([generate_reports(30, seed=2, site="A"), generate_reports(30, seed=2, site="B")])}


@pytest.fixture(scope="module")
def saved(frames: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> tuple[TfidfScope, Path]:
    model = TfidfScope(config=TfidfScopeConfig(features="word+char", c=2.0, cues={"pseudo": ["no change"]}))
    model.fit(frames["train"], frames["tuning"])
    return model, save_tfidf_scope(model, tmp_path_factory.mktemp("tfidf") / "art", metrics={"note": 1})


def test_round_trip_scores_and_keeps_settings_and_cues(saved: tuple[TfidfScope, Path],
                                                       frames: dict[str, pd.DataFrame]) -> None:
    model, path = saved
    loaded = load_text_model(path)
    assert isinstance(loaded, TfidfScope) and loaded.config.features == "word+char" and loaded.config.c == 2.0
    assert loaded.cues_ == model.cues_ and loaded.cues_["pseudo"] == (("no", "change"),)
    texts = frames["tuning"].text.tolist() + ["No giant cells.", "GIANT CELLS SEEN", "?"]
    np.testing.assert_allclose(loaded.predict_proba(texts), model.predict_proba(texts), rtol=0, atol=1e-9)
    np.testing.assert_allclose(loaded.thresholds_, model.thresholds_, rtol=0, atol=1e-12)
    art = load_artifact(path)
    assert art.config["text_model"] == "tfidf_scope" and art.config["model_type"] == "text_classifier"
    assert {p.name for p in path.iterdir()} >= {"model.safetensors", "vocabulary.json", "thresholds.json"}
    assert not any(p.suffix in (".pkl", ".joblib", ".pickle") for p in path.rglob("*"))
    assert all(t.dtype == torch.float64 for t in art.state_dict.values())
    # an artifact already loaded (as evaluate and score have it) gives the same model without a second read
    np.testing.assert_allclose(load_text_model(art).predict_proba(texts), loaded.predict_proba(texts), atol=0)
    art.config = {**art.config, "model_type": "deepsurv"}
    with pytest.raises(ArtifactError, match="'deepsurv' model, expected 'text_classifier'"):
        load_text_model(art)


@pytest.mark.parametrize("how", ["tamper", "absent"])
def test_a_tampered_or_absent_file_is_refused(saved: tuple[TfidfScope, Path], tmp_path: Path, how: str) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(saved[1], copy)
    vocab = copy / "vocabulary.json"
    if how == "tamper":
        d = json.loads(vocab.read_text())
        d["char"][0], d["char"][1] = d["char"][1], d["char"][0]
        vocab.write_text(json.dumps(d))
        match = "does not match its hash"
    else:
        (copy / "thresholds.json").unlink()
        match = "missing"
    with pytest.raises(ArtifactError, match=match):
        load_text_model(copy)


def test_arrays_that_do_not_fit_their_vocabulary_are_refused(saved: tuple[TfidfScope, Path], tmp_path: Path) -> None:
    art = load_artifact(saved[1])
    state = dict(art.state_dict)
    state["coef"] = state["coef"][:, :-1].contiguous()  # one feature short, re-hashed: a consistent manifest
    bad = save_artifact(tmp_path / "bad", state_dict=state, config=art.config, extras=art.extras)
    with pytest.raises(ArtifactError, match="do not fit together"):
        load_text_model(bad)
    state = dict(art.state_dict)
    state["intercept"] = state["intercept"].float()
    with pytest.raises(ArtifactError, match="float64"):
        load_text_model(save_artifact(tmp_path / "f32", state_dict=state, config=art.config, extras=art.extras))


def test_an_artifact_saved_before_a_cue_kind_existed_keeps_that_kind_off(saved: tuple[TfidfScope, Path],
                                                                          tmp_path: Path) -> None:
    art = load_artifact(saved[1])
    model_cfg = dict(art.config["model"])
    model_cfg["cues"] = {k: v for k, v in model_cfg["cues"].items() if k not in ("revision", "retraction")}
    old = save_artifact(tmp_path / "old", state_dict=dict(art.state_dict), config={**art.config, "model": model_cfg},
                        extras=art.extras)
    loaded = load_text_model(old)
    assert loaded.cues_["revision"] == () and loaded.cues_["retraction"] == ()  # as it was fitted: no such cues
    assert loaded.cues_["pseudo"] == (("no", "change"),) and loaded.cues_["addendum"] == saved[0].cues_["addendum"]
    revised = "Giant cells are seen. Addendum: amended report, the diagnosis is revised; no giant cells."
    from ehrseq.models.scope_marking import mark_scopes

    assert "xold" not in mark_scopes(revised, loaded.cues_) and "xold" in mark_scopes(revised)


def test_text_model_names_agree_and_config_mistakes_are_refused() -> None:
    assert names.TEXT_MODELS == TEXT_MODELS
    assert load_config(None, target="biopsy", model="text").text_model == "distilbert"  # the named default
    with pytest.raises(ConfigError, match="text_model 'bert' is not one of distilbert, tfidf_scope"):
        load_config(None, target="biopsy", model="text", text_model="bert")
    with pytest.raises(ConfigError, match="applies to the biopsy text model"):
        load_config(None, target="cdai", model="rnn", text_model="tfidf_scope")
    cfg = load_config("configs/biopsy_tfidf.yaml", preset="tiny", model_overrides={"c": 3.0})
    tc = text_config(cfg)
    assert isinstance(tc, TfidfScopeConfig) and tc.c == 3.0 and tc.char_ngram == (3, 4)
    with pytest.raises(ConfigError, match="train.epochs does not apply to the tfidf_scope model"):
        text_config(load_config("configs/biopsy_tfidf.yaml", train={"epochs": 3}))
    with pytest.raises(ConfigError, match="features must be one of"):
        text_config(load_config("configs/biopsy_tfidf.yaml", model_overrides={"features": "bpe"}))


def test_retuned_thresholds_keep_one_class_labels(saved: tuple[TfidfScope, Path]) -> None:
    model = saved[0]
    few = generate_reports(12, seed=9, site="B").assign(giant_cells=0)
    thr = retune_thresholds(model, few)
    assert thr.shape == (4,) and thr[LABELS.index("giant_cells")] == model.thresholds_[LABELS.index("giant_cells")]
    with pytest.raises(DataValidationError, match="gca"):
        retune_thresholds(model, few.drop(columns="gca"))


@pytest.fixture(scope="module")
def bx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bx")
    api.synthesize(160, out=out, seed=2, extract=False, biopsy_rate=0.6)
    return out / "meds"


def test_finetune_score_and_evaluate_through_the_cli(bx: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "bx.yaml"
    cfg.write_text("target: biopsy\nmodel: text\ntext_model: tfidf_scope\npreset: tiny\n")
    art = tmp_path / "art"
    assert main(["finetune", "--config", str(cfg), "--data", str(bx), "--out", str(art)]) == 0
    model = load_text_model(art)
    assert isinstance(model, TfidfScope) and model.config.char_ngram == (3, 4)
    m = load_artifact(art).metrics
    assert 0.0 <= m["macro"]["auroc"] <= 1.0 and m["split_sizes"]["train"] > 0
    assert main(["score", "--artifact", str(art), "--data", str(bx), "--out", str(tmp_path / "sc")]) == 0
    scored = pd.concat(pd.read_parquet(p) for p in sorted((tmp_path / "sc").rglob("*.parquet")))
    assert len(scored) > 0 and scored["predicted_gca_probability"].between(0, 1).all()
    assert main(["evaluate", "--artifact", str(art), "--data", str(bx), "--out", str(tmp_path / "rep"),
                 "--split", "all", "--n-boot", "10", "--no-plots", "--min-group-size", "5"]) == 0
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["meta"]["task"] == "multilabel" and rep["overall"]["macro_auroc"]["estimate"] is not None
    with pytest.raises(TargetError, match="adapt_sites"):
        api.finetune(bx, config=cfg, sites=["A"], adapt_sites=["B"], out=tmp_path / "no")
    assert not (tmp_path / "no").exists()
    # the same model chosen by flag instead of config key
    flag = tmp_path / "flag"
    assert main(["finetune", "--target", "biopsy", "--model", "text", "--text-model", "tfidf_scope",
                 "--preset", "tiny", "--data", str(bx), "--out", str(flag)]) == 0
    assert isinstance(load_text_model(flag), TfidfScope)
