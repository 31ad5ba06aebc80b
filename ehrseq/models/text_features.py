"""Negation- and hedge-aware inputs for the biopsy-report classifier, and a hybrid with TF-IDF features.

Reports are marked first by :func:`~ehrseq.models.scope_marking.mark_scopes` (NegEx-style negated, hedged
and history words prefixed; see :mod:`ehrseq.models.scope_marking`, re-exported here), so that "No giant cells
are identified." and "Giant cells are not seen." both read ``xneggiant xnegcells``.

:class:`TfidfScope` is TF-IDF (character n-grams by default) + one logistic regression per label on marked
text; :class:`HybridTextClassifier` averages it with a :class:`TextClassifier` fitted on the same marked text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ehrseq.codes import BIOPSY_LABELS
from ehrseq.errors import DataValidationError
from ehrseq.featurize.text import texts_and_ids
from ehrseq.models.augment import PARAPHRASERS, augmented  # noqa: F401  (re-exported)
from ehrseq.models.negation_cues import Cues, resolve_cues
from ehrseq.models.scope_marking import (  # noqa: F401  (re-exported: the marking API)
    case_code,
    cues_seen_in,
    mark_all,
    mark_scopes,
)
from ehrseq.models.text_classifier import TextClassifier, TextClassifierConfig, TextInput, choose_thresholds


def _marked_frame(df: pd.DataFrame, name: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame) or "text" not in df.columns:
        raise DataValidationError("expected a DataFrame with a text column", file=name, column="text")
    out = df.copy()
    out["text"] = mark_all(texts_and_ids(df)[0])
    return out


@dataclass(frozen=True)
class TfidfScopeConfig:
    """Settings of :class:`TfidfScope` (all saved in its artifact).

    ``features``: ``"char"`` (character n-grams within words of :func:`case_code` text: they carry "intimal"
    into "neointimal" and "multinucleat" across spellings), ``"word"`` (word n-grams of the marked text) or
    ``"word+char"``; ``mark=False`` skips the marking (plain lower-cased text, an ablation). ``c``: inverse L2
    strength of each label's logistic regression. ``cues``: cue lists replacing some of the defaults (see
    :func:`mark_scopes`); the artifact stores the full resolved lists, so a saved model keeps its cues.
    ``augment``: label-preserving paraphrases (seeded by ``seed``) added per training report in one of
    ehrseq's synthetic report styles; reports the paraphraser recognises nothing in are not copied.
    ``paraphraser``: "grammar_a" (:mod:`ehrseq.models.paraphrase`), "grammar_b"
    (:mod:`ehrseq.models.paraphrase_alt`) or "auto": the one that recognises more of the training reports
    (:mod:`ehrseq.models.augment`).
    """

    labels: tuple[str, ...] = field(default_factory=lambda: tuple(BIOPSY_LABELS))
    c: float = 1.0
    mark: bool = True
    features: str = "char"
    char_ngram: tuple[int, int] = (3, 5)
    word_ngram: tuple[int, int] = (1, 2)
    min_df: int = 2
    max_iter: int = 2000
    threshold_metric: str = "f1"
    cues: dict[str, Any] | None = None
    augment: int = 0
    seed: int = 0
    paraphraser: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "char_ngram", tuple(self.char_ngram))
        object.__setattr__(self, "word_ngram", tuple(self.word_ngram))
        if self.features not in FEATURES:
            raise ValueError(f"features must be one of {list(FEATURES)}, got '{self.features}'")
        if not self.labels:
            raise ValueError("labels must name at least one label")
        if self.c <= 0 or self.min_df < 1:
            raise ValueError("c must be > 0 and min_df >= 1")
        if not isinstance(self.augment, int) or isinstance(self.augment, bool) or self.augment < 0:
            raise ValueError(f"augment must be a whole number >= 0 (paraphrases per report), got {self.augment!r}")
        if self.paraphraser not in PARAPHRASERS:
            raise ValueError(f"paraphraser must be one of {list(PARAPHRASERS)}, got {self.paraphraser!r}")
        for name in ("char_ngram", "word_ngram"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} must be (low, high) with 1 <= low <= high")
        if self.threshold_metric not in ("f1", "youden"):
            raise ValueError("threshold_metric must be 'f1' or 'youden'")
        if self.cues is not None:
            resolve_cues(self.cues)  # unknown list names fail here

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (tuples as lists)."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


FEATURES = ("char", "word", "word+char")


def _vectorizer(kind: str, cfg: TfidfScopeConfig, vocabulary: dict[str, int] | None = None) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    if kind == "word":
        return TfidfVectorizer(ngram_range=cfg.word_ngram, min_df=cfg.min_df, sublinear_tf=True,
                               vocabulary=vocabulary)
    return TfidfVectorizer(analyzer="char_wb", ngram_range=cfg.char_ngram, min_df=cfg.min_df, sublinear_tf=True,
                           lowercase=False, vocabulary=vocabulary)


class TfidfScope:
    """TF-IDF + one logistic regression per label on :func:`mark_scopes` text (see :class:`TfidfScopeConfig`).

    ``TfidfScope(labels, c=..., features=...)`` or ``TfidfScope(config=TfidfScopeConfig(...))``. After
    :meth:`fit`: ``vocabularies_`` (per feature kind, the terms in column order), ``idf_`` (per kind),
    ``coef_`` (K, F), ``intercept_`` (K,), ``thresholds_`` (K,) and ``cues_`` (the resolved cue lists);
    probabilities are computed from these arrays alone, so a loaded model scores exactly as the fitted one.
    """

    def __init__(self, labels: Sequence[str] | None = None, *, config: TfidfScopeConfig | None = None,
                 **settings: Any) -> None:
        if config is not None and (settings or labels is not None):
            raise ValueError("pass either config or labels / settings, not both")
        if config is None:
            config = TfidfScopeConfig(**({"labels": tuple(labels)} if labels is not None else {}), **settings)
        self.config = config
        self.labels = list(config.labels)
        self.cues_: Cues = resolve_cues(config.cues)

    @property
    def kinds(self) -> list[str]:
        """The feature kinds in column order."""
        return [k for k in ("word", "char") if k in self.config.features]

    def _docs(self, texts: list[str]) -> dict[str, list[str]]:
        marked = mark_all(texts, self.cues_) if self.config.mark else [str(t).lower() for t in texts]
        chars = [case_code(m) for m in marked] if self.config.mark else marked
        return {"word": marked, "char": chars}

    def _x(self, texts: list[str], fit: bool = False) -> Any:
        import scipy.sparse as sp

        docs = self._docs(texts)
        if fit:
            self.vecs_ = {k: _vectorizer(k, self.config) for k in self.kinds}
            parts = [self.vecs_[k].fit_transform(docs[k]) for k in self.kinds]
            self.vocabularies_ = {k: sorted(v.vocabulary_, key=v.vocabulary_.get) for k, v in self.vecs_.items()}
            self.idf_ = {k: np.asarray(v.idf_, dtype=np.float64) for k, v in self.vecs_.items()}
        else:
            self._check_fitted()
            parts = [self.vecs_[k].transform(docs[k]) for k in self.kinds]
        return sp.hstack(parts).tocsr()

    def fit(self, train_df: pd.DataFrame, tuning_df: pd.DataFrame) -> TfidfScope:
        """Fit on ``train_df`` (text + label columns); thresholds (``threshold_metric``) on ``tuning_df``."""
        from sklearn.linear_model import LogisticRegression

        for name, df in (("train_df", train_df), ("tuning_df", tuning_df)):
            _check_labelled(df, name, self.labels)
        texts, y = texts_and_ids(train_df)[0], train_df[self.labels].to_numpy()
        if self.config.augment:
            texts, y = augmented(texts, y, self.config.augment, self.config.seed, self.config.paraphraser)
        x = self._x(texts, fit=True)
        fits = [LogisticRegression(C=self.config.c, max_iter=self.config.max_iter).fit(x, y[:, k])
                for k in range(len(self.labels))]
        self.coef_ = np.vstack([m.coef_[0] for m in fits]).astype(np.float64)
        self.intercept_ = np.array([m.intercept_[0] for m in fits], dtype=np.float64)
        self.thresholds_ = choose_thresholds(tuning_df[self.labels].to_numpy(), self.predict_proba(tuning_df),
                                             self.config.threshold_metric)
        return self

    def set_state(self, vocabularies: dict[str, list[str]], idf: dict[str, np.ndarray], coef: np.ndarray,
                  intercept: np.ndarray, thresholds: np.ndarray) -> TfidfScope:
        """Install fitted arrays (from an artifact); shapes are checked against each other."""
        if sorted(vocabularies) != sorted(self.kinds) or sorted(idf) != sorted(self.kinds):
            raise ValueError(f"expected vocabularies and idf for {self.kinds}")
        n_feat = 0
        for k in self.kinds:
            if len(vocabularies[k]) != len(idf[k]) or len(set(vocabularies[k])) != len(vocabularies[k]):
                raise ValueError(f"{k} vocabulary ({len(vocabularies[k])} terms) does not match its idf "
                                 f"({len(idf[k])}) or repeats a term")
            n_feat += len(idf[k])
        k_lab = len(self.labels)
        if coef.shape != (k_lab, n_feat) or intercept.shape != (k_lab,) or thresholds.shape != (k_lab,):
            raise ValueError(f"coefficients {coef.shape}, intercepts {intercept.shape} or thresholds "
                             f"{thresholds.shape} do not fit {k_lab} labels x {n_feat} features")
        self.vocabularies_ = {k: list(vocabularies[k]) for k in self.kinds}
        self.idf_ = {k: np.asarray(idf[k], dtype=np.float64) for k in self.kinds}
        self.vecs_ = {}
        for k in self.kinds:
            vec = _vectorizer(k, self.config, {t: i for i, t in enumerate(self.vocabularies_[k])})
            vec.idf_ = self.idf_[k]
            self.vecs_[k] = vec
        self.coef_, self.intercept_ = np.asarray(coef, np.float64), np.asarray(intercept, np.float64)
        self.thresholds_ = np.asarray(thresholds, np.float64)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "vecs_"):
            raise RuntimeError("TfidfScope is not fitted; call fit() or load an artifact (load_text_model)")

    def predict_proba(self, texts: TextInput) -> np.ndarray:
        """(N, K) probabilities in ``labels`` order."""
        from scipy.special import expit

        self._check_fitted()
        x = self._x(texts_and_ids(texts)[0])
        return expit(np.asarray(x @ self.coef_.T) + self.intercept_)

    def predict(self, texts: TextInput) -> np.ndarray:
        """(N, K) 0/1 decisions at the per-label thresholds chosen on the tuning split."""
        return (self.predict_proba(texts) >= self.thresholds_).astype(np.int64)


def _check_labelled(df: Any, name: str, labels: Sequence[str]) -> None:
    if not isinstance(df, pd.DataFrame) or "text" not in df.columns:
        raise DataValidationError("expected a DataFrame with a text column", file=name, column="text")
    missing = [lab for lab in labels if lab not in df.columns]
    if missing:
        raise DataValidationError(f"label column(s) {missing} missing; add them (0/1 per report)", file=name,
                                  column=missing[0])
    if len(df) == 0:
        raise DataValidationError("no reports (0 rows)", file=name)


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
