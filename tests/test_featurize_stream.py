"""The featurizer's array paths (ehrseq.featurize.stream, value bins) against their plain definitions: history
cuts by brute force on both search paths, and the same FeatureSet whatever the row order of the events."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehrseq.featurize import stream as stream_mod
from ehrseq.featurize.featurizer import Featurizer, FeaturizerConfig
from ehrseq.featurize.stream import history_cuts, last_at_or_before

_ARRAYS = ("tok_code", "tok_age", "tok_visit", "tok_delta", "tok_value", "tok_num", "tok_start", "tok_cut",
           "age_at_pred", "step_x", "step_start", "step_cut", "static_x", "tok_pin", "tok_next")


def _stream(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sid = np.sort(rng.choice([2, 5, 6, 9], 300))
    t = rng.integers(0, 50, 300) * 1_000_000
    order = np.lexsort((t, sid))
    lab_sid = rng.choice([1, 2, 5, 6, 9, 11], 200)
    lab_t = rng.integers(-5, 55, 200) * 1_000_000 + rng.choice([-1, 0, 1], 200)  # 1 us either side of events
    return sid[order], t[order], lab_sid, lab_t


@pytest.mark.parametrize("search", ["one key", "binary search"])
def test_history_cuts_match_brute_force(search: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if search == "binary search":
        monkeypatch.setattr(stream_mod, "_KEY_LIMIT", 0.0)
    for seed in range(3):
        sid, t, lab_sid, lab_t = _stream(seed)
        expected = np.array([np.sum((sid < s) | ((sid == s) & (t <= u))) for s, u in zip(lab_sid, lab_t)])
        np.testing.assert_array_equal(history_cuts(sid, t, lab_sid, lab_t), expected)
        last = last_at_or_before(sid, t, lab_sid, lab_t)
        np.testing.assert_array_equal(last, np.where(sid[np.maximum(expected - 1, 0)] == lab_sid, expected - 1, -1))


@pytest.fixture(scope="module")
def fitted(cohort, splits):
    ev = cohort.events
    labels = ev.loc[ev["code"] == "SCORE//CDAI", ["subject_id", "time"]].rename(columns={"time": "prediction_time"})
    labels = labels.sample(frac=1.0, random_state=0).reset_index(drop=True)  # label rows in no particular order
    cfgs = (FeaturizerConfig(), FeaturizerConfig(step_every="day", repeats="all", max_len=48))
    return ev, labels, [Featurizer(c).fit(ev, splits) for c in cfgs]


def test_unsorted_events_featurize_as_their_stable_sort(fitted) -> None:
    ev, labels, fzs = fitted
    shuffled = ev.sample(frac=1.0, random_state=1).reset_index(drop=True)  # the sorting path
    by_pandas = shuffled.sort_values(["subject_id", "time"], kind="stable")  # the already-sorted path
    for fz in fzs:
        a, b = fz.transform(by_pandas, labels), fz.transform(shuffled, labels)
        for name in _ARRAYS:
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None and y is None) or np.array_equal(x, y, equal_nan=True), name
        assert a.counts == b.counts
        assert all(np.array_equal(p, q) for p, q in zip(a.static_tokens, b.static_tokens))


def test_value_ids_are_the_bins_of_each_code(fitted) -> None:
    _, _, (fz, _) = fitted
    uniq = list(fz.value_edges_)[:3] + ["NOT//BINNED"]
    rng = np.random.default_rng(0)
    code_inv = rng.integers(0, len(uniq), 500)
    values = np.where(rng.random(500) < 0.2, np.nan, rng.normal(10, 5, 500))
    got = fz._value_ids(code_inv, uniq, values)
    for i in range(500):
        edges = fz.value_edges_.get(uniq[code_inv[i]])
        want = 1 if edges is None or np.isnan(values[i]) else int(np.searchsorted(edges, values[i], "right")) + 2
        assert got[i] == want


def test_labels_of_subjects_without_events_have_empty_history(fitted) -> None:
    ev, _, (fz, _) = fitted
    labels = pd.DataFrame({"subject_id": [10**9], "prediction_time": pd.to_datetime(["2020-01-01"]).astype(
        "datetime64[us]")})
    fs = fz.transform(ev, labels)
    assert fs.counts["rows_without_history"] == 1 and fs.tok_start[0] == fs.tok_cut[0]
