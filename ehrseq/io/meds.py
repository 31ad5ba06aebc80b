"""MEDS v0.4 on disk: events, dataset metadata, codes, subject splits and label files.

Layout written by :func:`write_meds` (and read by :func:`read_meds`)::

    root/data/0.parquet, 1.parquet, ...     events, each subject in exactly one shard, sorted
    root/metadata/dataset.json              dataset_name, dataset_version, etl_name, etl_version, meds_version
    root/metadata/codes.parquet             code, description, parent_codes
    root/metadata/subject_splits.parquet    subject_id, split (train | tuning | held_out)

The Arrow schemas below are the contract; reads are validated once, here, into the canonical events frame
described in :mod:`ehrseq.io.validate`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ehrseq.errors import DataValidationError, first_ids
from ehrseq.io.files import iter_parquet_batches, parquet_file, read_parquet_table
from ehrseq.io.plausibility import check_implausible_fraction
from ehrseq.io.timeformat import file_time_policy
from ehrseq.io.validate import (
    ValidationPolicy,
    ValidationReport,
    coerce_events,
    empty_events,
    missing_column_error,
    parse_time_column,
    tidy_events,
    to_numbers,
    to_subject_ids,
    to_text,
    validate_events,
)

logger = logging.getLogger("ehrseq.io")

MEDS_VERSION = "0.4"
SPLITS = ("train", "tuning", "held_out")

DATA_SCHEMA = pa.schema([
    ("subject_id", pa.int64()),
    ("time", pa.timestamp("us")),
    ("code", pa.string()),
    ("numeric_value", pa.float32()),
    ("text_value", pa.string()),
])
CODES_SCHEMA = pa.schema([
    ("code", pa.string()),
    ("description", pa.string()),
    ("parent_codes", pa.list_(pa.string())),
])
SPLITS_SCHEMA = pa.schema([("subject_id", pa.int64()), ("split", pa.string())])
LABEL_SCHEMA = pa.schema([
    ("subject_id", pa.int64()),
    ("prediction_time", pa.timestamp("us")),
    ("boolean_value", pa.bool_()),
    ("integer_value", pa.int64()),
    ("float_value", pa.float64()),
    ("categorical_value", pa.string()),
])


@dataclass
class EventsResult:
    """What every reader returns: the canonical events frame and the counts of what validation did.

    ``report_labels`` is only set by :func:`ehrseq.io.extract.read_extract` when the reports table has
    label columns (subject_id, time, report_id, one column per label).
    """

    events: pd.DataFrame
    report: ValidationReport = field(default_factory=ValidationReport)
    report_labels: pd.DataFrame | None = None


def _parquet_files(path: str | Path) -> list[Path]:
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise DataValidationError("path does not exist", file=str(p), hint="Pass a Parquet file, a "
                                  "directory of Parquet shards or a MEDS root (with data/ and metadata/).")
    base = p / "data" if (p / "data").is_dir() else p
    files = sorted(f for f in base.rglob("*.parquet") if f.is_file() and "metadata" not in f.relative_to(base).parts)
    if not files:
        raise DataValidationError("no .parquet files found", file=str(base),
                                  hint="Point at a Parquet file, a directory of shards, or a MEDS root.")
    return files


def read_meds(
    path: str | Path,
    *,
    column_map: Mapping[str, str] | None = None,
    policy: ValidationPolicy | None = None,
    columns: Sequence[str] | None = None,
    keep_extra: bool = False,
) -> EventsResult:
    """Read MEDS events from a Parquet file, a directory of shards (recursive, sorted) or a MEDS root.

    column_map: source name -> MEDS name, e.g. ``{"value": "numeric_value", "patient_id": "subject_id"}``.
    columns: extra (non-MEDS) columns to keep, after mapping; ``keep_extra=True`` keeps all of them.
        Other extra columns (e.g. ``table``) are dropped.
    Each file is checked on its own (errors name it), then all rows are de-duplicated and sorted together.
    """
    policy = policy or ValidationPolicy()
    report = ValidationReport()
    keep: bool | Sequence[str] = True if keep_extra else (list(columns) if columns else False)
    frames = []
    for f in _parquet_files(path):
        raw = read_parquet_table(f).to_pandas()
        frame, _ = coerce_events(raw, file=str(f), policy=policy, column_map=column_map, keep_extra=keep,
                                 report=report)
        frames.append(frame)
    events = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    events, report = tidy_events(events, file=str(path), policy=policy, report=report)
    check_implausible_fraction(report, policy, str(path))
    report.log()
    return EventsResult(events=events, report=report)


def iter_meds_batches(
    path: str | Path,
    *,
    batch_rows: int = 65_536,
    column_map: Mapping[str, str] | None = None,
    policy: ValidationPolicy | None = None,
) -> Iterator[pd.DataFrame]:
    """Stream canonical events frames of whole subjects, about ``batch_rows`` rows each.

    Assumes the rows are grouped by subject in file order (as :func:`write_meds` writes them: one
    subject's rows are contiguous and in one shard). The rows of the last subject of each Arrow batch are
    held back until a later batch shows a different subject, so a subject is never split across two
    yielded frames. A subject that reappears after its frame was yielded raises DataValidationError.
    Concatenating the frames gives what :func:`read_meds` returns for files sorted by subject.
    """
    policy = policy or ValidationPolicy()
    files = _parquet_files(path)
    yielded: set[int] = set()
    carry: pd.DataFrame | None = None
    report = ValidationReport()
    where = str(path)

    def emit(frame: pd.DataFrame) -> pd.DataFrame:
        ids = frame["subject_id"].unique()
        again = [int(i) for i in ids if int(i) in yielded]
        if again:
            raise DataValidationError(
                "a subject reappears after its rows were already yielded (rows are not grouped by subject)",
                file=where, column="subject_id", n_rows=int(frame["subject_id"].isin(again).sum()),
                subject_ids=again, hint="Sort the files by subject_id (write_meds does), or use read_meds.",
            )
        yielded.update(int(i) for i in ids)
        out, _ = tidy_events(frame, file=where, policy=policy, report=report)
        return out

    def batches() -> Iterator[tuple[str, ValidationPolicy, pa.RecordBatch]]:
        for f in files:  # a text time column's format is judged per file, never per batch
            fpolicy = file_time_policy(f, policy, column_map=column_map)
            for b in iter_parquet_batches(parquet_file(f), f, batch_size=batch_rows):
                yield str(f), fpolicy, b

    for file, fpolicy, batch in batches():
        if batch.num_rows == 0:
            continue
        frame, _ = coerce_events(batch.to_pandas(), file=file, policy=fpolicy, column_map=column_map,
                                 report=report)
        if carry is not None:
            frame = pd.concat([carry, frame], ignore_index=True)
        last = frame["subject_id"].iloc[-1]
        held = (frame["subject_id"] == last).to_numpy()
        carry = frame.loc[held].reset_index(drop=True)
        ready = frame.loc[~held].reset_index(drop=True)
        if len(ready):
            out = emit(ready)
            if len(out):
                yield out
    if carry is not None and len(carry):
        out = emit(carry)
        if len(out):
            yield out
    report.rows_out, report.subjects_out = report.rows_read, len(yielded)
    check_implausible_fraction(report, policy, where)
    report.log()


# ------------------------------------------------------------------------------------------- writing


def _events_table(events: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(events[list(DATA_SCHEMA.names)], schema=DATA_SCHEMA, preserve_index=False)


def write_meds(
    events: pd.DataFrame,
    root: str | Path,
    *,
    shard_size: int = 10_000,
    dataset_name: str = "ehrseq",
    dataset_version: str = "0",
    code_descriptions: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write canonical events as a MEDS root; returns ``root``.

    shard_size: subjects per shard; each subject's rows go to exactly one ``data/<i>.parquet``.
    code_descriptions: optional code -> description for ``metadata/codes.parquet`` (else null).
    overwrite: replace existing ``data/*.parquet`` shards (otherwise existing shards are an error).
    """
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1 (subjects per shard)")
    root = Path(root)
    events, rep = validate_events(events, file="events", policy=ValidationPolicy(empty_subjects="keep"))
    if rep.implausible_times_dropped:
        logger.warning("write_meds: %d row(s) with a time before 1800 or after 2500 were not written",
                       rep.implausible_times_dropped)
    data_dir, meta_dir = root / "data", root / "metadata"
    old = sorted(data_dir.glob("*.parquet")) if data_dir.is_dir() else []
    if old and not overwrite:
        raise FileExistsError(f"{data_dir} already holds {len(old)} shard(s); pass overwrite=True to replace them")
    for f in old:
        f.unlink()
    data_dir.mkdir(parents=True, exist_ok=True)
    meta_dir.mkdir(parents=True, exist_ok=True)

    sid = events["subject_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])  # first row of each subject (sorted)
    bounds = list(starts[::shard_size]) + [len(events)]
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        pq.write_table(_events_table(events.iloc[a:b]), data_dir / f"{i}.parquet")
    if len(events) == 0:
        pq.write_table(_events_table(events), data_dir / "0.parquet")

    codes = sorted(events["code"].unique().tolist())
    desc = code_descriptions or {}
    pq.write_table(pa.table({
        "code": codes,
        "description": [desc.get(c) for c in codes],
        "parent_codes": [None] * len(codes),
    }, schema=CODES_SCHEMA), meta_dir / "codes.parquet")

    from ehrseq import __version__

    meta = {
        "dataset_name": dataset_name,
        "dataset_version": dataset_version,
        "etl_name": "ehrseq",
        "etl_version": __version__,
        "meds_version": MEDS_VERSION,
        "created_at": datetime.now(UTC).isoformat(),
    }
    (meta_dir / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    logger.info("wrote %d rows, %d subjects, %d shard(s) to %s", len(events), len(starts), len(bounds) - 1, root)
    return root


def read_dataset_metadata(root: str | Path) -> dict[str, object]:
    """``metadata/dataset.json`` of a MEDS root."""
    return json.loads((Path(root) / "metadata" / "dataset.json").read_text())


def read_codes(root: str | Path) -> pd.DataFrame:
    """``metadata/codes.parquet`` of a MEDS root (code, description, parent_codes)."""
    return read_parquet_table(Path(root) / "metadata" / "codes.parquet").to_pandas()


# --------------------------------------------------------------------------------------------- splits


def _require(df: pd.DataFrame, cols: Sequence[str], file: str, reader: str) -> None:
    if len(df) == 0:
        raise DataValidationError("file has no rows", file=file, n_rows=0)
    for c in cols:
        if c not in df.columns:
            raise missing_column_error(c, [str(x) for x in df.columns], file=file, n_rows=len(df), reader=reader)


def validate_subject_splits(df: pd.DataFrame, *, file: str = "subject_splits") -> pd.DataFrame:
    """Check and normalise a splits frame: subject_id int64 (unique), split in train/tuning/held_out."""
    _require(df, ("subject_id", "split"), file, "read_subject_splits")
    report = ValidationReport()
    sid = to_subject_ids(df["subject_id"], column="subject_id", file=file, report=report)
    split = df["split"].reset_index(drop=True).astype(object)
    bad = (~split.isin(SPLITS)).to_numpy()
    if bad.any():
        raise DataValidationError(
            "has unknown split names", file=file, column="split", n_rows=int(bad.sum()),
            subject_ids=first_ids(sid[bad]), hint=f"Allowed splits: {', '.join(SPLITS)}.",
        )
    dup = sid.duplicated(keep=False).to_numpy()
    if dup.any():
        raise DataValidationError(
            "lists a subject more than once", file=file, column="subject_id", n_rows=int(dup.sum()),
            subject_ids=first_ids(sid[dup]), hint="Each subject belongs to exactly one split.",
        )
    out = pd.DataFrame({"subject_id": sid, "split": split.astype("str")})
    return out.sort_values("subject_id", kind="stable").reset_index(drop=True)


def _splits_path(root: str | Path) -> Path:
    p = Path(root)
    return p if p.suffix == ".parquet" else p / "metadata" / "subject_splits.parquet"


def write_subject_splits(df: pd.DataFrame, root: str | Path) -> Path:
    """Validate and write ``root/metadata/subject_splits.parquet`` (or to ``root`` if it ends in .parquet)."""
    path = _splits_path(root)
    out = validate_subject_splits(df, file=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(out, schema=SPLITS_SCHEMA, preserve_index=False), path)
    return path


def read_subject_splits(root: str | Path) -> pd.DataFrame:
    """Read and validate the subject splits of a MEDS root (or a splits .parquet file)."""
    path = _splits_path(root)
    if not path.is_file():
        raise DataValidationError("subject splits file not found", file=str(path),
                                  hint="Write one with write_subject_splits(df, root).")
    return validate_subject_splits(read_parquet_table(path).to_pandas(), file=str(path))


# --------------------------------------------------------------------------------------------- labels


def validate_labels(df: pd.DataFrame, *, file: str = "labels", policy: ValidationPolicy | None = None) -> pd.DataFrame:
    """Check and normalise a MEDS label frame, sorted by subject_id then prediction_time (stably).

    subject_id and prediction_time are required and non-null; the value columns are optional and nullable
    (boolean_value -> "boolean", integer_value -> "Int64", float_value -> float64, categorical_value -> object).
    """
    policy = policy or ValidationPolicy()
    _require(df, ("subject_id", "prediction_time"), file, "read_labels")
    report = ValidationReport()
    sid = to_subject_ids(df["subject_id"], column="subject_id", file=file, report=report)
    pt = parse_time_column(df["prediction_time"], column="prediction_time", file=file, policy=policy,
                           report=report, subject_ids=sid)
    null = pt.isna().to_numpy()
    if null.any():
        raise DataValidationError("has empty prediction times", file=file, column="prediction_time",
                                  n_rows=int(null.sum()), subject_ids=first_ids(sid[null]),
                                  hint="Every label needs a prediction_time.")
    n = len(df)
    out = pd.DataFrame({"subject_id": sid, "prediction_time": pt})

    def col(name: str) -> pd.Series | None:
        return df[name].reset_index(drop=True) if name in df.columns else None

    b = col("boolean_value")
    if b is not None and not pd.api.types.is_bool_dtype(b.dtype):
        num = to_numbers(b, column="boolean_value", file=file, subject_ids=sid)
        bad = num.notna().to_numpy() & ~num.isin([0.0, 1.0]).to_numpy()
        if bad.any():
            raise DataValidationError("has values that are not booleans", file=file, column="boolean_value",
                                      n_rows=int(bad.sum()), subject_ids=first_ids(sid[bad]),
                                      hint="Use true/false (or 1/0), empty for none.")
        b = num.map(lambda v: pd.NA if pd.isna(v) else bool(v))
    out["boolean_value"] = (b if b is not None else pd.Series([pd.NA] * n)).astype("boolean")
    i = col("integer_value")
    if i is not None:
        num = to_numbers(i, column="integer_value", file=file, subject_ids=sid)
        bad = num.notna().to_numpy() & (num.fillna(0) != np.round(num.fillna(0))).to_numpy()
        if bad.any():
            raise DataValidationError("has values that are not whole numbers", file=file, column="integer_value",
                                      n_rows=int(bad.sum()), subject_ids=first_ids(sid[bad]))
        out["integer_value"] = num.round().astype("Int64")
    else:
        out["integer_value"] = pd.Series([pd.NA] * n, dtype="Int64")
    f = col("float_value")
    out["float_value"] = (to_numbers(f, column="float_value", file=file, subject_ids=sid) if f is not None
                          else pd.Series(np.nan, index=range(n), dtype="float64"))
    c = col("categorical_value")
    out["categorical_value"] = to_text(c) if c is not None else pd.Series([None] * n, dtype=object)
    t = out["prediction_time"].to_numpy().view("int64")
    order = np.lexsort((t, out["subject_id"].to_numpy()))
    return out.iloc[order].reset_index(drop=True)


def write_labels(df: pd.DataFrame, path: str | Path) -> Path:
    """Validate and write a MEDS label file (Parquet, LABEL_SCHEMA)."""
    path = Path(path)
    out = validate_labels(df, file=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(out, schema=LABEL_SCHEMA, preserve_index=False), path)
    return path


def read_labels(path: str | Path, *, policy: ValidationPolicy | None = None) -> pd.DataFrame:
    """Read and validate MEDS labels from a Parquet file or a directory of them (sorted, recursive)."""
    files = _parquet_files(path)
    frames = [read_parquet_table(f).to_pandas() for f in files]
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return validate_labels(df, file=str(path), policy=policy)


__all__ = [
    "DATA_SCHEMA", "CODES_SCHEMA", "SPLITS_SCHEMA", "LABEL_SCHEMA", "MEDS_VERSION", "SPLITS",
    "EventsResult", "read_meds", "iter_meds_batches", "write_meds", "read_dataset_metadata", "read_codes",
    "read_subject_splits", "write_subject_splits", "validate_subject_splits",
    "read_labels", "write_labels", "validate_labels", "empty_events",
]
