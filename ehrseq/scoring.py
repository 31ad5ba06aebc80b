"""Batch scoring: artifact -> streaming read -> frozen featurize -> predict -> Parquet shards.

    from ehrseq.scoring import score
    s = score("runs/cdai_rnn", "big_extract/meds", "runs/scores")   # out/part-00000.parquet, ...
    print(s.predictions_written, s.rows_quarantined)

What it guarantees:

- **Bounded memory.** MEDS input is read as raw Arrow record batches (``batch_rows`` rows at a time); at most
  one shard of canonical events (about ``shard_rows`` rows) plus one raw batch is held. The only state that
  grows with the input is the set of subject ids already seen (8 bytes per subject, to catch a subject whose
  rows are not contiguous). An EHR-extract directory is read whole by :func:`ehrseq.io.read_extract` (its
  tables must be joined), then scored in the same shards.
- **Nothing lost.** Each raw row is checked before canonicalisation; failing rows go to
  ``out/_quarantine.parquet`` as (subject_id if readable, reason_code, source_file, source_row), never a cell
  value. ``rows_read == rows_accepted + rows_quarantined``. The job aborts (finished shards kept, no
  ``_SUCCESS.json``) as soon as the quarantined rows exceed ``max_quarantine_fraction`` of all input rows
  (the total is known up front from the Parquet footers).
- **Atomic, resumable, deterministic.** Shard ``i`` holds the subjects, in input order, whose canonical
  events fill ``shard_rows`` (a subject is never split); boundaries depend only on the input, the
  validation policy and ``shard_rows`` (not on ``batch_rows`` or the engine). A shard is written to a
  temporary file and ``os.replace``d; its Parquet footer records the job hash and its counts. A rerun with
  the same arguments re-reads the input (to recount and rebuild the quarantine) but skips featurizing and
  predicting every shard already present, so the output equals an uninterrupted run. ``out/_job.json`` holds
  the argument hash; a directory written by another job is refused.

Output rows (MEDS prediction-file names, see ``data_schemas/predictions.schema.json``): ``subject_id``,
``prediction_time``, then ``predicted_boolean_probability`` + ``predicted_boolean_value`` (binary),
``predicted_float_value`` (regression) or ``predicted_<label>_probability`` per label (multi-label), then
``artifact_id`` and ``artifact_sha256`` (sha256 of the artifact's manifest.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import torch

from ehrseq.artifacts import Artifact, load_artifact, sha256_file
from ehrseq.errors import ArtifactError, DataValidationError, EhrseqError, TargetError
from ehrseq.io.validate import (
    CANONICAL_COLUMNS,
    ValidationPolicy,
    ValidationReport,
    coerce_events,
    tidy_events,
)

log = logging.getLogger(__name__)

JOB_FORMAT = "ehrseq.score/1"
META_KEY = b"ehrseq.scoring"
REASON_CODES = ("BAD_SUBJECT_ID", "NULL_CODE", "BAD_TIME", "BAD_VALUE", "NONFINITE_VALUE", "DUPLICATE_SUBJECT",
                "INVALID_SUBJECT_ROWS")
QUARANTINE_SCHEMA = pa.schema([
    ("subject_id", pa.int64()),  # null when the id itself is unreadable
    ("reason_code", pa.string()),
    ("source_file", pa.string()),  # path relative to the data root
    ("source_row", pa.int64()),  # 0-based row number within source_file
])
# "_" prefix: Arrow, pandas and Spark dataset readers skip it, so pd.read_parquet(out) reads predictions only.
QUARANTINE_FILE = "_quarantine.parquet"
_F32_MAX = float(np.finfo(np.float32).max)
_PRED_BATCH = 256  # label rows per forward pass (as api.predict)


class ScoringError(EhrseqError, RuntimeError):
    """The scoring job cannot start or must stop (output directory of another job, ray missing, ...)."""


class QuarantineLimitError(ScoringError):
    """More rows failed validation than ``max_quarantine_fraction`` allows; finished shards are kept."""


@dataclass
class ScoreSummary:
    """Counts of one scoring job (also written to ``out/_SUCCESS.json``). Times are in seconds."""

    out: str
    artifact_id: str
    artifact_sha256: str
    engine: str
    rows_read: int = 0
    rows_accepted: int = 0  # passed validation (rows_read = rows_accepted + rows_quarantined)
    rows_quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    subjects_read: int = 0
    subjects_scored: int = 0  # subjects with at least one prediction row
    predictions_written: int = 0
    shards: int = 0
    shards_skipped: int = 0  # already present from an earlier, interrupted run
    label_rows_without_events: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # io, labels, featurize, forward, write

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ============================================================================ the per-shard scoring function
@dataclass(frozen=True)
class LabelSource:
    """Where a shard's prediction rows come from: a MEDS label file, one fixed time, or the target default."""

    mode: Literal["labels", "time", "default"]
    prediction_time: str | None = None
    labels_files: tuple[str, ...] = ()

    def rows(self, events: pd.DataFrame, target: str, finetune_cfg: Mapping[str, Any]) -> pd.DataFrame:
        """Label rows (subject_id, prediction_time) for the subjects of ``events``."""
        subjects = pd.unique(events["subject_id"])
        if self.mode == "time":
            t = _parse_prediction_time(self.prediction_time)
            return pd.DataFrame({"subject_id": subjects.astype(np.int64),
                                 "prediction_time": pd.Series([t] * len(subjects), dtype="datetime64[us]")})
        if self.mode == "labels":
            from ehrseq.io.meds import validate_labels

            table = pads.dataset(list(self.labels_files), format="parquet").to_table(
                columns=["subject_id", "prediction_time"],
                filter=pc.field("subject_id").isin(pa.array(subjects.astype(np.int64))))
            if table.num_rows == 0:
                return _empty_labels()
            return validate_labels(table.to_pandas(), file=self.labels_files[0])[["subject_id", "prediction_time"]]
        from ehrseq.labels import prediction_times

        try:
            return prediction_times(target, events)
        except TargetError:  # e.g. no subject of this shard has a CDAI measurement
            return _empty_labels()


