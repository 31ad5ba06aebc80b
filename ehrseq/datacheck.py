"""What a researcher wants to know about a dataset before training (``ehrseq validate``).

:func:`summarize_dataset` reads the data exactly as training would (a MEDS root, a MEDS Parquet file or
shard directory, or an EHR-extract directory; the same readers and validation) and returns a
JSON-serialisable dict of counts; :func:`format_summary` turns it into aligned plain text.

Privacy: the summary holds counts, the dates of the time range, metadata names and codes, never another cell
value. A code (or code prefix) is named only when it occurs in at least ``min_code_events`` events of at least
``min_code_subjects`` subjects: a rare code can carry an identifier. Rare codes are counted, not named. With
two or more sites (SITE// static codes) a site comparison follows (:mod:`ehrseq.io.site_summary`); its value
quartiles are aggregates over many values and subjects (its module says how many).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ehrseq import codes as C
from ehrseq.errors import DataValidationError
from ehrseq.io.extract import read_extract
from ehrseq.io.meds import EventsResult, read_meds, read_subject_splits
from ehrseq.io.site_summary import compare_sites, format_sites

MIN_CODE_EVENTS = 5
MIN_CODE_SUBJECTS = 2
TOP = 10
# Same default as FinetuneConfig.max_unmatched_label_fraction (not imported: ehrseq.config pulls in torch).
MAX_UNMATCHED_LABEL_FRACTION = 0.05
SEX_PREFIXES = ("SEX//", "GENDER//")


def _is_extract(p: Path) -> bool:
    return p.is_dir() and any((p / f"patients.{ext}").exists() for ext in ("csv", "parquet"))


def _read(p: Path, column_map: Mapping[str, str] | None) -> tuple[EventsResult, str]:
    if not p.exists():
        raise DataValidationError("path does not exist", file=str(p),
                                  hint="Pass a MEDS root, a MEDS Parquet file or shard directory, or an "
                                       "EHR-extract directory (with patients.csv).")
    if _is_extract(p):
        if column_map:
            raise DataValidationError(
                "--column-map applies to MEDS Parquet data only; an EHR extract's tables have fixed column "
                "names", file=str(p), column=next(iter(column_map)),
                hint="Rename the columns in the extract's files (their schemas: ehrseq.io.load_schema), "
                     "or drop --column-map.")
        return read_extract(p), "extract"
    kind = "meds_root" if p.is_dir() and (p / "data").is_dir() else "meds_files"
    return read_meds(p, column_map=column_map), kind


def _minmed(x: np.ndarray) -> dict[str, float]:
    return {"min": float(np.min(x)), "median": float(np.median(x)), "max": float(np.max(x))}


class _Codes:
    """Per-code and per-prefix event and subject counts, and which of them may be named."""

    def __init__(self, events: pd.DataFrame, min_events: int, min_subjects: int) -> None:
        self.idx, uniq = pd.factorize(events["code"].to_numpy(dtype=object))
        self.codes = np.asarray(uniq, dtype=object)
        sid = events["subject_id"].to_numpy()
        self.sid = sid
        n = len(self.codes)
        self.events = np.bincount(self.idx, minlength=n)
        self.subjects = self._subjects(self.idx, n)
        self.ok = (self.events >= min_events) & (self.subjects >= min_subjects)
        pidx, puniq = pd.factorize(pd.Series(self.codes).str.split("//", n=1).str[0].to_numpy(dtype=object))
        self.prefix_of = pidx  # code index -> prefix index
        self.prefixes = np.asarray(puniq, dtype=object)
        row_prefix = pidx[self.idx]
        self.prefix_events = np.bincount(row_prefix, minlength=len(puniq))
        self.prefix_subjects = self._subjects(row_prefix, len(puniq))
        self.prefix_ok = (self.prefix_events >= min_events) & (self.prefix_subjects >= min_subjects)

    def _subjects(self, idx: np.ndarray, n: int) -> np.ndarray:
        pairs = pd.DataFrame({"i": idx, "s": self.sid}).drop_duplicates()
        return np.bincount(pairs["i"].to_numpy(), minlength=n)

    def table(self, mask: np.ndarray, counts: np.ndarray, top: int = TOP) -> tuple[list[dict[str, Any]], int]:
        """The nameable codes under ``mask`` by count (at most ``top``), and how many more were left out."""
        sel = np.flatnonzero(mask & (counts > 0))
        named = sel[self.ok[sel]]
        named = named[np.lexsort((self.codes[named].astype(str), -counts[named]))][:top]
        rows = [{"code": str(self.codes[i]), "events": int(counts[i]), "subjects": int(self.subjects[i])}
                for i in named]
        return rows, int(len(sel) - len(rows))


def _prefix_table(c: _Codes, row_mask: np.ndarray | None = None, top: int = TOP) -> dict[str, Any]:
    rows_prefix = c.prefix_of[c.idx] if row_mask is None else c.prefix_of[c.idx[row_mask]]
    counts = np.bincount(rows_prefix, minlength=len(c.prefixes))
    sel = np.flatnonzero(counts > 0)
    named = sel[c.prefix_ok[sel]]
    named = named[np.lexsort((c.prefixes[named].astype(str), -counts[named]))][:top]
    shown = [{"prefix": str(c.prefixes[i]), "events": int(counts[i])} for i in named]
    return {"top": shown, "others": int(len(sel) - len(shown)),
            "other_events": int(counts.sum() - sum(r["events"] for r in shown))}


def _coverage(events: pd.DataFrame, mask: np.ndarray, n_subjects: int) -> dict[str, int]:
    return {"events": int(mask.sum()), "subjects": int(events.loc[mask, "subject_id"].nunique()),
            "of_subjects": n_subjects}


def _conventions(events: pd.DataFrame, c: _Codes, n_subj: int, warnings: list[str]) -> dict[str, Any]:
    names = c.codes.astype(str)
    out: dict[str, Any] = {}
    for key, name in (("birth", C.BIRTH), ("death", C.DEATH)):
        m = (names == name)[c.idx]
        out[key] = {"code": name, **_coverage(events, m, n_subj)} if m.any() else None
    birth = out["birth"]
    if birth is None:
        warnings.append(f"no {C.BIRTH} events: ages (BEHRT age embeddings, static features) are unavailable")
    elif birth["subjects"] < n_subj:
        warnings.append(f"{n_subj - birth['subjects']} subjects have no {C.BIRTH} event")
    for key, prefixes in (("sex", SEX_PREFIXES), ("site", (C.SITE_PREFIX,))):
        found = [(p, np.char.startswith(names, p)) for p in prefixes]
        found = [(p, m[c.idx]) for p, m in found if m.any()]
        if not found:
            out[key] = None
            continue
        prefix, m = max(found, key=lambda pm: int(pm[1].sum()))
        per_code = np.bincount(c.idx[m], minlength=len(c.codes))
        values, hidden = c.table(per_code > 0, per_code)
        several = int((events.loc[m].groupby("subject_id")["code"].nunique() > 1).sum())
        out[key] = {"prefix": prefix, **_coverage(events, m, n_subj), "codes": values, "codes_not_shown": hidden,
                    "subjects_with_several": several}
        if out[key]["subjects"] < n_subj:
            warnings.append(f"{n_subj - out[key]['subjects']} subjects have no {prefix} code")
        if several:
            warnings.append(f"{several} subjects have more than one {prefix} code")
    sex = out["sex"]
    if sex is None:
        warnings.append("no SEX// or GENDER// codes: static features carry no sex")
    return out


def _code_metadata(meta: Path | None, c: _Codes, warnings: list[str]) -> dict[str, Any]:
    path = meta / "codes.parquet" if meta is not None else None
    if path is None or not path.is_file():
        return {"present": False}
    try:
        table = pq.read_table(path, columns=["code"])
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise DataValidationError(f"code metadata cannot be read ({type(e).__name__})", file=str(path),
                                  column="code", hint="Rewrite it as MEDS codes.parquet (code, description, "
                                                      "parent_codes), or remove it.") from e
    known = set(table.column("code").drop_null().to_pylist())
    missing = np.array([str(x) not in known for x in c.codes], dtype=bool)
    shown, hidden = c.table(missing, c.events)
    if missing.any():
        warnings.append(f"{int(missing.sum())} codes in the data are not in {path.name}")
    return {"present": True, "file": str(path), "codes_in_metadata": len(known),
            "codes_without_metadata": int(missing.sum()), "events_without_metadata": int(c.events[missing].sum()),
            "examples": shown, "examples_not_shown": hidden}


def _splits(root: Path, meta: Path | None, events: pd.DataFrame, warnings: list[str]) -> dict[str, Any]:
    if meta is None or not (meta / "subject_splits.parquet").is_file():
        warnings.append("no metadata/subject_splits.parquet: training will make a random patient split")
        return {"present": False}
    s = read_subject_splits(root)
    data_ids = pd.Index(pd.unique(events["subject_id"]))
    in_data = s["subject_id"].isin(data_ids)
    sizes = s.loc[in_data, "split"].value_counts()
    without = int((~data_ids.isin(s["subject_id"])).sum())
    if without:
        warnings.append(f"{without} subjects in the data have no split (training leaves them out)")
    return {"present": True, "sizes": {k: int(sizes.get(k, 0)) for k in ("train", "tuning", "held_out")},
            "subjects_without_split": without, "split_subjects_not_in_data": int((~in_data).sum())}


def _dataset_json(meta: Path | None) -> dict[str, Any] | None:
    path = meta / "dataset.json" if meta is not None else None
    if path is None or not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise DataValidationError(f"is not valid JSON ({type(e).__name__})", file=str(path),
                                  hint="Fix or remove metadata/dataset.json.") from e
    if not isinstance(d, dict):
        raise DataValidationError("is not a JSON object", file=str(path), hint="Fix or remove it.")
    keys = ("dataset_name", "dataset_version", "meds_version")
    return {k: str(d[k]) for k in keys if d.get(k) is not None}


def _labels(path: str | Path, events: pd.DataFrame, kind: str | None, max_unmatched: float) -> dict[str, Any]:
    from ehrseq.tasks.label_files import match_labels, read_task_labels

    lab = read_task_labels(path, kind=kind)
    f = lab.frame
    out: dict[str, Any] = {"file": str(path), "name": lab.spec.name, "kind": lab.spec.kind, "rows": len(f),
                           "subjects": int(f["subject_id"].nunique()),
                           "rows_per_subject": _minmed(f.groupby("subject_id").size().to_numpy()),
                           "prediction_time": {"first": str(f["prediction_time"].min().date()),
                                               "last": str(f["prediction_time"].max().date())}}
    if lab.spec.kind == "binary":
        out["positive_rate"] = float(f["boolean_value"].mean())
    elif lab.spec.kind == "regression":
        out["value_range"] = _minmed(f["float_value"].to_numpy())
    elif lab.spec.kind == "survival":
        out["event_rate"] = float(f["event"].mean())
        out["duration_days"] = _minmed(f["duration"].to_numpy())
    elif lab.spec.kind == "multiclass":
        out["classes"] = len(lab.spec.classes or ())
        out["largest_class_share"] = float(f["integer_value"].value_counts(normalize=True).max())
    _, counts = match_labels(lab, events, max_unmatched_fraction=max_unmatched, file=str(path))
    out["match"] = counts
    return out


def summarize_dataset(
    path: str | Path,
    *,
    column_map: Mapping[str, str] | None = None,
    labels: str | Path | None = None,
    label_kind: str | None = None,
    min_code_events: int = MIN_CODE_EVENTS,
    min_code_subjects: int = MIN_CODE_SUBJECTS,
    max_unmatched_label_fraction: float = MAX_UNMATCHED_LABEL_FRACTION,
) -> dict[str, Any]:
    """Read a dataset as training would and return what a researcher should know about it (JSON-serialisable).

    ``labels``: a MEDS label file or directory, summarised and matched against the events (``label_kind``
    overrides its kind, e.g. ``"survival"``). Raises :class:`~ehrseq.errors.DataValidationError` (a subclass
    of EhrseqError) for data training would refuse. Codes are named only when they occur in at least
    ``min_code_events`` events of ``min_code_subjects`` subjects.
    """
    p = Path(path)
    res, kind = _read(p, column_map)
    events, rep = res.events, res.report
    if len(events) == 0:
        raise DataValidationError("no subject has a timed event (only static rows)", file=str(p),
                                  n_rows=rep.rows_read, hint="Check the export's time column.")
    warnings: list[str] = []
    n_subj = int(events["subject_id"].nunique())
    c = _Codes(events, min_code_events, min_code_subjects)
    time = events["time"]
    timed = time.notna().to_numpy()
    static = ~timed
    t = time[timed]
    clinical = t[(events.loc[timed, "code"] != C.BIRTH).to_numpy()]
    per_subject = events.groupby("subject_id").size().to_numpy()
    has_num = events["numeric_value"].notna().to_numpy()
    num_counts = np.bincount(c.idx[has_num], minlength=len(c.codes))
    num_top, _ = c.table(num_counts > 0, num_counts, top=5)
    repairs = {k: v for k, v in rep.counts().items()
               if v and k not in ("rows_read", "rows_out", "subjects_out", "duplicates_dropped",
                                  "rows_moved_by_sort", "times_parsed_from_text")}
    if rep.duplicates_dropped:
        warnings.append(f"{rep.duplicates_dropped:,} exact duplicate rows were dropped (one copy of each kept)")
    meta = p / "metadata" if kind != "extract" and (p / "metadata").is_dir() else None
    summary: dict[str, Any] = {
        "source": {"path": str(p), "kind": kind, "files": len(rep.files)},
        "dataset": _dataset_json(meta),
        "subjects": n_subj,
        "rows_read": int(rep.rows_read),
        "events": len(events),
        "duplicates_dropped": int(rep.duplicates_dropped),
        "repairs": repairs,
        "distinct_codes": len(c.codes),
        "code_prefixes": _prefix_table(c),
        "time_range": {"first": str(t.min().date()), "last": str(t.max().date()),
                       "first_excluding_birth": str(clinical.min().date()) if len(clinical) else None},
        "static": {"rows": int(static.sum()), "subjects": int(events.loc[static, "subject_id"].nunique()),
                   "prefixes": _prefix_table(c, static)},
        "nulls": {col: int(events[col].isna().sum()) for col in events.columns},
        "numeric": {"events_with_value": int(has_num.sum()), "share": float(has_num.mean()),
                    "codes_with_values": int((num_counts > 0).sum()), "top_codes": num_top},
        "events_per_subject": _minmed(per_subject),
        "code_metadata": _code_metadata(meta, c, warnings),
        "subject_splits": _splits(p, meta, events, warnings),
        "conventions": _conventions(events, c, n_subj, warnings),
        "labels": (_labels(labels, events, label_kind, max_unmatched_label_fraction) if labels is not None
                   else None),
        "sites": compare_sites(events, min_code_events=min_code_events, min_code_subjects=min_code_subjects,
                               warnings=warnings),
        "codes_not_shown": int((~c.ok).sum()),
        "code_rule": {"min_events": min_code_events, "min_subjects": min_code_subjects},
        "warnings": warnings,
    }
    if kind == "extract" and res.report_labels is not None:
        summary["report_labels"] = {"rows": len(res.report_labels),
                                    "columns": [x for x in C.BIOPSY_LABELS if x in res.report_labels.columns]}
    return summary


# ------------------------------------------------------------------------------------------ text


def _n(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:,.2f}"


def _mm(d: Mapping[str, float]) -> str:
    return f"min {_n(d['min'])}, median {_n(d['median'])}, max {_n(d['max'])}"


def _kv(rows: list[tuple[str, str]], indent: str = "") -> list[str]:
    w = max(len(k) for k, _ in rows)
    return [f"{indent}{k:<{w}}  {v}" for k, v in rows]


def _codes_line(rows: list[dict[str, Any]], hidden: int) -> str:
    text = ", ".join(f"{r['code']} ({_n(r['events'])})" for r in rows) or "none named"
    return text + (f"; {hidden} more not named" if hidden else "")


def _prefix_lines(table: Mapping[str, Any], what: str = "events") -> list[str]:
    rows = [(r["prefix"], f"{_n(r['events']):>10} {what}") for r in table["top"]]
    if table["others"]:
        other = f"({table['others']} other prefix{'es' if table['others'] != 1 else ''})"
        rows.append((other, f"{_n(table['other_events']):>10} {what}"))
    return _kv(rows, "  ") if rows else []


def format_summary(summary: Mapping[str, Any]) -> str:
    """Plain-text, aligned rendering of :func:`summarize_dataset`'s dict, for a terminal."""
    s = summary
    src, ds = s["source"], s["dataset"]
    kind = {"meds_root": "MEDS root", "meds_files": "MEDS Parquet", "extract": "EHR extract"}[src["kind"]]
    head = [("data", f"{src['path']} ({kind}, {src['files']} file{'s' if src['files'] != 1 else ''})")]
    if ds:
        head.append(("dataset", ", ".join(f"{k.removeprefix('dataset_')} {v}" for k, v in ds.items())))
    tr = s["time_range"]
    rng = f"{tr['first']} .. {tr['last']}"
    if tr["first_excluding_birth"] and tr["first_excluding_birth"] != tr["first"]:
        rng += f" (first event other than {C.BIRTH}: {tr['first_excluding_birth']})"
    num = s["numeric"]
    head += [
        ("subjects", _n(s["subjects"])),
        ("events", f"{_n(s['events'])} ({_n(s['rows_read'])} {'table ' if src['kind'] == 'extract' else ''}rows read, "
                   f"{_n(s['duplicates_dropped'])} exact duplicates dropped)"),
        ("distinct codes", f"{_n(s['distinct_codes'])} ({_n(s['codes_not_shown'])} rare, never named)"),
        ("time range", rng),
        ("events/subject", _mm(s["events_per_subject"])),
        ("numeric values", f"{num['share']:.1%} of events ({_n(num['events_with_value'])}); "
                           f"{_n(num['codes_with_values'])} codes carry numbers"),
    ]
    if s["repairs"]:
        head.append(("repairs", ", ".join(f"{k} {_n(v)}" for k, v in s["repairs"].items())))
    out = _kv(head)
    if num["top_codes"]:
        out += _kv([("  most numeric", _codes_line(num["top_codes"], 0))])
    out += ["", "code prefixes (before the first //):", *_prefix_lines(s["code_prefixes"])]
    st = s["static"]
    out += ["", f"static rows (time null): {_n(st['rows'])} rows, {_n(st['subjects'])} subjects",
            *_prefix_lines(st["prefixes"], "rows")]
    out += ["", "nulls per column:", *_kv([(k, _n(v)) for k, v in s["nulls"].items()], "  ")]

    conv = s["conventions"]
    rows = []
    for key in ("birth", "death", "sex", "site"):
        d = conv[key]
        if d is None:
            rows.append((key, "not found"))
            continue
        text = f"{d.get('code') or d['prefix']:<12} {d['subjects']}/{d['of_subjects']} subjects"
        if "codes" in d:
            text += f"  [{_codes_line(d['codes'], d['codes_not_shown'])}]"
            if d["subjects_with_several"]:
                text += f"  {d['subjects_with_several']} subjects with several"
        rows.append((key, text))
    out += ["", "conventions:", *_kv(rows, "  ")]

    cm = s["code_metadata"]
    if cm["present"]:
        text = (f"{_n(cm['codes_in_metadata'])} codes in {Path(cm['file']).name}; "
                f"{_n(cm['codes_without_metadata'])} codes in the data have none "
                f"({_n(cm['events_without_metadata'])} events)")
        if cm["codes_without_metadata"]:
            text += f": {_codes_line(cm['examples'], cm['examples_not_shown'])}"
    else:
        text = "no code metadata"
    sp = s["subject_splits"]
    if sp["present"]:
        split = ", ".join(f"{k} {_n(v)}" for k, v in sp["sizes"].items())
        split += (f"; {_n(sp['subjects_without_split'])} subjects without a split, "
                  f"{_n(sp['split_subjects_not_in_data'])} split rows for subjects not in the data")
    else:
        split = "none (training makes a random patient split)"
    tail = [("code metadata", text), ("subject splits", split)]
    if s.get("report_labels"):
        rl = s["report_labels"]
        tail.append(("report labels", f"{_n(rl['rows'])} rows ({', '.join(rl['columns'])})"))
    out += ["", *_kv(tail)]
    if s["labels"]:
        out += ["", *_label_lines(s["labels"])]
    if s.get("sites"):
        out += ["", *format_sites(s["sites"])]
    if s["warnings"]:
        out += ["", "warnings:", *[f"  - {w}" for w in s["warnings"]]]
    rule = s["code_rule"]
    out += ["", f"(codes are named only when seen in >= {rule['min_events']} events of >= {rule['min_subjects']} "
                "subjects)"]
    return "\n".join(out)


