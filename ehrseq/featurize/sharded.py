"""The featurizer fitted in one pass over batches of whole subjects, to the same state as
:meth:`ehrseq.featurize.featurizer.Featurizer.fit` on the whole events frame.

Each statistic ``fit`` learns either adds up exactly over batches that never split a subject (code counts,
distinct (subject, step) pairs per code, train subjects) or needs the train rows it summarises, which are few
and kept: the numeric values of each code (quantile bins and log1p mean / std: ``numpy`` reduces the same
values in the same order, so the floats are bit for bit those of ``fit``) and the static rows (sex
convention). Ties among code counts are broken as ``pandas.Series.value_counts`` breaks them (first appearance
in frame order, then a stable sort by count), so the step codes picked at the ``top_step_codes`` boundary are
the same. Batches must come in frame order: ascending subjects, as :func:`ehrseq.io.meds.iter_meds_batches`
yields them for shards sorted by subject; :meth:`FitAccumulator.add` refuses a batch that goes back.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from ehrseq.data.batch import SPECIAL_TOKENS
from ehrseq.errors import DataValidationError
from ehrseq.featurize import columns as fc
from ehrseq.featurize.featurizer import Featurizer, FeaturizerConfig
from ehrseq.featurize.steps import STEP_WIDTH_US
from ehrseq.io.conventions import detect

INT64_MIN = np.iinfo(np.int64).min


def _add_counts(into: dict[str, int], codes: pd.Series) -> None:
    """Add ``codes``' counts to ``into``; a code new to ``into`` joins it in order of first appearance."""
    for c, n in codes.value_counts(sort=False).items():
        into[str(c)] = into.get(str(c), 0) + int(n)


def _by_count(counts: dict[str, int]) -> pd.Series:
    """``counts`` as ``value_counts`` orders them: descending, ties in order of first appearance."""
    return pd.Series(counts, dtype=np.int64).sort_values(ascending=False, kind="stable")


