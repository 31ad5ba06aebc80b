"""The label-preserving paraphrase augmenter (ehrseq.models.paraphrase) on grammar-A reports: determinism,
labels and sources, the trace's polarities against grammar A's labels (addenda, hedges, foreign-body giant
cells, wrong tissue), coverage and added vocabulary, and the lexicon's consistency with the generator."""

from __future__ import annotations

import random
import re

import numpy as np
import pandas as pd
import pytest

from ehrseq.errors import DataValidationError
from ehrseq.models import report_lexicon as lx
from ehrseq.models.paraphrase import (
    Substitution,
    find_statements,
    paraphrase_report,
    paraphrase_reports,
    paraphrase_with_trace,
)
from ehrseq.synth import reports as synth
from ehrseq.synth.reports import REPORT_LABELS, generate_report, generate_reports

LABELS = list(REPORT_LABELS)


@pytest.fixture(scope="module")
def corpus() -> pd.DataFrame:
    return pd.concat([generate_reports(150, seed=5, site="A"), generate_reports(150, seed=5, site="B")],
                     ignore_index=True)


@pytest.fixture(scope="module")
def augmented(corpus: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray, list[list[Substitution]]]:
    return paraphrase_with_trace(list(corpus.text), corpus[LABELS].to_numpy(), n_variants=2, seed=3)


def _vocab(texts: list[str]) -> set[str]:
    return {w for t in texts for w in re.findall(r"[a-z]+", t.lower())}


def test_same_seed_same_output_other_seed_other_output(corpus: pd.DataFrame) -> None:
    texts, y = list(corpus.text[:40]), corpus[LABELS].to_numpy()[:40]
    a = paraphrase_reports(texts, y, n_variants=2, seed=7)
    b = paraphrase_reports(texts, y, n_variants=2, seed=7)
    c = paraphrase_reports(texts, y, n_variants=2, seed=8)
    assert a[0] == b[0]
    assert sum(x != z for x, z in zip(a[0], c[0])) >= 35
    assert a[0][0::2] != a[0][1::2]  # two variants of one report differ


def test_labels_and_sources_are_the_source_rows(corpus: pd.DataFrame, augmented: tuple) -> None:
    texts, y, src, traces = augmented
    assert len(texts) == len(traces) == 2 * len(corpus)
    np.testing.assert_array_equal(src, np.repeat(np.arange(len(corpus)), 2))
    np.testing.assert_array_equal(y, corpus[LABELS].to_numpy()[src])
    assert all(t != corpus.text.iloc[s] for t, s in zip(texts, src))  # no variant equals its source


@pytest.mark.parametrize("strength", [0.7, 1.0])
def test_trace_polarity_agrees_with_grammar_a_labels(corpus: pd.DataFrame, strength: float) -> None:
    texts, y, src, traces = paraphrase_with_trace(list(corpus.text), corpus[LABELS].to_numpy(), 2, 11, strength)
    p_gca = corpus.p_text_gca.to_numpy()
    has_addendum = corpus.text.str.contains(r"(?im)^addendum").to_numpy()
    seen = {"affirmed": 0, "absent": 0, "hedged": 0, "superseded": 0, "no_artery": 0}
    for k, recs in enumerate(traces):
        i = src[k]
        for r in recs:
            if r.superseded:
                assert has_addendum[i], (k, r)
                seen["superseded"] += 1
                continue
            if r.concept in LABELS:
                lab = int(y[k, LABELS.index(r.concept)])
                if r.polarity == "affirmed":
                    assert lab == 1, (k, r, texts[k])
                elif r.polarity == "absent":
                    assert lab == 0, (k, r, texts[k])
                elif r.polarity == "hedged":
                    assert r.concept == "gca" and 0 < p_gca[i] < 1, (k, r)  # only equivocal reports hedge
                seen[r.polarity] = seen.get(r.polarity, 0) + 1
            elif r.concept == "artery":  # wrong tissue: every label 0
                assert r.polarity == "absent" and y[k].sum() == 0
                seen["no_artery"] += 1
    assert seen["affirmed"] > 200 and seen["absent"] > 500
    assert seen["hedged"] >= 3 and seen["superseded"] >= 5 and seen["no_artery"] >= 1


def test_foreign_body_giant_cells_count_as_giant_cells_not_gca() -> None:
    rng = np.random.default_rng(0)
    for site in ("A", "B"):
        text, labels, _ = generate_report(rng, site=site, truth={"giant_cells": True, "gca": False})
        assert labels["giant_cells"] == 1 and labels["gca"] == 0
        slots = {s for _, _, s in find_statements(text)}
        assert "fb_concl" in slots
        _, recs = paraphrase_report(text, random.Random(1), strength=1.0)
        assert ("giant_cells", "affirmed", False) in recs and ("gca", "absent", False) in recs
        assert ("gca", "affirmed", False) not in recs