def _label_lines(lab: Mapping[str, Any]) -> list[str]:
    rows = [("file", lab["file"]), ("task", f"{lab['name']} ({lab['kind']})"),
            ("rows", f"{_n(lab['rows'])} for {_n(lab['subjects'])} subjects; rows/subject "
                     f"{_mm(lab['rows_per_subject'])}"),
            ("prediction_time", f"{lab['prediction_time']['first']} .. {lab['prediction_time']['last']}")]
    if "positive_rate" in lab:
        rows.append(("positive rate", f"{lab['positive_rate']:.1%}"))
    if "value_range" in lab:
        rows.append(("values", _mm(lab["value_range"])))
    if "event_rate" in lab:
        rows.append(("event rate", f"{lab['event_rate']:.1%}; duration days {_mm(lab['duration_days'])}"))
    if "classes" in lab:
        rows.append(("classes", f"{lab['classes']}; largest {lab['largest_class_share']:.1%}"))
    m = lab["match"]
    rows.append(("matched", f"{_n(m['kept'])} of {_n(m['rows'])} kept; dropped {_n(m['unknown_subject'])} of "
                            f"unknown subjects, {_n(m['no_history'])} with no event at or before prediction_time"))
    return ["labels:", *_kv(rows, "  ")]


__all__ = ["summarize_dataset", "format_summary", "MIN_CODE_EVENTS", "MIN_CODE_SUBJECTS"]