class FitAccumulator:
    """``Featurizer(config).fit(events, splits)`` computed from batches of ``events`` (whole subjects, in
    frame order) given one at a time to :meth:`add`; :meth:`finish` returns the fitted featurizer."""

    def __init__(self, config: FeaturizerConfig | None, train_ids: Iterable[int]) -> None:
        self.config = config or FeaturizerConfig()
        self.train = np.unique(np.asarray(list(train_ids) if not isinstance(train_ids, np.ndarray | pd.Series)
                                          else train_ids, np.int64))
        self.counts: dict[str, int] = {}  # train, non-birth rows
        self.timed_counts: dict[str, int] = {}  # train, timed, non-birth rows
        self.values: dict[str, list[np.ndarray]] = {}  # code -> its valued timed train rows' values, frame order
        self.per_code: dict[str, int] = {}  # code -> distinct (subject, step) among its valued rows
        self.n_steps = 0
        self.n_subjects = 0
        self.static: list[pd.DataFrame] = []
        self.last_subject: int | None = None

    def add(self, events: pd.DataFrame) -> None:
        """Take one batch of canonical events (whole subjects, after every earlier batch's subjects)."""
        if not len(events):
            return
        cfg = self.config
        sid_all = events["subject_id"].to_numpy(np.int64)
        if self.last_subject is not None and int(sid_all.min()) <= self.last_subject:
            raise DataValidationError(
                "the shards' subjects are not in ascending order across batches", column="subject_id",
                hint="Sort the shards by subject_id (write_meds does), or read the data whole (pass a frame).")
        self.last_subject = int(sid_all.max())
        in_train = np.isin(sid_all, self.train)
        if not in_train.any():
            return
        ev = events.loc[in_train]
        code = ev["code"]
        sid = sid_all[in_train]
        t = ev["time"].to_numpy("datetime64[us]").view(np.int64)
        val = ev["numeric_value"].to_numpy(np.float64)
        not_birth = (code != cfg.birth_code).to_numpy(bool)
        timed = (t != INT64_MIN) & not_birth
        _add_counts(self.counts, code[not_birth])
        _add_counts(self.timed_counts, code[timed])
        width = STEP_WIDTH_US[cfg.step_every]
        rows = np.flatnonzero(timed)
        self.n_steps += fc.n_distinct(sid[rows], t[rows] if width is None else t[rows] // width)
        num = np.flatnonzero(timed & ~np.isnan(val))
        if len(num):
            inv, uniq = pd.factorize(code.take(num).astype(str))
            per = fc.distinct_per_code(inv, len(uniq), sid[num], t[num] if width is None else t[num] // width)
            order = np.argsort(inv, kind="stable")
            bounds = np.searchsorted(inv[order], np.arange(len(uniq) + 1))
            for k, u in enumerate(uniq):
                u = str(u)
                self.values.setdefault(u, []).append(val[num[order[bounds[k]:bounds[k + 1]]]])
                self.per_code[u] = self.per_code.get(u, 0) + int(per[k])
        self.static.append(ev.loc[t == INT64_MIN, ["subject_id", "time", "code"]])
        self.n_subjects += int(len(np.unique(sid)))

    def finish(self) -> Featurizer:
        """The fitted featurizer: the state ``fit`` learns from the whole frame."""
        cfg = self.config
        if not self.n_subjects:
            raise DataValidationError(
                "no events for the train split", column="subject_id",
                hint="check that subject_splits matches the subject ids of the events",
            )
        fz = Featurizer(cfg)
        counts = _by_count(self.counts)
        fz.vocab_ = list(SPECIAL_TOKENS) + sorted(counts.index[counts >= cfg.min_count].astype(str))
        fz.code_counts_ = {str(k): int(v) for k, v in counts.items() if v >= cfg.min_count}
        values = {c: np.concatenate(v) for c, v in self.values.items()}
        qs = np.linspace(0, 1, cfg.n_value_bins + 1)[1:-1]
        fz.value_edges_ = {c: np.unique(np.quantile(values[c], qs)).tolist()
                           for c in sorted(values) if len(values[c]) >= cfg.min_count}
        n_steps = max(self.n_steps, 1)
        if cfg.numeric_codes is None:
            numeric = sorted(c for c in values if self.per_code[c] >= 0.05 * n_steps
                             and c not in cfg.static_numeric_codes and self.counts.get(c, 0) >= cfg.min_count)
        else:
            numeric = list(cfg.numeric_codes)
        logs = {c: np.log1p(np.maximum(v, 0)) for c, v in values.items()}
        fz.value_stats_ = {c: list(_log_stats(logs, c)) for c in fz.value_edges_}
        fz.numeric_codes_ = numeric
        fz.num_mean_, fz.num_std_ = _stats_lists(logs, numeric)
        keep = set(numeric)
        other = _by_count({c: n for c, n in self.timed_counts.items() if c not in keep})
        fz.step_codes_ = sorted(str(c) for c in other.index[: cfg.top_step_codes] if other[c] >= cfg.min_count)
        fz.static_numeric_codes_ = [c for c in cfg.static_numeric_codes if c in values]
        fz.static_mean_, fz.static_std_ = _stats_lists(logs, fz.static_numeric_codes_)
        static = pd.concat(self.static, ignore_index=True) if self.static else pd.DataFrame(
            {"subject_id": [], "time": [], "code": []})
        fz.sex_prefixes_ = list(detect(static).sex_prefixes)
        fz.n_train_subjects_ = self.n_subjects
        return fz


def _log_stats(logs: dict[str, np.ndarray], code: str) -> tuple[float, float]:
    """Mean and std of a code's log values as :func:`ehrseq.featurize.columns.log_stats` computes them."""
    v = logs.get(code, np.zeros(0))
    return (float(v.mean()) if len(v) else 0.0), (float(v.std()) if len(v) > 1 and v.std() > 0 else 1.0)


def _stats_lists(logs: dict[str, np.ndarray], codes_: list[str]) -> tuple[list[float], list[float]]:
    pairs = [_log_stats(logs, c) for c in codes_]
    return [m for m, _ in pairs], [s for _, s in pairs]


__all__ = ["FitAccumulator"]
