"""Revised reports: an addendum or amendment that changes the diagnosis supersedes (``xold``) what it
overrules; a plain addendum supersedes nothing. Minimal pairs, the cue-dict contract and a grammar-A check."""

from __future__ import annotations

import pytest

from ehrseq.models.negation_cues import CUE_KINDS, DEFAULT_CUES, phrases, resolve_cues
from ehrseq.models.scope_marking import case_code, cues_seen_in, mark_all, mark_scopes
from ehrseq.synth.reports import generate_reports

FIRST = ("Microscopic: Giant cells are present with adventitial inflammation.\n"
         "The intima shows mild fibrointimal thickening.\n"
         "Diagnosis: giant cell arteritis.\n")
FIRST_SENTENCES = 3

REVISING = [
    "AMENDED REPORT: On review the multinucleated cells are foreign-body type. "
    "Revised diagnosis: negative for giant cell arteritis.",
    "Supplementary report: deeper levels show the giant cells are foreign-body type; "
    "the diagnosis has been changed to atherosclerosis.",
    "Corrected report: the multinucleated cells are reclassified as foreign-body type.",
    "Addendum: This report supersedes the previous report. The giant cells are foreign-body type.",
    "Addendum: On review, the cells previously taken for giant cells are histiocytes.",
]
NOT_REVISING = [
    "Addendum: special stains for organisms are negative.",
    "Addendum: deeper levels were examined. The diagnosis is unchanged.",
    "Addendum: EVG stain confirms fragmentation of the internal elastic lamina; "
    "this does not alter the diagnosis.",
]


def _sentences(text: str) -> list[list[str]]:
    return [s.split() for s in mark_scopes(text).split(" . ")]


@pytest.mark.parametrize("addendum", REVISING)
def test_a_revising_addendum_supersedes_what_it_overrules(addendum: str) -> None:
    sents = _sentences(FIRST + addendum)
    giant, intima, dx = sents[:FIRST_SENTENCES]
    assert all(w.startswith("xold") for w in giant + dx), (giant, dx)
    # the intima is not what it revises
    assert intima == mark_scopes("The intima shows mild fibrointimal thickening.").split()
    coded = case_code(mark_scopes(FIRST + addendum)).split(" . ")
    assert set(coded[0].split()) == {"~"} and set(coded[2].split()) == {"~"}
    standing = [w for s in sents[FIRST_SENTENCES:] for w in s]
    assert sum(w.startswith("xold") for w in standing) == (5 if "previously" in addendum else 0)


def test_a_revised_diagnosis_alone_overrules_the_old_diagnosis_not_the_findings_it_does_not_revisit() -> None:
    sents = _sentences(FIRST + "Supplementary report: the diagnosis has been changed to healed arteritis.")
    assert all(w.startswith("xold") for w in sents[2])
    assert sents[0][:3] == ["microscopic", "giant", "cells"] and sents[1][:2] == ["the", "intima"]


@pytest.mark.parametrize("addendum", NOT_REVISING)
def test_an_addendum_that_only_adds_a_result_supersedes_nothing(addendum: str) -> None:
    marked = mark_scopes(FIRST + addendum)
    assert "xold" not in marked
    assert marked.startswith(mark_scopes(FIRST))
    assert case_code(marked).startswith("microscopic giant cells are present with adventitial inflammation")


def test_the_addendum_keeps_its_own_findings_and_negations() -> None:
    text = FIRST + ("ADDENDUM: Deeper levels show giant cells and fragmentation of the internal elastic "
                    "lamina. "
                    "REVISED DIAGNOSIS: No giant cells are identified; healed arteritis.")
    sents = _sentences(text)
    assert all(w.startswith("xold") for w in sents[0] + sents[2])
    assert sents[3][:5] == ["addendum", "deeper", "levels", "show", "giant"]  # the block's findings stand
    assert "xneggiant" in sents[4] and "xnegcue" in sents[4]
    assert sents[5] == ["healed", "arteritis"]


def test_a_superseded_clause_names_the_withdrawn_finding_only() -> None:
    sents = _sentences("Addendum: On review, the cells previously taken for giant cells, seen on level 2, "
                       "are histiocytes.")
    words = sents[0]
    assert "xoldgiant" in words and "xoldcells" in words and "xoldpreviously" in words
    assert "histiocytes" in words and "seen" in words and "giant" not in words
    rather = mark_scopes("The infiltrate is adventitial rather than transmural.").split()
    assert rather[:4] == ["the", "infiltrate", "is", "adventitial"] and "xoldtransmural" in rather
    changed = mark_scopes("Revised diagnosis: changed from giant cell arteritis to atherosclerosis.").split()
    assert "xoldarteritis" in changed and changed[-1] == "atherosclerosis"


def test_a_retraction_withdraws_its_own_sentence() -> None:
    sents = _sentences(FIRST + "The diagnosis of giant cell arteritis is withdrawn. "
                       "Atherosclerosis is present.")
    assert all(w.startswith("xold") for w in sents[3] + sents[2])
    assert sents[4] == ["atherosclerosis", "is", "present"]
    assert "xold" not in " ".join(sents[1])


