"""Negation-, hedge- and history-aware input for the biopsy-report models: reports marked before tokenisation.

:func:`mark_scopes` rewrites a report before tokenisation, NegEx-style, with the cue lists of
:mod:`ehrseq.models.negation_cues` (written from general clinical-negation knowledge, without sight of the
out-of-style test grammar): sentences split at ``. ; !``, line ends and `` - ``; clauses split before a scope
terminator ("but", "however", "apart from", ...). In each clause a pseudo-negation ("no change", "not only") is
skipped; a word in the scope of a negation cue gets the prefix ``xneg`` (a pre-cue such as "no", "without",
"free of", "no evidence of" reaches to the end of the clause; a post-cue such as "absent", "not seen",
"unremarkable" reaches back to its start, or forward when it opens the clause: "Absent giant cells"); every
word of a hedged clause ("cannot be excluded", "suspicious for", "?", "rule out") gets ``xhyp`` and every word
of a sentence that opens with a history cue ("history", "clinical", "indication", "previous") gets ``xhist``.
The cue words themselves become ``xnegcue`` / ``xhypcue``, so the many ways of writing "absent" collapse to one
token: "No giant cells are identified." and "Giant cells are not seen." both read ``xneggiant xnegcells``.

Used by :class:`ehrseq.models.text_features.TfidfScope` and, with ``mark_scopes``, by
:class:`ehrseq.models.text_classifier.TextClassifier`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ehrseq.models.negation_cues import CUE_KINDS, DEFAULT_CUES, WORD, Cues, resolve_cues

_SENTENCE = re.compile(r"[.;!\n]+|\s-\s")


def _match(words: list[str], i: int, cues: Sequence[tuple[str, ...]]) -> int:
    """Length of the longest cue starting at ``words[i]`` (0: none)."""
    best = 0
    for cue in cues:
        if len(cue) > best and tuple(words[i:i + len(cue)]) == cue:
            best = len(cue)
    return best


def _clauses(words: list[str], terminators: Sequence[tuple[str, ...]]) -> list[list[str]]:
    """``words`` split before every scope terminator (the terminator opens the next clause)."""
    out, cur, i = [], [], 0
    while i < len(words):
        n = _match(words, i, terminators) if cur else 0
        if n:
            out.append(cur)
            cur = []
        step = max(n, 1)
        cur.extend(words[i:i + step])
        i += step
    return [c for c in out + [cur] if c]


def _mark_clause(words: list[str], history: bool, cues: Cues) -> list[str]:
    pre_neg, post_neg, pseudo, hedge = cues["pre_neg"], cues["post_neg"], cues["pseudo"], cues["hedge"]
    hedged = any(_match(words, i, hedge) and not _match(words, i, pseudo) for i in range(len(words)))
    i, scope_from, pre_scope = 0, 0, False
    tags = [""] * len(words)
    is_cue = [False] * len(words)
    while i < len(words):
        n_pseudo = _match(words, i, pseudo)
        n_hedge = 0 if n_pseudo else _match(words, i, hedge)
        n_post = 0 if n_pseudo or n_hedge else _match(words, i, post_neg)
        n_pre = 0 if n_pseudo or n_hedge else _match(words, i, pre_neg)
        if n_post and n_post >= n_pre and i == scope_from and not pre_scope:
            n_pre, n_post = n_post, 0  # a post-cue opening its clause governs what follows ("absent giant cells")
        if n_pseudo:
            i += n_pseudo
        elif n_hedge:
            is_cue[i:i + n_hedge] = [True] * n_hedge
            i += n_hedge
        elif hedged and (n_post or n_pre):
            i += max(n_post, n_pre)  # a negation inside a hedged clause: hedged, kept as words
        elif n_post and n_post >= n_pre:
            is_cue[i:i + n_post] = [True] * n_post
            for j in range(scope_from, i):
                tags[j] = "xneg"
            scope_from, i = i + n_post, i + n_post
        elif n_pre:
            is_cue[i:i + n_pre] = [True] * n_pre
            i, pre_scope = i + n_pre, True
        else:
            if pre_scope:
                tags[i] = "xneg"
            i += 1
    out: list[str] = []
    for j, w in enumerate(words):
        if is_cue[j] and j > 0 and is_cue[j - 1]:
            continue  # one token per cue
        if is_cue[j]:
            out.append("xhypcue" if hedged else "xnegcue")
        elif hedged:
            out.append("xhyp" + w)
        elif history:
            out.append("xhist" + w)
        else:
            out.append(tags[j] + w)
    return out


def mark_scopes(text: str, cues: Mapping[str, Iterable[Any]] | None = None) -> str:
    """The report with negated, hedged and historical words prefixed (see the module docstring); lower case.

    ``cues`` may replace any of the lists of :data:`ehrseq.models.negation_cues.DEFAULT_CUES` (``pre_neg``,
    ``post_neg``, ``pseudo``, ``hedge``, ``history``, ``terminator``; phrases as strings or token tuples).
    """
    return _mark(text, DEFAULT_CUES if cues is None else resolve_cues(cues))


def _mark(text: str, use: Cues) -> str:
    sentences = []
    for sent in _SENTENCE.split(str(text).lower()):
        words = WORD.findall(sent)
        if not words:
            continue
        history = any(_match(words, i, use["history"]) for i in range(min(3, len(words))))
        marked = [w for c in _clauses(words, use["terminator"]) for w in _mark_clause(c, history, use)]
        sentences.append(" ".join(marked))
    return " . ".join(sentences)


def mark_all(texts: Iterable[str], cues: Mapping[str, Iterable[Any]] | None = None) -> list[str]:
    """:func:`mark_scopes` over many reports (cue lists resolved once)."""
    use = DEFAULT_CUES if cues is None else resolve_cues(cues)
    return [_mark(t, use) for t in texts]


def cues_seen_in(texts: Iterable[str], cues: Mapping[str, Iterable[Any]] | None = None) -> Cues:
    """The cue lists (default: :data:`DEFAULT_CUES`) cut to the cues that occur as whole words in ``texts``:
    for an ablation that marks only what the training reports themselves write."""
    use = DEFAULT_CUES if cues is None else resolve_cues(cues)
    words = [" " + " ".join(WORD.findall(str(t).lower())) + " " for t in texts]
    def seen(c: tuple[str, ...]) -> bool:
        return any(f" {' '.join(c)} " in w for w in words)
    return {k: tuple(c for c in use[k] if seen(c)) for k in CUE_KINDS}


def case_code(marked: str) -> str:
    """Marked text for character n-grams: negated words in upper case, hedged / history words and hedge cues
    as ``~``, negation cues as ``XNEGCUE`` (so "giant" and negated "GIANT" share no n-gram)."""
    out = []
    for w in marked.split():
        if w == "xnegcue":
            out.append("XNEGCUE")
        elif w.startswith(("xhyp", "xhist")):
            out.append("~")
        elif w.startswith("xneg"):
            out.append(w[4:].upper())
        else:
            out.append(w)
    return " ".join(out)
