"""Validation of event tables at the data boundary.

Every reader funnels its rows through :func:`validate_events` (or its two halves, :func:`coerce_events`
and :func:`tidy_events`), which returns the *canonical events frame* everything downstream relies on:

==================  ==========================  ==================================================
column              dtype                       meaning
==================  ==========================  ==================================================
``subject_id``      int64                       one patient
``time``            datetime64[us], naive       event time; NaT for static facts (sex, site)
``code``            str                         event code, ``VOCAB//VALUE`` (see ``ehrseq.codes``)
``numeric_value``   float32                     NaN when the event has no number
``text_value``      object (str or None)        None when the event has no text
==================  ==========================  ==================================================

Rows are sorted by subject_id, then time with NaT (static facts) first, stably: rows that tie keep their
original order. Time-zone-aware input is converted to UTC and made naive.

Problems are raised as :class:`~ehrseq.errors.DataValidationError` naming the file, the column, the
number of rows and the first subject ids, never a cell value. Problems that can be repaired safely are
repaired and counted in a :class:`ValidationReport`; the counts are logged, never the values.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ehrseq.errors import DataValidationError
from ehrseq.io import ids as ids_mod
from ehrseq.io import rowkeys
from ehrseq.io.ids import parse_subject_ids
from ehrseq.io.plausibility import count_birth_death, drop_implausible
from ehrseq.io.policy import (  # noqa: F401  (re-exported: the readers' shared policy and report types)
    _DMY,
    _REPAIRS,
    _TZ_SUFFIX,
    ValidationPolicy,
    ValidationReport,
    _ids,
    _rows,
    _where,
)
from ehrseq.io.times import _mixed_tz_error, parse_time_column  # noqa: F401  (re-exported)

logger = logging.getLogger("ehrseq.io")

CANONICAL_COLUMNS: tuple[str, ...] = ("subject_id", "time", "code", "numeric_value", "text_value")
REQUIRED_COLUMNS: tuple[str, ...] = ("subject_id", "time", "code", "numeric_value")

# Source names people commonly use for each MEDS column, offered as suggestions when one is missing.
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "subject_id": ("patient_id", "person_id", "pid", "subject", "patient", "mrn"),
    "time": ("timestamp", "datetime", "date", "event_time", "charttime", "start", "time_stamp"),
    "code": ("concept", "event_code", "concept_code", "code_id"),
    "numeric_value": ("value", "value_as_number", "numeric", "result", "num_value"),
    "text_value": ("text", "value_as_string", "note", "string_value"),
}

def similar_columns(missing: str, present: Sequence[str]) -> list[str]:
    """Columns in ``present`` that probably hold ``missing`` (known synonyms first, then difflib)."""
    lower = {c.lower(): c for c in present}
    out = [lower[s] for s in _SYNONYMS.get(missing, ()) if s in lower]
    for c in difflib.get_close_matches(missing, list(present), n=3, cutoff=0.5):
        if c not in out:
            out.append(c)
    return out


# Readers that take a column map, and the commands that pass --column-map to them.
_COLUMN_MAP_READERS = ("read_meds", "iter_meds_batches")
_COLUMN_MAP_COMMANDS = ("validate", "finetune", "pretrain", "evaluate", "explain", "labels", "score")


def missing_column_error(
    missing: str, present: Sequence[str], *, file: str | None, n_rows: int, reader: str = "read_meds"
) -> DataValidationError:
    """The error for a missing required column, saying exactly how to map a differently named one.

    ``reader``: the reading function; only MEDS event readers take a column map, other tables are told to
    rename the column.
    """
    similar = similar_columns(missing, present)
    source = similar[0] if similar else "<your column>"
    looks = f"columns that look similar: {', '.join(similar)}" if similar else "no similar column found"
    if reader in _COLUMN_MAP_READERS:
        hint = (f"If '{source}' holds it, pass a column map: {reader}(path, column_map={{'{source}': "
                f"'{missing}'}}) or on the command line --column-map {source}={missing} "
                f"(ehrseq {', '.join(_COLUMN_MAP_COMMANDS)})")
    else:  # label, split and extract tables take no column map
        hint = f"Rename the column in the file to '{missing}'" + (f" (if '{source}' holds it)" if similar else "")
    return DataValidationError(
        f"required column is missing ({looks}; columns present: {', '.join(map(str, present))})",
        file=_where(file), column=missing, n_rows=n_rows, hint=hint,
    )


def apply_column_map(df: pd.DataFrame, column_map: Mapping[str, str] | None, *, file: str | None) -> pd.DataFrame:
    """Rename source columns to MEDS names; a mapped source column that is absent is an error."""
    if not column_map:
        return df
    absent = [src for src in column_map if src not in df.columns]
    if absent:
        raise DataValidationError(
            f"column_map names source column(s) not in the file: {', '.join(absent)} "
            f"(columns present: {', '.join(map(str, df.columns))})",
            file=_where(file), column=absent[0], n_rows=len(df),
            hint="Fix the column map's keys to the file's column names.",
        )
    clash = [dst for src, dst in column_map.items() if dst in df.columns and dst != src and dst not in column_map]
    if clash:
        raise DataValidationError(
            "column_map maps onto a column that already exists", file=_where(file), column=clash[0],
            n_rows=len(df), hint=f"Drop or rename the existing '{clash[0]}' column first, or map it away too.",
        )
    return df.rename(columns=dict(column_map))


# ---------------------------------------------------------------------------------------------- times


_ID_PROBLEMS: tuple[tuple[str, str, str], ...] = (
    (ids_mod.EMPTY, "has empty subject ids", "Every row needs a subject id"),
    (ids_mod.BOOLEAN, "holds booleans, not integer ids", "Store subject ids as integers"),
    (ids_mod.NOT_A_NUMBER, "has subject ids that are not numbers",
     "Subject ids must be integers (map text ids to integers first)"),
    (ids_mod.NOT_WHOLE, "has subject ids that are not whole numbers", "Subject ids must be integers"),
    (ids_mod.OUT_OF_RANGE, "has subject ids outside the int64 range (MEDS subject_id is int64; a cast would "
     "wrap them onto other ids)", "Map the ids to integers between -2**63 and 2**63 - 1 first"),
    (ids_mod.FLOAT_INEXACT, "has subject ids stored as floating point at or above 2**53, where a float cannot "
     "hold every integer (two patients may already share one value)",
     "Export subject_id as an integer column (int64), not a float"),
)


def to_subject_ids(values: pd.Series, *, column: str, file: str | None, report: ValidationReport) -> pd.Series:
    """Convert a subject id column to exact int64 (:mod:`ehrseq.io.ids`); any value that is empty, not a whole
    number, outside the int64 range or a float too large to be exact is an error (never rounded or wrapped)."""
    where = _where(file)
    s = values.reset_index(drop=True)
    if s.dtype.kind == "i" and not isinstance(s.dtype, pd.api.extensions.ExtensionDtype):
        return pd.Series(s.to_numpy(np.int64), index=s.index)  # numpy signed ints hold no null: all exact
    parsed = parse_subject_ids(s)
    for code, problem, hint in _ID_PROBLEMS if not parsed.ok.all() else ():
        bad = parsed.reason == code
        if bad.any():
            raise DataValidationError(problem, file=where, column=column, n_rows=int(bad.sum()),
                                      hint=f"{hint}; first bad row(s): {_rows(bad)}.")
    if pd.api.types.is_float_dtype(s.dtype):
        report.subject_id_from_float += len(s)
        logger.warning("%s: column '%s' stored as float; converted %d whole-number ids to int64",
                       where, column, len(s))
    return pd.Series(parsed.ids, index=s.index)


def to_numbers(values: pd.Series, *, column: str, file: str | None, subject_ids: pd.Series | None) -> pd.Series:
    """Convert a column to float64 (null -> NaN); text that is not a number is an error."""
    s = values.reset_index(drop=True)
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.astype("float64")
    if pd.api.types.is_numeric_dtype(s.dtype):
        return s.astype("float64")
    text = s.astype(object).where(s.notna(), None)
    is_str = text.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
    if is_str.any():
        t = text[is_str].str.strip()
        text = text.copy()
        text[is_str] = t.where(t != "", None).to_numpy()
    num = pd.to_numeric(text, errors="coerce").astype("float64")
    bad = num.isna().to_numpy() & text.notna().to_numpy()
    if bad.any():
        raise DataValidationError(
            "has values that are not numbers", file=_where(file), column=column, n_rows=int(bad.sum()),
            subject_ids=_ids(subject_ids, bad),
            hint=f"Leave the cell empty when there is no number; first bad row(s): {_rows(bad)}.",
        )
    return num


def to_text(values: pd.Series, *, blank_is_null: bool = False) -> pd.Series:
    """Convert a column to object dtype holding str or None (non-text values are turned into text)."""
    s = values.reset_index(drop=True)
    if isinstance(s.dtype, pd.StringDtype):  # only str or NA: no type inference, convert the present cells only
        arr = np.full(len(s), None, dtype=object)
        present = s.notna().to_numpy(dtype=bool)
        if present.any():
            arr[present] = s[present].to_numpy(dtype=object)
        if blank_is_null and present.any():
            blank = np.array([not v.strip() for v in arr[present]], dtype=bool)
            arr[np.flatnonzero(present)[blank]] = None
        return pd.Series(arr, index=s.index, dtype=object)
    arr = s.to_numpy(dtype=object, na_value=None) if pd.api.types.is_string_dtype(s.dtype) else s.to_numpy(
        dtype=object)
    if not pd.api.types.is_string_dtype(s.dtype) or pd.api.types.infer_dtype(arr, skipna=True) != "string":
        arr = np.array([None if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v) for v in arr],
                       dtype=object)
    if blank_is_null and len(arr):
        blank = np.array([v is not None and not v.strip() for v in arr], dtype=bool)
        arr = arr if arr.flags.writeable else arr.copy()  # an object column's values may be a read-only view
        arr[blank] = None
    return pd.Series(arr, index=s.index, dtype=object)


def _blank(code: pd.Series) -> np.ndarray:
    """True where a code is missing or ``str.strip() == ""``. On a string dtype this is pyarrow's
    ``utf8_is_space``, which classifies every code point as ``str.isspace`` does (tests/test_validate.py)."""
    if isinstance(code.dtype, pd.StringDtype) and code.dtype.storage == "pyarrow":
        arr = pa.chunked_array(pa.array(code.array))
        blank = pc.or_(pc.equal(pc.binary_length(arr), 0), pc.utf8_is_space(arr))
        if not arr.null_count and not pc.any(blank).as_py():
            return np.zeros(len(code), bool)
        return code.isna().to_numpy(dtype=bool) | blank.to_numpy(zero_copy_only=False).astype(bool)
    return (code.isna() | code.astype(object).map(lambda v: isinstance(v, str) and v.strip() == "")).to_numpy(
        dtype=bool)


def coerce_events(
    df: pd.DataFrame,
    *,
    file: str | None = None,
    policy: ValidationPolicy | None = None,
    column_map: Mapping[str, str] | None = None,
    keep_extra: bool | Sequence[str] = False,
    report: ValidationReport | None = None,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Per-file half of validation: columns, dtypes, nulls and timestamps (no sorting or dropping).

    Returns the frame with canonical dtypes (rows in input order, index reset) and the report so far.
    """
    policy = policy or ValidationPolicy()
    report = report if report is not None else ValidationReport()
    where = _where(file)
    if file and file not in report.files:
        report.files.append(file)
    df = apply_column_map(df, column_map, file=file)
    if len(df) == 0:
        raise DataValidationError("file has no rows", file=where, n_rows=0,
                                  hint="Check the export: an event file needs at least one row.")
    report.rows_read += len(df)
    for col in REQUIRED_COLUMNS:
        if col not in df.columns:
            raise missing_column_error(col, [str(c) for c in df.columns], file=file, n_rows=len(df))

    sid = to_subject_ids(df["subject_id"], column="subject_id", file=file, report=report)
    code = df["code"].reset_index(drop=True)
    null_code = _blank(code)
    if null_code.any():
        raise DataValidationError(
            "has empty codes", file=where, column="code", n_rows=int(null_code.sum()),
            subject_ids=_ids(sid, null_code), hint="Every event needs a code; drop or fill those rows.",
        )
    out = pd.DataFrame(copy=False, data={
        "subject_id": sid,
        "time": parse_time_column(df["time"], column="time", file=file, policy=policy, report=report,
                                  subject_ids=sid),
        "code": code.astype("str") if isinstance(code.dtype, pd.StringDtype) else to_text(code).astype("str"),
        "numeric_value": to_numbers(df["numeric_value"], column="numeric_value", file=file,
                                    subject_ids=sid),
        "text_value": (to_text(df["text_value"]) if "text_value" in df.columns
                       else pd.Series([None] * len(df), dtype=object)),
    })
    extra = [c for c in df.columns if c not in CANONICAL_COLUMNS]
    if keep_extra is not True:
        extra = [c for c in extra if keep_extra and c in keep_extra]
    for c in extra:
        out[c] = df[c].reset_index(drop=True)
    return out, report