def test_statements_are_found_only_at_a_sentence_start() -> None:
    text = "REVISED DIAGNOSIS: negative for giant cell arteritis.\nDx: Giant cell arteritis."
    found = [(text[a:b], s) for a, b, s in find_statements(text)]
    assert found == [("Giant cell arteritis.", "gca+")]
    assert find_statements("Healed arteritis with intimal fibrosis and no active inflammation.") == ()


def test_coverage_and_added_vocabulary(corpus: pd.DataFrame, augmented: tuple) -> None:
    texts, _, src, traces = augmented
    per_source = np.zeros(len(corpus), bool)
    for k, recs in enumerate(traces):
        per_source[src[k]] |= bool(recs)
    assert per_source.mean() >= 0.9
    base = _vocab(list(corpus.text))
    added = _vocab(list(corpus.text) + texts) - base
    assert len(added) >= 200  # measured 293 new words over a base of 272 for this corpus
    one_variant = [len(_vocab([t]) - base) for t in texts]
    assert np.mean(one_variant) >= 6  # measured 10.8 new words per variant


def test_layout_changes_synoptic_and_narrative(corpus: pd.DataFrame, augmented: tuple) -> None:
    texts, _, src, _ = augmented
    synoptic = corpus.text.str.contains("MICROSCOPIC (synoptic)", regex=False).to_numpy()
    field = re.compile(r"^(Intima|Intimal layer|Intima \(thickness\)): ", re.M | re.I)
    became_narrative = [not field.search(t) for t, s in zip(texts, src) if synoptic[s]]
    became_synoptic = [bool(field.search(t)) for t, s in zip(texts, src) if not synoptic[s]]
    assert 0.1 < np.mean(became_narrative) < 0.9  # measured 0.24
    assert np.mean(became_synoptic) > 0.08  # measured 0.17


def test_lexicon_holds_every_grammar_a_phrase() -> None:
    ours = {f.lower().replace("{sev}", "~") for forms in lx.GRAMMAR_A.values() for f in forms}
    pools = [synth.GIANT_POS, synth.GIANT_NEG, synth.ADV_POS, synth.ADV_NEG, synth.INTIMA_POS, synth.INTIMA_NEG,
             *synth.CONCLUSION.values()]
    theirs = {p.replace("{Sev}", "{sev}").lower().replace("{sev}", "~") for pool in pools for site in pool
              for p in site}
    assert theirs <= ours, sorted(theirs - ours)


def test_alternatives_are_consistent_with_their_slot() -> None:
    def label_concepts(slot: str) -> set[str]:
        return {c for c, _ in lx.SLOTS[slot] if c in lx.LABEL_CONCEPTS}

    alts = {**lx.ALTERNATIVES, "gc+": lx.ALTERNATIVES["gc+"] + lx.GIANT_CELLS_ARTERITIS, **lx.ADDENDUM_BODY}
    for slot, forms in alts.items():
        own = label_concepts(slot)
        for other, a_forms in lx.GRAMMAR_A.items():
            if label_concepts(other) <= own:
                continue
            for form in a_forms:
                core = form.rstrip(".").lower()
                for alt in forms:
                    assert not re.search(rf"(?<!\w){re.escape(core)}(?!\w)", alt.lower()), (slot, alt, other)
    neg = re.compile(r"\b(no|not|none|without|absent|negative|free of|normal|unremarkable)\b", re.I)
    for slot, (concept, polarity) in ((s, r[0]) for s, r in lx.SLOTS.items() if len(r) == 1 and s in alts):
        if concept not in lx.LABEL_CONCEPTS or slot == "gca_healed":
            continue
        for alt in alts[slot]:
            if polarity == "absent":
                assert neg.search(alt), (slot, alt)
            elif polarity == "affirmed":
                assert not neg.search(alt), (slot, alt)
    hedge = re.compile("|".join(re.escape(h) for h in lx.HEDGE_CUES + ("cannot be excluded",)), re.I)
    assert all(hedge.search(a) for s in ("gca?", "gca?adv") for a in lx.ALTERNATIVES[s])


def test_bad_inputs_raise_clear_errors(corpus: pd.DataFrame) -> None:
    texts, y = list(corpus.text[:5]), corpus[LABELS].to_numpy()[:5]
    with pytest.raises(DataValidationError, match="4 row"):
        paraphrase_reports(texts, y[:4])
    with pytest.raises(DataValidationError, match="strength"):
        paraphrase_reports(texts, y, strength=1.5)
    with pytest.raises(DataValidationError, match="n_variants"):
        paraphrase_reports(texts, y, n_variants=0)
    with pytest.raises(DataValidationError, match="not a string"):
        paraphrase_reports([*texts[:4], None], y)  # type: ignore[list-item]
