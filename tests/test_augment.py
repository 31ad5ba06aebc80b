"""ehrseq.models.augment: the paraphraser is chosen from the training reports alone, and used as chosen."""

from __future__ import annotations

import numpy as np
import pytest

from ehrseq.codes import BIOPSY_LABELS
from ehrseq.models import paraphrase, paraphrase_alt
from ehrseq.models.augment import augmented, choose_paraphraser, recognised
from ehrseq.models.text_features import TfidfScopeConfig
from ehrseq.synth.reports import generate_reports

LABELS = list(BIOPSY_LABELS)


@pytest.fixture(scope="module")
def corpora():
    return {g: generate_reports(60, seed=3, site="A", grammar=g) for g in ("base", "alt")}


def test_auto_takes_the_paraphraser_that_reads_the_training_style(corpora):
    a, b = corpora["base"].text.tolist(), corpora["alt"].text.tolist()
    assert recognised("grammar_a", a) > recognised("grammar_b", a)
    assert recognised("grammar_b", b) > recognised("grammar_a", b) == 0
    assert choose_paraphraser(a) == "grammar_a" and choose_paraphraser(b) == "grammar_b"
    assert choose_paraphraser(b, "grammar_a") == "grammar_a"  # an explicit choice is kept


@pytest.mark.parametrize("grammar, module_fn", [("base", paraphrase.augmented),
                                                ("alt", paraphrase_alt.augmented_alt)])
def test_augmented_is_the_chosen_paraphrasers_output(corpora, grammar, module_fn):
    df = corpora[grammar]
    texts, y = df.text.tolist(), df[LABELS].to_numpy()
    got_t, got_y = augmented(texts, y, 2, seed=7)
    want_t, want_y = module_fn(texts, y, 2, 7)
    assert got_t == want_t and np.array_equal(got_y, want_y) and len(got_t) > len(texts)


def test_a_bad_paraphraser_name_is_refused():
    with pytest.raises(ValueError, match="paraphraser must be one of"):
        choose_paraphraser(["x"], "grammar_c")
    with pytest.raises(ValueError, match="paraphraser must be one of"):
        TfidfScopeConfig(augment=1, paraphraser="grammar_c")


def test_the_text_classifier_passes_its_paraphraser_to_augment(corpora, monkeypatch):
    from ehrseq.errors import ConfigError
    from ehrseq.models import text_classifier as tc

    seen = {}

    class Stop(Exception):
        pass

    def spy(texts, y, k, seed, paraphraser="auto"):
        seen.update(k=k, seed=seed, paraphraser=paraphraser)
        raise Stop

    monkeypatch.setattr(tc, "augmented", spy)
    df = corpora["alt"]
    cfg = tc.TextClassifierConfig.from_preset("tiny", augment=2, paraphraser="grammar_b", seed=4)
    with pytest.raises(Stop):
        tc.TextClassifier(cfg).fit(df.iloc[:40], df.iloc[40:])
    assert seen == {"k": 2, "seed": 4, "paraphraser": "grammar_b"}
    assert tc.TextClassifierConfig.from_dict({}).paraphraser == "auto"  # configs saved before the field
    with pytest.raises(ConfigError, match="model.paraphraser must be one of"):
        tc.TextClassifierConfig(paraphraser="grammar_c")
