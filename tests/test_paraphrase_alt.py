"""The grammar-B paraphraser keeps every label assertion, re-words what it recognises and keeps the rest."""

from __future__ import annotations

import logging
import random
import re

import numpy as np
import pandas as pd
import pytest

from ehrseq.codes import BIOPSY_LABELS
from ehrseq.errors import DataValidationError
from ehrseq.models.paraphrase_alt import (
    POLARITIES,
    Substitution,
    assertions_alt,
    augmented_alt,
    find_statements_alt,
    paraphrase_alt_report,
)
from ehrseq.synth.reports_alt import generate_alt_report, generate_alt_reports

LABELLING = ("affirmed", "absent", "hedged")


@pytest.fixture(scope="module")
def reports() -> pd.DataFrame:
    """240 drawn reports (both sites) and 60 of the rare constructions, each with its labels."""
    drawn = pd.concat([generate_alt_reports(160, seed=3, site="A"), generate_alt_reports(80, seed=4, site="B")])
    rng = np.random.default_rng(17)
    rows = []
    for kind, revision in [("foreign_body", None), ("non_arterial", None), ("equivocal", None), ("healed", None),
                           ("necrotising", None), ("active", "to_positive"), ("negative", "to_negative"),
                           ("isolated_adventitial", "to_negative"), ("active", ""), ("isolated_adventitial", "")]:
        for _ in range(6):
            text, labels, p_text = generate_alt_report(rng, kind=kind, revision=revision)
            rows.append({"text": text, **labels, "p_text_gca": p_text["gca"], "kind": kind, "revision": revision})
    return pd.concat([drawn.assign(kind="", revision=""), pd.DataFrame(rows)], ignore_index=True).fillna(
        {"revision": ""})


@pytest.fixture(scope="module")
def paraphrased(reports: pd.DataFrame) -> list[tuple[str, list[Substitution]]]:
    return [paraphrase_alt_report(t, random.Random(f"test/{i}"), strength=1.0) for i, t in enumerate(reports.text)]


def _contradictions(subs: list[Substitution], row: pd.Series) -> list[str]:
    """Assertions that disagree with the generator's labels (superseded ones are allowed to)."""
    bad = []
    for s in subs:
        if s.superseded:
            continue
        if s.concept in BIOPSY_LABELS and s.polarity in ("affirmed", "absent") and \
                (s.polarity == "affirmed") != bool(row[s.concept]):
            bad.append(f"{s.concept} {s.polarity}")
        if s.polarity == "hedged" and not 0 < row["p_text_gca"] < 1:
            bad.append(f"{s.concept} hedged in a certain report")
        implied = {"wrong_tissue": {lab: 0 for lab in BIOPSY_LABELS},
                   "foreign_body_giant_cells": {"giant_cells": 1, "gca": 0},
                   "healed_arteritis": {"gca": 1, "giant_cells": 0},
                   "necrotising_arteritis": {"adventitial_inflammation": 1, "gca": 0}}.get(s.concept, {})
        bad += [f"{s.concept} with {lab}={row[lab]}" for lab, v in implied.items() if row[lab] != v]
    return bad


NEGATION_CUE = re.compile(r"\b(no|not|neither|nor|absent|negative|none|nil|without|devoid|lacks?)\b|w/o", re.IGNORECASE)


def _cue_mismatches(text: str) -> list[str]:
    """Statements about labels only, all of one polarity, whose negation cues say otherwise (a check on the
    lexicon that does not use the lexicon: a denial needs a cue, an affirmation must have none)."""
    bad = []
    for a, b, _ in find_statements_alt(text):
        pols = {(s.concept in BIOPSY_LABELS, s.polarity) for s in assertions_alt(text[a:b])}
        if pols in ({(True, "affirmed")}, {(True, "absent")}) and \
                bool(NEGATION_CUE.search(text[a:b])) != (pols == {(True, "absent")}):
            bad.append(text[a:b])
    return bad


