"""The shared featurizer: one fitted, JSON-serialisable object used by every sequence and tabular model.

``fit`` sees the training split only (it takes the split table and filters itself). ``transform`` turns events
plus label rows into a :class:`FeatureSet`: flat arrays computed once, vectorised, from which each label row's
inputs are sliced at ``prediction_time``, so nothing after that time can reach a feature.

Two views per label row:

- tokens (BEHRT): ``[CLS] static... v1 codes [SEP] v2 codes [SEP] ...``; a visit is a calendar day; keeps the
  most recent events when longer than ``max_len`` (counted); unknown codes map to UNK (counted). With
  ``repeats="last_in_visit"`` a code repeated within a visit is one token (see :mod:`ehrseq.featurize.tokens`).
- steps (RNN): one vector per distinct event time (``step_every="event"``) or per calendar hour / day of
  events (``"hour"``, ``"day"``: dense data, so ``max_visits`` steps reach further back): numeric codes (log,
  standardised, the step's last value, with missing flags), a multi-hot over the most frequent other codes,
  and log days since the previous step; plus static features (age at prediction_time, sex, baseline numeric
  codes such as RF / anti-CCP that occur in train). A row whose prediction_time falls inside an hour / day
  sees that step built from its events up to prediction_time only.

The per-event columns are computed over chunks of whole subjects (:mod:`ehrseq.featurize.chunks`), on a thread
pool when ``threads`` / ``EHRSEQ_NUM_THREADS`` allow; the output is the same whatever the thread count.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ehrseq import codes
from ehrseq.data.batch import SPECIAL_TOKENS, UNK_ID
from ehrseq.errors import DataValidationError
from ehrseq.featurize import columns as fc
from ehrseq.featurize.chunks import EventTables, event_columns, featurize_threads
from ehrseq.featurize.featureset import FeatureSet
from ehrseq.featurize.steps import (
    STEP_WIDTH_US,
    StepCodes,
    Stream,
    column_luts,
    finish_steps,
    open_steps,
    step_layout,
)
from ehrseq.featurize.stream import EventSplit, history_cuts, lookup, split_events, subject_bounds, timeline
from ehrseq.featurize.tokens import REPEAT_POLICIES, build_tokens
from ehrseq.io.conventions import detect
from ehrseq.io.rowkeys import is_sorted
from ehrseq.split import ids_in

__all__ = ["FORMAT", "FeatureSet", "Featurizer", "FeaturizerConfig", "build_tokens"]

FORMAT = "ehrseq.featurizer/1"
US_PER_DAY = 86_400 * 1_000_000
INT64_MIN = np.iinfo(np.int64).min


@dataclass(frozen=True)
class FeaturizerConfig:
    """Settings of the featurizer (vocabulary, token window, visits, time and value bins)."""

    min_count: int = 5  # codes seen fewer times in train map to UNK
    max_len: int = 256  # tokens per sequence, CLS and static included
    max_visits: int = 64  # position ids are clipped here (BEHRT) / most recent steps kept (RNN)
    # BEHRT visit positions: "last" counts back from prediction time (most recent visit = 2), so "the latest
    # visit" is one learned embedding, not a search; "first" counts from the oldest visit kept (the paper).
    # On the CDAI benchmark "last" (with last-token pooling) gave +0.007 AUROC, see benchmarks/results.
    positions: str = "last"
    # BEHRT: a static numeric code's first measurement (RF, anti-CCP at baseline) is kept in the header when
    # truncation would drop it, so long histories do not lose the baseline serology the RNN sees as static.
    pin_static_numeric: bool = True
    # BEHRT: "last_in_visit" shows a code repeated within a visit (day) once, its most recent event at or before
    # prediction_time; "all" shows every event. Dense data (ICU labs hourly) then fits days, not hours, in
    # max_len; the synthetic RA cohort never repeats a code within a day, so its tokens are the same either way
    # (benchmarks/results/token_window.md). The RNN steps keep every event time under both.
    repeats: str = "last_in_visit"
    max_age: int = 120
    n_value_bins: int = 5
    time_bin_edges_days: tuple[float, ...] = (1, 7, 30, 90, 180, 365)
    numeric_codes: tuple[str, ...] | None = None  # None: learn (numeric codes at >= 5% of steps in train)
    static_numeric_codes: tuple[str, ...] = (codes.RF, codes.ANTI_CCP)
    top_step_codes: int = 48  # multi-hot codes per step (most frequent non-numeric codes in train)
    birth_code: str = codes.BIRTH
    # RNN steps: one per distinct event time ("event"), or the events of one calendar hour / day merged into one
    # step ("hour", "day"; a numeric code's last value in it, codes OR-ed). On ICU data an event-time step is
    # minutes apart, so max_visits steps cover a few hours; see benchmarks/results/real_tasks.md.
    step_every: str = "event"

    def __post_init__(self) -> None:
        if self.step_every not in STEP_WIDTH_US:
            raise ValueError(f"featurizer.step_every must be one of {list(STEP_WIDTH_US)}, got {self.step_every!r}")
        if self.positions not in ("first", "last"):
            raise ValueError(f"featurizer.positions must be 'first' or 'last', got {self.positions!r}")
        if self.repeats not in REPEAT_POLICIES:
            raise ValueError(f"featurizer.repeats must be one of {list(REPEAT_POLICIES)}, got {self.repeats!r}")


class Featurizer:
    """Fit on the training split; transform any split (or new data) with the frozen state."""

    def __init__(self, config: FeaturizerConfig | None = None) -> None:
        self.config = config or FeaturizerConfig()

    # ------------------------------------------------------------------ fit
    def fit(self, events: pd.DataFrame, splits: pd.DataFrame) -> Featurizer:
        """Learn vocabulary, value bins and scalers from the ``train`` subjects of ``splits`` only."""
        cfg = self.config
        # column arrays and row masks, not frame copies: the train rows, timed non-birth rows, rows with a value
        in_train = events["subject_id"].isin(ids_in(splits, "train")).to_numpy()
        if not in_train.any():
            raise DataValidationError(
                "no events for the train split", column="subject_id",
                hint="check that subject_splits matches the subject ids of the events",
            )
        code = events["code"]
        sid = events["subject_id"].to_numpy(np.int64)
        t = events["time"].to_numpy("datetime64[us]").view(np.int64)
        val = events["numeric_value"].to_numpy(np.float64)
        not_birth = (code != cfg.birth_code).to_numpy(bool)
        timed = in_train & (t != INT64_MIN) & not_birth
        counts = code[in_train & not_birth].value_counts()
        vocab = sorted(counts.index[counts >= cfg.min_count].astype(str))
        self.vocab_ = list(SPECIAL_TOKENS) + vocab
        # only codes in the vocabulary: a code seen fewer than min_count times (a free-text or local code that may
        # carry an identifier) never reaches the artifact
        self.code_counts_ = {str(k): int(v) for k, v in counts.items() if v >= cfg.min_count}
        # Quantile bins of numeric values per code (inner edges only), codes in sorted order.
        num = np.flatnonzero(timed & ~np.isnan(val))
        inv, uniq = pd.factorize(code.take(num).astype(str)) if len(num) else (np.zeros(0, np.int64), [])
        uniq = [str(u) for u in uniq]
        order = np.argsort(inv, kind="stable")  # each code's values, in frame order
        bounds = np.searchsorted(inv[order], np.arange(len(uniq) + 1))
        qs = np.linspace(0, 1, cfg.n_value_bins + 1)[1:-1]
        self.value_edges_ = {
            c: np.unique(np.quantile(val[num[order[bounds[k]:bounds[k + 1]]]], qs)).tolist()
            for k, c in sorted(enumerate(uniq), key=lambda kc: kc[1]) if bounds[k + 1] - bounds[k] >= cfg.min_count
        }
        # Step features.
        width = STEP_WIDTH_US[cfg.step_every]  # numeric codes: those measured at >= 5% of the steps
        rows = np.flatnonzero(timed)
        n_steps = max(fc.n_distinct(sid[rows], t[rows] if width is None else t[rows] // width), 1)
        if cfg.numeric_codes is None:
            per = fc.distinct_per_code(inv, len(uniq), sid[num], t[num] if width is None else t[num] // width)
            numeric = sorted(c for k, c in enumerate(uniq) if per[k] >= 0.05 * n_steps
                             and c not in cfg.static_numeric_codes and counts.get(c, 0) >= cfg.min_count)
        else:
            numeric = list(cfg.numeric_codes)
        logv = (order, bounds, {c: k for k, c in enumerate(uniq)}, np.log1p(np.maximum(val[num], 0)))
        self.value_stats_: dict[str, list[float]] = {}  # code -> [mean, std] of log1p(value), for BEHRT
        for c, m, sd in zip(self.value_edges_, *fc.log_stats(logv, list(self.value_edges_))):
            self.value_stats_[c] = [m, sd]
        self.numeric_codes_ = numeric
        self.num_mean_, self.num_std_ = fc.log_stats(logv, numeric)
        other = code[timed & ~code.isin(numeric).to_numpy(bool)].value_counts()
        self.step_codes_ = sorted(str(c) for c in other.index[: cfg.top_step_codes] if other[c] >= cfg.min_count)
        # Baseline numeric codes that the train split has values for (an ICU cohort has no RF / anti-CCP).
        self.static_numeric_codes_ = [c for c in cfg.static_numeric_codes if c in logv[2]]
        self.static_mean_, self.static_std_ = fc.log_stats(logv, self.static_numeric_codes_)
        static = events.loc[in_train & (t == INT64_MIN), ["subject_id", "time", "code"]]  # sex: static rows only
        self.sex_prefixes_ = list(detect(static).sex_prefixes)  # SEX//, GENDER//: whichever the data uses
        self.n_train_subjects_ = int(len(np.unique(sid[in_train])))
        return self

    @property
    def code_to_id(self) -> dict[str, int]:
        """Code -> token id of the fitted vocabulary."""
        if not hasattr(self, "_code_to_id"):
            self._code_to_id = {c: i for i, c in enumerate(self.vocab_)}
        return self._code_to_id

    @property
    def n_step_features(self) -> int:
        """Width of the RNN's per-visit vector."""
        return 2 * len(self.numeric_codes_) + len(self.step_codes_) + 1

    @property
    def n_static_features(self) -> int:
        """Width of the static baseline vector."""
        return 3 + 2 * len(self.static_numeric_codes_)

    @property
    def n_time_bins(self) -> int:
        """Number of time-gap ids (padding plus one per interval)."""
        return len(self.config.time_bin_edges_days) + 2  # pad + one per interval

    @property
    def n_value_ids(self) -> int:
        """Number of value ids (padding, no value, one per quantile bin)."""
        return self.config.n_value_bins + 2  # pad, "no value", bins

    # ------------------------------------------------------------ transform
    def transform(self, events: pd.DataFrame, labels: pd.DataFrame, threads: int | None = None) -> FeatureSet:
        """Featurize each label row from the events at or before its ``prediction_time``. ``threads``: how many
        threads compute the per-event columns (None: ``EHRSEQ_NUM_THREADS``, see
        :func:`ehrseq.featurize.chunks.featurize_threads`); the output does not depend on it."""
        self._check_fitted()
        cfg = self.config
        for col in ("subject_id", "prediction_time"):
            if col not in labels:
                raise DataValidationError(f"label table has no '{col}' column", column=col)
        labels = labels.reset_index(drop=True)
        if labels["prediction_time"].isna().any():
            bad = labels.loc[labels["prediction_time"].isna(), "subject_id"]
            raise DataValidationError("prediction_time is null", column="prediction_time", n_rows=len(bad),
                                      subject_ids=bad.tolist(), hint="every label row needs a prediction_time")
        lab_sid = labels["subject_id"].to_numpy(np.int64)
        lab_t = labels["prediction_time"].to_numpy("datetime64[us]").astype(np.int64)
        subj = np.unique(lab_sid)
        split = split_events(events, subj, cfg.birth_code)
        stream = split.stream
        sid, code_inv, uniq = stream.sid, stream.code_inv, stream.uniq
        tl = timeline(sid, stream.t_us)  # distinct (subject, time): per-time features are computed per group
        to_id = np.array([self.code_to_id.get(u, UNK_ID) for u in uniq], np.int64)
        group_step, heads = step_layout(cfg.step_every, tl)
        sc = StepCodes(self.numeric_codes_, self.num_mean_, self.num_std_, self.step_codes_)
        tables = EventTables(
            to_id, np.array([self.value_stats_.get(u, [0.0, np.inf]) for u in uniq], np.float64).reshape(-1, 2),
            fc.bin_table([self.value_edges_.get(c) for c in uniq]),
            fc.time_features(tl, split.birth_sid, split.birth_us, cfg.max_age, cfg.time_bin_edges_days),
            sc, column_luts(sc, uniq), group_step, heads, self.n_step_features, cfg.repeats == "last_in_visit")
        columns = event_columns(stream, tl, tables, featurize_threads(threads))  # meanwhile: the label rows

        # Per label row: slice bounds in the token stream (found among the groups, then mapped to events).
        bounds = subject_bounds(tl.sid, lab_sid)
        g_start, g_cut = bounds[0], history_cuts(tl.sid, tl.t, lab_sid, lab_t, bounds)
        tok_start, tok_cut = tl.first[g_start], tl.first[g_cut]
        n_hist = tok_cut - tok_start

        lab_subj = np.searchsorted(subj, lab_sid)  # per label row, its subject's index in subj
        st_ids = to_id[split.static_inv] if len(uniq) else np.zeros(0, np.int64)
        st_sid = split.static_sid
        order = None if is_sorted(st_sid, np.zeros(len(st_sid), np.int64)) else np.argsort(st_sid, kind="stable")
        st_sorted = st_ids if order is None else st_ids[order]
        st_lo, st_hi = (np.searchsorted(st_sid if order is None else st_sid[order], subj, side=side)
                        for side in ("left", "right"))
        static_tokens = fc.per_row([st_sorted[a:b] for a, b in zip(st_lo.tolist(), st_hi.tolist())], lab_subj)
        n_static = (st_hi - st_lo)[lab_subj]
        n_unknown = int(np.count_nonzero(st_ids == UNK_ID))
        lb_us = lookup(split.birth_sid, split.birth_us, lab_sid, INT64_MIN).astype(np.int64)
        age_pred = np.where(lb_us == INT64_MIN, np.nan, (lab_t - lb_us) / (365.25 * US_PER_DAY))
        age_pred_id = np.clip(np.nan_to_num(np.floor(age_pred), nan=-1), -1, cfg.max_age - 1).astype(np.int64) + 1

        pos = fc.code_positions(code_inv, uniq, self.static_numeric_codes_)
        static_x = self._static(stream, split, pos, (subj, lab_subj), age_pred, (tok_start, tok_cut))
        tok_pin = self._pins(pos, sid, subj, lab_subj, tok_cut)

        cols = columns()
        code_id, visit_no = cols.code, cols.visit
        n_unknown += int(np.count_nonzero(code_id == UNK_ID))
        # Steps for the RNN: one per distinct (subject, time), or per (subject, hour / day).
        steps = finish_steps(cols.step_x, tl, heads)
        # a step's last event is at or before the time exactly when the step ends before the row's cut
        step_x, step_start, step_cut = steps.x, group_step[g_start], group_step[g_cut]
        if cfg.step_every != "event":  # a row's hour / day still open at its prediction_time: up to it only
            step_x, step_start, step_cut = open_steps(sc, cfg.max_visits, steps, step_start, step_cut, lab_sid,
                                                      tok_cut, stream)
        budget = cfg.max_len - 1 - n_static - (tok_pin >= 0).sum(1)
        tok_next = cols.next
        if cols.shown is not None:  # tokens the row's history shows: the first of each (visit, code) counts them
            ck = np.zeros(len(cols.shown) + 1, np.int64)
            np.cumsum(cols.shown, out=ck[1:])
            n_hist = ck[g_cut] - ck[g_start]
        last = np.maximum(tok_cut - 1, 0)
        n_visits_hist = np.where(n_hist > 0, visit_no[last] - visit_no[np.minimum(tok_start, last)] + 1, 0) \
            if len(visit_no) else n_hist
        counts = {
            "rows": int(len(labels)),
            "events": int(len(sid) + len(st_sid)),
            "unknown_codes": n_unknown,
            "truncated_rows": int((n_hist + n_visits_hist > budget).sum()),
            "rows_without_history": int((n_hist == 0).sum()),
        }
        return FeatureSet(
            labels=labels,
            tok_code=code_id, tok_age=cols.age, tok_visit=visit_no, tok_delta=cols.delta,
            tok_value=cols.value, tok_num=cols.num, tok_start=tok_start, tok_cut=tok_cut, static_tokens=static_tokens,
            age_at_pred=age_pred_id, step_x=step_x, step_start=step_start, step_cut=step_cut, static_x=static_x,
            counts=counts, tok_pin=tok_pin, tok_next=tok_next,
        )

    def _pins(self, pos: dict[str, np.ndarray], sid: np.ndarray, subj: np.ndarray, lab_subj: np.ndarray,
              tok_cut: np.ndarray) -> np.ndarray:
        """(n_rows, P): per label row, the stream index of the subject's first event of each pinned code, if it
        lies before the row's cut (at or before prediction_time); else -1. The stream is sorted by subject;
        ``pos``: the stream indices of each static numeric code's events; row i's subject is subj[lab_subj[i]]."""
        pinned = [c for c in self.static_numeric_codes_ if c in self.code_to_id] \
            if self.config.pin_static_numeric else []
        out = np.full((len(lab_subj), len(pinned)), -1, np.int64)
        for j, c in enumerate(pinned):
            cand = fc.first_per_subject(pos[c], sid, subj)[lab_subj]
            out[:, j] = np.where((cand >= 0) & (cand < tok_cut), cand, -1)
        return out

    def _value_ids(self, code_inv: np.ndarray, uniq: list[str], values: np.ndarray) -> np.ndarray:
        """1 = no value; 2.. = quantile bin of the value within its code (``uniq``: the codes ``code_inv``
        indexes)."""
        table, p = fc.bin_table([self.value_edges_.get(c) for c in uniq]), np.flatnonzero(~np.isnan(values))
        return fc.value_bins(*table, code_inv[p], values, p)

    def _static(self, stream: Stream, split: EventSplit, pos: dict[str, np.ndarray],
                rows: tuple[np.ndarray, np.ndarray], age_pred: np.ndarray, hist: tuple[np.ndarray, np.ndarray]
                ) -> np.ndarray:
        """[age z, female, male (static rows with the fitted sex prefixes), per baseline numeric code: z of the
        latest value <= prediction_time (the last such event in stream order), missing]. ``rows``: the sorted
        label subjects and each row's index among them; ``hist``: each row's history [start, cut) in the stream."""
        subj, lab_subj = rows
        x = np.zeros((len(lab_subj), self.n_static_features), np.float32)
        x[:, 0] = np.nan_to_num((age_pred - 55.0) / 15.0)
        sex = fc.sex_codes(split.static_sid, split.static_inv, stream.uniq, self.sex_prefixes_, subj)[lab_subj]
        x[:, 1], x[:, 2] = sex == 1, sex == 2
        for i, c in enumerate(self.static_numeric_codes_):
            j = 3 + 2 * i
            rows = pos[c][~np.isnan(stream.val[pos[c]])]
            k = fc.last_before_cut(rows, *hist)  # index into rows, or -1
            v = stream.val[rows].astype(np.float64)
            z = (np.log1p(np.maximum(v, 0)) - self.static_mean_[i]) / self.static_std_[i]
            has = k >= 0
            x[:, j] = np.where(has, z[np.maximum(k, 0)], 0.0) if len(rows) else 0.0
            x[:, j + 1] = ~has
        return x

    # --------------------------------------------------------- persistence
    def _check_fitted(self) -> None:
        if not hasattr(self, "vocab_"):
            raise RuntimeError("Featurizer is not fitted; call fit(events, splits) on the training data first")

    def to_dict(self) -> dict[str, Any]:
        """The fitted featurizer as JSON-serialisable state."""
        self._check_fitted()
        return {
            "format": FORMAT,
            "config": asdict(self.config),
            "vocab": self.vocab_,
            "code_counts": self.code_counts_,
            "value_edges": self.value_edges_,
            "value_stats": self.value_stats_,
            "numeric_codes": self.numeric_codes_,
            "num_mean": list(map(float, self.num_mean_)),
            "num_std": list(map(float, self.num_std_)),
            "step_codes": self.step_codes_,
            "static_numeric_codes": self.static_numeric_codes_,
            "static_mean": list(map(float, self.static_mean_)),
            "static_std": list(map(float, self.static_std_)),
            "n_train_subjects": self.n_train_subjects_,
            "sex_prefixes": self.sex_prefixes_,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Featurizer:
        """Rebuild a fitted featurizer from :meth:`to_dict`'s output; another format is refused."""
        if d.get("format") != FORMAT:
            raise ValueError(f"featurizer format '{d.get('format')}' is not '{FORMAT}'; refit with this ehrseq")
        # written before these options existed: keep the layout the saved model was trained on
        cfg = {"pin_static_numeric": False, "positions": "first", "repeats": "all", **d["config"]}
        for k in ("time_bin_edges_days", "numeric_codes", "static_numeric_codes"):
            if cfg.get(k) is not None:
                cfg[k] = tuple(cfg[k])
        f = cls(FeaturizerConfig(**cfg))
        f.vocab_ = list(d["vocab"])
        f.code_counts_ = dict(d["code_counts"])
        f.value_edges_ = {k: list(v) for k, v in d["value_edges"].items()}
        f.value_stats_ = {k: list(v) for k, v in d.get("value_stats", {}).items()}
        f.numeric_codes_ = list(d["numeric_codes"])
        f.num_mean_, f.num_std_ = list(d["num_mean"]), list(d["num_std"])
        f.step_codes_ = list(d["step_codes"])
        f.static_numeric_codes_ = list(d["static_numeric_codes"])
        f.static_mean_, f.static_std_ = list(d["static_mean"]), list(d["static_std"])
        f.n_train_subjects_ = int(d["n_train_subjects"])
        f.sex_prefixes_ = list(d.get("sex_prefixes", ["SEX//"]))  # before detection: SEX// codes only
        return f

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_dict`'s state as JSON to ``path``."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> Featurizer:
        """Read a featurizer written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))
