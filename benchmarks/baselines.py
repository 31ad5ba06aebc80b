"""Count-feature baselines in the spirit of MEDS-Tab, for the real-data task benchmark.

Each label row (subject_id, prediction_time) becomes one row of features built from the subject's events at or
before prediction_time, never after:

- counts of each of the train split's ``top_k`` most frequent codes over the whole history and over the last
  7 days and 24 hours (windows ``[prediction_time - w, prediction_time]``, both ends inclusive), in a
  ``scipy.sparse`` matrix;
- the last numeric value of the train split's ``n_numeric`` most often measured numeric codes (NaN if none);
- age in years at prediction_time (from the birth event) and one 0/1 column per sex/gender code
  (static ``GENDER//`` or ``SEX//`` rows) seen in the train split.

Vocabularies are fitted on train-split subjects only. Models: L2 logistic regression on standardised
log-counts (sparse), scikit-learn's HistGradientBoostingClassifier (dense, NaN kept as missing), and for
time-to-event tasks an elastic-net Cox model (scikit-survival's CoxnetSurvivalAnalysis, alpha chosen on the
tuning split by Harrell's C).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

US_PER_DAY = 86_400_000_000
WINDOWS: tuple[tuple[str, float | None], ...] = (("all", None), ("7d", 7.0), ("24h", 1.0))
SEX_PREFIXES = ("GENDER//", "SEX//")
MAX_ENTRIES = 4_000_000  # count entries expanded per chunk of label rows (bounds memory on long histories)


@dataclass
class TabularFeatures:
    """Features of label rows: ``counts`` (N, top_k * windows) sparse, ``dense`` (N, D) with NaN = missing."""

    counts: sp.csr_matrix
    dense: np.ndarray
    count_names: list[str]
    dense_names: list[str]

    def __len__(self) -> int:
        return self.counts.shape[0]

    def to_dense(self) -> np.ndarray:
        """(N, top_k * windows + D) float64, counts then the dense block (NaN kept)."""
        return np.hstack([self.counts.toarray().astype(np.float64), self.dense])

    @property
    def names(self) -> list[str]:
        return self.count_names + self.dense_names


def _rank(sorted_keys: list[np.ndarray], query_keys: list[np.ndarray], inclusive: bool) -> np.ndarray:
    """For each query, how many rows of a table sorted lexicographically by ``sorted_keys`` come before it:
    rows with keys < the query's (``inclusive=False``) or <= (``inclusive=True``)."""
    n, q = len(sorted_keys[0]), len(query_keys[0])
    flag = np.concatenate([np.zeros(n, np.int8), np.full(q, 1 if inclusive else -1, np.int8)])
    cols = [np.concatenate([a, b]) for a, b in zip(sorted_keys, query_keys, strict=True)]
    order = np.lexsort((flag, *reversed(cols)))  # lexsort: the last key is the primary one
    is_q = order >= n
    out = np.empty(q, np.int64)
    out[order[is_q] - n] = np.flatnonzero(is_q) - np.arange(q)
    return out


def _times_us(values: pd.Series | np.ndarray) -> np.ndarray:
    return np.asarray(pd.to_datetime(values).astype("datetime64[us]")).astype(np.int64)


