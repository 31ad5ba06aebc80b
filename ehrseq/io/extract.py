"""The "EHR extract" layout: one CSV or Parquet file per table, converted to canonical events.

Tables (``<dir>/<table>.csv`` or ``<dir>/<table>.parquet``; only ``patients`` is required) and the codes
they become (see :mod:`ehrseq.codes`)::

    patients          birth_date -> MEDS_BIRTH, sex -> SEX//F (static), site -> SITE//A (static),
                      death_date -> MEDS_DEATH
    visits            VISIT//<VISIT_TYPE> (OUTPATIENT when empty)
    diagnoses         ICD10//<ICD10>
    labs              LAB//<TEST>, numeric_value = value
    medications       RX//<DRUG>
    disease_activity  SCORE//CDAI, numeric_value = cdai
    reports           NOTE//TA_BIOPSY, text_value = text (label columns -> EventsResult.report_labels)
    outcomes          EVENT//<EVENT>

Each table is described by a JSON Schema (draft 2020-12), ``ehrseq/schemas/<table>.schema.json`` (shipped
in the package, see :mod:`ehrseq.schemas`); the loader applies its ``required``, ``type``, ``format: date``,
``enum``, ``pattern``, ``minLength``, ``minimum`` and ``maximum`` keywords to whole columns at once (never row
by row). A schema (e.g. from ``schema_dir``) that uses any other validation keyword is refused, since the
loader would not apply it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ehrseq import codes, schemas
from ehrseq.errors import DataValidationError, first_ids
from ehrseq.io.files import read_csv_table, read_parquet_table
from ehrseq.io.meds import EventsResult
from ehrseq.io.plausibility import check_implausible_fraction
from ehrseq.io.validate import (
    ValidationPolicy,
    ValidationReport,
    coerce_events,
    missing_column_error,
    parse_time_column,
    tidy_events,
    to_numbers,
    to_subject_ids,
    to_text,
)

TABLES: tuple[str, ...] = ("patients", "visits", "diagnoses", "labs", "medications", "disease_activity",
                           "reports", "outcomes")
# table -> (date column, code prefix, column holding the code's value)
_EVENT_TABLES: dict[str, tuple[str, str, str]] = {
    "visits": ("visit_date", "VISIT//", "visit_type"),
    "diagnoses": ("date", codes.DX_PREFIX, "icd10"),
    "labs": ("date", codes.LAB_PREFIX, "test"),
    "medications": ("date", codes.RX_PREFIX, "drug"),
    "disease_activity": ("date", codes.CDAI, ""),
    "reports": ("date", codes.BIOPSY_REPORT, ""),
    "outcomes": ("date", "EVENT//", "event"),
}


@cache
def load_schema(table: str, schema_dir: str | Path | None = None) -> dict[str, Any]:
    """The JSON Schema (as a dict) of one extract table: the shipped one, or ``<schema_dir>/<table>.schema.json``.

    Raises :class:`DataValidationError` naming the file and key when the schema is invalid or uses a keyword
    the column-wise loader (:func:`check_table`) does not apply. The dict is cached: do not modify it.
    """
    if table not in TABLES:
        raise KeyError(f"unknown extract table {table!r}; tables: {', '.join(TABLES)}")
    schema = schemas.load(table, schema_dir)
    schemas.check_table_schema(schema, file=str(schemas.schema_file(table, schema_dir)))
    return schema


def _word(s: pd.Series) -> pd.Series:
    """Normalise a vocabulary value for a code: upper case, spaces and hyphens as underscores."""
    return s.str.strip().str.upper().str.replace(r"[\s-]+", "_", regex=True)


def _find_file(directory: Path, table: str) -> Path | None:
    found = [p for p in (directory / f"{table}.csv", directory / f"{table}.parquet") if p.is_file()]
    if len(found) > 1:
        raise DataValidationError("both a CSV and a Parquet file exist for one table", file=str(found[0]),
                                  hint=f"Keep only one of {found[0].name} and {found[1].name}.")
    return found[0] if found else None


def _read_raw(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return read_parquet_table(path).to_pandas()
    # Everything as text, only empty cells as missing ("NA" may be real report text); the schema types it.
    return read_csv_table(path)


def check_table(
    raw: pd.DataFrame,
    schema: Mapping,
    *,
    file: str,
    policy: ValidationPolicy,
    report: ValidationReport,
) -> pd.DataFrame:
    """Validate one table against its JSON Schema, column by column; returns the typed schema columns.

    Integers -> int64 (nullable ones -> Int64), numbers -> float64, ``format: date`` -> datetime64[us],
    strings -> object (None for missing). Columns not in the schema are dropped.
    """
    for col in schema.get("required", []):
        if col not in raw.columns:
            raise missing_column_error(col, [str(c) for c in raw.columns], file=file, n_rows=len(raw),
                                       reader="rename the column in the file, or read_meds")
    raw = raw.reset_index(drop=True)
    sid = to_subject_ids(raw["subject_id"], column="subject_id", file=file, report=report)
    out = pd.DataFrame({"subject_id": sid})
    for col, spec in schema["properties"].items():
        if col == "subject_id" or col not in raw.columns:
            continue
        types = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
        s = raw[col]
        if "number" in types or "integer" in types:
            v = to_numbers(s, column=col, file=file, subject_ids=sid)
        elif spec.get("format") == "date":
            v = parse_time_column(s, column=col, file=file, policy=policy, report=report, subject_ids=sid)
        else:
            v = to_text(s, blank_is_null=True)
        null = v.isna().to_numpy()
        if null.any() and "null" not in types:
            raise DataValidationError("has empty cells where a value is required", file=file, column=col,
                                      n_rows=int(null.sum()), subject_ids=first_ids(sid[null]),
                                      hint="Fill them, or drop those rows.")
        present = ~null
        checks: list[tuple[np.ndarray, str]] = []
        if "integer" in types and "number" not in types:
            checks.append(((v.fillna(0) != np.round(v.fillna(0))).to_numpy(), "whole numbers"))
        if "enum" in spec:
            allowed = [x for x in spec["enum"] if x is not None]
            checks.append((~v.isin(allowed).to_numpy(), f"one of {', '.join(map(str, allowed))}"))
        if "pattern" in spec:
            with warnings.catch_warnings():  # JSON Schema patterns may have groups; only the match matters
                warnings.simplefilter("ignore", UserWarning)
                matches = v.fillna("").astype(str).str.contains(spec["pattern"], regex=True).to_numpy()
            checks.append((~matches, f"text matching {spec['pattern']}"))
        if "minLength" in spec:
            short = (v.fillna("").astype(str).str.len() < spec["minLength"]).to_numpy()
            checks.append((short, f"at least {spec['minLength']} character(s)"))
        if "minimum" in spec or "maximum" in spec:
            x = v.fillna(0).to_numpy(dtype=float)
            out_of_range = (x < spec.get("minimum", -np.inf)) | (x > spec.get("maximum", np.inf))
            checks.append((out_of_range, f"between {spec.get('minimum', '-inf')} and {spec.get('maximum', 'inf')}"))
        for failed, rule in checks:
            bad = present & failed
            if bad.any():
                raise DataValidationError(f"has values outside the schema (expected {rule})", file=file,
                                          column=col, n_rows=int(bad.sum()), subject_ids=first_ids(sid[bad]),
                                          hint=f"See the schema {Path(file).stem}.schema.json "
                                          "(ehrseq.io.load_schema) for the allowed values.")
        if "integer" in types and "number" not in types:
            v = v.round().astype("Int64")
        out[col] = v.reset_index(drop=True)
    return out


def read_extract_tables(
    directory: str | Path, *, policy: ValidationPolicy | None = None, schema_dir: str | Path | None = None,
    report: ValidationReport | None = None,
) -> dict[str, pd.DataFrame]:
    """Read and validate every table present in ``directory``; returns table name -> typed frame."""
    policy = policy or ValidationPolicy()
    report = report if report is not None else ValidationReport()
    directory = Path(directory)
    if not directory.is_dir():
        raise DataValidationError("extract directory does not exist", file=str(directory))
    tables: dict[str, pd.DataFrame] = {}
    files: dict[str, str] = {}
    for table in TABLES:
        path = _find_file(directory, table)
        if path is None:
            if table == "patients":
                raise DataValidationError("the patients table is missing", file=str(directory / "patients.csv"),
                                          hint="An extract needs patients.csv (or patients.parquet).")
            continue
        raw = _read_raw(path)
        report.files.append(str(path))
        report.rows_read += len(raw)
        if len(raw) == 0 and table == "patients":
            raise DataValidationError("file has no rows", file=str(path), n_rows=0)
        schema = load_schema(table, str(schema_dir) if schema_dir else None)
        tables[table] = check_table(raw, schema, file=str(path), policy=policy, report=report)
        files[table] = str(path)

    pats = tables["patients"]
    dup = pats["subject_id"].duplicated(keep=False).to_numpy()
    if dup.any():
        raise DataValidationError("lists a subject more than once", file=files["patients"], column="subject_id",
                                  n_rows=int(dup.sum()), subject_ids=first_ids(pats["subject_id"][dup]),
                                  hint="Keep one row per patient.")
    known = pats["subject_id"].to_numpy()
    for table, df in tables.items():
        unknown = ~np.isin(df["subject_id"].to_numpy(), known)
        if unknown.any():
            raise DataValidationError(
                "has subjects that are not in the patients table", file=files[table], column="subject_id",
                n_rows=int(unknown.sum()), subject_ids=first_ids(df["subject_id"][unknown]),
                hint="Add them to patients, or drop their rows.",
            )
    return tables


def _frame(sid: pd.Series, time: pd.Series, code: pd.Series | str, value: pd.Series | None = None,
           text: pd.Series | None = None) -> pd.DataFrame:
    n = len(sid)
    return pd.DataFrame({
        "subject_id": sid.to_numpy(dtype="int64"),
        "time": time.to_numpy(dtype="datetime64[us]"),
        "code": code.to_numpy(dtype=object) if isinstance(code, pd.Series) else [code] * n,
        "numeric_value": value.to_numpy(dtype="float64") if value is not None else np.full(n, np.nan),
        "text_value": text.to_numpy(dtype=object) if text is not None else np.full(n, None, dtype=object),
    })


def read_extract(
    directory: str | Path, *, policy: ValidationPolicy | None = None, schema_dir: str | Path | None = None
) -> EventsResult:
    """Read an EHR extract directory into canonical events (see the module docstring for the codes)."""
    policy = policy or ValidationPolicy()
    report = ValidationReport()
    t = read_extract_tables(directory, policy=policy, schema_dir=schema_dir, report=report)
    p = t["patients"]
    nat = pd.Series(pd.NaT, index=p.index, dtype="datetime64[us]")
    parts = [
        _frame(p["subject_id"], nat, codes.SEX_PREFIX + p["sex"].astype(str)),
        _frame(p["subject_id"], nat, codes.SITE_PREFIX + p["site"].astype(str).str.strip()),
        _frame(p["subject_id"], p["birth_date"], codes.BIRTH),
    ]
    if "death_date" in p.columns:
        d = p[p["death_date"].notna()]
        parts.append(_frame(d["subject_id"], d["death_date"], codes.DEATH))
    labels = None
    for table, (date_col, prefix, value_col) in _EVENT_TABLES.items():
        df = t.get(table)
        if df is None or len(df) == 0:
            continue
        if table == "visits":
            kind = df["visit_type"] if "visit_type" in df.columns else pd.Series([None] * len(df), dtype=object)
            code = prefix + _word(kind.fillna("OUTPATIENT").astype(str))
        elif table == "diagnoses":
            code = prefix + df["icd10"].astype(str).str.strip().str.upper()
        elif value_col:
            code = prefix + _word(df[value_col].astype(str))
        else:
            code = prefix
        value = df["value"] if table == "labs" else df["cdai"] if table == "disease_activity" else None
        text = df["text"] if table == "reports" else None
        parts.append(_frame(df["subject_id"], df[date_col], code, value, text))
        if table == "reports":
            label_cols = [c for c in codes.BIOPSY_LABELS if c in df.columns]
            if label_cols:
                labels = df[["subject_id", date_col, "report_id", *label_cols]].rename(columns={date_col: "time"})
                labels = labels.sort_values(["subject_id", "time"], kind="stable").reset_index(drop=True)
    events = pd.concat(parts, ignore_index=True)
    events["numeric_value"] = events["numeric_value"].astype("float64")
    events, _ = coerce_events(events, file=str(directory), policy=policy, report=ValidationReport())
    events, report = tidy_events(events, file=str(directory), policy=policy, report=report)
    check_implausible_fraction(report, policy, str(directory))
    report.log()
    return EventsResult(events=events, report=report, report_labels=labels)


# ------------------------------------------------------------------------------------------- writing


def _dates(s: pd.Series) -> pd.Series:
    """ISO text: YYYY-MM-DD when every value is at midnight, else YYYY-MM-DDTHH:MM:SS.ffffff."""
    t = pd.Series(s.to_numpy(dtype="datetime64[us]"))
    fmt = "%Y-%m-%d" if bool((t.dropna() == t.dropna().dt.normalize()).all()) else "%Y-%m-%dT%H:%M:%S.%f"
    return t.dt.strftime(fmt).astype(object).where(t.notna(), None)


def write_extract(
    events: pd.DataFrame, out_dir: str | Path, *, report_labels: pd.DataFrame | None = None
) -> dict[str, Path]:
    """Write canonical events as extract CSV tables (every table, header-only when empty).

    Every subject needs exactly one MEDS_BIRTH, one SEX// and one SITE// event; every code must be one the
    extract layout can hold. ``report_labels`` (subject_id, time, report_id, label columns) is matched to
    the NOTE//TA_BIOPSY events by subject, time and order within the same time.
    Returns table name -> path written.
    """
    ev, _ = tidy_events(coerce_events(events, file="events")[0], file="events",
                        policy=ValidationPolicy(empty_subjects="keep", duplicates="keep"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    code = ev["code"].astype(object)
    sid = ev["subject_id"]
    subjects = pd.Index(sid.unique())

    def one_per_subject(mask: pd.Series, what: str) -> pd.DataFrame:
        rows = ev[mask.to_numpy()]
        counts = rows["subject_id"].value_counts().reindex(subjects, fill_value=0)
        wrong = counts[counts != 1]
        if len(wrong):
            raise DataValidationError(f"subjects need exactly one {what} event to write an extract", file="events",
                                      column="code", n_rows=len(wrong), subject_ids=first_ids(wrong.index),
                                      hint="Fix the events, or write MEDS (write_meds) instead.")
        return rows.set_index("subject_id").reindex(subjects)

    birth = one_per_subject(code == codes.BIRTH, codes.BIRTH)
    sex = one_per_subject(code.str.startswith(codes.SEX_PREFIX), codes.SEX_PREFIX)
    site = one_per_subject(code.str.startswith(codes.SITE_PREFIX), codes.SITE_PREFIX)
    death = ev[(code == codes.DEATH).to_numpy()].drop_duplicates("subject_id").set_index("subject_id")
    tables: dict[str, pd.DataFrame] = {"patients": pd.DataFrame({
        "subject_id": subjects,
        "birth_date": _dates(birth["time"]).to_numpy(),
        "sex": sex["code"].str.removeprefix(codes.SEX_PREFIX).to_numpy(),
        "site": site["code"].str.removeprefix(codes.SITE_PREFIX).to_numpy(),
        "death_date": _dates(death["time"].reindex(subjects)).to_numpy(),
    })}
    used = code.isin([codes.BIRTH, codes.DEATH]) | code.str.startswith(codes.SEX_PREFIX) | code.str.startswith(
        codes.SITE_PREFIX)

    def rows(mask: pd.Series) -> pd.DataFrame:
        nonlocal used
        used = used | mask
        return ev[mask.to_numpy()].reset_index(drop=True)

    def prefixed(prefix: str) -> pd.DataFrame:
        return rows(code.str.startswith(prefix))

    v = prefixed("VISIT//")
    tables["visits"] = pd.DataFrame({"subject_id": v["subject_id"], "visit_date": _dates(v["time"]),
                                     "visit_type": v["code"].str.removeprefix("VISIT//")})
    d = prefixed(codes.DX_PREFIX)
    tables["diagnoses"] = pd.DataFrame({"subject_id": d["subject_id"], "date": _dates(d["time"]),
                                        "icd10": d["code"].str.removeprefix(codes.DX_PREFIX)})
    lab = prefixed(codes.LAB_PREFIX)
    tables["labs"] = pd.DataFrame({"subject_id": lab["subject_id"], "date": _dates(lab["time"]),
                                   "test": lab["code"].str.removeprefix(codes.LAB_PREFIX),
                                   "value": lab["numeric_value"], "unit": None})
    rx = prefixed(codes.RX_PREFIX)
    tables["medications"] = pd.DataFrame({"subject_id": rx["subject_id"], "date": _dates(rx["time"]),
                                          "drug": rx["code"].str.removeprefix(codes.RX_PREFIX)})
    da = rows(code == codes.CDAI)
    tables["disease_activity"] = pd.DataFrame({"subject_id": da["subject_id"], "date": _dates(da["time"]),
                                               "cdai": da["numeric_value"]})
    tables["reports"] = _reports_table(rows(code == codes.BIOPSY_REPORT), report_labels)
    o = prefixed("EVENT//")
    tables["outcomes"] = pd.DataFrame({"subject_id": o["subject_id"], "date": _dates(o["time"]),
                                       "event": o["code"].str.removeprefix("EVENT//")})

    timed_static = ev["time"].isna().to_numpy() & ~(code.str.startswith(codes.SEX_PREFIX) | code.str.startswith(
        codes.SITE_PREFIX)).to_numpy()
    left = ~used.to_numpy() | timed_static
    if left.any():
        raise DataValidationError(
            "has events the extract layout cannot hold (unknown code prefix, or a timed event without a time)",
            file="events", column="code", n_rows=int(left.sum()), subject_ids=first_ids(sid[left]),
            hint="Use the codes in ehrseq.codes, or write MEDS (write_meds) instead.",
        )
    written = {}
    for name, df in tables.items():
        path = out_dir / f"{name}.csv"
        df.to_csv(path, index=False)
        written[name] = path
    return written


def _reports_table(r: pd.DataFrame, labels: pd.DataFrame | None) -> pd.DataFrame:
    out = pd.DataFrame({"subject_id": r["subject_id"], "time": r["time"], "text": r["text_value"]})
    out["_k"] = out.groupby(["subject_id", "time"]).cumcount()
    label_cols: list[str] = []
    if labels is not None and len(labels):
        lab = labels.copy()
        lab["time"] = lab["time"].astype("datetime64[us]")
        lab["subject_id"] = lab["subject_id"].astype("int64")
        lab = lab.sort_values(["subject_id", "time"], kind="stable").reset_index(drop=True)
        lab["_k"] = lab.groupby(["subject_id", "time"]).cumcount()
        label_cols = [c for c in codes.BIOPSY_LABELS if c in lab.columns]
        keep = ["subject_id", "time", "_k", *label_cols] + (["report_id"] if "report_id" in lab.columns else [])
        out = out.merge(lab[keep], on=["subject_id", "time", "_k"], how="left")
    if "report_id" not in out.columns or out["report_id"].isna().any():
        generated = "R" + out["subject_id"].astype(str) + "-" + out.groupby("subject_id").cumcount().astype(str)
        out["report_id"] = out["report_id"].fillna(generated) if "report_id" in out.columns else generated
    cols = {"subject_id": out["subject_id"], "date": _dates(out["time"]), "report_id": out["report_id"],
            "text": out["text"]}
    for c in label_cols:
        cols[c] = out[c].astype("Int64")
    return pd.DataFrame(cols)


__all__ = ["TABLES", "load_schema", "check_table", "read_extract_tables", "read_extract",
           "write_extract"]
