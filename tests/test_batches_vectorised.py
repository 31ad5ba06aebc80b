"""SequenceDataset.batch (the padded batch built with one gather per view) equals collate over the per-row items,
tensor for tensor, on synthetic and real rows, including rows with no history and rows with one step; a DataLoader
(what training and tuning use) gets the same batches through ``__getitems__``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from ehrseq.data.batch import Batch
from ehrseq.data.dataset import LengthOrdered, Rows, SequenceDataset, collate
from ehrseq.featurize.featurizer import Featurizer, FeaturizerConfig
from ehrseq.io import read_meds
from ehrseq.split import PatientSplitter, subjects_table
from tests.conftest import MIMIC_COLUMN_MAP

# (tokens, steps, cache_tokens, max_steps): the RNN's view, BEHRT's, both, uncached tokens, truncated steps
VIEWS = [(False, True, True, 64), (True, False, True, 64), (True, True, True, 64), (True, True, False, 64),
         (False, True, True, 2)]


def _rows_with_edges(ev: pd.DataFrame, n_random: int) -> pd.DataFrame:
    """Per subject: a day before its first event (empty history), its first three distinct event times (one or
    a few steps) and ``n_random`` of its event times drawn at random."""
    timed = ev.loc[ev["time"].notna(), ["subject_id", "time"]].drop_duplicates()
    first = timed.groupby("subject_id")["time"].min()
    early = timed.sort_values(["subject_id", "time"]).groupby("subject_id").head(3)
    drawn = timed.groupby("subject_id").sample(n=n_random, replace=True, random_state=0)
    lab = pd.concat([pd.DataFrame({"subject_id": first.index, "time": first.to_numpy() - np.timedelta64(1, "D")}),
                     early, drawn], ignore_index=True).rename(columns={"time": "prediction_time"})
    lab["prediction_time"] = lab["prediction_time"].astype("datetime64[us]")
    return lab.sort_values(["subject_id", "prediction_time"], kind="stable").reset_index(drop=True)


def _assert_batches_equal(got: Batch, want: Batch) -> None:
    for f in dataclasses.fields(Batch):
        a, b = getattr(got, f.name), getattr(want, f.name)
        if b is None:
            assert a is None, f.name
            continue
        assert a.dtype == b.dtype and a.shape == b.shape, (f.name, a.dtype, b.dtype, a.shape, b.shape)
        assert torch.equal(a, b), f.name


def _check(fs, targets: np.ndarray | None) -> None:
    steps = np.asarray(fs.step_cut) - np.asarray(fs.step_start)
    assert (steps == 0).any() and (steps == 1).any()  # the edge rows are there
    rng = np.random.default_rng(1)
    for tokens, with_steps, cache, max_steps in VIEWS:
        ds = SequenceDataset(fs, targets, max_len=40, max_steps=max_steps, tokens=tokens, steps=with_steps,
                             cache_tokens=cache)
        picks = [np.arange(len(ds)), rng.permutation(len(ds))[:37], np.flatnonzero(steps == 0)[:1],
                 np.flatnonzero(steps == 1)[:3], np.flatnonzero(steps == 0)[:5]]
        for idx in picks:
            assert len(idx)
            _assert_batches_equal(ds.batch(idx), collate([ds[int(i)] for i in idx]))
        view = LengthOrdered(ds)
        loader = DataLoader(view, batch_size=16, collate_fn=collate)
        for k, got in enumerate(loader):
            _assert_batches_equal(got, collate([view[i] for i in range(16 * k, min(16 * k + 16, len(view)))]))


@pytest.fixture(scope="module")
def synthetic(cohort, splits):
    keep = sorted(cohort.events["subject_id"].unique())[:60]
    ev = cohort.events.loc[cohort.events["subject_id"].isin(keep)].reset_index(drop=True)
    sp = splits.loc[splits["subject_id"].isin(keep)].reset_index(drop=True)
    fz = Featurizer(FeaturizerConfig(max_len=40)).fit(ev, sp)
    return fz.transform(ev, _rows_with_edges(ev, 2))


def test_vectorised_batches_equal_the_row_by_row_batches_on_synthetic_rows(synthetic) -> None:
    y = np.random.default_rng(2).random((len(synthetic), 2)).astype(np.float32)
    _check(synthetic, y)
    _check(synthetic, None)


def test_vectorised_batches_equal_the_row_by_row_batches_on_real_icu_data(mimic_slice) -> None:
    ev = read_meds(mimic_slice, column_map=MIMIC_COLUMN_MAP).events
    sp = PatientSplitter(strategy="random", seed=1).split(subjects_table(ev))
    fz = Featurizer(FeaturizerConfig(max_len=40)).fit(ev, sp)
    fs = fz.transform(ev, _rows_with_edges(ev, 3))
    _check(fs, np.random.default_rng(3).random((len(fs), 1)).astype(np.float32))


def test_a_dataloader_hands_collate_lazy_rows_that_still_read_as_items(synthetic) -> None:
    """Custom collate functions get a sequence of the usual item dicts."""
    ds = SequenceDataset(synthetic, None, tokens=False, steps=True)
    seen: list[Rows] = []
    next(iter(DataLoader(ds, batch_size=5, collate_fn=lambda items: seen.append(items) or 0)))
    rows = seen[0]
    assert isinstance(rows, Rows) and len(rows) == 5
    assert [int(it["subject_id"]) for it in rows] == ds.subject_ids[:5].tolist()
    np.testing.assert_array_equal(rows[-1]["steps"], ds[4]["steps"])
    assert len(rows[1:3]) == 2
    with pytest.raises(ValueError, match="at least one row"):
        ds.batch([])
