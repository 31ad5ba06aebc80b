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
from ehrseq.featurize.featureset import FeatureSet
from ehrseq.featurize.steps import STEP_WIDTH_US, StepCodes, Stream, build_steps, open_steps
from ehrseq.featurize.stream import history_cuts, last_at_or_before, lookup, split_events, subject_bounds
from ehrseq.featurize.tokens import REPEAT_POLICIES, build_tokens, first_in_visit, next_in_visit
from ehrseq.io.conventions import DatasetConventions, detect, sex_of
from ehrseq.split import ids_in

__all__ = ["FORMAT", "FeatureSet", "Featurizer", "FeaturizerConfig", "build_tokens"]

FORMAT = "ehrseq.featurizer/1"
US_PER_DAY = 86_400 * 1_000_000


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
        train = events.loc[events["subject_id"].isin(ids_in(splits, "train"))]
        if train.empty:
            raise DataValidationError(
                "no events for the train split", column="subject_id",
                hint="check that subject_splits matches the subject ids of the events",
            )
        timed = train.loc[train["time"].notna() & (train["code"] != cfg.birth_code)]
        counts = train.loc[train["code"] != cfg.birth_code, "code"].value_counts()
        vocab = sorted(counts.index[counts >= cfg.min_count].astype(str))
        self.vocab_ = list(SPECIAL_TOKENS) + vocab
        # only codes in the vocabulary: a code seen fewer than min_count times (a free-text or local code that may
        # carry an identifier) never reaches the artifact
        self.code_counts_ = {str(k): int(v) for k, v in counts.items() if v >= cfg.min_count}
        # Quantile bins of numeric values per code (inner edges only).
        num = timed.dropna(subset=["numeric_value"])
        qs = np.linspace(0, 1, cfg.n_value_bins + 1)[1:-1]
        self.value_edges_ = {
            str(c): np.unique(np.quantile(v.to_numpy(np.float64), qs)).tolist()
            for c, v in num.groupby("code", observed=True)["numeric_value"]
            if len(v) >= cfg.min_count
        }
        # Step features.
        width = STEP_WIDTH_US[cfg.step_every]  # numeric codes: those measured at >= 5% of the steps
        step_of = (lambda f: f) if width is None else (
            lambda f: f.assign(time=f["time"].astype("datetime64[us]").astype(np.int64) // width))
        n_steps = max(step_of(timed[["subject_id", "time"]]).drop_duplicates().shape[0], 1)
        if cfg.numeric_codes is None:
            per = step_of(num[["subject_id", "time", "code"]]).drop_duplicates()["code"].value_counts()
            numeric = sorted(str(c) for c in per.index[per >= 0.05 * n_steps]
                             if str(c) not in cfg.static_numeric_codes and counts.get(c, 0) >= cfg.min_count)
        else:
            numeric = list(cfg.numeric_codes)
        self.value_stats_: dict[str, list[float]] = {}  # code -> [mean, std] of log1p(value), for BEHRT
        for c, m, sd in zip(self.value_edges_, *_log_stats(num, list(self.value_edges_))):
            self.value_stats_[c] = [m, sd]
        self.numeric_codes_ = numeric
        self.num_mean_, self.num_std_ = _log_stats(num, numeric)
        other = timed.loc[~timed["code"].isin(numeric), "code"].value_counts()
        self.step_codes_ = sorted(str(c) for c in other.index[: cfg.top_step_codes] if other[c] >= cfg.min_count)
        # Baseline numeric codes that the train split has values for (an ICU cohort has no RF / anti-CCP).
        self.static_numeric_codes_ = [c for c in cfg.static_numeric_codes if (num["code"] == c).any()]
        self.static_mean_, self.static_std_ = _log_stats(num, self.static_numeric_codes_)
        self.sex_prefixes_ = list(detect(train).sex_prefixes)  # SEX//, GENDER//: whichever the data uses
        self.n_train_subjects_ = int(train["subject_id"].nunique())
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
    def transform(self, events: pd.DataFrame, labels: pd.DataFrame) -> FeatureSet:
        """Featurize each label row from the events at or before its ``prediction_time``."""
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
        subj = np.unique(labels["subject_id"].to_numpy(np.int64))
        split = split_events(events, subj, cfg.birth_code)
        stream, static, birth = split
        sid, t_us, code_inv, uniq = stream.sid, stream.t_us, stream.code_inv, stream.uniq
        code_id = np.array([self.code_to_id.get(u, UNK_ID) for u in uniq], np.int64)[code_inv] if len(uniq) else code_inv.astype(np.int64)
        n_unknown = int((code_id == UNK_ID).sum())
        b_us = _birth_us(birth, sid)
        age_years = np.where(b_us == np.iinfo(np.int64).min, -1.0, (t_us - b_us) / (365.25 * US_PER_DAY))
        age_id = np.clip(np.floor(age_years), -1, cfg.max_age - 1).astype(np.int64) + 1  # 0 = unknown/pad
        # Day-visits: new visit when subject or calendar day changes.
        day = t_us // US_PER_DAY
        new_subj = np.r_[True, sid[1:] != sid[:-1]]
        new_visit = new_subj | np.r_[True, day[1:] != day[:-1]]
        visit_global = np.cumsum(new_visit) - 1
        subj_first_visit = np.maximum.accumulate(np.where(new_subj, visit_global, 0))
        visit_no = visit_global - subj_first_visit
        gap_at = np.where(new_subj, 0, day - np.r_[day[:1], day[:-1]])  # meaningful at visit starts
        # the time bin of the gap before each visit, given to every event of the visit
        delta_id = (np.searchsorted(np.asarray(cfg.time_bin_edges_days), gap_at[new_visit], side="right") + 1
                    )[visit_global] if len(day) else np.zeros(0, np.int64)
        values = stream.val
        value_id = self._value_ids(code_inv, uniq, values)
        stats = np.array([self.value_stats_.get(u, [0.0, np.inf]) for u in uniq], np.float64).reshape(-1, 2)
        tok_num = np.zeros(len(values), np.float32)  # 0 = no value
        p = np.flatnonzero(~np.isnan(values))
        if len(p):
            mu, sd = stats[code_inv[p], 0], stats[code_inv[p], 1]
            tok_num[p] = np.nan_to_num(np.clip((np.log1p(np.maximum(values[p], 0)) - mu) / sd, -5, 5))

        # Per label row: slice bounds in the token stream.
        lab_sid = labels["subject_id"].to_numpy(np.int64)
        lab_t = labels["prediction_time"].to_numpy("datetime64[us]").astype(np.int64)
        tok_start = subject_bounds(sid, lab_sid)[0]
        tok_cut = history_cuts(sid, t_us, lab_sid, lab_t)
        n_hist = tok_cut - tok_start

        st_inv, st_uniq = pd.factorize(static["code"].astype(str))
        st_ids = pd.Series(np.array([self.code_to_id.get(u, UNK_ID) for u in st_uniq], np.int64)[st_inv]
                           if len(st_uniq) else np.zeros(0, np.int64))
        st_sid = static["subject_id"].to_numpy(np.int64)
        order = np.argsort(st_sid, kind="stable")
        bounds = np.searchsorted(st_sid[order], subj, side="left"), np.searchsorted(st_sid[order], subj, side="right")
        st_sorted = st_ids.to_numpy(np.int64)[order]
        per_subject = [st_sorted[a:b] for a, b in zip(*bounds)]
        lab_subj = np.searchsorted(subj, lab_sid)
        static_tokens = [per_subject[r] for r in lab_subj]
        n_static = (bounds[1] - bounds[0])[lab_subj]
        n_unknown += int((st_ids == UNK_ID).sum())
        pred_us = labels["prediction_time"].to_numpy("datetime64[us]").astype(np.int64)
        lb_us = _birth_us(birth, lab_sid)
        age_pred = np.where(lb_us == np.iinfo(np.int64).min, np.nan, (pred_us - lb_us) / (365.25 * US_PER_DAY))
        age_pred_id = np.clip(np.nan_to_num(np.floor(age_pred), nan=-1), -1, cfg.max_age - 1).astype(np.int64) + 1

        # Steps for the RNN: one per distinct (subject, time), or per (subject, hour / day).
        sc = StepCodes(self.numeric_codes_, self.num_mean_, self.num_std_, self.step_codes_)
        steps = build_steps(sc, cfg.step_every, stream)
        step_x, step_start = steps.x, subject_bounds(steps.sid, lab_sid)[0]
        step_cut = history_cuts(steps.sid, steps.t, lab_sid, lab_t)  # steps whose last event is at or before the time
        if cfg.step_every != "event":  # a row's hour / day still open at its prediction_time: up to it only
            step_x, step_start, step_cut = open_steps(sc, cfg.max_visits, steps, step_start, step_cut, lab_sid,
                                                      tok_cut, stream)
        static_x = self._static(stream, labels, static, age_pred, lab_t)

        tok_pin = self._pins(code_id, sid, lab_sid, tok_cut)
        budget = cfg.max_len - 1 - n_static - (tok_pin >= 0).sum(1)
        tok_next = next_in_visit(visit_global, code_inv) if cfg.repeats == "last_in_visit" else None
        if tok_next is not None:  # tokens the row's history shows: the first of each (visit, code) counts them
            ck = np.r_[0, np.cumsum(first_in_visit(tok_next))]
            n_hist = ck[tok_cut] - ck[tok_start]
        last = np.maximum(tok_cut - 1, 0)
        n_visits_hist = np.where(n_hist > 0, visit_no[last] - visit_no[np.minimum(tok_start, last)] + 1, 0) if len(visit_no) else n_hist
        counts = {
            "rows": int(len(labels)),
            "events": int(len(sid) + len(static)),
            "unknown_codes": n_unknown,
            "truncated_rows": int((n_hist + n_visits_hist > budget).sum()),
            "rows_without_history": int((n_hist == 0).sum()),
        }
        return FeatureSet(
            labels=labels,
            tok_code=code_id, tok_age=age_id, tok_visit=visit_no.astype(np.int64), tok_delta=delta_id.astype(np.int64),
            tok_value=value_id, tok_num=tok_num, tok_start=tok_start, tok_cut=tok_cut, static_tokens=static_tokens,
            age_at_pred=age_pred_id, step_x=step_x, step_start=step_start, step_cut=step_cut, static_x=static_x,
            counts=counts, tok_pin=tok_pin, tok_next=tok_next,
        )

    def _pins(self, code_id: np.ndarray, sid: np.ndarray, lab_sid: np.ndarray, tok_cut: np.ndarray) -> np.ndarray:
        """(n_rows, P): per label row, the stream index of the subject's first event of each pinned code, if it
        lies before the row's cut (at or before prediction_time); else -1. The stream is sorted by subject."""
        ids = [self.code_to_id[c] for c in self.static_numeric_codes_ if c in self.code_to_id] \
            if self.config.pin_static_numeric else []
        out = np.full((len(lab_sid), len(ids)), -1, np.int64)
        for j, cid in enumerate(ids):
            idx = np.flatnonzero(code_id == cid)
            if not len(idx):
                continue
            first = idx[np.r_[True, sid[idx][1:] != sid[idx][:-1]]]  # first event of that code per subject
            k = np.minimum(np.searchsorted(sid[first], lab_sid), len(first) - 1)
            cand = np.where(sid[first][k] == lab_sid, first[k], -1)
            out[:, j] = np.where((cand >= 0) & (cand < tok_cut), cand, -1)
        return out

    def _value_ids(self, code_inv: np.ndarray, uniq: list[str], values: np.ndarray) -> np.ndarray:
        """1 = no value; 2.. = quantile bin of the value within its code. The valued events are grouped by code
        (one stable sort), then each code's edges are searched once."""
        out = np.ones(len(values), np.int64)
        edges = [self.value_edges_.get(c) for c in uniq]
        binned = np.array([e is not None for e in edges], bool)
        p = np.flatnonzero(~np.isnan(values) & binned[code_inv]) if len(uniq) else np.zeros(0, np.int64)
        if not len(p):
            return out
        p = p[np.argsort(code_inv[p], kind="stable")]
        k = code_inv[p]
        bounds = np.r_[np.flatnonzero(np.r_[True, k[1:] != k[:-1]]), len(p)]
        for a, b in zip(bounds[:-1], bounds[1:]):
            rows = p[a:b]
            out[rows] = np.searchsorted(np.asarray(edges[k[a]]), values[rows], side="right") + 2
        return out

    def _static(self, stream: Stream, labels: pd.DataFrame, static: pd.DataFrame, age_pred: np.ndarray,
                lab_t: np.ndarray) -> np.ndarray:
        """[age z, female, male (static rows with the fitted sex prefixes), per baseline numeric code: z of the
        latest value <= prediction_time (the last such event in stream order), missing]."""
        n = len(labels)
        x = np.zeros((n, self.n_static_features), np.float32)
        x[:, 0] = np.nan_to_num((age_pred - 55.0) / 15.0)
        s = labels["subject_id"].map(sex_of(static, DatasetConventions(sex_prefixes=tuple(self.sex_prefixes_))))
        x[:, 1] = (s == "F").to_numpy()
        x[:, 2] = (s == "M").to_numpy()
        lab_sid = labels["subject_id"].to_numpy(np.int64)
        for i, c in enumerate(self.static_numeric_codes_):
            j = 3 + 2 * i
            x[:, j + 1] = 1.0
            k = [q for q, u in enumerate(stream.uniq) if u == c]
            rows = np.flatnonzero(np.isin(stream.code_inv, k) & ~np.isnan(stream.val)) if k else np.zeros(0, int)
            if not len(rows):
                continue
            at = last_at_or_before(stream.sid[rows], stream.t_us[rows], lab_sid, lab_t)
            has = at >= 0
            v = np.log1p(np.maximum(stream.val[rows[at[has]]], 0))
            x[has, j] = (v - self.static_mean_[i]) / self.static_std_[i]
            x[has, j + 1] = 0.0
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


def _log_stats(num: pd.DataFrame, codes_: list[str]) -> tuple[list[float], list[float]]:
    """Per code, mean and std of log1p(max(value, 0)) over its rows of ``num`` (in frame order: the rows are
    grouped by code with one stable sort, not found by a scan per code); 0 / 1 for a code with no rows."""
    mean, std = [], []
    inv, uniq = pd.factorize(num["code"].astype(str)) if codes_ else (np.zeros(0, np.int64), [])
    logv = np.log1p(np.maximum(num["numeric_value"].to_numpy(np.float64), 0)) if codes_ else np.zeros(0)
    order = np.argsort(inv, kind="stable")
    bounds = np.searchsorted(inv[order], np.arange(len(uniq) + 1))
    where = {str(u): k for k, u in enumerate(uniq)}
    for c in codes_:
        k = where.get(c)
        v = logv[order[bounds[k]:bounds[k + 1]]] if k is not None else np.zeros(0)
        mean.append(float(v.mean()) if len(v) else 0.0)
        std.append(float(v.std()) if len(v) > 1 and v.std() > 0 else 1.0)
    return mean, std


def _us(times: pd.Series) -> np.ndarray:
    """int64 microseconds; NaT (e.g. a subject with no birth event, so age unknown) -> int64 min."""
    return pd.to_datetime(times).to_numpy("datetime64[us]").astype(np.int64)


def _birth_us(birth: pd.Series, ids: np.ndarray) -> np.ndarray:
    """Per id, its birth time in int64 microseconds (``birth``: subject_id -> time, sorted by subject_id);
    int64 min (age unknown) for a subject with no birth event or a NaT one."""
    return lookup(birth.index.to_numpy(np.int64), _us(birth), ids, np.iinfo(np.int64).min).astype(np.int64)