@dataclass
class CountFeaturizer:
    """Fit on the train split's events (:meth:`fit`), then featurize label rows (:meth:`transform`)."""

    top_k: int = 500
    n_numeric: int = 100
    windows: tuple[tuple[str, float | None], ...] = WINDOWS
    birth_code: str = "MEDS_BIRTH"
    sex_prefixes: tuple[str, ...] = SEX_PREFIXES
    codes_: list[str] = field(default_factory=list)
    numeric_codes_: list[str] = field(default_factory=list)
    sex_codes_: list[str] = field(default_factory=list)

    def _is_sex(self, code: pd.Series) -> np.ndarray:
        return code.astype(str).str.startswith(self.sex_prefixes).to_numpy()

    def fit(self, events: pd.DataFrame, train_ids: np.ndarray) -> CountFeaturizer:
        """Learn the code, numeric-code and sex vocabularies from the events of ``train_ids`` subjects."""
        ev = events.loc[events["subject_id"].isin(train_ids)]
        sex = self._is_sex(ev["code"])
        self.sex_codes_ = sorted(ev.loc[sex, "code"].astype(str).unique())
        timed = ev.loc[ev["time"].notna() & ~sex & (ev["code"] != self.birth_code)]
        self.codes_ = _top(timed["code"], self.top_k)
        self.numeric_codes_ = _top(timed.loc[timed["numeric_value"].notna(), "code"], self.n_numeric)
        return self

    @property
    def dense_names(self) -> list[str]:
        return ([f"last_value:{c}" for c in self.numeric_codes_] + ["age_years"]
                + [f"static:{c}" for c in self.sex_codes_])

    def transform(self, events: pd.DataFrame, labels: pd.DataFrame) -> TabularFeatures:
        """Features of ``labels`` rows (subject_id, prediction_time), in their order; events after a row's
        prediction_time are never read for it."""
        if not self.codes_ and not self.numeric_codes_:
            raise ValueError("CountFeaturizer is not fitted (call fit on the train split first)")
        sid = labels["subject_id"].to_numpy(np.int64)
        pt = _times_us(labels["prediction_time"])
        ev = events.loc[events["subject_id"].isin(np.unique(sid))]
        timed = ev.loc[ev["time"].notna()]
        counts = self._counts(timed, sid, pt)
        dense = np.hstack([self._last_values(timed, sid, pt), self._age(timed, sid, pt)[:, None],
                           self._sex(ev, sid)])
        names = [f"count_{w}:{c}" for w, _ in self.windows for c in self.codes_]
        return TabularFeatures(counts, dense, names, self.dense_names)

    def _counts(self, timed: pd.DataFrame, sid: np.ndarray, pt: np.ndarray) -> sp.csr_matrix:
        k = len(self.codes_)
        col = pd.Index(self.codes_).get_indexer(timed["code"].astype(str)).astype(np.int64)
        keep = col >= 0
        e_sid = timed["subject_id"].to_numpy(np.int64)[keep]
        e_t = _times_us(timed["time"])[keep]
        e_col = col[keep]
        order = np.lexsort((e_t, e_sid))
        e_sid, e_t, e_col = e_sid[order], e_t[order], e_col[order]
        cut = _rank([e_sid, e_t], [sid, pt], inclusive=True)  # events at prediction_time count
        start = _rank([e_sid, e_t], [sid, np.full_like(pt, np.iinfo(np.int64).min)], inclusive=False)
        blocks = []
        for w, (_, days) in enumerate(self.windows):
            lo = start if days is None else _rank([e_sid, e_t], [sid, pt - int(days * US_PER_DAY)],
                                                 inclusive=False)
            blocks.append(_range_counts(lo, cut, e_col, w * k, k * len(self.windows)))
        out = blocks[0]
        for b in blocks[1:]:
            out = out + b
        return out.tocsr()

    def _last_values(self, timed: pd.DataFrame, sid: np.ndarray, pt: np.ndarray) -> np.ndarray:
        m = len(self.numeric_codes_)
        out = np.full((len(sid), m), np.nan)
        if not m or not len(sid):
            return out
        num = timed.loc[timed["numeric_value"].notna()]
        j = pd.Index(self.numeric_codes_).get_indexer(num["code"].astype(str)).astype(np.int64)
        keep = j >= 0
        e_j, e_sid = j[keep], num["subject_id"].to_numpy(np.int64)[keep]
        e_t, e_v = _times_us(num["time"])[keep], num["numeric_value"].to_numpy(np.float64)[keep]
        order = np.lexsort((e_t, e_sid, e_j))
        e_j, e_sid, e_t, e_v = e_j[order], e_sid[order], e_t[order], e_v[order]
        q_j = np.tile(np.arange(m, dtype=np.int64), len(sid))
        q_sid, q_t = np.repeat(sid, m), np.repeat(pt, m)
        last = _rank([e_j, e_sid, e_t], [q_j, q_sid, q_t], inclusive=True) - 1
        ok = last >= 0
        ok[ok] = (e_j[last[ok]] == q_j[ok]) & (e_sid[last[ok]] == q_sid[ok])
        flat = out.reshape(-1)
        flat[ok] = e_v[last[ok]]
        return out

    def _age(self, timed: pd.DataFrame, sid: np.ndarray, pt: np.ndarray) -> np.ndarray:
        birth = timed.loc[timed["code"] == self.birth_code].groupby("subject_id")["time"].min()
        b = pd.Series(sid).map(birth)
        out = np.full(len(sid), np.nan)
        has = b.notna().to_numpy()
        out[has] = (pt[has] - _times_us(b[has])) / (365.25 * US_PER_DAY)
        return out

    def _sex(self, ev: pd.DataFrame, sid: np.ndarray) -> np.ndarray:
        out = np.zeros((len(sid), len(self.sex_codes_)))
        st = ev.loc[self._is_sex(ev["code"])]
        for i, c in enumerate(self.sex_codes_):
            out[:, i] = np.isin(sid, st.loc[st["code"].astype(str) == c, "subject_id"].to_numpy(np.int64))
        return out


