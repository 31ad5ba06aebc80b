"""Negation-aware inputs, the TF-IDF hybrid and the behavioural minimal pairs of the biopsy classifier."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from ehrseq.errors import DataValidationError  # noqa: E402
from ehrseq.models.text_checks import minimal_pair_frame, run_minimal_pairs  # noqa: E402
from ehrseq.models.text_classifier import TextClassifierConfig  # noqa: E402
from ehrseq.models.text_features import (  # noqa: E402
    HybridTextClassifier,
    TfidfScope,
    case_code,
    cues_seen_in,
    mark_scopes,
)
from ehrseq.synth.reports import REPORT_LABELS, generate_reports  # noqa: E402

LABELS = list(REPORT_LABELS)


@pytest.mark.parametrize("text", ["No giant cells are identified.", "Giant cells are not recognised.",
                                  "Giant cells: none seen.", "We could find neither giant cells nor fibrosis.",
                                  "Absent giant cells.", "There is no histological evidence of giant cells."])
def test_every_way_of_negating_marks_the_finding(text: str) -> None:
    out = mark_scopes(text).split()
    assert "xneggiant" in out and "giant" not in out and "xnegcue" in out


def test_scope_stops_at_but_and_hedges_and_history_are_their_own() -> None:
    out = mark_scopes("No giant cells are seen, but there is mild intimal fibrosis.").split()
    assert "xneggiant" in out and "intimal" in out and "xnegintimal" not in out
    assert mark_scopes("Mild intimal thickening.") == "mild intimal thickening"
    hedged = mark_scopes("Early GCA cannot be excluded.").split()
    assert "xhypgca" in hedged and "gca" not in hedged
    hist = mark_scopes("History of GCA.\nDiagnosis: GCA.").split(" . ")
    assert "xhistgca" in hist[0].split() and hist[1].split() == ["diagnosis", "gca"]


def test_pseudo_negations_and_terminators_open_no_scope() -> None:
    assert mark_scopes("No change in the intima.") == "no change in the intima"
    assert mark_scopes("Not only giant cells but also granulomas.") == "not only giant cells but also granulomas"
    out = mark_scopes("No giant cells apart from intimal fibrosis.").split()
    assert "xneggiant" in out and "intimal" in out
    hedged = mark_scopes("This does not exclude giant cell arteritis.").split()
    assert "xhypgiant" in hedged and not any(w.startswith("xneg") for w in hedged)


def test_char_coding_separates_negated_words_and_cues_can_be_cut_to_those_seen() -> None:
    assert case_code(mark_scopes("No giant cells. Giant cells seen. ?GCA")) == "XNEGCUE GIANT CELLS . giant cells seen . ~ ~"
    seen = cues_seen_in(["Giant cells are absent.", "No arteritis."])
    assert seen["post_neg"] == (("absent",), ("are", "absent")) and seen["pre_neg"] == (("no",), ("absent",))
    assert seen["hedge"] == () and seen["terminator"] == ()
    assert "xneg" not in mark_scopes("The wall is free of giant cells.", seen)
    assert "xneggiant" in mark_scopes("The wall is free of giant cells.")


def test_the_default_cues_are_the_independent_lists_and_unknown_lists_are_refused() -> None:
    from ehrseq.models.negation_cues import DEFAULT_CUES, phrases

    leaked = phrases(["devoid of", "not a feature", "nil"])  # known to be grammar B's; left out on purpose
    assert not any(c in lst for lst in DEFAULT_CUES.values() for c in leaked)
    with pytest.raises(ValueError, match="unknown cue list"):
        mark_scopes("No giant cells.", {"negations": ["no"]})


@pytest.fixture(scope="module")
def data() -> dict[str, pd.DataFrame]:
    return {"train": pd.concat([generate_reports(70, seed=1, site="A"), generate_reports(70, seed=1, site="B")]),
            "tuning": pd.concat([generate_reports(30, seed=2, site="A"), generate_reports(30, seed=2, site="B")])}


@pytest.fixture(scope="module")
def hybrid(data: dict[str, pd.DataFrame]) -> HybridTextClassifier:
    cfg = TextClassifierConfig.from_preset("tiny", epochs=2, mlm_epochs=1)
    return HybridTextClassifier(cfg, w=0.5).fit(data["train"], data["tuning"])


def test_hybrid_averages_its_parts_and_is_seeded(hybrid: HybridTextClassifier,
                                                   data: dict[str, pd.DataFrame]) -> None:
    texts = data["tuning"].text.tolist()[:20]
    p = hybrid.predict_proba(texts)
    both = (hybrid.bert_.predict_proba([mark_scopes(t) for t in texts]) + hybrid.tfidf_.predict_proba(texts)) / 2
    np.testing.assert_allclose(p, both)
    assert p.shape == (20, 4) and hybrid.thresholds_.shape == (4,)
    again = TfidfScope(LABELS).fit(data["train"], data["tuning"])
    np.testing.assert_allclose(again.predict_proba(texts), hybrid.tfidf_.predict_proba(texts))


def test_minimal_pairs_move_the_tiny_hybrid_the_right_way(hybrid: HybridTextClassifier) -> None:
    res = run_minimal_pairs(hybrid.predict_proba, LABELS)
    assert len(res) == len(minimal_pair_frame()) and set(res.kind) == {"negate", "hedge", "history"}
    neg = res[res.kind == "negate"]
    assert neg.passed.all(), neg.loc[~neg.passed, ["label", "altered"]].to_dict("records")
    assert res.passed.mean() >= 0.75


def test_a_frame_without_text_is_refused() -> None:
    cfg = TextClassifierConfig.from_preset("tiny")
    with pytest.raises(DataValidationError, match="text"):
        HybridTextClassifier(cfg, w=0.5).fit(pd.DataFrame({"gca": [0, 1]}), pd.DataFrame({"gca": [0, 1]}))
