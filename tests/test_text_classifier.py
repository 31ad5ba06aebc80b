"""The biopsy text classifier: tokenizer round trip, negation, windows, errors, save/load, determinism."""

from __future__ import annotations

import copy
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ehrseq.errors import DataValidationError  # noqa: E402
from ehrseq.featurize.text import load_tokenizer, train_wordpiece  # noqa: E402
from ehrseq.models.attribution import integrated_gradients  # noqa: E402
from ehrseq.models.text_classifier import TextClassifier, TextClassifierConfig  # noqa: E402
from ehrseq.recipes.text import finetune_biopsy  # noqa: E402
from ehrseq.synth.reports import generate_reports  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "biopsy_negation.csv"
GC = 1  # column of giant_cells in the default label order


def _tiny(**kw: object) -> TextClassifierConfig:
    return TextClassifierConfig.from_preset("tiny", **{"epochs": 5, "mlm_epochs": 1, **kw})


@pytest.fixture(scope="module")
def data() -> dict[str, pd.DataFrame]:
    # a few hundred reports and a few epochs: the smallest run that reads the hand-written negations
    # correctly for each of seeds 0, 1, 2 (checked when the test was written)
    return {
        "train": pd.concat([generate_reports(300, seed=1, site="A"), generate_reports(300, seed=1, site="B")]),
        "tuning": pd.concat([generate_reports(100, seed=2, site="A"), generate_reports(100, seed=2, site="B")]),
    }


@pytest.fixture(scope="module")
def model(data: dict[str, pd.DataFrame]) -> TextClassifier:
    return TextClassifier(_tiny()).fit(data["train"], data["tuning"])


def test_wordpiece_round_trip_gives_the_same_ids(tmp_path: Path) -> None:
    texts = generate_reports(80, seed=0, site="B").text.tolist()
    tok = train_wordpiece(texts, vocab_size=300, min_frequency=2, out_dir=tmp_path)
    again = load_tokenizer(tmp_path)
    sample = ["No giant cells are identified.", "L TA bx: IEL fragmented, GCs +."]
    assert tok(sample)["input_ids"] == again(sample)["input_ids"]
    ids = again("No Giant cells")["input_ids"]
    assert ids[0] == again.cls_token_id and ids[-1] == again.sep_token_id
    assert again.tokenize("GIANT") == again.tokenize("giant")  # uncased


def test_empty_or_non_text_input_names_the_report(model: TextClassifier) -> None:
    with pytest.raises(DataValidationError, match=r"row\(s\) \[1\]"):
        train_wordpiece(["fine text", "   "])
    bad = pd.DataFrame({"report_id": ["R-1", "R-2", "R-3"], "text": ["giant cells present", None, ""]})
    with pytest.raises(DataValidationError, match="R-2, 'R-3'|'R-2', 'R-3'") as e:
        model.predict_proba(bad)
    assert "giant cells present" not in str(e.value)
    with pytest.raises(DataValidationError, match="row"):
        model.predict([12.5])


def test_negations_in_handwritten_reports(model: TextClassifier) -> None:
    fx = pd.read_csv(FIXTURE)
    pred = model.predict(fx)[:, GC]
    wrong = fx.report_id[pred != fx.giant_cells].tolist()
    assert wrong == [], f"giant_cells misread in {wrong}"


def test_long_report_is_windowed_and_the_last_window_counts(model: TextClassifier) -> None:
    fx = pd.read_csv(FIXTURE).set_index("report_id")
    gross = " ".join(
        f"GROSS DESCRIPTION, part {k}: Received in formalin is a segment of tan tubular tissue measuring 2.1 cm "
        "in length and 0.2 cm in diameter. Serially cross-sectioned and entirely submitted." for k in (1, 2, 3)
    )
    texts = [f"{gross} {fx.text['NEG-02']}", f"{gross} {fx.text['NEG-01']}"]  # findings only at the end
    assert (model.n_windows(texts) > 1).all()
    assert len(model.tokenizer_(texts[0])["input_ids"]) > model.config.max_length
    gca = model.config.labels.index("gca")
    assert model.predict([gross])[0, gca] == 0  # what a truncating model would see
    assert model.predict(texts)[:, [GC, gca]].tolist() == [[1, 1], [0, 0]]


