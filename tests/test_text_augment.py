"""The scope-marked TF-IDF model with paraphrase augmentation (``augment``): copies added only for reports the
paraphraser recognises, seeded, kept in the artifact, bad values refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehrseq.config import load_config
from ehrseq.errors import ConfigError
from ehrseq.models.text_features import TfidfScope, TfidfScopeConfig, augmented
from ehrseq.models.text_models import load_text_model, save_tfidf_scope
from ehrseq.recipes.text import text_config
from ehrseq.synth.reports import REPORT_LABELS, generate_reports

LABELS = list(REPORT_LABELS)


@pytest.fixture(scope="module")
def data() -> dict[str, pd.DataFrame]:
    return {"train": generate_reports(80, seed=1, site="A"), "tuning": generate_reports(40, seed=2, site="A")}


def test_augment_adds_recognised_copies_with_their_labels(data: dict[str, pd.DataFrame]) -> None:
    tr = data["train"]
    texts, y = augmented(tr.text.tolist(), tr[LABELS].to_numpy(), 2, 0)
    assert len(texts) > 2.5 * len(tr) and texts[: len(tr)] == tr.text.tolist()
    np.testing.assert_array_equal(y[: len(tr)], tr[LABELS].to_numpy())
    assert set(texts[len(tr):]).isdisjoint(tr.text)  # every copy re-words its source


def test_reports_it_cannot_read_are_not_copied(caplog: pytest.LogCaptureFixture) -> None:
    other = ["Sections show a vein.", "Sample inadequate for assessment."] * 5
    texts, y = augmented(other, np.zeros((10, 4), int), 3, 0)
    assert texts == other and y.shape == (10, 4)
    assert "recognised a labelled statement in only 0 of 10" in caplog.text


def test_augmented_fit_is_seeded_and_survives_the_artifact(data: dict[str, pd.DataFrame], tmp_path) -> None:
    cfg = TfidfScopeConfig(char_ngram=(3, 4), max_iter=300, augment=1, seed=4)
    a = TfidfScope(config=cfg).fit(data["train"], data["tuning"])
    b = TfidfScope(config=cfg).fit(data["train"], data["tuning"])
    plain = TfidfScope(config=TfidfScopeConfig(char_ngram=(3, 4), max_iter=300)).fit(data["train"], data["tuning"])
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert len(a.vocabularies_["char"]) > len(plain.vocabularies_["char"])  # the copies bring new words
    back = load_text_model(save_tfidf_scope(a, tmp_path / "art"))
    assert back.config.augment == 1 and back.config.seed == 4
    np.testing.assert_allclose(back.predict_proba(data["tuning"]), a.predict_proba(data["tuning"]), atol=1e-9)


def test_the_shipped_config_augments_and_a_bad_value_is_a_config_error() -> None:
    assert text_config(load_config("biopsy_tfidf")).augment == 3
    with pytest.raises(ConfigError, match="augment"):
        text_config(load_config("biopsy_tfidf", model_overrides={"augment": -1}))
    with pytest.raises(ConfigError, match="augment"):
        text_config(load_config("biopsy_tfidf", model_overrides={"augment": 1.5}))


def test_the_shipped_recipe_reads_every_minimal_pair(data: dict[str, pd.DataFrame]) -> None:
    from ehrseq.models.text_checks import run_minimal_pairs

    cfg = text_config(load_config("biopsy_tfidf", preset="tiny", model_overrides={"augment": 1}))
    assert cfg.augment == 1 and cfg.char_ngram == (3, 4)
    model = TfidfScope(config=cfg).fit(data["train"], data["tuning"])
    res = run_minimal_pairs(model.predict_proba, LABELS)
    assert len(res) == 16
    failed = res.loc[~res.passed, ["label", "kind"]].to_dict("records")
    assert not failed, f"minimal pairs failed: {failed}"


def test_distilbert_with_mark_scopes_and_augment_is_the_marked_paraphrased_model(
        data: dict[str, pd.DataFrame], tmp_path) -> None:
    from ehrseq.models.scope_marking import mark_all
    from ehrseq.models.text_classifier import TextClassifier, TextClassifierConfig

    tr, tu = data["train"].iloc[:40], data["tuning"].iloc[:20]
    cfg = TextClassifierConfig.from_preset("tiny", epochs=1, mlm_epochs=1, mark_scopes=True, augment=1, seed=3)
    lib = TextClassifier(cfg).fit(tr, tu)
    # the same model composed by hand: paraphrase, mark, then a plain classifier on the marked text
    texts, y = augmented(tr.text.tolist(), tr[LABELS].to_numpy(), 1, 3)
    by_hand = TextClassifier(TextClassifierConfig.from_preset("tiny", epochs=1, mlm_epochs=1, seed=3)).fit(
        pd.DataFrame(y, columns=LABELS).assign(text=mark_all(texts)), tu.assign(text=mark_all(tu.text.tolist())))
    reports = ["No giant cells are seen.", "Giant cells are seen in the media."]
    np.testing.assert_allclose(lib.predict_proba(reports), by_hand.predict_proba(mark_all(reports)), atol=1e-6)
    assert any(t.startswith("xneg") for t in lib.tokenizer_.get_vocab())  # the vocabulary is of marked text
    back = TextClassifier.load(lib.save(tmp_path / "m"))
    assert back.config.mark_scopes and back.config.augment == 1
    np.testing.assert_allclose(back.predict_proba(reports), lib.predict_proba(reports), atol=1e-6)
