"""Every label row's BEHRT token view at once, as flat arrays: :func:`token_views`.

The same tokens as :func:`ehrseq.featurize.tokens.build_tokens` row by row (``tests/test_behrt_speed.py`` checks
them equal on synthetic and real data, under both repeat policies and both position schemes), in a few numpy
passes over all rows instead of a dozen small numpy calls per row; :class:`~ehrseq.data.dataset.SequenceDataset`
builds its token cache with it.

How the window is found without a per-row loop: a row's candidate events are those of its history that the
repeat policy shows, the most recent ``budget`` of them. Under ``"last_in_visit"`` an event before the row's last
(possibly open) visit is shown iff no later event of its code falls in its visit (``tok_next`` is NO_REPEAT),
whatever the row; only the open visit depends on the cut. The window then drops its oldest events until events
plus one SEP per visit fit the budget; dropping k events frees at least k tokens, so one cut of
``len + visits - budget`` events always suffices (what build_tokens' loop ends with).
"""

from __future__ import annotations

import numpy as np

from ehrseq.data.batch import CLS_ID, SEP_ID
from ehrseq.featurize.featureset import FeatureSet
from ehrseq.featurize.tokens import NO_REPEAT

KEYS = ("code_ids", "age_ids", "segment_ids", "position_ids", "time_ids", "value_ids", "value_num")


