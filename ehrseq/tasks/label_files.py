"""Task labels as data: MEDS label files read, checked against the events, and written back.

A MEDS label file has one row per prediction: ``subject_id``, ``prediction_time`` (timestamp[us], the inclusive
end of the data a model may see) and one filled value column. The value column sets the task's kind:
``boolean_value`` binary, ``float_value`` regression, ``integer_value`` / ``categorical_value`` multiclass.
Time-to-event labels use two columns (``float_value`` = days to the event or to censoring, ``boolean_value`` =
the event was observed) and say so in the file's Parquet metadata (key ``ehrseq.task``), which
:func:`write_task_labels` writes; a file from elsewhere can be read as one with ``kind="survival"``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ehrseq.errors import DataValidationError, first_ids
from ehrseq.io.meds import LABEL_SCHEMA, validate_labels
from ehrseq.tasks.spec import KINDS, METADATA_KEY, TaskSpec

log = logging.getLogger(__name__)
VALUE_COLUMNS = ("boolean_value", "integer_value", "float_value", "categorical_value")
_KIND_OF_COLUMN = {"boolean_value": "binary", "float_value": "regression", "integer_value": "multiclass",
                   "categorical_value": "multiclass"}


@dataclass
class TaskLabels:
    """A task's label rows in canonical form plus the task itself.

    ``frame``: subject_id (int64), prediction_time (datetime64[us]) and ``spec.value_columns``, sorted by
    subject_id then prediction_time.
    """

    frame: pd.DataFrame
    spec: TaskSpec

    def __len__(self) -> int:
        return len(self.frame)

    def subset(self, subject_ids: Any) -> TaskLabels:
        """The rows of these subjects (order kept)."""
        keep = self.frame["subject_id"].isin(pd.Index(subject_ids))
        return TaskLabels(self.frame.loc[keep].reset_index(drop=True), self.spec)


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(f for f in path.rglob("*.parquet") if f.is_file())
        if files:
            return files
        raise DataValidationError("no .parquet label files found", file=str(path),
                                  hint="Pass a MEDS label Parquet file or a directory of them "
                                       "(`ehrseq labels --task ...` writes one).")
    raise DataValidationError("label path does not exist", file=str(path),
                              hint="Pass a MEDS label Parquet file or a directory of them.")


def _stored_spec(files: list[Path], root: Path) -> TaskSpec | None:
    sidecar = (root if root.is_dir() else root.parent) / "task.json"
    meta = pq.read_schema(files[0]).metadata or {}
    raw = meta.get(METADATA_KEY)
    try:
        if raw is not None:
            return TaskSpec.from_dict(json.loads(raw))
        if sidecar.is_file():
            return TaskSpec.from_dict(json.loads(sidecar.read_text()))
    except (ValueError, TypeError) as e:
        raise DataValidationError(f"its ehrseq task description cannot be read ({type(e).__name__})",
                                  file=str(files[0]), hint="Rewrite the labels with `ehrseq labels`.") from e
    return None


def read_task_labels(path: str | Path, *, kind: str | None = None, name: str | None = None) -> TaskLabels:
    """Read and validate MEDS labels (a Parquet file or a directory of them) into :class:`TaskLabels`.

    ``kind`` overrides the kind read from the file (e.g. ``"survival"`` for a file from another tool that
    holds durations in ``float_value`` and events in ``boolean_value``). Errors name the file, the column and
    the first subject ids; never a value.
    """
    p = Path(path)
    files = _files(p)
    stored = _stored_spec(files, p)
    frames = []
    for f in files:
        try:
            frames.append(pq.read_table(f).to_pandas())
        except (OSError, pa.ArrowInvalid) as e:
            raise DataValidationError(f"is not a readable Parquet file ({type(e).__name__})", file=str(f)) from e
    raw = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return labels_from_frame(raw, kind=kind, name=name or (p.stem if p.is_file() else p.name), file=str(p),
                             stored=stored)


def labels_from_frame(raw: pd.DataFrame, *, kind: str | None = None, name: str = "labels", file: str = "labels",
                      stored: TaskSpec | None = None) -> TaskLabels:
    """Validate a MEDS label frame (as :func:`read_task_labels` does for a file) into :class:`TaskLabels`."""
    if len(raw) == 0:
        raise DataValidationError("has no label rows", file=file, hint="A label file needs at least one row.")
    df = validate_labels(raw, file=file)
    filled = [c for c in VALUE_COLUMNS if c in raw.columns and df[c].notna().any()]
    if kind is None:
        kind = stored.kind if stored is not None else _infer_kind(filled, file)
    if kind not in KINDS or kind == "multilabel":
        raise DataValidationError(f"kind '{kind}' cannot be read from a label file", file=file,
                                  hint="Use binary, regression, multiclass or survival.")
    spec = stored if stored is not None and stored.kind == kind else TaskSpec(
        name=name, kind=kind, source=f"labels:{file}", definition=f"Labels from {Path(file).name} ({kind}).")
    if name and spec.name != name and stored is None:
        spec = replace(spec, name=name)
    frame, spec = _canonical(df, spec, file)
    return TaskLabels(frame, spec)


def _infer_kind(filled: list[str], file: str) -> str:
    if len(filled) == 1:
        return _KIND_OF_COLUMN[filled[0]]
    if not filled:
        raise DataValidationError("has no filled value column", file=file,
                                  hint=f"Fill one of {', '.join(VALUE_COLUMNS)} with the label of each row.")
    if set(filled) == {"boolean_value", "float_value"}:
        raise DataValidationError(
            "fills both boolean_value and float_value and does not say what they are", file=file,
            hint="A time-to-event file (float_value = days, boolean_value = event) is read with kind='survival' "
                 "(`--label-kind survival`); otherwise keep one value column.")
    raise DataValidationError(f"fills several value columns ({', '.join(filled)})", file=file,
                              hint="Keep exactly one value column per label file.")


def _require_filled(df: pd.DataFrame, col: str, file: str) -> None:
    if col not in df or df[col].isna().all():
        raise DataValidationError("is empty, but this task needs it", file=file, column=col)
    null = df[col].isna().to_numpy()
    if null.any():
        raise DataValidationError("has rows without a label value", file=file, column=col, n_rows=int(null.sum()),
                                  subject_ids=first_ids(df.loc[null, "subject_id"]),
                                  hint="Give every row a value or drop the rows.")


def _canonical(df: pd.DataFrame, spec: TaskSpec, file: str) -> tuple[pd.DataFrame, TaskSpec]:
    base = df[["subject_id", "prediction_time"]].copy()
    base["prediction_time"] = base["prediction_time"].astype("datetime64[us]")
    kind = spec.kind
    if kind == "binary":
        _require_filled(df, "boolean_value", file)
        base["boolean_value"] = df["boolean_value"].astype(bool).to_numpy()
    elif kind == "regression":
        _require_filled(df, "float_value", file)
        v = df["float_value"].to_numpy(np.float64)
        if not np.isfinite(v).all():
            bad = ~np.isfinite(v)
            raise DataValidationError("has infinite values", file=file, column="float_value", n_rows=int(bad.sum()),
                                      subject_ids=first_ids(df.loc[bad, "subject_id"]))
        base["float_value"] = v
    elif kind == "multiclass":
        col = "categorical_value" if "categorical_value" in df and df["categorical_value"].notna().any() \
            else "integer_value"
        _require_filled(df, col, file)
        values = df[col].astype(str).to_numpy() if col == "categorical_value" else df[col].astype("int64").to_numpy()
        classes = spec.classes or tuple(str(c) for c in sorted(pd.unique(values)))
        index = {c: i for i, c in enumerate(classes)}
        ids = pd.Series([index.get(str(v), -1) for v in values], dtype="int64")
        if (ids < 0).any():
            bad = (ids < 0).to_numpy()
            raise DataValidationError(f"has classes that the task does not list ({len(classes)} known)", file=file,
                                      column=col, n_rows=int(bad.sum()), subject_ids=first_ids(df.loc[bad, "subject_id"]))
        if len(classes) < 2:
            raise DataValidationError("has a single class; a classifier needs two or more", file=file, column=col)
        base["integer_value"] = ids.to_numpy()
        spec = replace(spec, classes=tuple(classes))
    elif kind == "survival":
        _require_filled(df, "float_value", file)
        _require_filled(df, "boolean_value", file)
        d = df["float_value"].to_numpy(np.float64)
        bad = ~np.isfinite(d) | (d <= 0)
        if bad.any():
            raise DataValidationError("has durations that are not positive finite days", file=file,
                                      column="float_value", n_rows=int(bad.sum()),
                                      subject_ids=first_ids(df.loc[bad, "subject_id"]),
                                      hint="float_value holds days from prediction_time to the event or censoring.")
        base["duration"] = d
        base["event"] = df["boolean_value"].astype(bool).to_numpy().astype(np.int64)
    else:  # pragma: no cover - guarded by read_task_labels
        raise DataValidationError(f"kind '{kind}' has no label-file form", file=file)
    dup = base.duplicated(["subject_id", "prediction_time"], keep=False).to_numpy()
    if dup.any():
        raise DataValidationError("has more than one label row for the same subject and prediction_time", file=file,
                                  column="prediction_time", n_rows=int(dup.sum()),
                                  subject_ids=first_ids(base.loc[dup, "subject_id"]),
                                  hint="Keep one row per (subject_id, prediction_time).")
    return base.reset_index(drop=True), spec


def to_meds_frame(labels: TaskLabels) -> pd.DataFrame:
    """The MEDS label columns of ``labels`` (the reverse of reading): one filled value column, or two for
    survival (float_value = days, boolean_value = event)."""
    f, spec = labels.frame, labels.spec
    n = len(f)
    out = pd.DataFrame({"subject_id": f["subject_id"].astype("int64"),
                        "prediction_time": f["prediction_time"].astype("datetime64[us]"),
                        "boolean_value": pd.array([pd.NA] * n, dtype="boolean"),
                        "integer_value": pd.array([pd.NA] * n, dtype="Int64"),
                        "float_value": np.full(n, np.nan),
                        "categorical_value": pd.Series([None] * n, dtype=object)})
    if spec.kind == "binary":
        out["boolean_value"] = f["boolean_value"].astype("boolean").to_numpy()
    elif spec.kind == "regression":
        out["float_value"] = f["float_value"].to_numpy(np.float64)
    elif spec.kind == "multiclass":
        out["integer_value"] = f["integer_value"].astype("Int64").to_numpy()
        if spec.classes is not None:
            out["categorical_value"] = [spec.classes[i] for i in f["integer_value"]]
    elif spec.kind == "survival":
        out["float_value"] = f["duration"].to_numpy(np.float64)
        out["boolean_value"] = f["event"].astype(bool).astype("boolean").to_numpy()
    else:
        raise DataValidationError(f"a '{spec.kind}' task has no MEDS label-file form", file=spec.name)
    return out


def write_task_labels(labels: TaskLabels, out_dir: str | Path) -> Path:
    """Write ``out_dir/labels.parquet`` (MEDS label schema, the task in its ``ehrseq.task`` metadata) and
    ``out_dir/task.json``. Written to a temporary name first, so a failed write leaves nothing half done."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(to_meds_frame(labels), schema=LABEL_SCHEMA, preserve_index=False)
    table = table.replace_schema_metadata({METADATA_KEY: labels.spec.to_json_bytes()})
    path = out / "labels.parquet"
    tmp = out / ".labels.parquet.tmp"
    pq.write_table(table, tmp)
    tmp.replace(path)
    (out / "task.json").write_text(json.dumps(labels.spec.to_dict(), indent=1, sort_keys=True))
    return path


