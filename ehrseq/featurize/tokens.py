"""The BEHRT token view of one featurized label row, and the repeat policy for dense data.

``build_tokens`` keeps the most recent events that fit ``max_len`` (CLS, static and pinned tokens included,
one SEP after each visit). With the ``"last_in_visit"`` repeat policy a code repeated within a visit (a
calendar day: ICU labs every hour) is one token, its most recent event at or before prediction_time, so the
same window covers more days. The choice is per label row: an event after prediction_time never hides one
before it (it is outside the row's history), so nothing after prediction_time changes the view.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ehrseq.data.batch import CLS_ID, SEP_ID

if TYPE_CHECKING:
    from ehrseq.featurize.featureset import FeatureSet

REPEAT_POLICIES = ("all", "last_in_visit")
NO_REPEAT = np.iinfo(np.int64).max  # tok_next of an event whose code does not recur later in its visit


def next_in_visit(visit_global: np.ndarray, code_inv: np.ndarray, n_codes: int | None = None) -> np.ndarray:
    """Per stream event, the index of the next event of the same code in the same visit, or NO_REPEAT.

    ``visit_global`` numbers visits over the whole (subject, time)-sorted stream; ``code_inv`` is the code
    (``n_codes``: when given, every code is in [0, n_codes)).
    """
    n = len(visit_global)
    out = np.full(n, NO_REPEAT, np.int64)
    if n < 2:
        return out
    if n_codes is None:
        code = code_inv.astype(np.int64) - int(code_inv.min())
        n_codes = int(code.max()) + 1
    else:
        code = code_inv
    if int(visit_global.max()) < np.iinfo(np.int64).max // n_codes - 1:
        # by visit, code, then stream order: one stable sort of one key, nearly in order already (by visit)
        key = visit_global * n_codes + code
        order = np.argsort(key, kind="stable")
        sk = key[order]
        same = sk[1:] == sk[:-1]  # the key is one (visit, code)
    else:
        order = np.lexsort((np.arange(n), code_inv, visit_global))
        same = (visit_global[order][1:] == visit_global[order][:-1]) & (code_inv[order][1:] == code_inv[order][:-1])
    out[order[:-1][same]] = order[1:][same]
    return out


def first_in_visit(tok_next: np.ndarray) -> np.ndarray:
    """bool per event: no earlier event of the same code in its visit. The count of these in any history
    [subject start, cut) equals the number of tokens the ``last_in_visit`` policy keeps there."""
    first = np.ones(len(tok_next), bool)
    first[tok_next[tok_next != NO_REPEAT]] = False
    return first


def token_window(fs: FeatureSet, i: int, max_len: int) -> np.ndarray:
    """Stream indices (ascending) of the events label row ``i`` shows as tokens: the most recent ones that
    fit ``max_len`` with CLS, static tokens, pinned tokens and one SEP per visit."""
    lo, hi = int(fs.tok_start[i]), int(fs.tok_cut[i])
    pins = fs.tok_pin[i][fs.tok_pin[i] >= 0] if fs.tok_pin is not None else np.zeros(0, np.int64)
    budget = max_len - 1 - len(fs.static_tokens[i]) - len(pins)
    if fs.tok_next is None:
        start = max(lo, hi - budget)
        sel = np.arange(start, hi)
    else:  # the last event of each (visit, code) up to the cut
        sel = np.flatnonzero(fs.tok_next[lo:hi] >= hi) + lo
        sel = sel[max(len(sel) - budget, 0):]
    while len(sel):
        v = fs.tok_visit[sel]
        over = len(sel) + int((np.diff(v) != 0).sum()) + 1 - budget
        if over <= 0:
            break
        sel = sel[over:]
    return sel


def build_tokens(
    fs: FeatureSet, i: int, max_len: int, max_visits: int, positions: str = "first"
) -> dict[str, np.ndarray]:
    """The BEHRT token view of label row ``i``: most recent events that fit, SEP after each visit.

    Visit positions start at 2 (1 is CLS and the static tokens): ``positions="first"`` numbers visits from the
    oldest one kept, ``"last"`` from the most recent one backwards. Both clip at ``max_visits - 1``.
    """
    hi = int(fs.tok_cut[i])
    stat = fs.static_tokens[i]
    pins = fs.tok_pin[i][fs.tok_pin[i] >= 0] if fs.tok_pin is not None else np.zeros(0, np.int64)
    sel = token_window(fs, i, max_len)
    start = int(sel[0]) if len(sel) else hi
    code, age, visit, delta = fs.tok_code[sel], fs.tok_age[sel], fs.tok_visit[sel], fs.tok_delta[sel]
    value, num = fs.tok_value[sel], fs.tok_num[sel]
    if len(code):
        ends = np.r_[np.flatnonzero(np.diff(visit) != 0), len(code) - 1]
        ins = ends + 1
        code = np.insert(code, ins, SEP_ID)
        age = np.insert(age, ins, age[ends])
        delta = np.insert(delta, ins, delta[ends])
        value = np.insert(value, ins, 1)
        num = np.insert(num, ins, 0.0)
        visit = np.insert(visit, ins, visit[ends])
        rel = (visit - visit[0] if positions == "first" else visit[-1] - visit) + 2
    else:
        rel = np.zeros(0, np.int64)
    n_s = len(stat) + 1
    pinned = np.sort(pins[pins < start])  # truncated away: they join the header (position 1) with their values
    head_age = np.r_[np.full(n_s, fs.age_at_pred[i], np.int64), fs.tok_age[pinned]]
    n_h = n_s + len(pinned)
    codes_ = np.r_[CLS_ID, stat, fs.tok_code[pinned], code].astype(np.int64)
    pos = np.minimum(np.r_[np.ones(n_h, np.int64), rel], max_visits - 1)
    return {
        "code_ids": codes_,
        "age_ids": np.r_[head_age, age].astype(np.int64),
        "position_ids": pos.astype(np.int64),
        "segment_ids": (2 - (pos % 2)).astype(np.int64),
        "time_ids": np.r_[np.ones(n_h, np.int64), delta].astype(np.int64),
        "value_ids": np.r_[np.ones(n_s, np.int64), fs.tok_value[pinned], value].astype(np.int64),
        "value_num": np.r_[np.zeros(n_s, np.float32), fs.tok_num[pinned], num].astype(np.float32),
    }
