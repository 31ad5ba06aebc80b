"""Streaming MEDS input with per-row validation: accepted canonical events, quarantined rows."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ehrseq.errors import DataValidationError
from ehrseq.io.files import iter_parquet_batches, parquet_file, sha256_files
from ehrseq.io.ids import parse_subject_ids
from ehrseq.io.plausibility import implausible
from ehrseq.io.timeformat import coerce_times, file_time_policy
from ehrseq.io.validate import (
    CANONICAL_COLUMNS,
    ValidationPolicy,
    ValidationReport,
    _blank,
    coerce_events,
    parse_time_column,
    tidy_events,
)
from ehrseq.scoring.constants import _F32_MAX, QUARANTINE_FILE, QUARANTINE_SCHEMA, REASON_CODES
from ehrseq.scoring.summary import ScoringError

log = logging.getLogger(__name__)


@dataclass
class _Source:
    """A resolved input: MEDS Parquet files (streamed) or an extract directory (read whole).

    ``policies``: the validation policy each MEDS file is parsed with (its day/month order decided from the
    whole file by :func:`file_policies`, so no batch decides it on its own).
    """

    kind: Literal["meds", "extract"]
    root: Path
    files: list[Path]
    total_rows: int
    policies: dict[str, ValidationPolicy] = field(default_factory=dict)

    def rel(self, f: Path) -> str:
        return str(f.relative_to(self.root)) if f != self.root else f.name

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the input's content: every file's relative path, size and sha256 (streamed), and the
        row count. An input edited in place, even at the same size, is another job."""
        sums = sha256_files(self.files)
        return {"kind": self.kind, "files": [[self.rel(f), f.stat().st_size, h] for f, h in zip(self.files, sums)],
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
    total = sum(parquet_file(f).metadata.num_rows for f in files)
    return _Source("meds", p if p.is_dir() else p.parent, files, total)


def file_policies(src: _Source, column_map: Mapping[str, str] | None, policy: ValidationPolicy,
                  batch_rows: int = 262_144) -> dict[str, ValidationPolicy]:
    """The policy to parse each MEDS file with (:func:`ehrseq.io.timeformat.file_time_policy`): a text time
    column is judged whole (day/month order, time zones), never per batch. A numeric time column, mixed time
    zones and mixed or ambiguous day/month order are refused here, naming the file, before any output exists;
    so is a file without a required column (the hint names the file's own columns, e.g. ``value``)."""
    if src.kind == "meds":
        from ehrseq.io.validate import REQUIRED_COLUMNS, missing_column_error

        inverse = {v: k for k, v in dict(column_map or {}).items()}
        for f in src.files:
            pf = parquet_file(f)
            names = pf.schema_arrow.names
            for col in REQUIRED_COLUMNS:
                if inverse.get(col, col) not in names:
                    raise missing_column_error(col, names, file=src.rel(f), n_rows=pf.metadata.num_rows,
                                               reader="iter_meds_batches")
        src.policies = {src.rel(f): file_time_policy(f, policy, column_map=column_map, label=src.rel(f),
                                                     batch_rows=batch_rows) for f in src.files}
    return src.policies


def _raw_batches(src: _Source, batch_rows: int, column_map: Mapping[str, str] | None,
                 policy: ValidationPolicy) -> Iterator[tuple[str, int, pd.DataFrame, ValidationPolicy]]:
    """(source file, first row number, raw frame with MEDS column names, the file's policy) in file order."""
    if src.kind == "extract":
        from ehrseq.io.extract import read_extract

        try:
            events = read_extract(src.root, policy=policy).events
        except DataValidationError as e:
            raise ScoringError(f"the extract failed validation as a whole ({e}); fix it, or convert it to MEDS "
                               "Parquet to score with row-level quarantine") from e
        src.total_rows = len(events)
        for a in range(0, len(events), batch_rows):
            yield src.root.name, a, events.iloc[a:a + batch_rows].reset_index(drop=True), policy
        return
    cmap = dict(column_map or {})
    inverse = {v: k for k, v in cmap.items()}
    for f in src.files:
        pf = parquet_file(f)
        names = pf.schema_arrow.names
        want = [inverse.get(c, c) for c in CANONICAL_COLUMNS]
        cols = [c for c in want if c in names]
        row = 0
        rel = src.rel(f)
        fpolicy = src.policies.get(rel, policy)
        renames = {k: v for k, v in cmap.items() if k in cols and k != v}
        for b in iter_parquet_batches(pf, f, batch_size=batch_rows, columns=cols):
            df = b.to_pandas()
            if renames:
                df = df.rename(columns=renames)
            yield rel, row, df, fpolicy
            row += b.num_rows


def check_rows(df: pd.DataFrame, policy: ValidationPolicy, file: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Light per-row validation of raw MEDS rows, before canonicalisation.

    Returns ``(reason, subject_id)``: reason is an object array holding a reason code or None (row is fine),
    subject_id the exact int64 ids (0 where reason is BAD_SUBJECT_ID; :mod:`ehrseq.io.ids`: never rounded or
    wrapped, so two patients are never merged). Never looks at text_value. ``policy`` should have its day/month
    order decided for the whole file (:func:`file_policies`); then the result of a row does not depend on the
    other rows of its batch.
    """
    reason, ids = _row_reasons(df, policy, file)
    return _REASONS[reason], ids


def _row_reasons(df: pd.DataFrame, policy: ValidationPolicy, file: str | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`check_rows` with the reasons as int8 codes (0: fine, else 1 + index in REASON_CODES)."""
    n = len(df)
    reason = np.zeros(n, np.int8)  # 0: fine, else 1 + index in REASON_CODES (object array only at the end)
    for col in ("subject_id", "time", "code", "numeric_value"):
        if col not in df.columns:
            from ehrseq.io.validate import missing_column_error

            raise missing_column_error(col, [str(c) for c in df.columns], file=file, n_rows=n)

    def mark(bad: np.ndarray, code: str) -> None:
        reason[bad & (reason == 0)] = 1 + REASON_CODES.index(code)  # a row keeps its first reason

    s = df["subject_id"]
    if s.dtype.kind == "i" and not isinstance(s.dtype, pd.api.extensions.ExtensionDtype):
        ids = s.to_numpy(np.int64)  # numpy signed ints hold no null: every id is exact
    else:
        parsed_ids = parse_subject_ids(s)
        ids_ok = parsed_ids.ok
        ids = np.where(ids_ok, parsed_ids.ids, 0).astype(np.int64)
        mark(~ids_ok, "BAD_SUBJECT_ID")

    code = df["code"]
    if isinstance(code.dtype, pd.StringDtype) and code.dtype.storage == "pyarrow":
        mark(_blank(code), "NULL_CODE")  # Arrow kernels (str.isspace's classes): no factorize of every batch
    else:
        codes, uniques = pd.factorize(code, use_na_sentinel=True)  # judged once per distinct code
        blank_u = np.array([not isinstance(v, str) or not v.strip() for v in uniques], dtype=bool)
        mark((codes < 0) | np.r_[blank_u, True][codes], "NULL_CODE")

    t = df["time"]
    if pd.api.types.is_datetime64_any_dtype(t.dtype):
        times = t.dt.tz_convert("UTC").dt.tz_localize(None) if isinstance(t.dtype, pd.DatetimeTZDtype) else t
    else:
        try:
            times = parse_time_column(t, column="time", file=None, policy=policy, report=ValidationReport())
        except DataValidationError:
            times = coerce_times(t, policy)
            present = t.astype(object).map(lambda v: v is not None and not (isinstance(v, str) and not v.strip())
                                           and not (not isinstance(v, str) and pd.isna(v))).to_numpy(dtype=bool)
            mark(times.isna().to_numpy() & present, "BAD_TIME")
    mark(implausible(times.to_numpy(), policy), "IMPLAUSIBLE_TIME")

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
    return reason, ids


_REASONS = np.array([None, *REASON_CODES], dtype=object)  # check_rows' int8 codes -> None / reason code
_DUPLICATE = 1 + REASON_CODES.index("DUPLICATE_SUBJECT")
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

    def frames(self, batches: Iterator[tuple[str, int, pd.DataFrame, ValidationPolicy]]) -> Iterator[pd.DataFrame]:
        t0 = time.perf_counter()
        for file, row0, raw, policy in batches:
            if len(raw) == 0:
                continue
            self.rows_read += len(raw)
            frame = self._accept(file, row0, raw, policy)
            self.budget()
            if frame is not None and len(frame):
                for done in self._complete(frame):
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

    def _accept(self, file: str, row0: int, raw: pd.DataFrame, policy: ValidationPolicy) -> pd.DataFrame | None:
        """Quarantine bad rows of one raw batch; return the good rows coerced to canonical dtypes."""
        raw = raw.reset_index(drop=True)
        reason, sid_all = _row_reasons(raw, policy, file)  # int8 codes: object reasons for bad rows only
        rows = np.arange(row0, row0 + len(raw), dtype=np.int64)
        good = reason == 0
        # Runs of subject ids among the good rows; a run of an id seen before is a duplicate subject.
        gi = np.flatnonzero(good)
        sid = sid_all[gi]
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
                reason[dup_rows] = _DUPLICATE
                ids = pd.unique(run_id[dup])[:5].tolist()
                self.duplicate_ids += [i for i in ids if i not in self.duplicate_ids][:5 - len(self.duplicate_ids)]
                log.warning("subject id(s) %s reappear after their rows were read (input not grouped by "
                            "subject); the later rows are quarantined as DUPLICATE_SUBJECT", ids)
            self.seen.add(run_id[~dup])
            new_subjects = run_id[~dup]
            self.subjects += len(new_subjects) - int(cont)
            good = reason == 0
        bad = ~good
        if bad.any():
            self.q.add(sid_all[bad], _REASONS[reason[bad]], file, rows[bad])
        if not good.any():
            return None
        ok = raw if good.all() else raw.loc[good].reset_index(drop=True)
        try:
            frame, _ = coerce_events(ok, file=file, policy=policy, report=ValidationReport())
        except DataValidationError:
            frame = self._coerce_by_subject(ok, file, rows[good], sid_all[good], policy)
        if frame is not None and len(frame):
            self.open_id = int(frame["subject_id"].iloc[-1])
        return frame

    def _coerce_by_subject(self, ok: pd.DataFrame, file: str, rows: np.ndarray, ids: np.ndarray,
                           policy: ValidationPolicy) -> pd.DataFrame | None:
        """A batch-level check failed that the row checks missed: coerce subject by subject, quarantine failures."""
        parts = []
        for s in pd.unique(ids):
            m = ids == s
            try:
                part, _ = coerce_events(ok.loc[m].reset_index(drop=True), file=file, policy=policy,
                                        report=ValidationReport())
                parts.append(part)
            except DataValidationError as e:
                code = _COLUMN_REASON.get(e.column or "", "INVALID_SUBJECT_ROWS")
                self.q.add(ids[m], np.full(int(m.sum()), code, dtype=object), file, rows[m])
        return pd.concat(parts, ignore_index=True) if parts else None

    def _complete(self, frame: pd.DataFrame) -> list[pd.DataFrame]:
        """Hold back the last subject (it may continue in the next batch); return the finished subjects, tidied.

        The carried subject is joined to its continuation only (not to the whole batch, which would copy every
        row): tidy_events works subject by subject, so tidying the pieces is tidying their concatenation."""
        done: list[pd.DataFrame] = []
        if self.carry:
            sid = frame["subject_id"].to_numpy()
            same = sid == self.carry[0]["subject_id"].iloc[0]
            e = len(sid) if same.all() else int(np.argmin(same))  # rows continuing the carried subject
            if e == len(sid):
                self.carry = [pd.concat([*self.carry, frame], ignore_index=True)]
                return done
            if same[e:].any():  # the carried id recurs later in the batch: one frame, as read
                frame = pd.concat([*self.carry, frame], ignore_index=True)
            else:
                parts = [*self.carry, frame.iloc[:e]] if e else self.carry
                done.append(self._tidy(parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)))
                frame = frame.iloc[e:].reset_index(drop=True)
            self.carry = []
        sid = frame["subject_id"].to_numpy()
        held = sid == sid[-1]
        start = len(sid) - int(np.argmin(held[::-1])) if not held.all() else 0  # first row of the last run
        if not held[:start].any():  # the usual case (a subject's rows are contiguous): slices, no copies
            self.carry = [frame.iloc[start:].reset_index(drop=True)]
            if start:
                done.append(self._tidy(frame.iloc[:start].reset_index(drop=True)))
        else:
            self.carry = [frame.loc[held].reset_index(drop=True)]
            done.append(self._tidy(frame.loc[~held].reset_index(drop=True)))
        return [d for d in done if len(d)]

    def _tidy(self, frame: pd.DataFrame) -> pd.DataFrame:
        """tidy_events (non-finite, duplicate rows, empty subjects, sort), keeping the input subject order."""
        sid = frame["subject_id"].to_numpy()
        ascending = bool((sid[1:] >= sid[:-1]).all())  # the usual MEDS layout: tidy_events' sort keeps it
        order = None if ascending else pd.Index(pd.unique(sid))
        try:  # the report is not used here: skip its birth / death counts (they never drop a row)
            out, _ = tidy_events(frame, file=None, policy=self.policy, report=ValidationReport(), birth_death=False)
        except DataValidationError as e:  # check_rows catches what tidy_events rejects; keep the message clear
            raise ScoringError(f"validation failed after the row checks: {e}") from e
        if order is None:
            return out
        rank = order.get_indexer(out["subject_id"].to_numpy())
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
        """Append quarantined rows: int64 ids (null where the reason is BAD_SUBJECT_ID), reasons, file, rows."""
        ok = reason != "BAD_SUBJECT_ID"
        ids = pa.array(np.asarray(sid, np.int64), mask=~ok)
        self.writer.write_table(pa.table([ids, pa.array(reason.astype(str)), pa.array([file] * len(rows)),
                                          pa.array(rows, pa.int64())], schema=QUARANTINE_SCHEMA))
        self.count += len(rows)
        self.reasons.update(reason.tolist())

    def close(self) -> None:
        self.writer.close()
        os.replace(self.tmp, self.final)
