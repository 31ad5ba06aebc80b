"""Row order and row identity of a canonical events frame, computed on integer keys.

:func:`ehrseq.io.validate.tidy_events` needs three whole-table facts: the stable (subject_id, time) order, the
rows that repeat an earlier row exactly (``DataFrame.duplicated(keep="first")``) and the subjects with no timed
row. All three come from one pass over int64 arrays here, so a 1M-event table costs a few array operations, not
a hash of every string cell:

- the order is the identity when the rows are already sorted (MEDS shards written by ``write_meds`` are), and
  one stable ``np.lexsort`` otherwise;
- identical rows share (subject_id, time), so only rows in a (subject, time) block of two or more can repeat
  one; those are compared on (block, code, value, text, extra columns) factorized to integers, with the
  equality pandas uses (NaN equals NaN, -0.0 equals 0.0, None equals NaN in object columns).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

NAT = np.iinfo(np.int64).min  # NaT as int64


def time_keys(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(subject_id int64, time as int64 microseconds, NaT the int64 minimum) of a canonical frame."""
    sid = df["subject_id"].to_numpy(np.int64)
    t = df["time"].to_numpy().astype("datetime64[us]", copy=False).view(np.int64)
    return sid, t


def is_sorted(sid: np.ndarray, t: np.ndarray) -> bool:
    """True when the rows are already in (subject_id, time) order (NaT, the int64 minimum, first)."""
    if len(sid) < 2:
        return True
    a, b = sid[:-1], sid[1:]
    return bool(np.all((b > a) | ((b == a) & (t[1:] >= t[:-1]))))


def event_order(sid: np.ndarray, t: np.ndarray) -> np.ndarray | None:
    """The stable (subject_id, time) order of the rows, or None when they are already in it (the identity)."""
    return None if is_sorted(sid, t) else np.lexsort((t, sid))


def restrict_order(order: np.ndarray | None, keep: np.ndarray) -> np.ndarray | None:
    """The stable order of the rows ``keep`` selects, renumbered 0.. in their original order (a stable sort
    restricted to a subset is the stable sort of the subset)."""
    if order is None:
        return None
    new_pos = np.cumsum(keep) - 1
    return new_pos[order[keep[order]]]


def _codes(values: pd.Series | np.ndarray) -> np.ndarray:
    """Integer codes with pandas' equality (the codes ``DataFrame.duplicated`` compares; NA is -1).

    An Arrow-backed string column is encoded by Arrow's own hash kernel (``dictionary_encode``, a few times
    faster than ``pd.factorize`` on it): equal strings share a code, every null is -1."""
    if (isinstance(values, pd.Series) and isinstance(values.dtype, pd.StringDtype)
            and values.dtype.storage == "pyarrow"):
        arr = pa.array(values.array)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        idx = pc.fill_null(pc.dictionary_encode(arr).indices, -1)
        return idx.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return pd.factorize(values)[0].astype(np.int64, copy=False)


def _float_bits(values: np.ndarray) -> np.ndarray:
    """int64 keys of float values, equal exactly when pandas calls the floats equal (NaN == NaN, -0.0 == 0.0)."""
    v = np.asarray(values, dtype=np.float64)
    v = np.where(np.isnan(v), np.nan, v) + 0.0  # one NaN bit pattern; -0.0 + 0.0 is +0.0
    return v.view(np.int64)


def _column_codes(col: pd.Series, rows: np.ndarray) -> np.ndarray:
    if col.dtype.kind == "f":
        return _float_bits(col.to_numpy()[rows])
    if col.dtype.kind in "iub" and not isinstance(col.dtype, pd.api.extensions.ExtensionDtype):
        return col.to_numpy()[rows].astype(np.int64)
    if col.dtype == object and len(rows) and pd.isna(col.to_numpy()[rows]).all():
        return np.zeros(len(rows), np.int64)
    return _codes(col)[rows]


def duplicated_rows(df: pd.DataFrame, sid: np.ndarray, t: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """``df.duplicated(keep="first").to_numpy()`` over all columns, from the (subject, time) ``order``.

    Works in sorted order: identical rows are in one (subject, time) block there, in their original order (the
    sort is stable), so the first of them in sorted order is the first in the frame.
    """
    n = len(df)
    out = np.zeros(n, bool)
    if n < 2:
        return out
    s_sid, s_t = (sid, t) if order is None else (sid[order], t[order])
    same = (s_sid[1:] == s_sid[:-1]) & (s_t[1:] == s_t[:-1])
    if not same.any():
        return out
    cand = np.flatnonzero(np.r_[same, False] | np.r_[False, same])  # sorted positions in blocks of 2 or more
    block = np.cumsum(np.r_[True, ~same])[cand]
    rows = cand if order is None else order[cand]  # their frame positions
    done = ["subject_id", "time"]
    if "code" in df.columns:  # rows whose (block, code) is unique repeat no row: compare only the others
        code = _codes(df["code"])[rows]
        width = int(code.max()) + 2
        if int(block.max()) < (1 << 62) // width:
            pair = block * width + (code + 1)
            by_pair = np.argsort(pair, kind="stable")  # timsort: sorted by block already
            same_pair = pair[by_pair][1:] == pair[by_pair][:-1]
            if not same_pair.any():
                return out
            maybe = np.zeros(len(pair), bool)
            maybe[by_pair] = np.r_[same_pair, False] | np.r_[False, same_pair]
            rows, block = rows[maybe], pair[maybe]
            done.append("code")
    keys = [block] + [_column_codes(df[c], rows) for c in df.columns if c not in done]
    frame = pd.DataFrame({f"k{i}": k for i, k in enumerate(keys)})
    out[rows[frame.duplicated(keep="first").to_numpy()]] = True
    return out


def subjects_timed(s_sid: np.ndarray, s_t: np.ndarray) -> np.ndarray:
    """Per row of a (subject, time)-sorted stream: True when the row's subject has at least one timed row."""
    n = len(s_sid)
    if not n:
        return np.zeros(0, bool)
    starts = np.flatnonzero(np.r_[True, s_sid[1:] != s_sid[:-1]])
    # sorted with NaT first: a subject has a timed row exactly when its last row is timed
    last = np.r_[starts[1:] - 1, n - 1]
    timed = s_t[last] != NAT
    return np.repeat(timed, np.diff(np.r_[starts, n]))


def n_subjects(s_sid: np.ndarray) -> int:
    """The number of distinct subject ids in a subject-sorted array."""
    return int(len(s_sid) and 1 + np.count_nonzero(s_sid[1:] != s_sid[:-1]))


__all__ = ["duplicated_rows", "event_order", "is_sorted", "n_subjects", "restrict_order", "subjects_timed",
           "time_keys"]
