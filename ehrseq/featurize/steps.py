"""The RNN's step view of the featurizer: one vector per distinct event time, or per calendar hour / day.

A step vector is [numeric z, numeric missing] for the fitted numeric codes (log1p, standardised; a code's last
value in the step), a multi-hot over the fitted step codes, and log days since the previous step. With merged
steps (``step_every`` "hour" or "day") a label row whose prediction_time falls inside an hour / day must not
see that step's later events: such a row gets that step rebuilt from its events up to prediction_time
(:func:`open_steps`). Events are the featurizer's timed stream, sorted by (subject, time).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

US_PER_DAY = 86_400 * 1_000_000
STEP_WIDTH_US: dict[str, int | None] = {"event": None, "hour": 3_600 * 1_000_000, "day": US_PER_DAY}


class StepCodes(NamedTuple):
    """What the featurizer learned for steps: numeric codes with their log1p mean / std, multi-hot codes."""

    numeric: list[str]
    mean: list[float]
    std: list[float]
    hot: list[str]


class Stream(NamedTuple):
    """The timed events: subject, time (us), code index into ``uniq`` (the distinct codes), numeric value."""

    sid: np.ndarray
    t_us: np.ndarray
    code_inv: np.ndarray
    uniq: list[str]
    val: np.ndarray


class Steps(NamedTuple):
    """Step vectors with each step's subject, the time of its last event and the stream index of its first."""

    x: np.ndarray
    sid: np.ndarray
    t: np.ndarray
    first_event: np.ndarray


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenation of ``range(s, s + n)`` for each start ``s`` and length ``n``."""
    return np.repeat(starts - np.r_[0, np.cumsum(lengths)[:-1]], lengths) + np.arange(lengths.sum())


def _gap_feature(days: np.ndarray) -> np.ndarray:
    return np.log1p(np.maximum(days, 0)) / 5.0


def step_values(codes: StepCodes, step_idx: np.ndarray, n: int, code_inv: np.ndarray, uniq: list[str],
                val: np.ndarray) -> np.ndarray:
    """(n, F) step vectors, gap column 0, from events in time order, event ``e`` going to step ``step_idx[e]``."""
    nn, nc = len(codes.numeric), len(codes.hot)
    x = np.zeros((n, 2 * nn + nc + 1), np.float32)
    x[:, nn:2 * nn] = 1.0  # missing until seen
    num_pos = {c: i for i, c in enumerate(codes.numeric)}
    col = np.array([num_pos.get(u, np.nan) for u in uniq], np.float64)[code_inv] if uniq else np.zeros(0)
    m = np.flatnonzero(~np.isnan(col) & ~np.isnan(val))
    j = col[m].astype(np.int64)
    cell = step_idx[m] * max(nn, 1) + j
    # the last event of each (step, code): the end of each run of a stable sort (nearly in order: by step)
    by_cell = np.argsort(cell, kind="stable")
    last = by_cell[np.r_[cell[by_cell][1:] != cell[by_cell][:-1], True]] if len(cell) else by_cell
    m, j = m[last], j[last]
    x[step_idx[m], j] = (np.log1p(np.maximum(val[m], 0)) - np.asarray(codes.mean)[j]) / np.asarray(codes.std)[j]
    x[step_idx[m], nn + j] = 0.0
    hot_pos = {c: i for i, c in enumerate(codes.hot)}
    col = np.array([hot_pos.get(u, np.nan) for u in uniq], np.float64)[code_inv] if uniq else np.zeros(0)
    m = ~np.isnan(col)
    x[step_idx[m], 2 * nn + col[m].astype(np.int64)] = 1.0
    return x


def build_steps(codes: StepCodes, every: str, ev: Stream) -> Steps:
    """One step per (subject, event time) -- ``every="event"`` -- or per (subject, calendar hour / day)."""
    width = STEP_WIDTH_US[every]
    sid, t_us = ev.sid, ev.t_us
    key = t_us if width is None else t_us // width
    new = np.r_[True, (sid[1:] != sid[:-1]) | (key[1:] != key[:-1])] if len(sid) else np.zeros(0, bool)
    step_idx = np.cumsum(new) - 1
    n = int(step_idx[-1] + 1) if len(step_idx) else 0
    first = np.flatnonzero(new)
    step_sid, step_t = sid[new], (t_us[np.r_[first[1:] - 1, len(sid) - 1]] if n else t_us[:0])
    x = step_values(codes, step_idx, n, ev.code_inv, ev.uniq, ev.val)
    new_subj = np.r_[True, step_sid[1:] != step_sid[:-1]] if n else np.zeros(0, bool)
    gap = np.where(new_subj, 0, np.diff(step_t, prepend=step_t[:1]) / US_PER_DAY) if n else np.zeros(0)
    x[:, -1] = _gap_feature(gap)
    return Steps(x, step_sid, step_t, first)


def open_steps(codes: StepCodes, max_steps: int, steps: Steps, start: np.ndarray, cut: np.ndarray,
               lab_sid: np.ndarray, ev_cut: np.ndarray, ev: Stream) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(step_x, start, cut) with open steps: a row whose prediction_time falls inside a merged step (the step
    after its last whole one -- ``cut`` counts steps whose last event is at or before the time -- begins at or
    before it; ``ev_cut`` is the row's cut in the event stream) gets its own block, appended to ``step_x``: a
    copy of its last ``max_steps - 1`` whole steps, then that step rebuilt from its events up to prediction_time.
    Memory: at most ``max_steps`` step vectors per such row."""
    n_steps = len(steps.sid)
    nxt = np.minimum(cut, max(n_steps - 1, 0))
    inside = ((cut < n_steps) & (steps.sid[nxt] == lab_sid) & (steps.first_event[nxt] < ev_cut)) if n_steps \
        else np.zeros(len(lab_sid), bool)
    rows = np.flatnonzero(inside)
    if not len(rows):
        return steps.x, start, cut
    first, end = steps.first_event[cut[rows]], ev_cut[rows]  # the events of each row's open step
    e = _ranges(first, end - first)
    part = step_values(codes, np.repeat(np.arange(len(rows)), end - first), len(rows), ev.code_inv[e], ev.uniq,
                       ev.val[e])
    has_prev = cut[rows] > start[rows]
    gap = (ev.t_us[end - 1] - steps.t[np.maximum(cut[rows] - 1, 0)]) / US_PER_DAY
    part[:, -1] = _gap_feature(np.where(has_prev, gap, 0.0))
    lo = np.maximum(start[rows], cut[rows] - (max_steps - 1))
    n_keep = cut[rows] - lo
    at = np.r_[0, np.cumsum(n_keep + 1)[:-1]]  # where each row's block begins
    block = np.empty((int(n_keep.sum()) + len(rows), steps.x.shape[1]), np.float32)
    block[_ranges(at, n_keep)] = steps.x[_ranges(lo, n_keep)]
    block[at + n_keep] = part
    start, cut = start.copy(), cut.copy()
    start[rows] = n_steps + at
    cut[rows] = start[rows] + n_keep + 1
    return np.concatenate([steps.x, block]), start, cut