def test_save_load_gives_identical_probabilities(model: TextClassifier, tmp_path: Path) -> None:
    fx = pd.read_csv(FIXTURE)
    path = model.save(tmp_path / "art")
    again = TextClassifier.load(path)
    np.testing.assert_array_equal(model.predict_proba(fx), again.predict_proba(fx))
    np.testing.assert_array_equal(model.thresholds_, again.thresholds_)
    assert (path / "tokenizer" / "tokenizer.json").exists() and (path / "thresholds.json").exists()


def test_same_seed_same_probabilities(data: dict[str, pd.DataFrame]) -> None:
    train, tuning = data["train"].iloc[:60], data["tuning"].iloc[:30]
    cfg = _tiny(epochs=1, mlm_epochs=1)
    p1 = TextClassifier(cfg).fit(train, tuning).predict_proba(tuning)
    p2 = TextClassifier(cfg).fit(train, tuning).predict_proba(tuning)
    np.testing.assert_array_equal(p1, p2)


def test_finetune_biopsy_writes_an_artifact_with_metrics(data: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    train, tuning = data["train"].iloc[:60], data["tuning"].iloc[:40]
    m = finetune_biopsy(train, tuning, data["tuning"].iloc[40:], tmp_path / "bx", _tiny(epochs=1, mlm_epochs=0))
    assert set(m["macro"]) == {"auroc", "auprc", "f1"} and m["gca"]["n"] == len(data["tuning"]) - 40
    assert TextClassifier.load(m["artifact_path"]).predict_proba(["no giant cells."]).shape == (1, 4)


def test_attributions_cover_the_deciding_window(model: TextClassifier) -> None:
    tokens, scores = integrated_gradients(model, "L TA bx: giant cells seen in the media, GCA.", "giant_cells",
                                          steps=8)
    assert len(tokens) == len(scores) and tokens[0] == "[CLS]" and np.isfinite(scores).all()


@pytest.mark.parametrize("pooling", ["max", "mean_max"])
def test_pooling_and_input_masking_are_deterministic_and_survive_save_load(
    data: dict[str, pd.DataFrame], pooling: str, tmp_path: Path
) -> None:
    train, tuning = data["train"].iloc[:30], data["tuning"].iloc[:20]
    cfg = _tiny(epochs=1, mlm_epochs=0, pooling=pooling, input_mask=0.25, pos_weight=True)
    m1 = TextClassifier(cfg).fit(train, tuning)
    p1 = m1.predict_proba(tuning)
    if pooling == "max":  # the small preset's settings: same seed, same probabilities
        np.testing.assert_array_equal(p1, TextClassifier(cfg).fit(train, tuning).predict_proba(tuning))
    again = TextClassifier.load(m1.save(tmp_path / pooling))
    assert again.config.pooling == pooling and again.config.input_mask == 0.25
    np.testing.assert_array_equal(p1, again.predict_proba(tuning))


def test_config_options_are_checked_and_old_artifacts_keep_mean_pooling() -> None:
    with pytest.raises(ValueError, match="pooling"):
        TextClassifierConfig(pooling="median")
    old = TextClassifierConfig.from_dict({"vocab_size": 500})  # an artifact config written before pooling existed
    assert old.pooling == "mean" and old.input_mask == 0.0
    small = TextClassifierConfig.from_preset("small")
    assert small.pooling == "max" and small.input_mask > 0


def test_unlabeled_reports_join_the_vocabulary_but_not_the_supervised_loss(data: dict[str, pd.DataFrame]) -> None:
    site_a = data["train"].loc[data["train"].site == "A"].iloc[:40]
    tuning = data["tuning"].iloc[:20]
    site_b = generate_reports(60, seed=5, site="B")
    cfg = _tiny(epochs=1, mlm_epochs=1, vocab_size=2000)
    plain = TextClassifier(cfg).fit(site_a, tuning)
    adapted = TextClassifier(cfg).fit(site_a, tuning, unlabeled=site_b.text.tolist())
    # site-B shorthand never written at site A gets whole-word pieces only when B's text is seen
    b_words = "gcs c/w inflam bx"
    assert len(adapted.tokenizer_.tokenize(b_words)) < len(plain.tokenizer_.tokenize(b_words))
    # labels of the unlabeled reports are never read: dropping the columns changes nothing
    again = TextClassifier(cfg).fit(site_a, tuning, unlabeled=site_b[["report_id", "text"]])
    np.testing.assert_array_equal(adapted.predict_proba(tuning), again.predict_proba(tuning))
    with pytest.raises(DataValidationError, match="report_id"):
        TextClassifier(cfg).fit(site_a, tuning, unlabeled=site_b.assign(text=[""] + site_b.text.tolist()[1:]))


def test_token_dropout_is_seeded_and_keeps_special_tokens() -> None:
    import torch

    from ehrseq.models.text_classifier import _drop_tokens

    ids = torch.tensor([[2, 10, 11, 12, 13, 14, 3, 0], [2, 20, 21, 3, 0, 0, 0, 0]])
    att = (ids != 0).long()
    batch = {"input_ids": ids, "attention_mask": att, "sample_map": torch.tensor([0, 1])}
    special = torch.tensor([0, 2, 3])
    a = _drop_tokens(batch, 0.5, special, 0, torch.Generator().manual_seed(0))
    b = _drop_tokens(batch, 0.5, special, 0, torch.Generator().manual_seed(0))
    assert torch.equal(a["input_ids"], b["input_ids"])
    for row, mask in zip(a["input_ids"], a["attention_mask"], strict=True):
        kept = row[mask.bool()].tolist()
        assert kept[0] == 2 and kept[-1] == 3  # [CLS] ... [SEP] survive
    assert int(a["attention_mask"].sum()) < int(att.sum())
    assert torch.equal(_drop_tokens(batch, 0.0, special, 0, torch.Generator())["input_ids"][:, :7], ids[:, :7])


def test_an_ensemble_averages_members_that_are_single_models_with_successive_seeds(
    data: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    train, tuning = data["train"].iloc[:40], data["tuning"].iloc[:20]
    ens = TextClassifier(_tiny(epochs=1, mlm_epochs=1, ensemble=2)).fit(train, tuning)
    single = TextClassifier(_tiny(epochs=1, mlm_epochs=1, seed=1)).fit(train, tuning)
    np.testing.assert_allclose(ens.predict_proba(tuning, member=1), single.predict_proba(tuning), atol=1e-6)
    members = [ens.predict_proba(tuning, member=k) for k in (0, 1)]
    assert not np.allclose(members[0], members[1])
    np.testing.assert_allclose(ens.predict_proba(tuning), np.mean(members, 0), atol=1e-12)
    again = TextClassifier.load(ens.save(tmp_path / "ens"))
    assert len(again.nets_) == 2
    np.testing.assert_array_equal(again.predict_proba(tuning), ens.predict_proba(tuning))
    tokens, scores = integrated_gradients(again, tuning.text.iloc[0], "gca", steps=4)
    assert len(tokens) == len(scores) and np.isfinite(scores).all()
    with pytest.raises(ValueError, match="ensemble"):
        TextClassifierConfig(ensemble=0)


def test_self_training_reads_the_new_sites_text_only_and_keeps_the_vocabulary(
    data: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    site_a = data["train"].loc[data["train"].site == "A"].iloc[:40]
    tuning = data["tuning"].iloc[:20]
    site_b = generate_reports(30, seed=6, site="B")
    cfg = _tiny(epochs=1, mlm_epochs=1, ensemble=2)
    plain = TextClassifier(cfg).fit(site_a, tuning)
    adapted = TextClassifier(cfg).fit(site_a, tuning, adapt_to=site_b)
    # the vocabulary is the labelled site's: the new site's text reaches the model only through its scores
    assert adapted.tokenizer_.get_vocab() == plain.tokenizer_.get_vocab()
    rounds = [h for h in adapted.history_ if h.get("self_train_round")]
    assert [(h["member"], h["self_train_round"]) for h in rounds] == [(0, 1), (1, 1), (0, 2), (1, 2)]
    assert not np.allclose(adapted.predict_proba(site_b), plain.predict_proba(site_b))
    # the new site's labels are never read, and the same seed gives the same model
    again = TextClassifier(cfg).fit(site_a, tuning, adapt_to=site_b.text.tolist())
    np.testing.assert_array_equal(again.predict_proba(site_b), adapted.predict_proba(site_b))
    # adapting a fitted model afterwards (a copy: the benchmark's way) is the same as adapting inside fit
    later = copy.deepcopy(plain).adapt(site_a, tuning, site_b)
    np.testing.assert_array_equal(later.predict_proba(site_b), adapted.predict_proba(site_b))
    np.testing.assert_array_equal(later.thresholds_, adapted.thresholds_)
    # zero rounds is the plain fit
    off = TextClassifier(replace(cfg, self_train_rounds=0)).fit(site_a, tuning, adapt_to=site_b)
    np.testing.assert_array_equal(off.predict_proba(site_b), plain.predict_proba(site_b))
    loaded = TextClassifier.load(adapted.save(tmp_path / "adapted"))
    assert loaded.config.self_train_rounds == 2
    np.testing.assert_array_equal(loaded.predict_proba(site_b), adapted.predict_proba(site_b))
    before, nets = plain.predict_proba(site_b), plain.nets_
    with pytest.raises(DataValidationError, match="adapt_to"):  # refused before any training
        plain.fit(site_a, tuning, adapt_to=[])
    assert plain.nets_ is nets
    np.testing.assert_array_equal(plain.predict_proba(site_b), before)
    with pytest.raises(DataValidationError, match="report_id"):
        TextClassifier(cfg).fit(site_a, tuning, adapt_to=site_b.assign(text=[""] + site_b.text.tolist()[1:]))
    with pytest.raises(ValueError, match="self_train_rounds"):
        TextClassifierConfig(self_train_rounds=-1)



def test_score_predicts_each_rows_latest_report(model: TextClassifier, tmp_path: Path) -> None:
    """`ehrseq score` on a text artifact: by default one row per report; at a fixed time, the latest report at
    or before it (no probability where a subject has no report yet)."""
    from ehrseq.codes import BIOPSY_REPORT
    from ehrseq.io import write_meds
    from ehrseq.scoring import score

    fx = pd.read_csv(FIXTURE)
    texts = fx["text"].tolist()[:3]
    ev = pd.DataFrame({
        "subject_id": np.array([1, 1, 2, 3], np.int64),
        "time": pd.to_datetime(["2020-01-01", "2020-06-01", "2020-03-01", "2021-05-01"]).astype("datetime64[us]"),
        "code": pd.array([BIOPSY_REPORT] * 3 + ["VISIT//OUTPATIENT"], dtype="string"),
        "numeric_value": np.full(4, np.nan, np.float32),
        "text_value": pd.array([texts[0], texts[1], texts[2], None], dtype="string"),
    })
    root = write_meds(ev, tmp_path / "meds", dataset_name="reports", overwrite=True)
    art = model.save(tmp_path / "art")
    score(art, root, tmp_path / "all")
    got = pd.read_parquet(tmp_path / "all").sort_values(["subject_id", "prediction_time"])
    cols = [f"predicted_{n}_probability" for n in model.config.labels]
    np.testing.assert_allclose(got[cols].to_numpy(), model.predict_proba(texts), atol=1e-6)
    score(art, root, tmp_path / "at", prediction_time="2020-04-01")
    at = pd.read_parquet(tmp_path / "at").set_index("subject_id")
    np.testing.assert_allclose(at.loc[[1, 2], cols].to_numpy(), model.predict_proba([texts[0], texts[2]]), atol=1e-6)
    assert at.loc[3, cols].isna().all()  # no report by then: no prediction rather than a made-up one