def _label_assertions(subs: list[Substitution]) -> set[Substitution]:
    return {s for s in subs if s.polarity in LABELLING}


def test_most_reports_are_recognised_and_spans_are_ordered(reports: pd.DataFrame) -> None:
    recognised = 0
    for text in reports.text:
        spans = find_statements_alt(text)
        assert all(0 <= a < b <= len(text) for a, b, _ in spans)
        assert all(b0 <= a1 for (_, b0, _), (a1, _, _) in zip(spans[:-1], spans[1:], strict=True))
        recognised += any(s.polarity in LABELLING for s in assertions_alt(text))
    assert recognised / len(reports) > 0.9


def test_source_trace_agrees_with_the_generator_labels(reports: pd.DataFrame) -> None:
    seen: set[str] = set()
    for _, row in reports.iterrows():
        subs = assertions_alt(row.text)
        assert _contradictions(subs, row) == [], row.text
        assert {s.polarity for s in subs} <= set(POLARITIES)
        assert _cue_mismatches(row.text) == []
        seen |= {s.concept for s in subs} | {f"{s.polarity}" for s in subs}
        seen |= {"superseded"} if any(s.superseded for s in subs) else set()
        if row.revision:  # the addendum's statements win: the report's gca label is asserted after it
            assert Substitution("gca", "affirmed" if row.gca else "absent", False) in subs
            assert any(s.superseded for s in subs)
    assert {"hedged", "superseded", "request", "history", "wrong_tissue", "foreign_body_giant_cells",
            "healed_arteritis", "necrotising_arteritis", *BIOPSY_LABELS} <= seen


def test_paraphrase_keeps_every_label_assertion(reports: pd.DataFrame,
                                                paraphrased: list[tuple[str, list[Substitution]]]) -> None:
    same_set = 0
    for (_, row), (text, subs) in zip(reports.iterrows(), paraphrased, strict=True):
        assert _contradictions(subs, row) == [], row.text
        again = assertions_alt(text)  # the paraphrase, read again
        assert _contradictions(again, row) == [], f"{row.text}\n---\n{text}"
        assert _cue_mismatches(text) == []
        same_set += _label_assertions(again) == _label_assertions(assertions_alt(row.text))
        if row.revision:
            assert Substitution("gca", "affirmed" if row.gca else "absent", False) in again, text
    assert same_set / len(reports) > 0.95


def test_paraphrases_differ_from_the_source(reports: pd.DataFrame,
                                            paraphrased: list[tuple[str, list[Substitution]]]) -> None:
    assert all(p != t for (p, _), t in zip(paraphrased, reports.text, strict=True))
    assert np.mean([len(subs) > 0 for _, subs in paraphrased]) > 0.9
    weak = [paraphrase_alt_report(t, random.Random(i), strength=0.2)[0] for i, t in enumerate(reports.text[:50])]
    assert all(p != t for p, t in zip(weak, reports.text[:50], strict=True))


def test_negation_scope_spans_the_whole_list_or_nothing() -> None:
    subs = assertions_alt("Neither giant histiocytes, adventitial lymphocytes nor intimal fibrosis can be demonstrated.")
    assert subs == [Substitution(c, "absent", False) for c in ("giant_cells", "adventitial_inflammation",
                                                                 "intimal_hyperplasia")]
    mixed = "MNGCs are present in two of the levels. We see no adventitial lymphocytes or intimal fibrosis."
    assert [(s.concept, s.polarity) for s in assertions_alt(mixed)] == [
        ("giant_cells", "affirmed"), ("adventitial_inflammation", "absent"), ("intimal_hyperplasia", "absent")]
    both = "Giant cells and adventitial inflammation present. Comment: Active Horton arteritis."
    for seed in range(5):
        again = assertions_alt(paraphrase_alt_report(both, random.Random(seed), strength=1.0)[0])
        assert {("giant_cells", "affirmed"), ("adventitial_inflammation", "affirmed")} <= {a[:2] for a in again}
    # an unknown item inside the scope: the sentence is not recognised at all, and is kept verbatim (case noise
    # aside, which is applied to whole reports)
    odd = "Comment: No arteritis. There is no intimal fibrosis or organising sections."
    assert [s.concept for s in assertions_alt(odd)] == ["gca"]
    for seed in range(20):
        out = paraphrase_alt_report(odd, random.Random(seed), strength=1.0)[0]
        assert "there is no intimal fibrosis or organising sections" in out.lower(), out


