"""The transform's thread pool (ehrseq.featurize.chunks): the same FeatureSet, bit for bit, whatever the number
of threads and chunks, on the RA cohort and on real MIMIC data (repeats within a visit, merged steps), and the
thread setting."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehrseq.featurize import chunks
from ehrseq.featurize.featurizer import Featurizer, FeaturizerConfig
from ehrseq.io import read_meds
from ehrseq.split import PatientSplitter, subjects_table

_ARRAYS = ("tok_code", "tok_age", "tok_visit", "tok_delta", "tok_value", "tok_num", "tok_start", "tok_cut",
           "age_at_pred", "step_x", "step_start", "step_cut", "static_x", "tok_pin", "tok_next")


def _assert_same(a, b) -> None:
    for name in _ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y, equal_nan=True), name
    assert a.counts == b.counts
    assert len(a.static_tokens) == len(b.static_tokens)
    assert all(np.array_equal(p, q) for p, q in zip(a.static_tokens, b.static_tokens))


@pytest.fixture(scope="module")
def mimic(mimic_slice):
    ev = read_meds(mimic_slice, column_map={"value": "numeric_value"}).events
    splits = PatientSplitter(seed=0).split(subjects_table(ev))
    timed = ev.loc[ev["time"].notna()]
    labels = timed.groupby("subject_id")["time"].agg(["min", "max"])
    labels = pd.DataFrame({"subject_id": np.repeat(labels.index.to_numpy(), 3),
                           "prediction_time": np.concatenate([[a, a + (b - a) / 2, b] for a, b in labels.to_numpy()])})
    return ev, splits, labels.astype({"prediction_time": "datetime64[us]"})


@pytest.fixture
def many_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunks.os, "cpu_count", lambda: 8)


@pytest.mark.parametrize("cfg", [FeaturizerConfig(), FeaturizerConfig(step_every="hour"),
                                 FeaturizerConfig(step_every="day", repeats="all")], ids=["event", "hour", "day"])
def test_mimic_features_do_not_depend_on_the_thread_count(mimic, cfg, many_cpus) -> None:
    ev, splits, labels = mimic
    fz = Featurizer(cfg).fit(ev, splits)
    one = fz.transform(ev, labels, threads=1)
    assert cfg.repeats == "all" or (one.tok_next != np.iinfo(np.int64).max).any()  # repeats within visits occur
    for n in (2, 3, 8):
        _assert_same(one, fz.transform(ev, labels, threads=n))


def test_cohort_features_do_not_depend_on_the_thread_count(cohort, splits, labels, many_cpus) -> None:
    fz = Featurizer().fit(cohort.events, splits)
    shuffled = labels.sample(frac=1.0, random_state=0)
    _assert_same(fz.transform(cohort.events, shuffled, threads=1), fz.transform(cohort.events, shuffled, threads=4))


def test_chunks_are_whole_subjects_of_about_equal_size(cohort, many_cpus) -> None:
    from ehrseq.featurize.stream import split_events, timeline

    ev = cohort.events
    stream = split_events(ev, np.unique(ev["subject_id"].to_numpy()), "MEDS_BIRTH").stream
    tl = timeline(stream.sid, stream.t_us)
    bounds = chunks.chunk_bounds(tl, 4)
    assert len(bounds) == 4 and bounds[0][0] == 0 and bounds[-1][1] == len(tl.sid)
    assert all(b == c for (_, b), (c, _) in zip(bounds[:-1], bounds[1:]))
    assert all(tl.new_subj[g0] for g0, _ in bounds)  # each chunk starts a subject
    sizes = np.array([tl.first[g1] - tl.first[g0] for g0, g1 in bounds])
    assert sizes.max() < 1.5 * sizes.mean()


def test_the_thread_setting(monkeypatch: pytest.MonkeyPatch, many_cpus) -> None:
    monkeypatch.delenv(chunks.THREADS_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert chunks.featurize_threads() == 8  # the CPU count
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert chunks.featurize_threads() == 3
    monkeypatch.setenv(chunks.THREADS_ENV, "2")  # ours wins over OpenMP's
    assert chunks.featurize_threads() == 2
    assert chunks.featurize_threads(5) == 5  # an explicit count wins
    assert chunks.featurize_threads(64) == 8  # never more than the CPUs
    monkeypatch.setenv(chunks.THREADS_ENV, "many")  # not a count: ignored
    assert chunks.featurize_threads() == 3


def test_many_small_chunks_on_one_thread_give_the_one_chunk_features(mimic, monkeypatch: pytest.MonkeyPatch) -> None:
    ev, splits, labels = mimic
    fz = Featurizer(FeaturizerConfig(step_every="hour")).fit(ev, splits)
    monkeypatch.setattr(chunks, "CHUNK_EVENTS", 10**9)
    whole = fz.transform(ev, labels, threads=1)
    monkeypatch.setattr(chunks, "CHUNK_EVENTS", 500)  # a chunk per subject or two, computed one after another
    _assert_same(whole, fz.transform(ev, labels, threads=1))