def _empty_labels() -> pd.DataFrame:
    return pd.DataFrame({"subject_id": pd.Series([], dtype="int64"),
                         "prediction_time": pd.Series([], dtype="datetime64[us]")})


def _parse_prediction_time(value: str | None) -> pd.Timestamp:
    try:
        t = pd.Timestamp(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"prediction_time '{value}' is not an ISO 8601 timestamp (YYYY-MM-DD[THH:MM:SS])") from e
    if pd.isna(t):
        raise ValueError("prediction_time is empty")
    if t.tzinfo is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    return t


class Scorer:
    """A loaded artifact ready to score: frozen featurizer, model in eval mode, output schema.

    ``score_events(events, source)`` is the one scoring function both engines call on a shard.
    """

    def __init__(self, art: Artifact) -> None:
        from ehrseq.api import SEQUENCE_MODELS, model_from_artifact
        from ehrseq.featurize.featurizer import FORMAT, Featurizer

        kind = art.config.get("model_type")
        if kind not in SEQUENCE_MODELS:
            raise ArtifactError(f"{art.path}: `ehrseq score` scores sequence models {SEQUENCE_MODELS}; this "
                                f"artifact holds a '{kind}' model")
        if art.featurizer is None:
            raise ArtifactError(f"{art.path}: no featurizer.json; a sequence-model artifact needs its featurizer")
        if art.featurizer.get("format") != FORMAT:
            raise ArtifactError(
                f"{art.path}: featurizer.json has format '{art.featurizer.get('format')}' but this ehrseq reads "
                f"'{FORMAT}'; score with the ehrseq version that wrote the artifact ({art.manifest.get('ehrseq_version')}) "
                "or re-run finetune")
        try:
            self.featurizer = Featurizer.from_dict(art.featurizer)
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"{art.path}: featurizer.json cannot be read by this ehrseq ({e})") from e
        self.head = art.config.get("task")
        if self.head not in ("binary", "regression", "multilabel"):
            raise ArtifactError(f"{art.path}: task '{self.head}' cannot be scored by `ehrseq score`")
        self.art = art
        self.target = art.config["target"]
        self.finetune_cfg = dict(art.config.get("finetune") or {})
        self.label_names = list(art.config.get("label_names") or [])
        self.threshold = decision_threshold(art)
        self.model = model_from_artifact(art).eval()
        self.artifact_id = art.artifact_id
        self.artifact_sha256 = sha256_file(art.path / "manifest.json")
        self.schema = prediction_schema(self.head, self.label_names)

    @classmethod
    def load(cls, path: str | Path) -> Scorer:
        return cls(load_artifact(path))  # verifies every file hash; raises ArtifactError when tampered

    @torch.no_grad()
    def score_events(self, events: pd.DataFrame, source: LabelSource) -> tuple[pa.Table, dict[str, float]]:
        """Predict every label row of ``source`` for the subjects of ``events`` (canonical, whole subjects).

        Rows come out ordered by the subjects' order in ``events``, then prediction_time.
        Returns the table (``self.schema``) and seconds spent per stage (labels, featurize, forward).
        """
        from ehrseq.api import make_dataset
        from ehrseq.data.dataset import collate
        from ehrseq.models.heads import to_prediction

        tm = {"labels": 0.0, "featurize": 0.0, "forward": 0.0}
        t0 = time.perf_counter()
        if len(events) == 0:
            return self.schema.empty_table(), tm
        labels = source.rows(events, self.target, self.finetune_cfg)
        order = {int(s): i for i, s in enumerate(pd.unique(events["subject_id"]))}
        labels = labels.assign(prediction_time=labels["prediction_time"].astype("datetime64[us]"))
        labels = labels.loc[labels["subject_id"].isin(list(order))]
        rank = labels["subject_id"].map(order).to_numpy(np.int64)
        t_us = labels["prediction_time"].to_numpy().view("int64")
        labels = labels.iloc[np.lexsort((t_us, rank))].reset_index(drop=True)
        tm["labels"] = time.perf_counter() - t0
        if len(labels) == 0:
            return self.schema.empty_table(), tm
        t0 = time.perf_counter()
        fz = self.featurizer
        ds = make_dataset(fz.transform(events, labels), None, fz, self.art.config["model_type"])
        tm["featurize"] += time.perf_counter() - t0
        self.model.eval()
        out = []
        for a in range(0, len(ds), _PRED_BATCH):
            t0 = time.perf_counter()
            batch = collate([ds[i] for i in range(a, min(a + _PRED_BATCH, len(ds)))])
            t1 = time.perf_counter()
            out.append(self.model(batch).logits.float())
            tm["featurize"] += t1 - t0
            tm["forward"] += time.perf_counter() - t1
        pred = to_prediction(self.head, torch.cat(out)).numpy().astype(np.float64)
        return self._table(labels, pred), tm

    def _table(self, labels: pd.DataFrame, pred: np.ndarray) -> pa.Table:
        n = len(labels)
        cols: dict[str, Any] = {
            "subject_id": labels["subject_id"].to_numpy(np.int64),
            "prediction_time": labels["prediction_time"].to_numpy("datetime64[us]"),
        }
        if self.head == "binary":
            cols["predicted_boolean_probability"] = pred[:, 0]
            cols["predicted_boolean_value"] = pred[:, 0] >= self.threshold
        elif self.head == "regression":
            cols["predicted_float_value"] = pred[:, 0]
        else:
            for j, name in enumerate(self.label_names):
                cols[f"predicted_{name}_probability"] = pred[:, j]
        cols["artifact_id"] = np.full(n, self.artifact_id, dtype=object)
        cols["artifact_sha256"] = np.full(n, self.artifact_sha256, dtype=object)
        return pa.table([pa.array(cols[f.name], type=f.type) for f in self.schema], schema=self.schema)


