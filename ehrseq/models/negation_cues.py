"""Clinical negation, uncertainty and history cues for :func:`ehrseq.models.text_features.mark_scopes`.

How these lists were written: from general knowledge of clinical-negation trigger sets of the NegEx / ConText
kind (pre- and post-negation triggers, pseudo-negations that look like negations but are not, uncertainty and
hypothetical triggers, historical triggers, scope terminators) and of the usual wording of histopathology
reports, by someone who had not seen the second report grammar (:mod:`ehrseq.synth.reports_alt`), its tests or
any of its output. They were fixed before the first out-of-style benchmark run and not changed after it. The
writer did know, from an earlier docstring, three absence phrasings that grammar contains ("devoid of", "not a
feature", "nil"); they are left out on purpose, although they are ordinary clinical English. Nothing here is
copied from a published trigger file; the phrases are written afresh.

The revision lists (``revision``, ``retraction``, ``revision_weak``, ``no_revision``, ``superseded``,
``addendum``) were written the same way, blind to that grammar, from general knowledge of how US, UK and
Australian pathologists word amended, corrected, revised and supplementary reports; see
:mod:`ehrseq.models.scope_marking` for how they are used. A cue dict given by a user may omit any kind: the
default list applies.

Each list holds phrases as token tuples (the tokenisation of ``mark_scopes``: lower case, words of letters,
digits and ``' / + -``, and ``?`` on its own). :data:`DEFAULT_CUES` is the mapping ``mark_scopes`` uses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

WORD = re.compile(r"\?|[a-z0-9][a-z0-9'/+-]*")
CUE_KINDS: tuple[str, ...] = ("pre_neg", "post_neg", "pseudo", "hedge", "history", "terminator",
                             "revision", "retraction", "revision_weak", "no_revision", "superseded",
                             "addendum")

Cues = dict[str, tuple[tuple[str, ...], ...]]


def phrases(items: Iterable[str]) -> tuple[tuple[str, ...], ...]:
    """Cue phrases as token tuples (tokenised like report text), duplicates and empty phrases dropped."""
    out: list[tuple[str, ...]] = []
    for item in items:
        toks = tuple(WORD.findall(item.lower()))
        if toks and toks not in out:
            out.append(toks)
    return tuple(out)


# A negation that governs the words after it, to the end of the clause.
_PRE_NEG = (
    "no", "not", "without", "w/o", "neither", "nor", "never", "none of", "nothing",
    "no evidence of", "no evidence", "no sign of", "no signs of", "no features of", "no feature of",
    "no histological evidence of", "no histologic evidence of", "no morphological evidence of",
    "no definite", "no convincing", "no significant", "no appreciable", "no residual", "no obvious",
    "there is no", "there are no", "there was no", "there were no",
    "without evidence of", "without any", "without any evidence of", "without signs of",
    "absence of", "absent", "lack of", "lacks", "lacking", "free of", "negative for", "neg for",
    "fails to show", "failed to show", "fails to reveal", "failed to reveal", "fails to demonstrate",
    "does not show", "did not show", "do not show", "does not demonstrate", "did not demonstrate",
    "does not reveal", "did not reveal", "does not contain", "not showing", "unable to identify",
    "unable to demonstrate", "cannot identify", "rules out", "excludes", "not consistent with",
)
# A negation that governs the words before it in its clause ("giant cells are not identified").
_POST_NEG = (
    "not seen", "not identified", "not present", "not found", "not detected", "not observed", "not noted",
    "not appreciated", "not apparent", "not evident", "not demonstrated", "not demonstrable",
    "not visualised", "not visualized", "not shown", "not recognised", "not recognized", "not elicited",
    "absent", "are absent", "is absent", "none", "none seen", "none identified", "none noted", "none present",
    "negative", "is negative", "are negative", "excluded", "is excluded", "ruled out", "is ruled out",
    "unremarkable", "within normal limits", "wnl", "resolved", "has resolved", "unlikely", "free",
)
# Look like a negation but negate nothing: skipped, never open a scope.
_PSEUDO = (
    "no change", "no significant change", "no interval change", "no increase", "no further", "not only",
    "not necessarily", "not certain whether", "no doubt", "without difficulty", "gram negative",
    "not extend", "no longer",
)
# Uncertainty and hypothetical triggers: every word of the clause is hedged.
_HEDGE = (
    "cannot be excluded", "can not be excluded", "cannot exclude", "can't exclude", "cannot be ruled out",
    "cannot rule out", "can't rule out", "could not be excluded", "could not be ruled out", "not excluded",
    "not ruled out", "does not exclude", "do not exclude", "doesn't exclude", "does not rule out",
    "unable to exclude", "not possible to exclude", "difficult to exclude", "not entirely excluded",
    "not completely excluded", "cannot be confirmed", "cannot be assessed", "cannot be evaluated",
    "not assessable", "not evaluable",
    "possible", "possibly", "probable", "probably", "perhaps", "may represent", "may be", "might",
    "could be", "could represent", "suspicious", "suspicious for", "suspicion of", "suspected", "concern for",
    "concerning for", "questionable", "question of", "query", "?", "equivocal", "indeterminate",
    "inconclusive", "uncertain", "unclear", "not definitive", "not diagnostic", "non-diagnostic",
    "nondiagnostic", "borderline", "suggestive of", "suggests", "suggesting", "raises the possibility",
    "the possibility of", "differential diagnosis", "differential", "ddx", "versus", "vs", "rule out", "r/o",
    "to exclude", "to rule out", "exclude", "if", "in case",
)
# A sentence that opens with one of these (within its first three words) is clinical history or the request.
_HISTORY = (
    "history", "hx", "h/o", "clinical", "indication", "indications", "request", "requested", "referral",
    "reason for", "presenting", "presented", "presents", "symptoms", "previous", "previously", "prior",
    "past", "known", "status post", "s/p",
)
# End a negation or hedge scope: the clause is split before them.
_TERMINATOR = (
    "but", "however", "although", "though", "whereas", "while", "yet", "except", "apart from", "aside from",
    "other than", "nevertheless", "nonetheless", "which", "with the exception of", "save for", "instead",
)

# Revision: an addendum or amendment that CHANGES the earlier report (written from general knowledge of US, UK
# and Australian amended / corrected / supplementary pathology reports). A plain "Addendum:" that only adds a
# result is no revision. A sentence holding one of these (outside a history sentence) supersedes the earlier
# sentences it overrules (see ehrseq.models.scope_marking).
_REVISION = (
    "amended", "amendment", "amended report", "amended diagnosis", "amend", "amending", "revised", "revision",
    "revised report", "revised diagnosis", "revised dx", "revised interpretation", "revised final diagnosis",
    "revise", "revising", "corrected", "correction", "corrected report", "corrected diagnosis", "corrigendum",
    "erratum", "supersedes", "superseded", "supercedes", "superceded", "replaces the previous report",
    "replaces the original report", "replaces the earlier report", "replaces the report",
    "this report replaces", "reclassified", "re-classified", "reinterpreted", "re-interpreted",
    "reinterpretation", "re-interpretation", "diagnosis changed", "diagnosis is changed",
    "diagnosis has been changed", "diagnosis was changed", "changed to", "change of diagnosis",
    "change in diagnosis", "change to the diagnosis", "changed diagnosis", "changes the diagnosis",
    "alters the diagnosis", "altering the diagnosis", "modified diagnosis", "diagnosis modified",
    "updated diagnosis", "diagnosis updated", "should read", "should now read", "now reads", "erroneous",
    "erroneously", "incorrectly", "misinterpreted", "misinterpretation", "misidentified", "misclassified",
    "mistakenly", "in retrospect", "retrospectively",
)
# Retraction: the sentence holding one of these withdraws what it names ("the diagnosis of GCA is withdrawn",
# "please disregard the previous report"): every word of it is superseded, and it revises the report.
_RETRACTION = (
    "withdrawn", "is withdrawn", "are withdrawn", "withdraw", "report retracted", "diagnosis retracted",
    "report is retracted", "diagnosis is retracted", "rescinded", "rescind", "disregard", "please disregard",
    "should be disregarded", "be disregarded", "disregarded", "issued in error", "reported in error",
    "in error", "made in error", "no longer stands", "no longer applies", "no longer valid", "null and void",
)
# Revision wording that counts only inside an addendum (after an ``_ADDENDUM`` heading): in the body of a
# first report "on review of deeper levels" is a plain finding, in an addendum it is a second look that
# overrules.
_REVISION_WEAK = (
    "on review", "on re-review", "on rereview", "on further review", "upon review", "upon further review",
    "after review", "after further review", "following review", "following further review", "on reflection",
    "on reexamination", "on re-examination", "on further examination", "on reassessment", "on re-assessment",
    "following consultation", "after consultation", "following discussion", "after discussion",
    "now considered", "are now considered", "is now considered", "now regarded", "now interpreted",
    "now thought", "now believed", "now favoured", "now favored", "best regarded as", "better regarded as",
    "better interpreted as", "best interpreted as", "in fact", "actually",
)
# A sentence that says the report is NOT changed revises nothing, whatever revision word it also holds.
_NO_REVISION = (
    "unchanged", "remains unchanged", "remain unchanged", "unaltered", "no change", "not changed",
    "has not changed", "is not changed", "does not change", "do not change", "did not change", "not alter",
    "does not alter", "do not alter", "did not alter", "not altered", "no alteration", "not amended",
    "no amendment", "not revised", "no revision", "without change", "diagnosis remains", "diagnosis stands",
    "remains as", "as previously reported", "as originally reported", "as reported", "no effect on",
    "does not affect", "not affect",
)
# Opens a clause that names the finding an addendum withdraws ("the cells previously taken for giant cells are
# histiocytes"): the words after it, to the next verb, comma or clause break, are superseded. Inside an
# addendum it also counts as a revision of the report.
_SUPERSEDED = (
    "previously reported as", "previously described as", "previously interpreted as", "previously called",
    "previously diagnosed as", "previously identified as", "previously thought to be",
    "previously considered", "previously considered to be", "previously regarded as", "previously taken for",
    "previously taken to be", "previously designated", "previously designated as", "previously labelled as",
    "previously labeled as", "initially reported as", "initially described as", "initially interpreted as",
    "initially called", "initially thought to be", "initially considered", "initially considered to be",
    "initially regarded as", "initially taken for", "initially diagnosed as", "originally reported as",
    "originally described as", "originally interpreted as", "originally diagnosed as",
    "originally thought to be", "originally called", "first reported as", "first described as",
    "earlier reported as", "earlier described as", "formerly reported as", "mistaken for",
    "misinterpreted as", "misidentified as", "misdiagnosed as", "misclassified as", "misread as",
    "erroneously reported as", "erroneously described as", "incorrectly reported as",
    "incorrectly described as", "incorrectly identified as", "wrongly reported as", "wrongly described as",
    "rather than", "instead of", "in place of", "changed from", "amended from", "revised from",
    "altered from", "upgraded from", "downgraded from", "reclassified from", "previous diagnosis of",
    "original diagnosis of", "initial diagnosis of", "earlier diagnosis of",
)
# Headings (within a sentence's first three words) that open an addendum or amendment block. The superseded
# part ends where the block that holds the revision begins, so the addendum's own findings stand. A heading
# such as "Revised diagnosis:" inside an addendum opens no block of its own: it is a revision, not an addendum
# heading.
_ADDENDUM = (
    "addendum", "addenda", "addendum report", "amendment", "amended report", "supplementary report",
    "supplemental report", "supplementary", "supplemental", "additional report", "further report",
    "corrected report", "revised report", "correction", "corrigendum", "erratum", "update", "updated report",
)

PRE_NEG = phrases(_PRE_NEG)
POST_NEG = phrases(_POST_NEG)
PSEUDO = phrases(_PSEUDO)
HEDGE = phrases(_HEDGE)
HISTORY = phrases(_HISTORY)
TERMINATOR = phrases(_TERMINATOR)
REVISION = phrases(_REVISION)
RETRACTION = phrases(_RETRACTION)
REVISION_WEAK = phrases(_REVISION_WEAK)
NO_REVISION = phrases(_NO_REVISION)
SUPERSEDED = phrases(_SUPERSEDED)
ADDENDUM = phrases(_ADDENDUM)
DEFAULT_CUES: Cues = {"pre_neg": PRE_NEG, "post_neg": POST_NEG, "pseudo": PSEUDO, "hedge": HEDGE,
                      "history": HISTORY, "terminator": TERMINATOR, "revision": REVISION,
                      "retraction": RETRACTION, "revision_weak": REVISION_WEAK, "no_revision": NO_REVISION,
                      "superseded": SUPERSEDED, "addendum": ADDENDUM}


def resolve_cues(cues: Mapping[str, Iterable[Iterable[str] | str]] | None) -> Cues:
    """:data:`DEFAULT_CUES` with any of its lists replaced by ``cues`` (phrases as strings or token tuples).

    Raises ``ValueError`` naming an unknown list.
    """
    unknown = set(cues or {}) - set(CUE_KINDS)
    if unknown:
        raise ValueError(f"unknown cue list(s) {sorted(unknown)}; expected some of {list(CUE_KINDS)}")
    out = dict(DEFAULT_CUES)
    for kind, lst in (cues or {}).items():
        out[kind] = phrases(c if isinstance(c, str) else " ".join(c) for c in lst)
    return out