def _top(codes: pd.Series, k: int) -> list[str]:
    """The ``k`` most frequent codes, ties broken by code (deterministic)."""
    vc = codes.astype(str).value_counts()
    df = pd.DataFrame({"code": vc.index.astype(str), "n": vc.to_numpy()}).sort_values(
        ["n", "code"], ascending=[False, True], kind="stable")
    return df["code"].head(k).tolist()


def _range_counts(lo: np.ndarray, hi: np.ndarray, col: np.ndarray, offset: int, n_cols: int) -> sp.csr_matrix:
    """Sparse (N, n_cols) counts of the codes ``col[lo[i]:hi[i]]`` of each row i, in columns ``offset + code``;
    the ranges are expanded in chunks of rows of at most about MAX_ENTRIES events."""
    n = len(lo)
    lengths = np.maximum(hi - lo, 0)
    rows_out, cols_out = [], []
    i = 0
    while i < n:
        csum = np.cumsum(lengths[i:])
        j = i + max(1, int(np.searchsorted(csum, MAX_ENTRIES, side="right")))
        ln = lengths[i:j]
        total = int(ln.sum())
        if total:
            first = np.repeat(lo[i:j] - np.concatenate([[0], np.cumsum(ln)[:-1]]), ln)
            idx = first + np.arange(total)
            rows_out.append(np.repeat(np.arange(i, j), ln))
            cols_out.append(col[idx] + offset)
        i = j
    r = np.concatenate(rows_out) if rows_out else np.zeros(0, np.int64)
    c = np.concatenate(cols_out) if cols_out else np.zeros(0, np.int64)
    return sp.coo_matrix((np.ones(len(r), np.float32), (r, c)), shape=(n, n_cols)).tocsr()


# --------------------------------------------------------------------------------------------------- models
@dataclass
class LinearDesign:
    """Train-split preprocessing for linear models: log1p(counts) and the dense block (train medians for
    missing values plus one missing-indicator per column), every column scaled to unit train std."""

    medians_: np.ndarray | None = None
    scale_: np.ndarray | None = None
    center_: np.ndarray | None = None

    def fit(self, x: TabularFeatures) -> LinearDesign:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: median 0 below
            self.medians_ = np.nan_to_num(np.nanmedian(x.dense, axis=0)) if len(x) else np.zeros(x.dense.shape[1])
        raw = self._raw(x)
        dense_part = raw[:, x.counts.shape[1]:].toarray()
        self.center_ = dense_part.mean(0)
        sq = raw.multiply(raw).mean(0).A1 - np.square(raw.mean(0).A1)
        sd = np.sqrt(np.maximum(sq, 0.0))
        self.scale_ = np.where(sd > 0, sd, 1.0)
        return self

    def _raw(self, x: TabularFeatures) -> sp.csr_matrix:
        miss = np.isnan(x.dense)
        filled = np.where(miss, self.medians_, x.dense)
        return sp.hstack([x.counts.log1p(), sp.csr_matrix(np.hstack([filled, miss.astype(float)]))]).tocsr()

    def transform(self, x: TabularFeatures, dense: bool = False) -> sp.csr_matrix | np.ndarray:
        """The scaled design matrix (sparse; counts are not centred so they stay sparse)."""
        raw = self._raw(x)
        n_c = x.counts.shape[1]
        counts = raw[:, :n_c].multiply(1.0 / self.scale_[:n_c]).tocsr()
        rest = (raw[:, n_c:].toarray() - self.center_) / self.scale_[n_c:]
        if dense:
            return np.hstack([counts.toarray(), rest])
        return sp.hstack([counts, sp.csr_matrix(rest)]).tocsr()