def match_labels(labels: TaskLabels, events: pd.DataFrame, *, max_unmatched_fraction: float = 0.05,
                 file: str = "labels") -> tuple[TaskLabels, dict[str, int]]:
    """Drop label rows the events cannot support, count them, and refuse when too many are dropped.

    A row is dropped when its subject has no events at all (``unknown_subject``) or no timed event at or
    before its prediction_time (``no_history``: a model would see nothing). Above
    ``max_unmatched_fraction`` of the rows the labels are refused: they probably belong to other data.
    Returns the kept labels and ``{"rows": ..., "kept": ..., "unknown_subject": ..., "no_history": ...}``.
    """
    f = labels.frame
    known = pd.Index(pd.unique(events["subject_id"]))
    timed = events.loc[events["time"].notna()]
    first = timed.groupby("subject_id")["time"].min()
    unknown = ~f["subject_id"].isin(known).to_numpy()
    first_t = pd.Series(first.reindex(f["subject_id"]).to_numpy(), index=f.index)
    no_hist = ~unknown & ~(first_t.notna() & (first_t <= f["prediction_time"])).to_numpy()
    drop = unknown | no_hist
    counts = {"rows": int(len(f)), "kept": int((~drop).sum()), "unknown_subject": int(unknown.sum()),
              "no_history": int(no_hist.sum())}
    if len(f) and drop.mean() > max_unmatched_fraction:
        raise DataValidationError(
            f"{int(drop.sum())} of {len(f)} label rows do not match the data ({counts['unknown_subject']} of "
            f"subjects the data does not have, {counts['no_history']} with no event at or before "
            f"prediction_time), more than the {max_unmatched_fraction:.0%} allowed", file=file,
            column="subject_id", subject_ids=first_ids(f.loc[drop, "subject_id"]),
            hint="Check that the labels were made from this dataset (and its --column-map); raise "
                 "max_unmatched_label_fraction in the config to accept it.")
    if drop.any():
        log.warning("%s: dropped %d of %d label rows (%d unknown subjects, %d without history)", file,
                    int(drop.sum()), len(f), counts["unknown_subject"], counts["no_history"])
    return TaskLabels(f.loc[~drop].reset_index(drop=True), labels.spec), counts