def prediction_schema(head: str, label_names: list[str] | None = None) -> pa.Schema:
    """The Arrow schema of the prediction shards for a task (see data_schemas/predictions.schema.json)."""
    fields = [pa.field("subject_id", pa.int64(), nullable=False),
              pa.field("prediction_time", pa.timestamp("us"), nullable=False)]
    if head == "binary":
        fields += [pa.field("predicted_boolean_probability", pa.float64()),
                   pa.field("predicted_boolean_value", pa.bool_())]
    elif head == "regression":
        fields += [pa.field("predicted_float_value", pa.float64())]
    else:
        fields += [pa.field(f"predicted_{n}_probability", pa.float64()) for n in label_names or []]
    fields += [pa.field("artifact_id", pa.string(), nullable=False),
               pa.field("artifact_sha256", pa.string(), nullable=False)]
    return pa.schema(fields)


def decision_threshold(art: Artifact) -> float:
    """The stored decision threshold (``thresholds.json`` or config ``decision_threshold``), else 0.5."""
    t: Any = art.extras.get("thresholds", art.config.get("decision_threshold"))
    if isinstance(t, Mapping):
        t = next((t[k] for k in ("boolean", "threshold", "decision_threshold") if k in t), None)
    if isinstance(t, list) and len(t) == 1:
        t = t[0]
    return float(t) if isinstance(t, int | float) and not isinstance(t, bool) else 0.5


# ================================================================================ reading and validation
@dataclass
class _Source:
    """A resolved input: MEDS Parquet files (streamed) or an extract directory (read whole)."""

    kind: Literal["meds", "extract"]
    root: Path
    files: list[Path]
    total_rows: int

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": self.kind, "files": [[str(f.relative_to(self.root)) if f != self.root else f.name,
                                              f.stat().st_size] for f in self.files],
                "rows": self.total_rows}


def _resolve_source(data: str | Path) -> _Source:
    p = Path(data)
    if not p.exists():
        raise DataValidationError("path does not exist", file=str(p), hint="pass a MEDS root or an EHR-extract directory")
    if p.is_dir() and any((p / f"patients.{ext}").exists() for ext in ("csv", "parquet")):
        files = sorted(f for f in p.iterdir() if f.suffix in (".csv", ".parquet"))
        return _Source("extract", p, files, -1)
    from ehrseq.io.meds import _parquet_files

    files = _parquet_files(p)
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return _Source("meds", p if p.is_dir() else p.parent, files, total)


def _raw_batches(src: _Source, batch_rows: int, column_map: Mapping[str, str] | None,
                 policy: ValidationPolicy) -> Iterator[tuple[str, int, pd.DataFrame]]:
    """(source file, first row number, raw frame with MEDS column names) in file order."""
    if src.kind == "extract":
        from ehrseq.io.extract import read_extract

        try:
            events = read_extract(src.root, policy=policy).events
        except DataValidationError as e:
            raise ScoringError(f"the extract failed validation as a whole ({e}); fix it, or convert it to MEDS "
                               "Parquet to score with row-level quarantine") from e
        src.total_rows = len(events)
        for a in range(0, len(events), batch_rows):
            yield src.root.name, a, events.iloc[a:a + batch_rows].reset_index(drop=True)
        return
    cmap = dict(column_map or {})
    inverse = {v: k for k, v in cmap.items()}
    for f in src.files:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        want = [inverse.get(c, c) for c in CANONICAL_COLUMNS]
        cols = [c for c in want if c in names]
        row = 0
        rel = str(f.relative_to(src.root)) if f != src.root else f.name
        for b in pf.iter_batches(batch_size=batch_rows, columns=cols):
            df = b.to_pandas().rename(columns=cmap)
            yield rel, row, df
            row += b.num_rows