def tidy_events(
    df: pd.DataFrame,
    *,
    file: str | None = None,
    policy: ValidationPolicy | None = None,
    report: ValidationReport | None = None,
    birth_death: bool = True,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Whole-table half of validation: non-finite numbers, implausible times (dropped, counted), duplicates,
    empty subjects, events before birth / after death (counted), stable sort.

    ``df`` must already have canonical dtypes (the output of :func:`coerce_events`, possibly concatenated).
    ``birth_death=False`` skips the birth / death counts (they only count, never drop: for a caller that does
    not use the report's ``events_before_birth`` / ``events_after_death``).
    """
    policy = policy or ValidationPolicy()
    report = report if report is not None else ValidationReport()
    where = _where(file)
    df = df.reset_index(drop=True)

    values = df["numeric_value"].to_numpy(dtype="float64")
    inf = np.isinf(values)
    if inf.any():
        if policy.nonfinite == "error":
            raise DataValidationError(
                "has infinite numbers", file=where, column="numeric_value", n_rows=int(inf.sum()),
                subject_ids=_ids(df["subject_id"], inf),
                hint="Fix the source, or use ValidationPolicy(nonfinite='null') to blank them or 'drop'.",
            )
        if policy.nonfinite == "null":
            values = np.where(inf, np.nan, values)
            report.nonfinite_nulled += int(inf.sum())
        else:
            df = df.loc[~inf].reset_index(drop=True)
            values = values[~inf]
            report.nonfinite_dropped += int(inf.sum())
    df["numeric_value"] = values.astype("float32")
    overflow = np.isinf(df["numeric_value"].to_numpy())
    if overflow.any():  # finite float64 too large for float32
        raise DataValidationError(
            "has numbers too large for float32", file=where, column="numeric_value", n_rows=int(overflow.sum()),
            subject_ids=_ids(df["subject_id"], overflow), hint="Rescale the values (change the unit).",
        )

    df = drop_implausible(df, policy, report)
    sid, t = rowkeys.time_keys(df)
    order = rowkeys.event_order(sid, t)  # one stable sort, reused for duplicates, empty subjects and the output
    keep = np.ones(len(df), bool)  # rows dropped below leave in one take at the end
    dup = rowkeys.duplicated_rows(df, sid, t, order)
    if dup.any():
        if policy.duplicates == "error":
            raise DataValidationError(
                "has duplicate rows", file=where, n_rows=int(dup.sum()), subject_ids=_ids(df["subject_id"], dup),
                hint="Remove them, or use ValidationPolicy(duplicates='drop') (the default) or 'keep'.",
            )
        if policy.duplicates == "drop":
            keep &= ~dup
            report.duplicates_dropped += int(dup.sum())
        else:
            report.duplicates_kept += int(dup.sum())

    kept_sorted = keep if order is None else keep[order]
    s_sid, s_t = (sid, t) if order is None else (sid[order], t[order])
    s_sid, s_t = s_sid[kept_sorted], s_t[kept_sorted]
    if policy.empty_subjects == "skip":
        timed = rowkeys.subjects_timed(s_sid, s_t)
        if not timed.all():
            report.empty_subjects_skipped += rowkeys.n_subjects(s_sid[~timed])
            report.rows_of_empty_subjects_dropped += int((~timed).sum())
            kept_sorted[np.flatnonzero(kept_sorted)[~timed]] = False
            s_sid = s_sid[timed]
            keep = kept_sorted.copy()
            if order is not None:
                keep[order] = kept_sorted

    df = _take_sorted(df, order, keep, report)
    if birth_death:
        count_birth_death(df, report)  # sorted by subject now: no search for each row's birth / death
    report.rows_out = len(df)
    report.subjects_out = rowkeys.n_subjects(s_sid)
    return df, report


def _take_sorted(df: pd.DataFrame, order: np.ndarray | None, keep: np.ndarray,
                 report: ValidationReport | None) -> pd.DataFrame:
    """The rows ``keep`` selects, in the stable (subject, time) ``order``, in one take; counts the rows the
    sort moved (among the kept rows) in ``report``."""
    restricted = rowkeys.restrict_order(order, keep) if not keep.all() else order
    moved = 0 if restricted is None else int((restricted != np.arange(len(restricted))).sum())
    if report is not None:
        report.rows_moved_by_sort += moved
    if keep.all() and not moved:
        return df.reset_index(drop=True)
    rows = np.flatnonzero(keep) if order is None else order[keep[order]]
    return df.iloc[rows].reset_index(drop=True)


def sort_events(df: pd.DataFrame, report: ValidationReport | None = None) -> pd.DataFrame:
    """Stable sort by subject_id, then time with NaT first (NaT is the smallest int64)."""
    return _take_sorted(df, rowkeys.event_order(*rowkeys.time_keys(df)), np.ones(len(df), bool), report)


def validate_events(
    df: pd.DataFrame,
    *,
    file: str | None = None,
    policy: ValidationPolicy | None = None,
    column_map: Mapping[str, str] | None = None,
    keep_extra: bool | Sequence[str] = False,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Validate one events table and return ``(canonical frame, report)``; see the module docstring."""
    out, report = coerce_events(df, file=file, policy=policy, column_map=column_map, keep_extra=keep_extra)
    return tidy_events(out, file=file, policy=policy, report=report)


def empty_events() -> pd.DataFrame:
    """A canonical events frame with no rows."""
    return pd.DataFrame({
        "subject_id": pd.Series([], dtype="int64"),
        "time": pd.Series([], dtype="datetime64[us]"),
        "code": pd.Series([], dtype="str"),
        "numeric_value": pd.Series([], dtype="float32"),
        "text_value": pd.Series([], dtype=object),
    })
