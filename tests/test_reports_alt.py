"""The second ("alt") biopsy-report grammar: independent of the first, labelled by construction, seeded."""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd
import pytest

from ehrseq.errors import ConfigError, EhrseqError
from ehrseq.synth.reports import REPORT_LABELS, generate_reports
from ehrseq.synth.reports_alt import (
    ADV_NOUN,
    GC_NOUN,
    INT_NOUN,
    AltCase,
    generate_alt_report,
    generate_alt_reports,
    render_alt,
)


def _sentences(texts: Iterable[str]) -> set[str]:
    """Normalised sentences: lower case, numbers as '#', split at . ; ! and line ends, punctuation dropped."""
    out = set()
    for t in texts:
        t = re.sub(r"\d+(\.\d+)?", "#", t.lower())
        for s in re.split(r"[.\n;!]", t):
            s = " ".join(re.sub(r"[^a-z#?/-]+", " ", s).split())
            if s:
                out.add(s)
    return out


@pytest.fixture(scope="module")
def alt() -> pd.DataFrame:
    return pd.concat([generate_alt_reports(1500, seed=3, site="A"), generate_alt_reports(1500, seed=3, site="B")])


def test_the_two_grammars_share_no_sentence(alt: pd.DataFrame) -> None:
    base = pd.concat([generate_reports(1500, seed=3, site="A"), generate_reports(1500, seed=3, site="B")])
    a, b = _sentences(base.text), _sentences(alt.text)
    assert len(a) > 500 and len(b) > 1000
    assert a & b == set()


def test_frame_matches_the_first_grammar_and_is_seeded(alt: pd.DataFrame) -> None:
    base = generate_reports(5, seed=1)
    assert list(alt.columns) == list(base.columns)
    assert (alt.dtypes == base.dtypes).all()
    assert alt.report_id.is_unique and alt[list(REPORT_LABELS)].isin([0, 1]).all().all()
    pd.testing.assert_frame_equal(generate_alt_reports(40, seed=5, site="B"), generate_alt_reports(40, seed=5, site="B"))
    pd.testing.assert_frame_equal(generate_reports(40, seed=5, site="B", grammar="alt"),
                                  generate_alt_reports(40, seed=5, site="B"))
    assert not generate_alt_reports(40, seed=5).text.equals(generate_alt_reports(40, seed=6).text)


def test_prevalences_and_layouts_vary(alt: pd.DataFrame) -> None:
    assert 0.22 < alt.gca.mean() < 0.33
    assert 0.4 < alt.loc[alt.gca == 1, "giant_cells"].mean() < 0.75
    words = alt.text.str.split().str.len()
    assert words.min() < 12 and words.max() > 60  # very short and long reports
    assert (alt.text == alt.text.str.upper()).mean() > 0.03  # some all in capitals


def _make(kind: str, seed: int, **kw: str) -> tuple[str, dict[str, int], dict[str, float]]:
    return generate_alt_report(np.random.default_rng(seed), kind=kind, noise=False, **kw)


@pytest.mark.parametrize("seed", range(6))
def test_labels_follow_the_constructions(seed: int) -> None:
    text, lab, _ = _make("foreign_body", seed)
    assert "foreign-body" in text.lower() and lab["giant_cells"] == 1 and lab["gca"] == 0
    text, lab, _ = _make("necrotising", seed)
    assert "necrotising" in text.lower() and lab["adventitial_inflammation"] == 1
    assert lab["giant_cells"] == lab["gca"] == 0
    text, lab, _ = _make("non_arterial", seed)
    assert set(lab.values()) == {0}
    text, lab, _ = _make("healed", seed)
    assert lab["gca"] == 1 and lab["giant_cells"] == 0
    text, lab, p = _make("equivocal", seed)
    assert re.search(r"cannot be excluded|indeterminate|possible", text.lower())
    assert 0 < p["gca"] < 1 and lab["adventitial_inflammation"] == 1


@pytest.mark.parametrize("seed", range(4))
def test_an_addendum_that_revises_the_diagnosis_sets_the_label(seed: int) -> None:
    text, lab, _ = _make("active", seed, revision="to_positive")
    first, addendum = text.lower().rsplit("\n", 1)
    assert "amended to giant cell arteritis" in addendum and lab["gca"] == 1
    assert re.search(r"no arteritis|without vasculitis|no features|no evidence of arteritis|insufficient|"
                     r"not arteritis", first)
    text, lab, _ = _make("negative", seed, revision="to_negative")
    first, addendum = text.lower().rsplit("\n", 1)
    assert "amended conclusion: no arteritis" in addendum and lab["gca"] == lab["giant_cells"] == 0
    assert re.search(r"arteritis, giant cell type|in keeping with gca|cranial\) arteritis|horton", first)


@pytest.mark.parametrize("seed", range(8))
def test_a_negation_spans_every_absent_finding(seed: int) -> None:
    c = AltCase(False, False, False, False, "negative", 70, True, "left", layout="narrative")
    text = render_alt(c, np.random.default_rng(seed), noise=False)
    cue = re.compile(r"\b(no|neither|nor|absent|devoid|lack|not|nil|w/o)\b")
    for nouns in (GC_NOUN, ADV_NOUN, INT_NOUN):
        hits = [s for s in re.split(r"[.\n]", text) if any(n.lower() in s.lower() for n in nouns)]
        assert hits and all(cue.search(s.lower()) for s in hits)
    # the same case with intimal hyperplasia: stated outside the negation
    c.intimal = True
    text = render_alt(c, np.random.default_rng(seed), noise=False)
    assert re.search(r"intim\w* (fibrosis|fibroplasia|proliferation)|intima is expanded", text.lower())


def test_history_of_gca_in_the_request_does_not_set_the_label(alt: pd.DataFrame) -> None:
    hist = alt.text.str.lower().str.contains("previous gca")
    assert hist.sum() > 50 and (alt.loc[hist, "gca"] == 0).mean() > 0.6


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ConfigError, match="unknown alt report kind"):
        _make("vasculitis", 0)
    with pytest.raises(ConfigError, match="needs kind 'active'"):
        _make("negative", 0, revision="to_positive")
    with pytest.raises(EhrseqError, match="unknown site"):
        generate_alt_reports(3, site="C")
    with pytest.raises(ValueError, match="unknown report grammar"):
        generate_reports(3, grammar="other")
