"""The featurizer's inputs as arrays: the timed event stream of the labelled subjects, and history cuts.

:meth:`ehrseq.featurize.featurizer.Featurizer.transform` reads the events frame once here: codes are factorized
once (every per-code lookup then maps the few distinct codes and indexes), rows are split into the timed stream
(sorted by subject, then time, stably; no sort when the frame is already in that order, as validated events
are), static rows and birth times, as arrays (no frame copy). :func:`timeline` groups the stream by (subject,
time): per-time features are computed once per group, and history cuts are searched among the groups.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ehrseq.featurize.steps import Stream, Timeline
from ehrseq.io.rowkeys import NAT, is_sorted

_KEY_LIMIT = 2.0**62  # history_cuts: subjects' time spans laid end to end must stay below this


class EventSplit(NamedTuple):
    """The labelled subjects' events: the timed stream (no birth rows), the static rows, birth times."""

    stream: Stream
    static_sid: np.ndarray  # rows with no time, in frame order: subject_id
    static_inv: np.ndarray  # and code, an index into ``stream.uniq``
    birth_sid: np.ndarray  # sorted subject ids with a birth row
    birth_us: np.ndarray  # their earliest birth time in int64 us (int64 min when their birth rows have no time)


def timeline(sid: np.ndarray, t_us: np.ndarray) -> Timeline:
    """The (subject, time) groups of a stream sorted by (subject, time)."""
    n = len(sid)
    if not n:
        e = np.zeros(0, np.int64)
        return Timeline(np.zeros(1, np.int64), e, e, e, np.zeros(0, bool))
    change = (sid[1:] != sid[:-1])
    first = np.flatnonzero(np.r_[True, change | (t_us[1:] != t_us[:-1])])
    g_sid = sid[first]
    new_subj = np.r_[True, g_sid[1:] != g_sid[:-1]]
    ext = np.r_[first, n]
    return Timeline(ext, np.diff(ext), g_sid, t_us[first], new_subj)


