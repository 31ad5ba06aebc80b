"""Code maps: rename one site's codes to another's as events are read (``--code-map FILE``, ``code_map=``).

A model trained at one site reads a second site's data through its own frozen vocabulary; codes it has never
seen (local lab codes, ICD-9 where it learned ICD-10) are invisible to it. A code map renames them first.

File formats (source code -> target code, one entry per source code):

- CSV with a header row and the columns ``source_code,target_code`` (or ``source,target``); other columns, such
  as a description, are ignored.
- YAML: a mapping ``{source: target}``, at the top level or under a ``code_map:`` key.

The map is applied once, to every row at the same time (``A -> B`` and ``B -> A`` swap codes; nothing is chained).
Source codes absent from the data are fine (a map written for several sites); the counts say how many rows
were renamed. Only codes change: values and units do not (a CRP in mg/dL stays in mg/dL).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ehrseq.errors import DataValidationError
from ehrseq.io.guards import atomic_file

log = logging.getLogger(__name__)

COLUMNS = (("source_code", "target_code"), ("source", "target"))
SUFFIXES = (".csv", ".yaml", ".yml")
_HINT = ("Write a CSV with columns source_code,target_code (one row per source code) or a YAML mapping "
         "{source: target}.")


def _rows_text(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:5])
    return shown + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")


def _from_pairs(pairs: list[tuple[int, Any, Any]], file: str, what: str) -> dict[str, str]:
    """Check (position, source, target) pairs and build the mapping; ``what`` names a position (row, entry)."""
    empty = [i for i, s, t in pairs if not isinstance(s, str) or not isinstance(t, str) or not s.strip()
             or not t.strip()]
    if empty:
        raise DataValidationError(f"{len(empty)} {what}(s) have an empty or non-text source or target code "
                                  f"({what}s {_rows_text(empty)})", file=file, n_rows=len(empty), hint=_HINT)
    out: dict[str, str] = {}
    first: dict[str, int] = {}
    clash: list[int] = []
    for i, s, t in pairs:
        s, t = s.strip(), t.strip()
        if s in out and out[s] != t:
            clash.append(i)
            continue
        out.setdefault(s, t)
        first.setdefault(s, i)
    if clash:
        raise DataValidationError(f"{len(clash)} {what}(s) give a source code a second, different target "
                                  f"({what}s {_rows_text(clash)})", file=file, n_rows=len(clash),
                                  hint="Keep one target per source code.")
    if not out:
        raise DataValidationError("the code map holds no entries", file=file, hint=_HINT)
    return out


def _read_csv(p: Path) -> dict[str, str]:
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            cols = next(((s, t) for s, t in COLUMNS if s in header and t in header), None)
            if cols is None:
                raise DataValidationError("the header has no source_code and target_code columns", file=str(p),
                                          column="source_code", hint=_HINT)
            si, ti = header.index(cols[0]), header.index(cols[1])
            pairs = []
            for line, row in enumerate(reader, start=2):
                if not any(cell.strip() for cell in row):
                    continue  # blank line
                src = row[si] if si < len(row) else None
                tgt = row[ti] if ti < len(row) else None
                pairs.append((line, src, tgt))
    except UnicodeDecodeError as e:
        raise DataValidationError("is not UTF-8 text", file=str(p), hint=_HINT) from e
    except csv.Error as e:
        raise DataValidationError(f"cannot be parsed as CSV ({type(e).__name__})", file=str(p), hint=_HINT) from e
    return _from_pairs(pairs, str(p), "row")


def _read_yaml(p: Path) -> dict[str, str]:
    import yaml

    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DataValidationError(f"cannot be parsed as YAML ({type(e).__name__})", file=str(p), hint=_HINT) from e
    if isinstance(doc, dict) and set(doc) == {"code_map"}:
        doc = doc["code_map"]
    if not isinstance(doc, dict):
        raise DataValidationError("is not a YAML mapping of source code to target code", file=str(p),
                                  column="code_map", hint=_HINT)
    return _from_pairs([(i, s, t) for i, (s, t) in enumerate(doc.items(), start=1)], str(p), "entry")


def read_code_map(path: str | Path) -> dict[str, str]:
    """Read a code map file (CSV or YAML, see the module docstring) into ``{source_code: target_code}``.

    Raises :class:`~ehrseq.errors.DataValidationError` for a missing or unreadable file, missing columns,
    empty codes, or a source code given two different targets (the message names row numbers, never codes).
    """
    p = Path(path)
    if not p.is_file():
        raise DataValidationError("code map file does not exist", file=str(p), hint=_HINT)
    if p.suffix.lower() not in SUFFIXES:
        raise DataValidationError(f"a code map is a .csv, .yaml or .yml file, not '{p.suffix}'", file=str(p),
                                  hint=_HINT)
    return _read_csv(p) if p.suffix.lower() == ".csv" else _read_yaml(p)


def resolve_code_map(code_map: str | Path | Mapping[str, str] | None) -> dict[str, str] | None:
    """A code map from a file path or a mapping (checked as a file would be); None stays None."""
    if code_map is None:
        return None
    if isinstance(code_map, (str, Path)):
        return read_code_map(code_map)
    if isinstance(code_map, Mapping):
        return _from_pairs([(i, s, t) for i, (s, t) in enumerate(code_map.items(), start=1)], "code_map", "entry")
    raise TypeError(f"code_map must be a path or a mapping, not {type(code_map).__name__}")


def apply_code_map(events: pd.DataFrame, mapping: Mapping[str, str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rename ``events['code']`` by ``mapping``; returns (new events, counts).

    counts: ``rows_remapped`` (rows whose code changed), ``codes_remapped`` (distinct source codes found),
    ``entries`` (map size), ``entries_not_in_data``, and ``per_code`` (source code -> rows renamed; the map's own
    codes). Order, dtypes and every other column are kept; the input frame is not changed. The totals are logged.
    """
    if "code" not in events:
        raise DataValidationError("events have no 'code' column", column="code")
    inv, uniq = pd.factorize(events["code"].to_numpy(dtype=object), use_na_sentinel=True)
    uniq = np.asarray(uniq, dtype=object)
    target = np.array([mapping.get(c, c) if isinstance(c, str) else c for c in uniq], dtype=object)
    changed = target != uniq
    per_code_rows = np.bincount(inv[inv >= 0], minlength=len(uniq))
    per_code = {str(uniq[i]): int(per_code_rows[i]) for i in np.flatnonzero(changed)}
    out = events.copy()
    if changed.any():
        new = np.where(inv >= 0, target[np.maximum(inv, 0)], None)
        out["code"] = pd.array(new, dtype=events["code"].dtype if isinstance(events["code"].dtype,
                                                                             pd.StringDtype) else "string")
    present = set(str(c) for c in uniq if isinstance(c, str))
    counts = {"rows_remapped": int(sum(per_code.values())), "codes_remapped": len(per_code),
              "entries": len(mapping), "entries_not_in_data": int(sum(1 for s in mapping if s not in present)),
              "per_code": per_code}
    log.info("code map: %d rows of %d source codes renamed; %d of %d map entries not in the data",
             counts["rows_remapped"], counts["codes_remapped"], counts["entries_not_in_data"], counts["entries"])
    return out, counts


def write_code_map(mapping: Mapping[str, str], path: str | Path) -> Path:
    """Write ``mapping`` as a code map CSV (source_code,target_code), sorted by source code."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(p) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS[0])
        for s in sorted(mapping):
            w.writerow([s, mapping[s]])
    return p


__all__ = ["apply_code_map", "read_code_map", "resolve_code_map", "write_code_map"]
