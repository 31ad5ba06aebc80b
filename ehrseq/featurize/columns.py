"""The per-event and per-row columns of :meth:`ehrseq.featurize.featurizer.Featurizer.transform`, computed with
few whole-stream passes, and the array statistics of ``fit``.

Everything that depends on an event's time only (age, day-visit number, gap bin) is computed once per
distinct (subject, time) group of the stream (:class:`ehrseq.featurize.steps.Timeline`, about a seventh of the
events on the RA cohort) and repeated over the group's events; per-code lookups index small tables by the
factorized code; the few codes looked up by position (baseline serology) are found with one pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ehrseq.featurize.steps import Timeline
from ehrseq.featurize.stream import lookup
from ehrseq.io.conventions import normalise_sex
from ehrseq.io.rowkeys import is_sorted

US_PER_DAY = 86_400 * 1_000_000
US_PER_YEAR = 365.25 * US_PER_DAY
INT64_MIN = np.iinfo(np.int64).min


def time_features(tl: Timeline, birth_sid: np.ndarray, birth_us: np.ndarray, max_age: int,
                  bin_edges_days: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per time group of ``tl``: age id (0 = unknown), day-visit number within its subject, the time bin of
    the gap before its visit, and the visit number over the whole stream. A visit is a calendar day."""
    if not len(tl.sid):
        e = np.zeros(0, np.int64)
        return e, e, e, e
    b = lookup(birth_sid, birth_us, tl.sid, INT64_MIN).astype(np.int64)
    age = np.where(b == INT64_MIN, -1.0, (tl.t - b) / US_PER_YEAR)
    age_id = np.clip(np.floor(age), -1, max_age - 1).astype(np.int64) + 1
    day = tl.t // US_PER_DAY
    new_visit = tl.new_subj | np.r_[True, day[1:] != day[:-1]]
    visit_global = np.cumsum(new_visit) - 1
    visit_no = visit_global - np.maximum.accumulate(np.where(tl.new_subj, visit_global, 0))
    gap = np.where(tl.new_subj, 0, day - np.r_[day[:1], day[:-1]])  # meaningful at visit starts
    delta = (np.searchsorted(np.asarray(bin_edges_days), gap[new_visit], side="right") + 1)[visit_global]
    return (age_id, visit_no.astype(np.int64, copy=False), delta.astype(np.int64, copy=False),
            visit_global.astype(np.int64, copy=False))


def bin_table(edges: list[list[float] | None]) -> tuple[np.ndarray, np.ndarray]:
    """(table, binned) for :func:`value_bins`: per distinct code k, its edges as column k of a NaN-padded
    (max edges, codes) table, and whether it is binned (``edges[k]`` not None)."""
    width = max((len(e) for e in edges if e is not None), default=0)
    table = np.full((width, len(edges)), np.nan)  # NaN padding: never at or below a value
    binned = np.zeros(len(edges), bool)
    for k, e in enumerate(edges):
        if e is not None:
            table[:len(e), k], binned[k] = e, True
    return table, binned


