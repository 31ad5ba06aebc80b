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

Revised reports: a bag of n-grams cannot tell order, so an addendum that changes the diagnosis would leave the
findings it overrules counted as affirmed. A sentence that revises the report (a ``revision`` cue: "amended",
"revised diagnosis", "corrected report", "reclassified", "diagnosis changed", ...; or a ``retraction``: "the
diagnosis of GCA is withdrawn", "please disregard") supersedes what came before it that it overrules: those
words get ``xold`` (and :func:`case_code` maps them to ``~``, like history), so they add no finding n-grams.
What it overrules, sentence by sentence: every earlier sentence that states a diagnosis ("Diagnosis: ...",
"arteritis", "GCA", "impression", ...) and every earlier sentence that shares a topic with the text that
stands (content words of four or more letters cut to five, less report furniture such as "sections", "levels",
"artery", "cells"; "multinucleated" counts as "giant", "infiltrate" as "inflammation", "IEL" as "internal
elastic lamina", and the disease name "giant cell arteritis" is a diagnosis, not a giant-cell finding). An
earlier sentence on something the revision does not revisit (the intima, when the addendum re-reads the media
and the giant cells) still stands, as a pathologist would read it. When the revising sentence lies in an
addendum block (opened by an ``addendum`` heading within a sentence's first three words: "Addendum",
"Amendment", "Supplementary report", ...), the superseded part ends where that block begins, so the addendum's
own findings stand and keep their usual negation / hedge marks. Inside an addendum block, weaker wording also
revises (``revision_weak``: "on review", "now considered", ...; and ``superseded`` clauses). A plain
"Addendum: special stains for organisms are negative." revises nothing; nor does a sentence that says the
report is unchanged (``no_revision``: "diagnosis unchanged", "does not alter the diagnosis"), nor one in a
history sentence. A ``superseded`` clause names the finding an addendum withdraws ("the cells previously taken
for giant cells are histiocytes", "histiocytes rather than giant cells", "changed from negative to ..."): its
cue and the words after it, up to a comma, a verb, a clause break or eight words, get ``xold`` wherever it
stands. A retraction sentence is ``xold`` as a whole; one that names no topic ("please disregard the previous
report") withdraws everything before it. A revision that names nothing the earlier report stated (a corrected
specimen side) overrules nothing. The last revision in a report decides.

Used by :class:`ehrseq.models.text_features.TfidfScope` and, with ``mark_scopes``, by
:class:`ehrseq.models.text_classifier.TextClassifier`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ehrseq.models.negation_cues import CUE_KINDS, DEFAULT_CUES, WORD, Cues, resolve_cues

_SENTENCE = re.compile(r"[.;!\n]+|\s-\s")
_TOKEN = re.compile(WORD.pattern + "|,")
# End the scope of a superseded clause ("previously taken for giant cells | are histiocytes").
_CLAUSE_STOP = frozenset({
    "is", "are", "was", "were", "be", "been", "being", "has", "have", "had", "do", "does", "did", "to",
    "that", "which", "who", "now", "should", "must", "may", "might", "can", "could", "will", "would",
    "represent", "represents", "represented", "show", "shows", "showed", "prove", "proves", "proved",
    "appear", "appears", "appeared", "correspond", "corresponds", "consist", "consists", "comprise",
    "comprises", "turn", "turned", "turns", "reveal", "reveals", "but", "however", "whereas",
})
_CLAUSE_MAX = 8
_REVISION_KINDS = ("revision", "retraction", "revision_weak", "no_revision", "superseded", "addendum")
# Topic words for what a revision overrules: words of 4+ letters, cut to 5 letters, less report furniture.
_GENERIC = frozenset({
    "with", "from", "that", "this", "there", "these", "those", "which", "were", "been", "have", "into",
    "also", "only", "show", "shows", "showed", "seen", "sections", "section", "identified", "present",
    "noted", "report", "addendum", "revised", "amended", "corrected", "deeper", "levels", "level", "further",
    "additional", "review", "reviewed", "examined", "final", "biopsy", "specimen", "temporal", "artery",
    "arteries", "arterial", "vessel", "right", "left", "bilateral", "tissue", "stain", "stains", "stained",
    "slide", "slides", "block", "blocks", "cell", "cells", "microscopic", "microscopy", "micro",
    "macroscopic", "gross", "clinical", "history", "comment", "description", "please", "following",
    "reported", "previously", "initially", "now", "after", "upon", "within", "including", "previous",
    "original", "earlier", "some", "scattered", "focal", "mild", "moderate", "marked", "severe", "positive",
    "negative", "consistent", "compatible", "features", "feature", "findings", "finding",
})
# Words of the diagnosis itself: a revised diagnosis overrules every earlier sentence that states one.
_DIAGNOSTIC = frozenset({
    "diagnosis", "diagnostic", "dx", "arteritis", "arteritic", "vasculitis", "vasculitic", "gca",
    "conclusion", "impression", "interpretation", "opinion",
})
# The disease's name is a diagnosis, not a statement about giant cells.
_DISEASE = (("giant", "cell", "arteritis"), ("giant-cell", "arteritis"), ("giant", "cell", "arteritic"))
_SPELLED = {"iel": ("internal", "elastic", "lamina"), "gc": ("giant",), "gcs": ("giant",),
            "multinucleated": ("giant",), "multinucleate": ("giant",), "inflam": ("inflammation",),
            "infl": ("inflammation",), "infiltrate": ("inflammation",), "infiltrates": ("inflammation",),
            "infiltration": ("inflammation",)}


_BY_FIRST: dict[int, tuple[Sequence[tuple[str, ...]], dict[str, list[tuple[str, ...]]]]] = {}


def _by_first(cues: Sequence[tuple[str, ...]]) -> dict[str, list[tuple[str, ...]]]:
    """The cues of one list grouped by their first word (cached per list object)."""
    hit = _BY_FIRST.get(id(cues))
    if hit is None or hit[0] is not cues:
        if len(_BY_FIRST) > 512:
            _BY_FIRST.clear()
        index: dict[str, list[tuple[str, ...]]] = {}
        for cue in cues:
            index.setdefault(cue[0], []).append(cue)
        hit = _BY_FIRST[id(cues)] = (cues, index)
    return hit[1]


def _match(words: list[str], i: int, cues: Sequence[tuple[str, ...]]) -> int:
    """Length of the longest cue starting at ``words[i]`` (0: none)."""
    best = 0
    if i < len(words):
        for cue in _by_first(cues).get(words[i], ()):
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


def _mark_clause(words: list[str], history: bool, cues: Cues, old: Sequence[bool] = ()) -> list[str]:
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
        if old and old[j]:
            out.append("xold" + w)  # named only to be withdrawn (a superseded clause)
        elif is_cue[j] and j > 0 and is_cue[j - 1] and not (old and old[j - 1]):
            continue  # one token per cue
        elif is_cue[j]:
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
    ``post_neg``, ``pseudo``, ``hedge``, ``history``, ``terminator`` and the revision lists ``revision``,
    ``retraction``, ``revision_weak``, ``no_revision``, ``superseded``, ``addendum``; phrases as strings or
    token tuples); a list it omits keeps its default.
    """
    return _mark(text, DEFAULT_CUES if cues is None else resolve_cues(cues))


def _any(words: list[str], cues: Sequence[tuple[str, ...]], first: int | None = None) -> bool:
    """Whether a cue starts at any word (or any of the first ``first`` words)."""
    return any(_match(words, i, cues) for i in range(len(words) if first is None else min(first, len(words))))


def _superseded_clauses(words: list[str], commas: set[int], use: Cues) -> list[bool]:
    """Per word: inside a superseded clause (its cue and what it names, to a comma, verb or clause break)."""
    old = [False] * len(words)
    i = 0
    while i < len(words):
        n = _match(words, i, use["superseded"])
        if not n:
            i += 1
            continue
        end = i + n
        while (end < len(words) and end - i - n < _CLAUSE_MAX and words[end] not in _CLAUSE_STOP
               and not _match(words, end, use["terminator"])
               and not _match(words, end, use["revision_weak"])):
            end += 1
            if end - 1 in commas:
                break
        old[i:end] = [True] * (end - i)
        i = end
    return old


def _topics(sents: Iterable[list[str]], furniture: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """What sentences are about: 5-letter stems of their content words (not ``furniture``, such as the words
    of the revision cues), and ``"dx"`` for a diagnosis word."""
    out: set[str] = set()
    for words in sents:
        i, kept = 0, []
        while i < len(words):
            n = _match(words, i, _DISEASE)
            kept.append("gca" if n else words[i])
            i += max(n, 1)
        for w in kept:
            for x in (w, *_SPELLED.get(w, ())):
                if x in _DIAGNOSTIC:
                    out.add("dx")
                if len(x) >= 4 and x not in _GENERIC and x not in furniture and x[0].isalpha():
                    out.add(x[:5])
    return out


def _revision_cut(sents: list[list[str]], history: list[bool], use: Cues) -> tuple[int, set[int]]:
    """(index of the first sentence that stands, the retraction sentences): the cut is set by the last
    revising sentence; one inside an addendum block cuts at the block's start."""
    cut, block, retracted = 0, None, set()
    for k, words in enumerate(sents):
        if _any(words, use["addendum"], first=3):
            block = k
        if history[k] or _any(words, use["no_revision"]):
            continue
        retraction = _any(words, use["retraction"])
        strong = retraction or _any(words, use["revision"])
        weak = block is not None and (_any(words, use["revision_weak"]) or _any(words, use["superseded"]))
        if strong or weak:
            cut = max(cut, k if block is None else block)
        if retraction:
            retracted.add(k)
    return cut, retracted


def _superseded_sentences(sents: list[list[str]], history: list[bool], use: Cues) -> set[int]:
    """The sentences the last revision overrules (see the module docstring), retraction sentences included."""
    cut, retracted = _revision_cut(sents, history, use)
    if not cut:
        return retracted
    furniture = {w for kind in _REVISION_KINDS for cue in use[kind] for w in cue}
    earlier = [_topics([words], furniture) for words in sents[:cut]]
    # a retraction that names no topic withdraws the whole report ("please disregard the previous report")
    whole = any(not _topics([sents[k]], furniture) for k in retracted)
    standing = _topics(sents[cut:], furniture)
    if not whole and "dx" not in standing and not any(t & standing for t in earlier):
        return retracted  # it revises something the earlier report did not state (the side, a name)
    return retracted | {k for k, t in enumerate(earlier)
                        if whole or history[k] or "dx" in t or t & (standing - {"dx"})}


def _mark(text: str, use: Cues) -> str:
    sents, commas = [], []
    for sent in _SENTENCE.split(str(text).lower()):
        toks = _TOKEN.findall(sent)
        words = [t for t in toks if t != ","]
        if not words:
            continue
        at, seen = set(), 0
        for t in toks:
            if t == ",":
                at.add(seen - 1)
            else:
                seen += 1
        sents.append(words)
        commas.append(at)
    history = [_any(words, use["history"], first=3) for words in sents]
    gone = _superseded_sentences(sents, history, use)
    out = []
    for k, words in enumerate(sents):
        if k in gone:
            out.append(" ".join("xold" + w for w in words))
            continue
        old, marked, j = _superseded_clauses(words, commas[k], use), [], 0
        for c in _clauses(words, use["terminator"]):
            marked.extend(_mark_clause(c, history[k], use, old[j:j + len(c)]))
            j += len(c)
        out.append(" ".join(marked))
    return " . ".join(out)


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
    """Marked text for character n-grams: negated words in upper case, hedged / history / superseded words and
    hedge cues as ``~``, negation cues as ``XNEGCUE`` (so "giant" and negated "GIANT" share no n-gram)."""
    out = []
    for w in marked.split():
        if w == "xnegcue":
            out.append("XNEGCUE")
        elif w.startswith(("xhyp", "xhist", "xold")):
            out.append("~")
        elif w.startswith("xneg"):
            out.append(w[4:].upper())
        else:
            out.append(w)
    return " ".join(out)
