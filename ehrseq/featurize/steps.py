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
    """The timed events: subject, time (us), code index into ``uniq`` (the distinct codes), numeric value (as
    read, float32 or float64: computed on as float64)."""

    sid: np.ndarray
    t_us: np.ndarray
    code_inv: np.ndarray
    uniq: list[str]
    val: np.ndarray


class Timeline(NamedTuple):
    """The distinct (subject, time) groups of a (subject, time)-sorted stream: every per-time feature (age,
    visit, gap, event step) is computed once per group and repeated over its events."""

    first: np.ndarray  # stream index of each group's first event, then the stream length (len: groups + 1)
    size: np.ndarray  # events per group
    sid: np.ndarray  # subject of each group
    t: np.ndarray  # time (us) of each group
    new_subj: np.ndarray  # bool: the group is its subject's first


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


def _column_lut(names: list[str], uniq: list[str]) -> np.ndarray:
    """Per distinct code, its column among ``names``, or -1."""
    pos = {c: i for i, c in enumerate(names)}
    return np.array([pos.get(u, -1) for u in uniq], np.int64)


def column_luts(codes: StepCodes, uniq: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct code of ``uniq``: its numeric column, its multi-hot column (int32); -1 for none."""
    return _column_lut(codes.numeric, uniq), _column_lut(codes.hot, uniq).astype(np.int32)


def step_values(codes: StepCodes, step_idx: np.ndarray, n: int, code_inv: np.ndarray, uniq: list[str],
                val: np.ndarray, valued: tuple[np.ndarray, np.ndarray] | None = None,
                out: np.ndarray | None = None, luts: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """(n, F) step vectors, gap column 0, from events in time order, event ``e`` going to step ``step_idx[e]``.
    ``valued``: the events with a value and log1p(max(value, 0)) of each, when the caller has them; ``out``: a
    zeroed C-ordered (n, F) float32 array to fill instead of a new one; ``luts``: :func:`column_luts`."""
    nn, nc = len(codes.numeric), len(codes.hot)
    width = 2 * nn + nc + 1
    x = np.zeros((n, width), np.float32) if out is None else out
    x[:, nn:2 * nn] = 1.0  # missing until seen
    flat = x.reshape(-1)
    if not uniq:
        return x
    if nn:
        if valued is None:
            p = np.flatnonzero(~np.isnan(val))
            valued = p, np.log1p(np.maximum(val[p].astype(np.float64), 0))
        p, logv = valued
        luts = luts or column_luts(codes, uniq)
        j = luts[0][code_inv[p]]
        keep = j >= 0
        m, j, logv = p[keep], j[keep], logv[keep]
        cell = step_idx[m] * nn + j
        # the last event of each (step, code): the end of each run of a stable sort (nearly in order: by step)
        by_cell = np.argsort(cell, kind="stable")
        last = by_cell[np.r_[cell[by_cell][1:] != cell[by_cell][:-1], True]] if len(cell) else by_cell
        m, j = m[last], j[last]
        at = step_idx[m] * width + j
        flat[at] = (logv[last] - np.asarray(codes.mean)[j]) / np.asarray(codes.std)[j]
        flat[at + nn] = 0.0
    if nc:
        col = (luts or column_luts(codes, uniq))[1][code_inv]
        h = np.flatnonzero(col >= 0)
        flat[step_idx[h] * width + (2 * nn + col[h])] = 1.0
    return x


def step_layout(every: str, tl: Timeline) -> tuple[np.ndarray, np.ndarray]:
    """The steps as runs of the time groups of ``tl``: per group (then one past the last), its step index (then
    the number of steps), and each step's first group. One step per (subject, event time) -- ``every="event"``,
    a group -- or per (subject, calendar hour / day)."""
    width = STEP_WIDTH_US[every]
    ng = len(tl.sid)
    if width is None:
        return np.arange(ng + 1), np.arange(ng)
    key = tl.t // width
    new = tl.new_subj | np.r_[True, key[1:] != key[:-1]] if ng else np.zeros(0, bool)
    return np.r_[np.cumsum(new) - 1, int(new.sum())], np.flatnonzero(new)


def step_gaps(tl: Timeline, heads: np.ndarray, end: int) -> np.ndarray:
    """The gap feature (log days since the subject's previous step) of the steps whose first groups are
    ``heads``, the last ending before group ``end``; the first of them must start a subject."""
    step_t = tl.t[np.r_[heads[1:] - 1, end - 1]] if len(heads) else tl.t[:0]
    gap = np.where(tl.new_subj[heads], 0, np.diff(step_t, prepend=step_t[:1]) / US_PER_DAY) if len(heads) \
        else np.zeros(0)
    return _gap_feature(gap)


def finish_steps(x: np.ndarray, tl: Timeline, heads: np.ndarray) -> Steps:
    """The steps whose first groups are ``heads`` (``x``: their vectors, gap column filled)."""
    step_t = tl.t[np.r_[heads[1:] - 1, len(tl.sid) - 1]] if len(heads) else tl.t[:0]
    return Steps(x, tl.sid[heads], step_t, tl.first[heads])


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
