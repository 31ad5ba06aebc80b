"""Negation- and hedge-aware inputs for the biopsy-report classifier, and a hybrid with TF-IDF features.

:func:`mark_scopes` rewrites a report before tokenisation, NegEx-style: each clause (sentences split at
``. ; ! - `` and line ends, clauses at "but", "however", "although", "whereas") is scanned for cues; a word in
the scope of a negation cue gets the prefix ``xneg`` (a pre-cue such as "no", "without", "free of", "no
evidence of", "neither" / "nor" reaches to the end of the clause; a post-cue such as "absent", "not seen",
"none", "unremarkable" reaches back to its start), every word of a hedged clause ("cannot be excluded",
"suspicious", "possible", "?", "rule out") gets ``xhyp`` and every word of a clinical-history sentence
("history", "request", "clinical details", "known", "previous") gets ``xhist``. The cue words themselves
become ``xnegcue`` / ``xhypcue``, so the many ways of writing "absent" collapse to one token: "No giant cells
are identified." and "Giant cells are not a feature." both read ``xneggiant xnegcells``.

The cue lists are clinical-negation triggers in the manner of NegEx, but they were written in the same
session as the second report grammar (:mod:`ehrseq.synth.reports_alt`) and hold some of its absence phrasings
("devoid of", "not a feature", "nil"): on that grammar they are not independent of the test set. The
out-of-style benchmark (``benchmarks/results/text_out_of_style.md``) therefore also reports the lists cut to
the cues the training grammar itself uses (:func:`cues_seen_in`), which bounds the leak from below.

:class:`TfidfScope` is word 1-2 gram TF-IDF + one logistic regression per label on marked text;
:class:`HybridTextClassifier` averages it with a :class:`TextClassifier` fitted on the same marked text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from ehrseq.errors import DataValidationError
from ehrseq.featurize.text import texts_and_ids
from ehrseq.models.text_classifier import TextClassifier, TextClassifierConfig, TextInput, choose_thresholds

PRE_NEG: tuple[tuple[str, ...], ...] = tuple(tuple(c.split()) for c in (
    "no evidence of", "negative for", "neg for", "free of", "devoid of", "absence of", "lack of", "none of",
    "no", "not", "without", "w/o", "neither", "nor", "nil", "lacks", "lack", "never"))
POST_NEG: tuple[tuple[str, ...], ...] = tuple(tuple(c.split()) for c in (
    "not seen", "not identified", "not present", "not found", "not evident", "not demonstrated",
    "not a feature", "none seen", "absent", "none", "negative", "-ve", "unremarkable"))
HEDGE: tuple[tuple[str, ...], ...] = tuple(tuple(c.split()) for c in (
    "cannot be excluded", "cannot be ruled out", "cannot exclude", "can't exclude", "not excluded",
    "suspicious for", "suspicious", "possible", "possibly", "equivocal", "indeterminate", "query", "?",
    "r/o", "rule out", "to exclude", "suggestive of", "not definitive", "not diagnostic", "nondiagnostic",
    "non-diagnostic", "may represent", "borderline"))
HISTORY = ("history", "hx", "request", "clinical", "known", "previous", "prior")
_SENTENCE = re.compile(r"[.;!\n]+|\s-\s")
_CLAUSE = re.compile(r"\b(?:but|however|although|whereas)\b")
_WORD = re.compile(r"\?|[a-z0-9][a-z0-9'/+-]*")


def _match(words: list[str], i: int, cues: Sequence[tuple[str, ...]]) -> int:
    """Length of the longest cue starting at ``words[i]`` (0: none)."""
    best = 0
    for cue in cues:
        if len(cue) > best and tuple(words[i:i + len(cue)]) == cue:
            best = len(cue)
    return best


Cues = dict[str, tuple[tuple[str, ...], ...]]


def _mark_clause(words: list[str], history: bool, cues: Cues) -> list[str]:
    pre_neg, post_neg, hedge = cues["pre_neg"], cues["post_neg"], cues["hedge"]
    hedged = any(_match(words, i, hedge) for i in range(len(words)))
    out: list[str] = []
    i, scope_to, pre_scope = 0, -1, False
    tags = [""] * len(words)
    is_cue = [False] * len(words)
    while i < len(words):
        n_hedge = _match(words, i, hedge)
        n_post = _match(words, i, post_neg)
        n_pre = 0 if n_post else _match(words, i, pre_neg)
        if n_hedge:
            for j in range(i, i + n_hedge):
                is_cue[j] = True
            i += n_hedge
        elif n_post and not hedged:
            for j in range(i, i + n_post):
                is_cue[j] = True
            for j in range(scope_to + 1, i):
                tags[j] = "xneg"
            scope_to, i = i + n_post - 1, i + n_post
        elif n_pre and not hedged:
            for j in range(i, i + n_pre):
                is_cue[j] = True
            i, pre_scope = i + n_pre, True
        else:
            if pre_scope:
                tags[i] = "xneg"
            i += 1
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


def mark_scopes(text: str, cues: Cues | None = None) -> str:
    """The report with negated, hedged and historical words prefixed (see the module docstring); lower case.

    ``cues`` may replace any of the lists ``{"pre_neg": ..., "post_neg": ..., "hedge": ...}`` (an ablation).
    """
    unknown = set(cues or {}) - {"pre_neg", "post_neg", "hedge"}
    if unknown:
        raise ValueError(f"unknown cue list(s) {sorted(unknown)}; expected pre_neg, post_neg, hedge")
    use = {"pre_neg": PRE_NEG, "post_neg": POST_NEG, "hedge": HEDGE, **(cues or {})}
    sentences = []
    for sent in _SENTENCE.split(str(text).lower()):
        words_all = _WORD.findall(sent)
        if not words_all:
            continue
        history = any(w in HISTORY for w in words_all[:3])
        clauses = [_WORD.findall(c) for c in _CLAUSE.split(sent)]
        sentences.append(" ".join(w for c in clauses if c for w in _mark_clause(c, history, use)))
    return " . ".join(sentences)


def mark_all(texts: Iterable[str], cues: Cues | None = None) -> list[str]:
    """:func:`mark_scopes` over many reports."""
    return [mark_scopes(t, cues) for t in texts]


def cues_seen_in(texts: Iterable[str]) -> Cues:
    """The cue lists cut to the cues that occur (as whole words) in ``texts``: for an ablation that marks
    only what the training reports themselves write."""
    words = [" " + " ".join(_WORD.findall(str(t).lower())) + " " for t in texts]
    seen = {c for lst in (PRE_NEG, POST_NEG, HEDGE) for c in lst if any(f" {' '.join(c)} " in w for w in words)}
    return {k: tuple(c for c in lst if c in seen) for k, lst in
            (("pre_neg", PRE_NEG), ("post_neg", POST_NEG), ("hedge", HEDGE))}


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


def _marked_frame(df: pd.DataFrame, name: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame) or "text" not in df.columns:
        raise DataValidationError("expected a DataFrame with a text column", file=name, column="text")
    out = df.copy()
    out["text"] = mark_all(texts_and_ids(df)[0])
    return out


class TfidfScope:
    """TF-IDF + one logistic regression per label on :func:`mark_scopes` text.

    ``features``: ``"char"`` (character 3-5 grams within words of :func:`case_code` text, the default: they
    carry "intimal" into "neointimal" and "multinucleat" across spellings), ``"word"`` (word 1-2 grams of
    the marked text) or ``"word+char"``. ``mark=False`` skips the marking (plain text, an ablation).
    """

    def __init__(self, labels: Sequence[str], c: float = 1.0, mark: bool = True, features: str = "char",
                 cues: Cues | None = None) -> None:
        if features not in ("char", "word", "word+char"):
            raise ValueError("features must be 'char', 'word' or 'word+char'")
        self.labels, self.c, self.mark, self.features, self.cues = list(labels), c, mark, features, cues

    def _x(self, texts: list[str], fit: bool = False) -> object:
        import scipy.sparse as sp
        from sklearn.feature_extraction.text import TfidfVectorizer

        marked = mark_all(texts, self.cues) if self.mark else [t.lower() for t in texts]
        if fit:
            self.vecs_ = []
            if "word" in self.features:
                self.vecs_.append(("word", TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)))
            if "char" in self.features:
                self.vecs_.append(("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=2,
                                                           sublinear_tf=True, lowercase=False)))
        parts = []
        for kind, vec in self.vecs_:
            docs = [case_code(m) for m in marked] if kind == "char" and self.mark else marked
            parts.append(vec.fit_transform(docs) if fit else vec.transform(docs))
        return sp.hstack(parts).tocsr()

    def fit(self, train_df: pd.DataFrame, tuning_df: pd.DataFrame) -> TfidfScope:
        """Fit on ``train_df`` (text + label columns); thresholds (max F1) on ``tuning_df``."""
        from sklearn.linear_model import LogisticRegression

        x = self._x(texts_and_ids(train_df)[0], fit=True)
        self.models_ = [LogisticRegression(C=self.c, max_iter=2000).fit(x, train_df[lab]) for lab in self.labels]
        self.thresholds_ = choose_thresholds(tuning_df[self.labels].to_numpy(), self.predict_proba(tuning_df.text))
        return self

    def predict_proba(self, texts: TextInput) -> np.ndarray:
        """(N, K) probabilities in ``labels`` order."""
        x = self._x(texts_and_ids(texts)[0])
        return np.column_stack([m.predict_proba(x)[:, 1] for m in self.models_])


class HybridTextClassifier:
    """A :class:`TextClassifier` on marked text (``mark``) averaged with :class:`TfidfScope` (weight ``w``).

    ``w=0`` is the transformer alone on marked text, ``w=1`` the TF-IDF model alone. Thresholds (the
    classifier's ``threshold_metric``) are chosen on the tuning split for the averaged probabilities.
    """

    def __init__(self, config: TextClassifierConfig | None = None, w: float = 0.5, mark: bool = True) -> None:
        if not 0.0 <= w <= 1.0:
            raise ValueError("w must be in [0, 1]")
        self.config, self.w, self.mark = config or TextClassifierConfig(), w, mark
        self.labels = list(self.config.labels)

    def fit(self, train_df: pd.DataFrame, tuning_df: pd.DataFrame) -> HybridTextClassifier:
        """Fit both parts on ``train_df``; the transformer picks its epoch on ``tuning_df``, then thresholds."""
        tr = _marked_frame(train_df, "train_df") if self.mark else train_df
        tu = _marked_frame(tuning_df, "tuning_df") if self.mark else tuning_df
        self.bert_ = TextClassifier(self.config).fit(tr, tu) if self.w < 1 else None
        self.tfidf_ = TfidfScope(self.labels, mark=self.mark).fit(train_df, tuning_df) if self.w > 0 else None
        self.thresholds_ = choose_thresholds(tuning_df[self.labels].to_numpy(), self.predict_proba(tuning_df),
                                             self.config.threshold_metric)
        return self

    def predict_proba(self, texts: TextInput) -> np.ndarray:
        """(N, K) averaged probabilities."""
        t = texts_and_ids(texts)[0]
        parts = []
        if self.bert_ is not None:
            parts.append((1 - self.w, self.bert_.predict_proba(mark_all(t) if self.mark else t)))
        if self.tfidf_ is not None:
            parts.append((self.w, self.tfidf_.predict_proba(t)))
        return sum(wt * p for wt, p in parts) / sum(wt for wt, _ in parts)