def value_bins(table: np.ndarray, binned: np.ndarray, c: np.ndarray, values: np.ndarray,
               valued: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """1 = no value; 2.. = quantile bin of the value within its code (:func:`bin_table` of the sorted inner
    edges), i.e. 2 + the number of the code's edges at or below the value. ``valued``: the events with a value,
    ``c`` their codes; ``out``: the int64 array to fill. The edge table is compared row by row: no sort, no loop
    over codes."""
    if out is None:
        out = np.empty(len(values), np.int64)
    out[:] = 1
    if not binned.any() or not len(valued):
        return out
    keep = binned[c]
    p, c = valued[keep], c[keep]
    v = values[p]
    n = np.full(len(p), 2, np.int64)
    for row in table:
        n += row[c] <= v
    out[p] = n
    return out


def code_positions(code_inv: np.ndarray, uniq: list[str], wanted: Sequence[str]) -> dict[str, np.ndarray]:
    """Per wanted code, the ascending stream indices of its events (empty when absent): one pass."""
    col = {c: i for i, c in enumerate(wanted)}
    lut = np.array([col.get(u, -1) for u in uniq], np.int8 if len(wanted) < 127 else np.int64)
    if not len(wanted) or not (lut >= 0).any():
        return {c: np.zeros(0, np.int64) for c in wanted}
    which = lut[code_inv]
    at = np.flatnonzero(which >= 0)
    w = which[at]
    return {c: at[w == i] for i, c in enumerate(wanted)}


def last_before_cut(rows: np.ndarray, start: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """Per label row, the position in ``rows`` (ascending stream indices) of the last one in the row's history
    ``[start, cut)``, or -1: the latest such event at or before prediction_time, the last in stream order at one
    time."""
    if not len(rows):
        return np.full(len(cut), -1, np.int64)
    k = np.searchsorted(rows, cut, side="left") - 1
    return np.where((k >= 0) & (rows[np.maximum(k, 0)] >= start), k, -1)


def sex_codes(static_sid: np.ndarray, static_inv: np.ndarray, uniq: list[str], prefixes: Sequence[str],
              subjects: np.ndarray) -> np.ndarray:
    """Per subject of ``subjects`` (sorted unique ids): 1 female, 2 male, 0 another value or none, from its first
    static row with one of ``prefixes`` (an earlier prefix wins), as :func:`ehrseq.io.conventions.sex_of` reads
    them."""
    rank = np.full(len(uniq), len(prefixes), np.int64)
    sex = np.zeros(len(uniq), np.int8)
    for k in np.unique(static_inv).tolist():
        i = next((i for i, p in enumerate(prefixes) if uniq[k].startswith(p)), None)
        if i is not None:
            rank[k] = i
            s = normalise_sex(uniq[k][len(prefixes[i]):])
            sex[k] = 1 if s == "F" else 2 if s == "M" else 0
    rows = np.flatnonzero(rank[static_inv] < len(prefixes)) if len(static_inv) else np.zeros(0, np.int64)
    if not len(rows):
        return np.zeros(len(subjects), np.int8)
    o = rows[np.lexsort((rows, rank[static_inv[rows]], static_sid[rows]))]  # by subject, prefix, frame order
    s_sid = static_sid[o]
    first = o[np.r_[True, s_sid[1:] != s_sid[:-1]]]
    return lookup(static_sid[first], sex[static_inv[first]], subjects, 0).astype(np.int8)


def first_per_subject(rows: np.ndarray, sid: np.ndarray, subjects: np.ndarray) -> np.ndarray:
    """Per subject of ``subjects`` (sorted unique ids), the first of ``rows`` (ascending stream indices of a
    subject-sorted stream) that is its event, or -1."""
    out = np.full(len(subjects), -1, np.int64)
    if not len(rows) or not len(subjects):
        return out
    first = rows[np.r_[True, sid[rows][1:] != sid[rows][:-1]]]
    k = np.minimum(np.searchsorted(subjects, sid[first]), len(subjects) - 1)
    ok = subjects[k] == sid[first]
    out[k[ok]] = first[ok]
    return out


def per_row(per_subject: list[np.ndarray], row_subject: np.ndarray) -> list[np.ndarray]:
    """``[per_subject[i] for i in row_subject]`` (rows of one subject share its array), gathered in C."""
    box = np.empty(len(per_subject), object)
    for i, a in enumerate(per_subject):
        box[i] = a
    return box[row_subject].tolist()


def log_stats(logv: tuple, codes_: list[str]) -> tuple[list[float], list[float]]:
    """Per code, mean and std of log1p(max(value, 0)) over its valued train rows in frame order (``logv``: the
    rows' stable order by code, each code's bounds in it, code -> index, the log values); 0 / 1 for a code with
    no rows."""
    order, bounds, where, lv = logv
    mean, std = [], []
    for c in codes_:
        k = where.get(c)
        v = lv[order[bounds[k]:bounds[k + 1]]] if k is not None else np.zeros(0)
        mean.append(float(v.mean()) if len(v) else 0.0)
        std.append(float(v.std()) if len(v) > 1 and v.std() > 0 else 1.0)
    return mean, std


def n_distinct(a: np.ndarray, b: np.ndarray) -> int:
    """The number of distinct (a, b) pairs."""
    if not len(a):
        return 0
    if not is_sorted(a, b):
        o = np.lexsort((b, a))
        a, b = a[o], b[o]
    return 1 + int(np.count_nonzero((a[1:] != a[:-1]) | (b[1:] != b[:-1])))


def distinct_per_code(inv: np.ndarray, n_codes: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per code index, the number of distinct (a, b) pairs among its rows."""
    if not len(inv):
        return np.zeros(n_codes, np.int64)
    o = np.lexsort((b, a, inv))
    c, a, b = inv[o], a[o], b[o]
    new = np.r_[True, (c[1:] != c[:-1]) | (a[1:] != a[:-1]) | (b[1:] != b[:-1])]
    return np.bincount(c[new], minlength=n_codes)


__all__ = ["bin_table", "code_positions", "distinct_per_code", "first_per_subject", "last_before_cut", "log_stats",
           "n_distinct", "per_row", "sex_codes", "time_features", "value_bins"]