def test_weak_wording_revises_only_inside_an_addendum() -> None:
    body = "Sections show adventitial inflammation. On review of deeper levels, no giant cells are seen."
    assert "xold" not in mark_scopes(body)
    later = mark_scopes(body + "\nAddendum: on review the infiltrate is now considered reactive.")
    first = later.split(" . ")[0].split()
    assert first == ["xoldsections", "xoldshow", "xoldadventitial", "xoldinflammation"]


def test_a_revision_word_in_a_history_sentence_revises_nothing() -> None:
    text = "Giant cells are present.\nClinical history: diagnosis of PMR revised at another hospital."
    assert "xold" not in mark_scopes(text)


def test_the_last_revision_decides() -> None:
    text = (FIRST + "Amendment: the giant cells are reclassified as foreign-body type.\n"
            "Amendment: on further review the giant cells are of Langhans type and the diagnosis is "
            "arteritis.")
    sents = _sentences(text)
    assert all(w.startswith("xold") for w in sents[3])
    assert "giant" in sents[4]


def test_user_cue_dicts_without_the_revision_lists_keep_the_defaults() -> None:
    new_kinds = ("revision", "retraction", "revision_weak", "no_revision", "superseded", "addendum")
    assert set(new_kinds) <= set(CUE_KINDS)
    mine = resolve_cues({"pre_neg": ["no"], "post_neg": ["absent"]})
    for kind in new_kinds:
        assert mine[kind] == DEFAULT_CUES[kind]
    text = FIRST + REVISING[0] + " No arteritis."
    marked = mark_scopes(text, {"pre_neg": ["no"], "post_neg": ["absent"]})
    assert marked.startswith("xoldmicroscopic") and marked.endswith("xnegcue xnegarteritis")
    assert mark_all([text], {"pre_neg": ["no"], "post_neg": ["absent"]}) == [marked]
    off = mark_scopes(text, {"revision": [], "revision_weak": [], "superseded": [], "retraction": []})
    assert "xold" not in off  # a user can switch revision marking off
    revised = FIRST + "Addendum: diagnosis revised."
    assert "xolddiagnosis xoldgiant" in mark_scopes(revised, {"revision": ["diagnosis revised"]})
    assert "xold" not in mark_scopes(revised, {"revision": ["amended"]})  # a given list replaces the default
    with pytest.raises(ValueError, match="unknown cue list"):
        mark_scopes(text, {"revisions": ["amended"]})


def test_cues_seen_in_cuts_the_revision_lists_too() -> None:
    seen = cues_seen_in(["Addendum: revised diagnosis: GCA.", "No giant cells."])
    assert seen["revision"] == phrases(["revised", "revised diagnosis"])
    assert seen["addendum"] == phrases(["addendum"]) and seen["retraction"] == ()
    assert "xold" not in mark_scopes(FIRST + "Corrected report: negative.", seen)  # "corrected" was not seen


def test_case_code_maps_superseded_words_like_history() -> None:
    coded = case_code("xoldgiant xoldcells . revised diagnosis xnegcue xneggiant")
    assert coded == "~ ~ . revised diagnosis XNEGCUE GIANT"


@pytest.fixture(scope="module")
def grammar_a() -> list[tuple[str, str]]:
    df = generate_reports(600, seed=7, site="A")
    return list(zip(df.text, mark_all(df.text.tolist()), strict=True))


def test_grammar_a_revising_addenda_are_superseded_and_other_reports_untouched(
        grammar_a: list[tuple[str, str]]) -> None:
    revised = [(t, m) for t, m in grammar_a if "revised diagnosis" in t.lower()]
    assert len(revised) >= 10
    for text, marked in grammar_a:
        if "addendum" not in text.lower():
            assert "xold" not in marked
    kept = 0
    for text, marked in revised:
        before, addendum = marked.split("addendum", 1)
        assert "xold" in before and "xold" not in addendum
        assert " giant cell arteritis" not in case_code(before)  # the overruled conclusion adds no n-gram
        if "intimal" in text.split("ADDENDUM")[0].split("DIAGNOSIS")[0].lower():
            words = before.split()  # the intima, which the addendum does not revisit, still stands
            intima = [w for w in words if "intim" in w]
            assert intima and not any(w.startswith("xold") for w in intima)
            kept += 1
    assert kept >= 5


def test_a_correction_of_something_the_report_did_not_state_overrules_no_finding() -> None:
    marked = mark_scopes(FIRST + "Amended report: correction of specimen site: the specimen is from the "
                         "left side.")
    assert "xold" not in marked and marked.startswith(mark_scopes(FIRST))
    whole = mark_scopes(FIRST + "AMENDED REPORT. This report was issued in error and should be disregarded.")
    assert set(case_code(whole).split(" . ")[0].split()) == {"~"}  # a retraction of the whole report
    assert set(case_code(whole).split(" . ")[1].split()) == {"~"}
