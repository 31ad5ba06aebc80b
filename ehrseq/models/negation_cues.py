"""Clinical negation, uncertainty and history cues for :func:`ehrseq.models.text_features.mark_scopes`.

How these lists were written: from general knowledge of clinical-negation trigger sets of the NegEx / ConText
kind (pre- and post-negation triggers, pseudo-negations that look like negations but are not, uncertainty and
hypothetical triggers, historical triggers, scope terminators) and of the usual wording of histopathology
reports, by someone who had not seen the second report grammar (:mod:`ehrseq.synth.reports_alt`), its tests or
any of its output. They were fixed before the first out-of-style benchmark run and not changed after it. The
writer did know, from an earlier docstring, three absence phrasings that grammar contains ("devoid of", "not a
feature", "nil"); they are left out on purpose, although they are ordinary clinical English. Nothing here is
copied from a published trigger file; the phrases are written afresh.

Each list holds phrases as token tuples (the tokenisation of ``mark_scopes``: lower case, words of letters,
digits and ``' / + -``, and ``?`` on its own). :data:`DEFAULT_CUES` is the mapping ``mark_scopes`` uses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

WORD = re.compile(r"\?|[a-z0-9][a-z0-9'/+-]*")
CUE_KINDS: tuple[str, ...] = ("pre_neg", "post_neg", "pseudo", "hedge", "history", "terminator")

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
    "not appreciated", "not apparent", "not evident", "not demonstrated", "not demonstrable", "not visualised",
    "not visualized", "not shown", "not recognised", "not recognized", "not elicited",
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

PRE_NEG = phrases(_PRE_NEG)
POST_NEG = phrases(_POST_NEG)
PSEUDO = phrases(_PSEUDO)
HEDGE = phrases(_HEDGE)
HISTORY = phrases(_HISTORY)
TERMINATOR = phrases(_TERMINATOR)
DEFAULT_CUES: Cues = {"pre_neg": PRE_NEG, "post_neg": POST_NEG, "pseudo": PSEUDO, "hedge": HEDGE,
                      "history": HISTORY, "terminator": TERMINATOR}


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