def _ranges(starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat (row, index) pairs of the half-open ranges [starts[r], stops[r]) (empty where stop <= start)."""
    n = np.maximum(stops - starts, 0)
    row = np.repeat(np.arange(len(n)), n)
    first = np.r_[0, np.cumsum(n)[:-1]] if len(n) else np.zeros(0, np.int64)
    return row, (np.arange(int(n.sum())) - np.repeat(first - starts, n)).astype(np.int64)


def _rank(row: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """For flat entries sorted by row: each entry's rank within its row, and the entries per row."""
    count = np.bincount(row, minlength=n_rows)
    first = np.r_[0, np.cumsum(count)[:-1]]
    return np.arange(len(row)) - first[row], count


def _candidates(fs: FeatureSet, lo: np.ndarray, hi: np.ndarray, budget: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat (row, stream index) of each row's most recent ``budget`` shown events, sorted by row, index."""
    want = np.maximum(budget, 0)
    if fs.tok_next is None:
        return _ranges(hi - np.minimum(hi - lo, want), hi)
    n_ev, nxt = len(fs.tok_visit), fs.tok_next
    visit = fs.tok_visit.astype(np.int64)
    new_visit = np.ones(n_ev, bool)
    new_visit[1:] = visit[1:] != visit[:-1]
    new_visit[lo[lo < n_ev]] = True  # a subject's first event opens a visit
    vstart = np.maximum.accumulate(np.where(new_visit, np.arange(n_ev), 0)) if n_ev else np.zeros(0, np.int64)
    vs = np.where(hi > lo, vstart[np.maximum(hi - 1, 0)] if n_ev else lo, hi)  # the open visit: [vs, hi)
    prow, pidx = _ranges(vs, hi)
    shown = nxt[pidx] >= hi[prow]
    prow, pidx = prow[shown], pidx[shown]
    prank, n_open = _rank(prow, len(lo))
    kpos = np.flatnonzero(nxt == NO_REPEAT)  # shown by every row whose open visit comes later
    a, b = np.searchsorted(kpos, lo), np.searchsorted(kpos, vs)
    take = np.minimum(b - a + n_open, want)  # candidates kept per row
    k_take = np.maximum(take - n_open, 0)
    krow, kk = _ranges(b - k_take, b)
    keep_open = prank >= n_open[prow] - np.minimum(take, n_open)[prow]
    row = np.r_[krow, prow[keep_open]]
    idx = np.r_[kpos[kk], pidx[keep_open]]
    order = np.argsort(row, kind="stable")  # the closed visits' events come before the open visit's
    return row[order], idx[order]


def token_views(fs: FeatureSet, max_len: int, max_visits: int, positions: str = "first"
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(offsets (N + 1,), {key: (T,) array}) with row ``i``'s view at ``[offsets[i], offsets[i + 1])``, equal to
    ``build_tokens(fs, i, max_len, max_visits, positions)`` (int64 ids, float32 ``value_num``)."""
    N = len(fs)
    lo, hi = fs.tok_start.astype(np.int64), fs.tok_cut.astype(np.int64)
    n_stat = np.array([len(s) for s in fs.static_tokens], np.int64)
    pins = fs.tok_pin.astype(np.int64) if fs.tok_pin is not None else np.full((N, 0), -1, np.int64)
    budget = max_len - 1 - n_stat - (pins >= 0).sum(1)
    visit = fs.tok_visit.astype(np.int64)

    row, sel = _candidates(fs, lo, hi, budget)
    rank, count = _rank(row, N)
    v = visit[sel]
    change = np.r_[False, (v[1:] != v[:-1]) & (row[1:] == row[:-1])] if len(sel) else np.zeros(0, bool)
    n_vis = np.bincount(row, weights=change, minlength=N).astype(np.int64) + (count > 0)
    over = np.maximum(count + n_vis - budget, 0)
    keep = rank >= over[row]
    row, sel = row[keep], sel[keep]
    rank, count = _rank(row, N)
    v = visit[sel]
    last_in_row = np.r_[row[1:] != row[:-1], True] if len(sel) else np.zeros(0, bool)
    is_end = last_in_row | np.r_[v[1:] != v[:-1], False] if len(sel) else np.zeros(0, bool)
    first_of_row = np.r_[0, np.cumsum(count)[:-1]]
    start = hi.copy()  # the first event shown (the cut when none is): earlier pins join the header
    start[count > 0] = sel[first_of_row[count > 0]]
    if positions == "first":
        rel = v - v[first_of_row[row]] + 2
    else:
        rel = v[first_of_row[row] + count[row] - 1] - v + 2

    pinned = np.where((pins >= 0) & (pins < start[:, None]), pins, np.iinfo(np.int64).max)
    pinned.sort(axis=1)
    pin_ok = pinned != np.iinfo(np.int64).max
    n_pinned = pin_ok.sum(1)
    n_s = n_stat + 1
    n_h = n_s + n_pinned
    n_ends = np.bincount(row, weights=is_end, minlength=N).astype(np.int64)
    offsets = np.r_[0, np.cumsum(n_h + count + n_ends)].astype(np.int64)
    T = int(offsets[-1])
    out = {k: np.zeros(T, np.float32 if k == "value_num" else np.int64) for k in KEYS}
    pos = np.ones(T, np.int64)

    # header: CLS, static codes, pinned codes (the time bin and position of every header token are 1)
    out["code_ids"][offsets[:-1]] = CLS_ID
    srow, sk = _ranges(np.zeros(N, np.int64), n_stat)
    spos = offsets[:-1][srow] + 1 + sk
    if len(spos):  # the static codes in row order, as _ranges lists their positions
        out["code_ids"][spos] = np.concatenate(fs.static_tokens).astype(np.int64)
    hrow, hk = _ranges(np.zeros(N, np.int64), n_s)
    out["age_ids"][offsets[:-1][hrow] + hk] = fs.age_at_pred[hrow]
    out["value_ids"][offsets[:-1][hrow] + hk] = 1
    prow, pk = np.nonzero(pin_ok)
    pidx = pinned[prow, pk]
    ppos = offsets[:-1][prow] + n_s[prow] + pk
    for key, src in (("code_ids", fs.tok_code), ("age_ids", fs.tok_age), ("value_ids", fs.tok_value),
                     ("value_num", fs.tok_num)):
        out[key][ppos] = src[pidx]
    out["time_ids"][:] = 1

    # events, each visit closed by a SEP that copies its last event's age, time bin and position
    ends_before = np.cumsum(is_end) - is_end - np.r_[0, np.cumsum(n_ends)[:-1]][row]
    epos = offsets[:-1][row] + n_h[row] + rank + ends_before
    for key, src in (("code_ids", fs.tok_code), ("age_ids", fs.tok_age), ("time_ids", fs.tok_delta),
                     ("value_ids", fs.tok_value), ("value_num", fs.tok_num)):
        out[key][epos] = src[sel]
    pos[epos] = rel
    sep = epos[is_end] + 1
    out["code_ids"][sep] = SEP_ID
    out["age_ids"][sep] = fs.tok_age[sel[is_end]]
    out["time_ids"][sep] = fs.tok_delta[sel[is_end]]
    out["value_ids"][sep] = 1
    pos[sep] = rel[is_end]
    pos = np.minimum(pos, max_visits - 1)
    out["position_ids"] = pos
    out["segment_ids"] = 2 - pos % 2
    return offsets, out
