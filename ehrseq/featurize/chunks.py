"""The per-event columns of the transform (token arrays, step vectors), computed over chunks of whole subjects
in a thread pool.

Every per-event column depends only on its own subject's events (visit numbers, gaps, repeats within a visit
and steps never cross a subject), so the stream is cut at subject boundaries into one chunk per thread and
each chunk writes its slice of the preallocated outputs. The output is the same array, bit for bit, whatever
the number of threads (tests/test_featurize_threads.py); numpy releases the GIL in the array loops, sorts and
gathers that make up a chunk. One thread: one chunk, computed in the calling thread, no copy.

The thread count: ``threads`` when given, else the ``EHRSEQ_NUM_THREADS`` environment variable, else
``OMP_NUM_THREADS``, else the machine's CPU count; never more than the CPU count.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from ehrseq.featurize.columns import value_bins
from ehrseq.featurize.steps import StepCodes, Stream, Timeline, step_gaps, step_values
from ehrseq.featurize.tokens import NO_REPEAT, first_in_visit, next_in_visit

THREADS_ENV = "EHRSEQ_NUM_THREADS"
CHUNK_EVENTS = 1 << 16  # events per chunk (about; whole subjects)


def featurize_threads(threads: int | None = None) -> int:
    """The number of threads the transform uses (see the module docstring), at least 1."""
    cpus = os.cpu_count() or 1
    if threads is None:
        for var in (THREADS_ENV, "OMP_NUM_THREADS"):
            raw = os.environ.get(var, "").strip()
            if raw.isdigit() and int(raw) > 0:
                threads = int(raw)
                break
    return max(1, min(threads or cpus, cpus))


class EventTables(NamedTuple):
    """What every chunk reads: per distinct code, its token id, value stats and bin table; per time group,
    age id, visit number, gap bin and global visit number; the steps."""

    to_id: np.ndarray
    stats: np.ndarray  # (codes, 2): mean, std of log1p(value), std inf when unknown
    bins: tuple[np.ndarray, np.ndarray]  # columns.bin_table
    group_cols: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    step_codes: StepCodes
    step_luts: tuple[np.ndarray, np.ndarray]  # steps.column_luts
    group_step: np.ndarray  # per group then one past the last: its step index (steps.step_layout)
    step_heads: np.ndarray  # per step, its first group (steps.step_layout)
    n_step_features: int
    last_in_visit: bool  # repeats="last_in_visit": compute tok_next


class EventColumns(NamedTuple):
    """Per stream event: token id, age id, visit, gap bin, value id, value z, next repeat in its visit (None
    unless last_in_visit); per time group: how many of its events are their code's first in their visit (the
    tokens last_in_visit shows; None unless last_in_visit); per step: the vector."""

    code: np.ndarray
    age: np.ndarray
    visit: np.ndarray
    delta: np.ndarray
    value: np.ndarray
    num: np.ndarray
    next: np.ndarray | None
    shown: np.ndarray | None
    step_x: np.ndarray


def chunk_bounds(tl: Timeline, k: int) -> list[tuple[int, int]]:
    """[g0, g1) group ranges of whole subjects, about equal in events, at most ``k`` of them (fewer when a
    subject is larger than a chunk)."""
    ng = len(tl.sid)
    if k <= 1 or ng < 2:
        return [(0, ng)]
    heads = np.flatnonzero(tl.new_subj)
    n = int(tl.first[-1])
    at = np.searchsorted(tl.first[heads], (n * np.arange(1, k)) // k)
    cuts = np.unique(np.r_[0, np.r_[heads, ng][at], ng])
    return list(zip(cuts[:-1].tolist(), cuts[1:].tolist()))


def _chunk(ev: Stream, tl: Timeline, tab: EventTables, g0: int, g1: int, out: EventColumns | None) -> EventColumns:
    """The columns of time groups [g0, g1) (whole subjects): written into their slices of ``out``, or new."""
    e0, e1 = int(tl.first[g0]), int(tl.first[g1])
    s0, s1 = int(tab.group_step[g0]), int(tab.group_step[g1])
    code_inv, val, size = ev.code_inv[e0:e1], ev.val[e0:e1], tl.size[g0:g1]
    n = e1 - e0
    o = EventColumns(*(np.empty(n, np.int64) for _ in range(5)), np.zeros(n, np.float32), None, None,
                     np.zeros((s1 - s0, tab.n_step_features), np.float32)) if out is None else \
        EventColumns(*(None if a is None else a[s0:s1] if k == "step_x" else a[g0:g1] if k == "shown"
                       else a[e0:e1] for k, a in zip(EventColumns._fields, out)))
    if len(ev.uniq):
        np.take(tab.to_id, code_inv, out=o.code)
    else:
        o.code[:] = code_inv
    group = np.repeat(np.arange(g0, g1), size)  # per event, its time group
    for a, target in zip(tab.group_cols[:3], (o.age, o.visit, o.delta)):
        np.take(a, group, out=target)
    p = np.flatnonzero(~np.isnan(val))
    logv = np.log1p(np.maximum(val[p].astype(np.float64), 0))  # shared by token values and step values
    c = code_inv[p]
    value_bins(*tab.bins, c, val, p, out=o.value)
    o.num[:] = 0.0  # 0 = no value
    if len(p):
        o.num[p] = np.nan_to_num(np.clip((logv - tab.stats[c, 0]) / tab.stats[c, 1], -5, 5))
    step_values(tab.step_codes, tab.group_step[group] - s0, s1 - s0, code_inv, ev.uniq, val,
                (p, logv), out=o.step_x, luts=tab.step_luts)
    o.step_x[:, -1] = step_gaps(tl, tab.step_heads[s0:s1], g1)
    nxt = shown = None
    if tab.last_in_visit and n:
        nxt = next_in_visit(tab.group_cols[3][group], code_inv, len(ev.uniq))
        shown = np.add.reduceat(first_in_visit(nxt), tl.first[g0:g1] - e0, dtype=np.int64)
        if e0:
            np.add(nxt, e0, out=nxt, where=nxt != NO_REPEAT)
        if out is not None:
            o.next[:], o.shown[:] = nxt, shown
    elif tab.last_in_visit:
        nxt, shown = np.full(0, NO_REPEAT, np.int64), np.zeros(0, np.int64)
    return o._replace(next=nxt, shown=shown) if out is None else o


def event_columns(ev: Stream, tl: Timeline, tab: EventTables, threads: int) -> Callable[[], EventColumns]:
    """Start the per-event columns and step vectors of the whole stream, over chunks of whole subjects on
    ``threads`` threads; the returned function waits for them. With one thread they are computed before this
    returns; with more, the caller's thread is free meanwhile (the transform does the label rows' work)."""
    n, n_steps = len(ev.sid), int(tab.group_step[-1])
    # chunks of about CHUNK_EVENTS: their temporaries stay in cache and are reused, not fresh pages each time
    bounds = chunk_bounds(tl, max(threads, -(-n // CHUNK_EVENTS)))
    if len(bounds) == 1:
        cols = _chunk(ev, tl, tab, 0, len(tl.sid), None)
        return lambda: cols
    ints = [np.empty(n, np.int64) for _ in range(5)]
    nxt = np.empty(n, np.int64) if tab.last_in_visit else None
    shown = np.empty(len(tl.sid), np.int64) if tab.last_in_visit else None
    out = EventColumns(*ints, np.empty(n, np.float32), nxt, shown,
                       np.zeros((n_steps, tab.n_step_features), np.float32))
    if threads == 1:
        for g0, g1 in bounds:
            _chunk(ev, tl, tab, g0, g1, out)
        return lambda: out
    pool = ThreadPoolExecutor(max_workers=min(threads, len(bounds)))
    futures = [pool.submit(_chunk, ev, tl, tab, g0, g1, out) for g0, g1 in bounds]
    pool.shutdown(wait=False)  # the workers finish the queue, then exit

    def wait() -> EventColumns:
        for f in futures:
            f.result()  # re-raises a chunk's error
        return out

    return wait


__all__ = ["THREADS_ENV", "EventColumns", "EventTables", "chunk_bounds", "event_columns", "featurize_threads"]