def test_spans_map_back_through_abbreviations_typos_and_upper_case() -> None:
    text = "TAB - NO ARTERITIS. THE SECTIONS SHOW NO MNGCS OR INTIMAL FIBROSS. Periadvent.l infl. alone, not " \
           "arteritis of giant cell type."
    spans = find_statements_alt(text)
    assert [text[a:b] for a, b, _ in spans] == ["NO ARTERITIS", "THE SECTIONS SHOW NO MNGCS OR INTIMAL FIBROSS",
                                                "Periadvent.l infl. alone, not arteritis of giant cell type"]
    assert [slot for _, _, slot in spans] == ["dx_negative", "negation", "dx_adventitial_only"]


def test_history_and_requests_set_no_label() -> None:
    subs = assertions_alt("Request: previous GCA on prednisolone, ?relapse. Clinical details: 70 male, sudden "
                          "headache, ?GCA.")
    assert [(s.concept, s.polarity) for s in subs] == [("gca", "history"), ("gca", "request")]
    out, y = augmented_alt(["Request: sudden headache, ?GCA."], np.array([[0, 0, 0, 0]]), k=2, seed=0)
    assert len(out) == 1 and y.shape == (1, 4)  # no labelled statement: not copied


def test_augmented_alt_is_seeded_and_copies_label_rows(reports: pd.DataFrame) -> None:
    texts = [*reports.text[:20], "Specimen received; see separate report."]
    y = np.arange(len(texts))
    out, y_out = augmented_alt(texts, y, k=2, seed=7)
    assert out[:len(texts)] == texts and list(y_out[:len(texts)]) == list(y)
    assert list(y_out[len(texts):]) == [i for i in range(20) for _ in range(2)]  # the last text is not copied
    assert out[len(texts) + 3] == paraphrase_alt_report(texts[1], random.Random("7/1/1"))[0]
    assert augmented_alt(texts, y, k=2, seed=7) [0] == out
    assert augmented_alt(texts, y, k=2, seed=8)[0] != out
    assert augmented_alt(texts, y, k=0, seed=7)[0] == texts


def test_augmented_alt_warns_when_little_is_recognised(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ehrseq.models.paraphrase_alt"):
        augmented_alt(["Sections examined.", "See addendum.", "Comment: No arteritis."], np.zeros(3), k=1, seed=0)
    assert "1 of 3 reports" in caplog.text


def test_bad_inputs_raise_a_clear_error() -> None:
    texts = ["Comment: No arteritis.", "Opinion: Active Horton arteritis."]
    with pytest.raises(DataValidationError, match="label rows") as e:
        augmented_alt(texts, np.zeros((3, 4)), k=1, seed=0)
    assert e.value.column == "labels" and e.value.hint
    with pytest.raises(DataValidationError, match="strings") as e:
        augmented_alt([texts[0], None], np.zeros((2, 4)), k=1, seed=0)  # type: ignore[list-item]
    assert e.value.column == "text" and e.value.n_rows == 1 and "arteritis" not in str(e.value)
    with pytest.raises(DataValidationError) as e:
        augmented_alt(texts, np.zeros((2, 4)), k=-1, seed=0)
    assert e.value.column == "k"
    with pytest.raises(DataValidationError) as e:
        paraphrase_alt_report(texts[0], random.Random(0), strength=1.5)
    assert e.value.column == "strength"