def check_rows(df: pd.DataFrame, policy: ValidationPolicy) -> tuple[np.ndarray, np.ndarray]:
    """Light per-row validation of raw MEDS rows, before canonicalisation.

    Returns ``(reason, subject_id)``: reason is an object array holding a reason code or None (row is fine),
    subject_id a float64 array of the readable ids (NaN where unreadable). Never looks at text_value.
    """
    n = len(df)
    reason = np.full(n, None, dtype=object)
    for col in ("subject_id", "time", "code", "numeric_value"):
        if col not in df.columns:
            from ehrseq.io.validate import missing_column_error

            raise missing_column_error(col, [str(c) for c in df.columns], file=None, n_rows=n)

    def mark(bad: np.ndarray, code: str) -> None:
        reason[bad & (reason == None)] = code  # noqa: E711  (elementwise)

    s = df["subject_id"]
    if pd.api.types.is_bool_dtype(s.dtype):
        sid = np.full(n, np.nan)
    elif pd.api.types.is_numeric_dtype(s.dtype):
        sid = s.to_numpy(dtype="float64", na_value=np.nan)
    else:
        sid = pd.to_numeric(s.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v),
                            errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(sid) | (sid != np.round(sid)) | (np.abs(sid) >= 2.0**63)
    sid = np.where(bad, np.nan, sid)
    mark(bad, "BAD_SUBJECT_ID")

    code = df["code"]
    blank = code.isna().to_numpy(dtype=bool) | code.astype(object).map(
        lambda v: not isinstance(v, str) or not v.strip()).to_numpy(dtype=bool)
    mark(blank, "NULL_CODE")

    t = df["time"]
    if not (pd.api.types.is_datetime64_any_dtype(t.dtype)):
        from ehrseq.io.validate import parse_time_column

        try:
            parse_time_column(t, column="time", file=None, policy=policy, report=ValidationReport())
        except DataValidationError:
            parsed = pd.to_datetime(t.astype(object), format="ISO8601", errors="coerce", utc=True)
            mark(parsed.isna().to_numpy() & t.notna().to_numpy(), "BAD_TIME")

    v = df["numeric_value"]
    if pd.api.types.is_numeric_dtype(v.dtype) and not pd.api.types.is_bool_dtype(v.dtype):
        num = v.to_numpy(dtype="float64", na_value=np.nan)
    else:
        txt = v.astype(object).map(lambda x: (x.strip() or None) if isinstance(x, str) else x)
        num = pd.to_numeric(txt, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        mark(np.isnan(num) & txt.notna().to_numpy(), "BAD_VALUE")
    mark(np.isinf(num), "NONFINITE_VALUE")
    with np.errstate(invalid="ignore"):
        mark(np.isfinite(num) & (np.abs(num) > _F32_MAX), "BAD_VALUE")
    return reason, sid


_COLUMN_REASON = {"subject_id": "BAD_SUBJECT_ID", "code": "NULL_CODE", "time": "BAD_TIME", "numeric_value": "BAD_VALUE"}


class _SeenIds:
    """A compact set of int64 ids (sorted numpy array + a small unsorted tail): 8 bytes per id."""

    def __init__(self) -> None:
        self._sorted = np.zeros(0, np.int64)
        self._tail: list[np.ndarray] = []
        self._n_tail = 0

    def contains(self, ids: np.ndarray) -> np.ndarray:
        hit = np.isin(ids, self._sorted)
        for t in self._tail:
            hit |= np.isin(ids, t)
        return hit

    def add(self, ids: np.ndarray) -> None:
        self._tail.append(np.asarray(ids, np.int64))
        self._n_tail += len(ids)
        if self._n_tail > max(4096, len(self._sorted) // 8):
            self._sorted = np.union1d(self._sorted, np.concatenate(self._tail))
            self._tail, self._n_tail = [], 0


class _EventStream:
    """Raw batches -> quarantine + canonical frames of whole subjects, in input order.

    A subject's rows must be contiguous in the input; a later run of an id already seen is quarantined as
    DUPLICATE_SUBJECT (its first run is scored).
    """

    def __init__(self, quarantine: _QuarantineWriter, policy: ValidationPolicy, budget: Callable[[], None]) -> None:
        self.q, self.policy, self.budget = quarantine, policy, budget
        self.seen = _SeenIds()
        self.open_id: int | None = None  # subject of the held-back rows
        self.carry: list[pd.DataFrame] = []
        self.rows_read = 0
        self.subjects = 0
        self.seconds = 0.0
        self.duplicate_ids: list[int] = []  # first few ids quarantined as DUPLICATE_SUBJECT (for messages)

    def frames(self, batches: Iterator[tuple[str, int, pd.DataFrame]]) -> Iterator[pd.DataFrame]:
        t0 = time.perf_counter()
        for file, row0, raw in batches:
            if len(raw) == 0:
                continue
            self.rows_read += len(raw)
            frame = self._accept(file, row0, raw)
            self.budget()
            if frame is not None and len(frame):
                done = self._complete(frame)
                if done is not None:
                    self.seconds += time.perf_counter() - t0
                    yield done
                    t0 = time.perf_counter()
        if self.carry:
            frame = pd.concat(self.carry, ignore_index=True)
            self.carry = []
            out = self._tidy(frame)
            self.seconds += time.perf_counter() - t0
            if len(out):
                yield out
        else:
            self.seconds += time.perf_counter() - t0

    def _accept(self, file: str, row0: int, raw: pd.DataFrame) -> pd.DataFrame | None:
        """Quarantine bad rows of one raw batch; return the good rows coerced to canonical dtypes."""
        raw = raw.reset_index(drop=True)
        reason, sid_f = check_rows(raw, self.policy)
        rows = np.arange(row0, row0 + len(raw), dtype=np.int64)
        good = reason == None  # noqa: E711
        # Runs of subject ids among the good rows; a run of an id seen before is a duplicate subject.
        gi = np.flatnonzero(good)
        sid = sid_f[gi].astype(np.int64)
        if len(sid):
            starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
            run_id = sid[starts]
            cont = self.open_id is not None and run_id[0] == self.open_id
            dup = self.seen.contains(run_id)
            first = np.zeros(len(run_id), bool)
            _, first_pos = np.unique(run_id, return_index=True)
            first[first_pos] = True
            dup |= ~first  # an id with two runs inside this batch
            if cont:
                dup[0] = False
            if dup.any():
                lens = np.diff(np.r_[starts, len(sid)])
                dup_rows = gi[np.repeat(dup, lens)]
                reason[dup_rows] = "DUPLICATE_SUBJECT"
                ids = pd.unique(run_id[dup])[:5].tolist()
                self.duplicate_ids += [i for i in ids if i not in self.duplicate_ids][:5 - len(self.duplicate_ids)]
                log.warning("subject id(s) %s reappear after their rows were read (input not grouped by "
                            "subject); the later rows are quarantined as DUPLICATE_SUBJECT", ids)
            self.seen.add(run_id[~dup])
            new_subjects = run_id[~dup]
            self.subjects += len(new_subjects) - int(cont)
            good = reason == None  # noqa: E711
        bad = ~good
        if bad.any():
            self.q.add(sid_f[bad], reason[bad], file, rows[bad])
        if not good.any():
            return None
        ok = raw.loc[good].reset_index(drop=True)
        try:
            frame, _ = coerce_events(ok, file=file, policy=self.policy, report=ValidationReport())
        except DataValidationError:
            frame = self._coerce_by_subject(ok, file, rows[good])
        if frame is not None and len(frame):
            self.open_id = int(frame["subject_id"].iloc[-1])
        return frame

    def _coerce_by_subject(self, ok: pd.DataFrame, file: str, rows: np.ndarray) -> pd.DataFrame | None:
        """A batch-level check failed that the row checks missed: coerce subject by subject, quarantine failures."""
        ids = pd.to_numeric(ok["subject_id"]).to_numpy(np.float64).astype(np.int64)
        parts = []
        for s in pd.unique(ids):
            m = ids == s
            try:
                part, _ = coerce_events(ok.loc[m].reset_index(drop=True), file=file, policy=self.policy,
                                        report=ValidationReport())
                parts.append(part)
            except DataValidationError as e:
                code = _COLUMN_REASON.get(e.column or "", "INVALID_SUBJECT_ROWS")
                self.q.add(ids[m].astype(np.float64), np.full(int(m.sum()), code, dtype=object), file, rows[m])
        return pd.concat(parts, ignore_index=True) if parts else None

    def _complete(self, frame: pd.DataFrame) -> pd.DataFrame | None:
        """Hold back the last subject (it may continue in the next batch); return the finished subjects."""
        if self.carry:
            frame = pd.concat([*self.carry, frame], ignore_index=True)
        last = frame["subject_id"].iloc[-1]
        held = (frame["subject_id"] == last).to_numpy()
        self.carry = [frame.loc[held].reset_index(drop=True)]
        ready = frame.loc[~held]
        if len(ready) == 0:
            return None
        return self._tidy(ready.reset_index(drop=True))

    def _tidy(self, frame: pd.DataFrame) -> pd.DataFrame:
        """tidy_events (non-finite, duplicate rows, empty subjects, sort), keeping the input subject order."""
        order = {s: i for i, s in enumerate(pd.unique(frame["subject_id"]))}
        try:
            out, _ = tidy_events(frame, file=None, policy=self.policy, report=ValidationReport())
        except DataValidationError as e:  # check_rows catches what tidy_events rejects; keep the message clear
            raise ScoringError(f"validation failed after the row checks: {e}") from e
        rank = out["subject_id"].map(order).to_numpy(np.int64)
        return out.iloc[np.argsort(rank, kind="stable")].reset_index(drop=True)


class _QuarantineWriter:
    """Streams quarantined rows to a temporary Parquet file; ``close`` moves it to ``out/_quarantine.parquet``."""

    def __init__(self, out: Path) -> None:
        self.final = out / QUARANTINE_FILE
        self.tmp = out / f".{QUARANTINE_FILE}.tmp"
        self.writer = pq.ParquetWriter(self.tmp, QUARANTINE_SCHEMA)
        self.count = 0
        self.reasons: Counter[str] = Counter()

    def add(self, sid: np.ndarray, reason: np.ndarray, file: str, rows: np.ndarray) -> None:
        ok = np.isfinite(sid)
        ids = pa.array(np.where(ok, sid, 0).astype(np.int64), mask=~ok)
        self.writer.write_table(pa.table([ids, pa.array(reason.astype(str)), pa.array([file] * len(rows)),
                                          pa.array(rows, pa.int64())], schema=QUARANTINE_SCHEMA))
        self.count += len(rows)
        self.reasons.update(reason.tolist())

    def close(self) -> None:
        self.writer.close()
        os.replace(self.tmp, self.final)


def _shards(frames: Iterator[pd.DataFrame], shard_rows: int) -> Iterator[tuple[int, pd.DataFrame]]:
    """Cut the stream of whole-subject frames into shards: a shard closes at the first subject boundary where
    it holds >= shard_rows canonical rows. The boundaries depend on the rows only, not on how frames arrive."""
    buf: list[pd.DataFrame] = []
    n = 0
    i = 0
    for frame in frames:
        while len(frame):
            sid = frame["subject_id"].to_numpy()
            ends = np.r_[np.flatnonzero(sid[1:] != sid[:-1]) + 1, len(sid)]  # exclusive end of each subject
            full = np.flatnonzero(n + ends >= shard_rows)
            if not len(full):
                buf.append(frame)
                n += len(frame)
                break
            cut = int(ends[full[0]])
            buf.append(frame.iloc[:cut])
            yield i, pd.concat(buf, ignore_index=True)
            i += 1
            buf, n = [], 0
            frame = frame.iloc[cut:].reset_index(drop=True)
    if buf:
        yield i, pd.concat(buf, ignore_index=True)


# ============================================================================================ output files
def shard_path(out: Path, i: int) -> Path:
    return out / f"part-{i:05d}.parquet"


def _write_shard(out: Path, i: int, table: pa.Table, stats: dict[str, Any]) -> Path:
    """Write one shard atomically (temporary file, then os.replace); the footer records ``stats``."""
    path = shard_path(out, i)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    meta = dict(table.schema.metadata or {})
    meta[META_KEY] = json.dumps(stats, sort_keys=True).encode()
    try:
        pq.write_table(table.replace_schema_metadata(meta), tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _shard_stats(path: Path) -> dict[str, Any] | None:
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    raw = meta.get(META_KEY)
    return json.loads(raw) if raw else None


def _score_and_write(scorer: Scorer, out: Path, i: int, events: pd.DataFrame, source: LabelSource,
                     job_hash: str) -> dict[str, Any]:
    """Score one shard of canonical events and write part-<i>.parquet; returns its stats (with timings)."""
    table, tm = scorer.score_events(events, source)
    t0 = time.perf_counter()
    stats = {"job_hash": job_hash, "shard": i, "input_rows": int(len(events)),
             "subjects": int(events["subject_id"].nunique()), "predictions": table.num_rows,
             "subjects_scored": int(len(pc.unique(table["subject_id"]))) if table.num_rows else 0}
    _write_shard(out, i, table, stats)
    tm["write"] = time.perf_counter() - t0
    return {**stats, "timings": tm}


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _file_sha256(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(sha256_file(f).encode())
    return h.hexdigest()


# ================================================================================================ the job
def score(
    artifact: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    prediction_time: str | None = None,
    labels: str | Path | None = None,
    batch_rows: int = 65_536,
    shard_rows: int = 250_000,
    max_quarantine_fraction: float = 0.01,
    engine: Literal["local", "ray"] = "local",
    resume: bool = True,
    column_map: Mapping[str, str] | None = None,
    policy: ValidationPolicy | None = None,
    after_shard: Callable[[int, Path], None] | None = None,
) -> ScoreSummary:
    """Score ``data`` (MEDS root / Parquet files, or an EHR-extract directory) with a sequence-model artifact.

    Prediction rows: one per row of the MEDS label file ``labels``; else one per subject at
    ``prediction_time`` (ISO 8601); else the artifact target's default rows (cdai: each CDAI measurement
    with a later one, as :func:`ehrseq.api.predict`). Writes ``out/part-NNNNN.parquet`` shards (input subject
    order), ``out/_quarantine.parquet``, ``out/_job.json`` and, on success, ``out/_SUCCESS.json``.

    batch_rows: raw rows read at a time. shard_rows: canonical event rows per output shard (a subject is never
    split; part of the job identity). resume: skip shards already written by an interrupted run of the same
    job (False: delete this job's earlier output first). after_shard(i, path): called after each shard is
    written (progress reporting; tests use it to simulate a crash).
    Raises ArtifactError (tampered / unsupported artifact), ScoringError (out holds another job, ray missing),
    QuarantineLimitError (too many bad rows; finished shards are kept).
    """
    t_start = time.perf_counter()
    if prediction_time is not None and labels is not None:
        raise ValueError("pass either prediction_time or labels, not both")
    if batch_rows < 1 or shard_rows < 1:
        raise ValueError("batch_rows and shard_rows must be >= 1")
    if not 0 <= max_quarantine_fraction <= 1:
        raise ValueError("max_quarantine_fraction must be in [0, 1]")
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', not '{engine}'")
    if engine == "ray":
        _import_ray()
    policy = policy or ValidationPolicy()
    scorer = Scorer.load(artifact)
    src = _resolve_source(data)
    if prediction_time is not None:
        _parse_prediction_time(prediction_time)
        source = LabelSource("time", prediction_time=str(prediction_time))
    elif labels is not None:
        from ehrseq.io.meds import _parquet_files

        lfiles = _parquet_files(labels)
        types = {pq.read_schema(f).field("subject_id").type for f in lfiles
                 if "subject_id" in pq.read_schema(f).names}
        if not types or not all(pa.types.is_integer(t) for t in types):
            raise DataValidationError("label file needs an integer subject_id column", file=str(labels),
                                      column="subject_id", hint="MEDS label files store subject_id as int64")
        source = LabelSource("labels", labels_files=tuple(str(f) for f in lfiles))
    else:
        source = LabelSource("default")

    job = {
        "format": JOB_FORMAT,
        "artifact_sha256": scorer.artifact_sha256,
        "artifact_id": scorer.artifact_id,
        "data": src.fingerprint(),
        "prediction_time": None if prediction_time is None else str(prediction_time),
        "labels_sha256": _file_sha256([Path(f) for f in source.labels_files]) if source.labels_files else None,
        "shard_rows": int(shard_rows),
        "column_map": dict(column_map or {}),
        "policy": asdict(policy),
    }
    job_hash = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:16]
    out = Path(out)
    done = _prepare_out(out, job, job_hash, resume)

    summary = ScoreSummary(out=str(out), artifact_id=scorer.artifact_id, artifact_sha256=scorer.artifact_sha256,
                           engine=engine)
    timings: Counter[str] = Counter()
    quarantine = _QuarantineWriter(out)

    def check_budget() -> None:
        total = max(src.total_rows, stream.rows_read)
        if quarantine.count > max_quarantine_fraction * total:
            dups = (f"; subject ids whose rows are not contiguous (DUPLICATE_SUBJECT): {stream.duplicate_ids}"
                    if stream.duplicate_ids else "")
            raise QuarantineLimitError(
                f"{quarantine.count} of {total} input rows failed validation, more than max_quarantine_fraction="
                f"{max_quarantine_fraction} ({dict(quarantine.reasons)}{dups}); stopped after {len(finished)} shard(s), "
                f"which are kept in {out}. See {quarantine.final} (reason_code, source_file, source_row) and fix "
                "the input, or raise the limit (--max-quarantine-fraction) and rerun to resume")

    stream = _EventStream(quarantine, policy, check_budget)
    finished: list[dict[str, Any]] = []
    try:
        shards = _shards(stream.frames(_raw_batches(src, batch_rows, column_map, policy)), shard_rows)
        if engine == "local":
            for i, events in shards:
                if i in done:
                    finished.append(done[i])
                    summary.shards_skipped += 1
                    continue
                stats = _score_and_write(scorer, out, i, events, source, job_hash)
                timings.update(stats.pop("timings"))
                finished.append(stats)
                if after_shard is not None:
                    after_shard(i, shard_path(out, i))
        else:
            finished = _run_ray(shards, done, summary, timings, out, artifact, source, job_hash, after_shard)
    finally:
        quarantine.close()
    timings["io"] += stream.seconds

    summary.rows_read = stream.rows_read
    summary.rows_quarantined = quarantine.count
    summary.rows_accepted = stream.rows_read - quarantine.count
    summary.quarantine_reasons = dict(sorted(quarantine.reasons.items()))
    summary.subjects_read = stream.subjects
    summary.shards = len(finished)
    summary.predictions_written = sum(s["predictions"] for s in finished)
    summary.subjects_scored = sum(s["subjects_scored"] for s in finished)
    if source.labels_files:
        total_labels = sum(pq.ParquetFile(f).metadata.num_rows for f in source.labels_files)
        summary.label_rows_without_events = total_labels - summary.predictions_written
        if summary.label_rows_without_events:
            log.warning("%d label row(s) name subjects with no accepted events; they have no prediction",
                        summary.label_rows_without_events)
    for stale in sorted(out.glob("part-*.parquet")):  # shards beyond the last one belong to nobody: never here
        if int(stale.stem.split("-")[1]) >= len(finished):
            raise ScoringError(f"{stale} is not part of this job's output; remove it")
    summary.seconds = round(time.perf_counter() - t_start, 3)
    summary.timings = {k: round(v, 3) for k, v in sorted(timings.items())}
    _atomic_json(out / "_SUCCESS.json", {**summary.to_dict(), "job_hash": job_hash})
    log.info("scored %d subjects: %d predictions in %d shard(s), %d row(s) quarantined, %.1fs",
             summary.subjects_scored, summary.predictions_written, summary.shards, summary.rows_quarantined,
             summary.seconds)
    return summary


def _prepare_out(out: Path, job: dict[str, Any], job_hash: str, resume: bool) -> dict[int, dict[str, Any]]:
    """Create or check ``out``; return the stats of shards already finished by this job (when resuming)."""
    out.mkdir(parents=True, exist_ok=True)
    jpath = out / "_job.json"
    if jpath.exists():
        old = json.loads(jpath.read_text())
        if old.get("job_hash") != job_hash:
            diff = sorted(k for k in set(old.get("job", {})) | set(job) if old.get("job", {}).get(k) != job.get(k))
            raise ScoringError(
                f"{out} holds the output of a different scoring job (differs in: {', '.join(diff) or 'format'}); "
                "choose another --out, or delete it to start over")
        if not resume:
            for f in [*out.glob("part-*.parquet"), out / "_SUCCESS.json", out / QUARANTINE_FILE]:
                f.unlink(missing_ok=True)
    elif any(p.name.startswith("part-") for p in out.iterdir()):
        raise ScoringError(f"{out} holds prediction shards but no _job.json; choose an empty --out")
    _atomic_json(jpath, {"job_hash": job_hash, "job": job})
    (out / "_SUCCESS.json").unlink(missing_ok=True)
    for tmp in out.glob(".part-*.tmp-*"):  # left by a killed run
        tmp.unlink()
    done: dict[int, dict[str, Any]] = {}
    for p in sorted(out.glob("part-*.parquet")):
        st = _shard_stats(p)
        if st and st.get("job_hash") == job_hash:
            done[int(st["shard"])] = st
    return done


# ================================================================================================== ray
def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ScoringError("engine 'ray' needs Ray Data: pip install 'ehrseq[ray]'") from e
    return ray


class RayShardScorer:
    """Ray Data callable class: holds the model once per actor; each input row names a staged shard."""

    def __init__(self, artifact: str, source: LabelSource, out: str, job_hash: str) -> None:
        torch.set_num_threads(1)
        self.scorer = Scorer.load(artifact)
        self.source, self.out, self.job_hash = source, Path(out), job_hash

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        res = []
        for i, path in zip(batch["shard"], batch["path"]):
            events = pq.read_table(str(path)).to_pandas()
            events["time"] = events["time"].astype("datetime64[us]")
            res.append(json.dumps(_score_and_write(self.scorer, self.out, int(i), events, self.source,
                                                   self.job_hash)))
            Path(str(path)).unlink()
        return {"shard": np.asarray(batch["shard"], np.int64), "stats": np.asarray(res, dtype=object)}


def _run_ray(shards: Iterator[tuple[int, pd.DataFrame]], done: dict[int, dict[str, Any]], summary: ScoreSummary,
             timings: Counter[str], out: Path, artifact: str | Path, source: LabelSource, job_hash: str,
             after_shard: Callable[[int, Path], None] | None) -> list[dict[str, Any]]:
    """Stage the shards' canonical events to out/_staging, then score them with Ray Data map_batches.

    The read/validate/shard pass is sequential (it carries subjects across batches) and stays in the driver;
    featurize + forward + write run in one actor with a fractional CPU so reads are not starved on small
    machines.
    """
    ray = _import_ray()
    staging = out / "_staging"
    staging.mkdir(exist_ok=True)
    items = []
    n = 0
    for i, events in shards:
        n = i + 1
        if i in done:
            summary.shards_skipped += 1
            continue
        p = staging / f"events-{i:05d}.parquet"
        t0 = time.perf_counter()
        pq.write_table(pa.Table.from_pandas(events, preserve_index=False), p)
        timings["stage"] += time.perf_counter() - t0
        items.append({"shard": i, "path": str(p)})
    new: dict[int, dict[str, Any]] = {}
    if items:
        started = not ray.is_initialized()
        if started:
            ray.init(num_cpus=max(os.cpu_count() or 1, 1), include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        try:
            ctx = ray.data.DataContext.get_current()
            ctx.execution_options.preserve_order = True
            ctx.enable_progress_bars = False
            ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                RayShardScorer, batch_size=1, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.5,
                fn_constructor_kwargs={"artifact": str(Path(artifact).resolve()), "source": source,
                                       "out": str(out.resolve()), "job_hash": job_hash})
            for row in ds.iter_rows():
                st = json.loads(row["stats"])
                timings.update(st.pop("timings"))
                new[int(row["shard"])] = st
                if after_shard is not None:
                    after_shard(int(row["shard"]), shard_path(out, int(row["shard"])))
        finally:
            if started:
                ray.shutdown()
    shutil.rmtree(staging, ignore_errors=True)
    return [done[i] if i in done else new[i] for i in range(n)]


# =================================================================================================== CLI
def add_score_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``ehrseq score`` options to ``parser`` (the lead wires ``run_score`` as its handler)."""
    parser.add_argument("--artifact", required=True, help="artifact directory written by `ehrseq finetune`")
    parser.add_argument("--data", required=True, help="MEDS root / Parquet file(s), or an EHR-extract directory")
    parser.add_argument("--out", required=True, help="output directory (part-NNNNN.parquet shards)")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--prediction-time", help="score every subject at this ISO 8601 time")
    when.add_argument("--labels", help="MEDS label file (subject_id, prediction_time): one prediction per row")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="ray needs pip install 'ehrseq[ray]'")
    parser.add_argument("--batch-rows", type=int, default=65_536, help="raw rows read at a time")
    parser.add_argument("--shard-rows", type=int, default=250_000, help="event rows per output shard")
    parser.add_argument("--max-quarantine-fraction", type=float, default=0.01,
                        help="abort when more than this share of rows fails validation")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="start over instead of skipping shards an interrupted run already wrote")
    return parser


def run_score(args: argparse.Namespace) -> int:
    """Run :func:`score` from parsed ``ehrseq score`` arguments; prints the summary as JSON."""
    s = score(args.artifact, args.data, args.out, prediction_time=args.prediction_time, labels=args.labels,
              batch_rows=args.batch_rows, shard_rows=args.shard_rows,
              max_quarantine_fraction=args.max_quarantine_fraction, engine=args.engine, resume=args.resume)
    print(json.dumps(s.to_dict(), indent=2))
    return 0


__all__ = [
    "QUARANTINE_FILE", "QUARANTINE_SCHEMA", "REASON_CODES", "LabelSource", "QuarantineLimitError", "RayShardScorer", "ScoreSummary",
    "Scorer", "ScoringError", "add_score_args", "check_rows", "decision_threshold", "prediction_schema",
    "run_score", "score", "shard_path",
]