def _runs(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(first row, length) of each run of equal ids when ``ids`` is sorted; None when it is not."""
    if len(ids) > 1 and not bool(np.all(ids[1:] >= ids[:-1])):
        return None
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, np.int64)
    return starts, np.diff(np.r_[starts, len(ids)])


def lookup(keys: np.ndarray, values: np.ndarray, ids: np.ndarray, missing: object) -> np.ndarray:
    """Per id, ``values[i]`` where ``keys[i] == id`` (``keys`` sorted and unique), else ``missing``. One search
    per run of equal ids when ``ids`` is sorted (a subject-sorted stream: one per subject, not per event)."""
    runs = _runs(ids)
    probe = ids if runs is None else ids[runs[0]]
    if len(keys):
        k = np.minimum(np.searchsorted(keys, probe), len(keys) - 1)
        out = np.where(keys[k] == probe, values[k], missing)
    else:
        out = np.full(len(probe), missing, dtype=np.asarray(values).dtype)
    return out if runs is None else np.repeat(out, runs[1])


def factorize_codes(code: pd.Series) -> tuple[np.ndarray, list[str]]:
    """(index of each row's code in the distinct codes, the distinct codes in order of first appearance), as
    ``pd.factorize``; for an Arrow-backed string column (canonical events), pyarrow's dictionary encoding gives
    the same in less time (as int64: numpy indexes with intp)."""
    arr = code.array
    if hasattr(arr, "__arrow_array__") and not code.hasnans:
        chunked = pa.chunked_array(arr.__arrow_array__())
        if pa.types.is_string(chunked.type) or pa.types.is_large_string(chunked.type):
            enc = pc.dictionary_encode(chunked).combine_chunks() if chunked.num_chunks else None
            if enc is not None:
                return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), enc.dictionary.to_pylist()
    inv, uniq = pd.factorize(code, sort=False)
    return inv.astype(np.int64, copy=False), [str(u) for u in uniq]


def split_events(events: pd.DataFrame, subjects: np.ndarray, birth_code: str) -> EventSplit:
    """Split the events of ``subjects`` (sorted unique ids) into the timed stream, static rows and births."""
    sid = events["subject_id"].to_numpy(np.int64)
    t = events["time"].to_numpy("datetime64[us]").view(np.int64)
    code_inv, uniq_s = factorize_codes(events["code"])  # codes of unlabelled subjects are never used
    runs = _runs(sid)  # a subject-sorted frame: membership per subject, not per row
    probe = sid if runs is None else sid[runs[0]]
    labelled = lookup(subjects, np.ones(len(subjects), bool), probe, False).astype(bool)
    every = bool(labelled.all())
    if runs is not None and not every:
        labelled = np.repeat(labelled, runs[1])
    b = [k for k, u in enumerate(uniq_s) if u == birth_code]
    is_birth = code_inv == b[0] if b else np.zeros(len(sid), bool)
    timed_rows = t != NAT
    sel = timed_rows & ~is_birth if every else labelled & timed_rows & ~is_birth
    st = np.flatnonzero(~timed_rows if every else labelled & ~timed_rows)
    br = np.flatnonzero(is_birth if every else labelled & is_birth)
    keep = np.flatnonzero(sel)  # one mask scan, then gathers
    s_sid, s_t, inv = sid[keep], t[keep], code_inv[keep]
    num = events["numeric_value"]  # kept float32 when it is (canonical): float64 where a value is used
    val = num.to_numpy(np.float32 if num.dtype == np.float32 else np.float64)[keep]
    if not is_sorted(s_sid, s_t):
        order = np.lexsort((s_t, s_sid))
        s_sid, s_t, inv, val = s_sid[order], s_t[order], inv[order], val[order]
    # birth: per subject the earliest timed birth row (NaT only when none of its birth rows has a time)
    bt = t[br]
    bt = np.where(bt == NAT, np.iinfo(np.int64).max, bt)
    o = np.lexsort((bt, sid[br]))
    b_sid, bt = sid[br][o], bt[o]
    keep = np.r_[True, b_sid[1:] != b_sid[:-1]] if len(b_sid) else np.zeros(0, bool)
    b_sid, bt = b_sid[keep], bt[keep]
    return EventSplit(Stream(s_sid, s_t, inv, uniq_s, val), sid[st], code_inv[st], b_sid,
                      np.where(bt == np.iinfo(np.int64).max, NAT, bt))


def subject_bounds(ev_sid: np.ndarray, lab_sid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per label row, ``[lo, hi)``: its subject's events in the subject-sorted ``ev_sid`` (empty, at the
    insertion point, for a subject with none). Searches the distinct subjects, not every event."""
    runs = _runs(ev_sid)
    if runs is None or not len(ev_sid):
        return np.searchsorted(ev_sid, lab_sid, side="left"), np.searchsorted(ev_sid, lab_sid, side="right")
    starts, sizes = runs
    subjects = ev_sid[starts]
    pos = np.searchsorted(subjects, lab_sid)
    lo = np.r_[starts, len(ev_sid)][pos]
    at = np.minimum(pos, len(subjects) - 1)
    return lo, np.where(subjects[at] == lab_sid, lo + sizes[at], lo)


def history_cuts(ev_sid: np.ndarray, ev_t: np.ndarray, lab_sid: np.ndarray, lab_t: np.ndarray,
                 bounds: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """For each label row, the index just past the last event of its subject at or before prediction_time.

    Events must be sorted by (subject_id, time). Exact to the microsecond (an event 1 us after prediction_time
    is not history). Each subject's times are laid end to end on one int64 axis (its span, then a gap), so one
    ``searchsorted`` answers every row; when the spans do not fit in int64, a binary search per row does.
    ``bounds``: :func:`subject_bounds` of the same arrays, when the caller has it.
    """
    lo, hi = subject_bounds(ev_sid, lab_sid) if bounds is None else (bounds[0].copy(), bounds[1].copy())
    runs = _runs(ev_sid)
    if runs is not None and len(ev_sid):
        starts, sizes = runs
        t_min, t_max = ev_t[starts], ev_t[starts + sizes - 1]
        span = t_max.astype(np.float64) - t_min.astype(np.float64) + 2.0
        if float(span.sum()) < _KEY_LIMIT:
            base = np.r_[0, np.cumsum((t_max - t_min) + 2)[:-1]]  # subject s occupies base[s] + [1, span]
            key = ev_t + np.repeat(base + 1 - t_min, sizes)
            has = lo < hi
            s = np.searchsorted(starts, lo[has], side="right") - 1
            rel = np.clip(lab_t[has], t_min[s] - 1, t_max[s]) - t_min[s]  # before the first: 0 events
            out = lo.copy()
            out[has] = np.searchsorted(key, rel + base[s] + 1, side="right")
            return out
    while True:  # invariant: events [start, lo) are at or before the time, [hi, end) after it
        active = np.flatnonzero(lo < hi)
        if not len(active):
            return lo
        mid = (lo[active] + hi[active]) // 2
        before = ev_t[mid] <= lab_t[active]
        lo[active[before]] = mid[before] + 1
        hi[active[~before]] = mid[~before]


def last_at_or_before(ev_sid: np.ndarray, ev_t: np.ndarray, lab_sid: np.ndarray, lab_t: np.ndarray) -> np.ndarray:
    """Per label row, the index of its subject's last event at or before prediction_time, or -1 (events sorted
    by (subject_id, time); among events at one time, the last in stream order)."""
    cut = history_cuts(ev_sid, ev_t, lab_sid, lab_t)
    idx = cut - 1
    ok = (idx >= 0) & (ev_sid[np.maximum(idx, 0)] == lab_sid) if len(ev_sid) else np.zeros(len(lab_sid), bool)
    return np.where(ok, idx, -1)


__all__ = ["EventSplit", "factorize_codes", "history_cuts", "last_at_or_before", "lookup", "split_events",
           "subject_bounds", "timeline"]