def fit_logistic(x: TabularFeatures, y: np.ndarray, c: float = 0.1, seed: int = 0) -> tuple[object, LinearDesign]:
    """L2 logistic regression (lbfgs) on the scaled design; returns (model, design)."""
    from sklearn.linear_model import LogisticRegression

    design = LinearDesign().fit(x)
    model = LogisticRegression(C=c, max_iter=5000, random_state=seed).fit(design.transform(x), y)
    return model, design


def fit_gbm(x: TabularFeatures, y: np.ndarray, seed: int = 0, max_iter: int = 200) -> object:
    """HistGradientBoostingClassifier on the dense features (NaN = missing, handled natively)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=0.05, max_leaf_nodes=15,
                                          l2_regularization=1.0, early_stopping=False,
                                          random_state=seed).fit(x.to_dense(), y)


def have_sksurv() -> bool:
    """Whether scikit-survival (the ``bench`` extra) is importable."""
    try:
        import sksurv  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class CoxnetBaseline:
    """Elastic-net Cox model over the scaled design; the alpha of the path with the best tuning Harrell's C
    (ties: the larger alpha, i.e. the simpler model)."""

    l1_ratio: float = 0.5
    n_alphas: int = 30
    alpha_min_ratio: float = 0.05
    design_: LinearDesign | None = None
    model_: object = None
    alpha_: float | None = None

    def fit(self, x: TabularFeatures, duration: np.ndarray, event: np.ndarray, x_tune: TabularFeatures,
            d_tune: np.ndarray, e_tune: np.ndarray) -> CoxnetBaseline:
        """Fit the path on train, choose alpha on tuning."""
        from sksurv.linear_model import CoxnetSurvivalAnalysis
        from sksurv.util import Surv

        from ehrseq.evaluate.survival import harrell_c

        self.design_ = LinearDesign().fit(x)
        xt = self.design_.transform(x, dense=True)
        m = CoxnetSurvivalAnalysis(l1_ratio=self.l1_ratio, n_alphas=self.n_alphas,
                                   alpha_min_ratio=self.alpha_min_ratio, fit_baseline_model=True, max_iter=20000)
        m.fit(xt, Surv.from_arrays(event.astype(bool), duration.astype(float)))
        xv = self.design_.transform(x_tune, dense=True)
        y_tune = np.stack([d_tune, e_tune], axis=1).astype(float)
        best, best_c = float(m.alphas_[0]), -1.0
        for a in m.alphas_:  # descending: the first of equal C is the larger alpha
            c = harrell_c(y_tune, m.predict(xv, alpha=a)).value
            if c is not None and c > best_c + 1e-12:
                best, best_c = float(a), c
        self.model_, self.alpha_ = m, best
        return self

    def predict_risk(self, x: TabularFeatures) -> np.ndarray:
        """Linear predictor (higher = earlier event)."""
        return np.asarray(self.model_.predict(self.design_.transform(x, dense=True), alpha=self.alpha_))

    def predict_survival(self, x: TabularFeatures, times: np.ndarray) -> pd.DataFrame:
        """Survival curves at ``times`` (rows) for each label row (columns), step functions of the Breslow fit."""
        fns = self.model_.predict_survival_function(self.design_.transform(x, dense=True), alpha=self.alpha_)
        lo = float(fns[0].x[0])
        arr = np.stack([np.where(times < lo, 1.0, f(np.clip(times, lo, f.x[-1]))) for f in fns], axis=1)
        return pd.DataFrame(arr, index=np.asarray(times, float))
