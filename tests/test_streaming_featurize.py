"""Streaming a MEDS root in batches of whole subjects gives the in-memory path's featurizer, arrays and hash.

The synthetic cohort is written as three shards, the MIMIC slice split into three; batches are made small so
each shard spans several. Compared array for array with ``Featurizer.fit`` / ``transform`` on the whole frame.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehrseq.data import sharded
from ehrseq.data.sharded import OutOfOrder, RowHasher, batches, stream_datasets
from ehrseq.featurize.featurizer import Featurizer, FeaturizerConfig
from ehrseq.featurize.sharded import FitAccumulator
from ehrseq.io import read_meds, write_meds, write_subject_splits
from ehrseq.labels import cdai_labels
from ehrseq.recipes.pretrain import whole_history_labels
from ehrseq.registry import behrt_id_limits, make_dataset
from ehrseq.split import PatientSplitter, ids_in, subjects_table
from ehrseq.utils import frame_hash

MIMIC_MAP = {"value": "numeric_value"}


@pytest.fixture(autouse=True)
def small_batches(monkeypatch):
    monkeypatch.setattr(sharded, "BATCH_ROWS", 3000)


@pytest.fixture(scope="module")
def roots(tmp_path_factory, cohort, mimic_slice):
    """(root, column_map, events read whole, splits) for the cohort in 3 shards and the MIMIC slice in 3."""
    tmp = tmp_path_factory.mktemp("streamed")
    write_meds(cohort.events, tmp / "cohort", shard_size=110)
    raw = pd.read_parquet(mimic_slice)
    (tmp / "mimic" / "data").mkdir(parents=True)
    for i, part in enumerate(np.array_split(np.sort(raw["subject_id"].unique()), 3)):
        raw[raw["subject_id"].isin(part)].to_parquet(tmp / "mimic" / "data" / f"{i}.parquet", index=False)
    out = {}
    for name, cmap in (("cohort", None), ("mimic", MIMIC_MAP)):
        whole = read_meds(tmp / name, column_map=cmap).events
        splits = PatientSplitter(seed=1).split(subjects_table(whole))
        write_subject_splits(splits, tmp / name)
        out[name] = (tmp / name, cmap, whole, splits)
    return out


CONFIGS = [FeaturizerConfig(), FeaturizerConfig(step_every="hour", top_step_codes=5, min_count=2, repeats="all")]


@pytest.mark.parametrize("name", ["cohort", "mimic"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=["default", "hour"])
def test_streamed_fit_equals_fit(roots, name, cfg):
    root, cmap, whole, splits = roots[name]
    acc = FitAccumulator(cfg, ids_in(splits, "train"))
    parts = list(batches(root, cmap))
    assert len(parts) >= 3
    for b in parts:
        acc.add(b)
    assert pd.concat(parts, ignore_index=True).equals(whole)
    assert acc.finish().to_dict() == Featurizer(cfg).fit(whole, splits).to_dict()


def test_row_hasher_equals_frame_hash(roots):
    root, cmap, whole, _ = roots["mimic"]
    h = RowHasher()
    for b in batches(root, cmap):
        h.add(b)
    assert h.hexdigest() == frame_hash(whole, ["subject_id", "time", "code", "numeric_value"])


def _labels(name, whole, splits, split):
    if name == "cohort":
        lab = cdai_labels(whole)
        return lab.loc[lab["subject_id"].isin(ids_in(splits, split))].reset_index(drop=True)
    return whole_history_labels(whole, ids_in(splits, split), 3, seed=0)


@pytest.mark.parametrize("name", ["cohort", "mimic"])
@pytest.mark.parametrize("model", ["rnn", "behrt"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=["default", "hour"])
def test_streamed_datasets_equal_in_memory(roots, name, model, cfg):
    root, cmap, whole, splits = roots[name]
    fz = Featurizer(cfg).fit(whole, splits)
    rows = {}
    for split in ("train", "held_out"):
        lab = _labels(name, whole, splits, split)
        if split == "held_out":  # rows in no subject order: the store puts them back in the table's order
            lab = lab.sample(frac=1.0, random_state=0).reset_index(drop=True)
        rows[split] = (lab, np.arange(len(lab), dtype=np.float32))
    limits = behrt_id_limits(fz) if model == "behrt" else None
    got = stream_datasets(root, cmap, None, fz, model, rows, id_limits=limits)
    for split, (lab, y) in rows.items():
        fs = fz.transform(whole, lab)
        want, ds = make_dataset(fs, y, fz, model), got[split]
        assert len(ds) == len(want) > 0
        assert ds.fs.counts == fs.counts
        assert ds.fs.labels.equals(fs.labels)
        np.testing.assert_array_equal(ds.lengths, want.lengths)
        if model == "behrt":
            for k, v in want._cache.items():
                assert ds._cache[k].dtype == v.dtype, k
                np.testing.assert_array_equal(ds._cache[k], v, err_msg=k)
        a, b = ds.batch(np.arange(len(ds))), want.batch(np.arange(len(want)))
        for k in ("subject_id", "code_ids", "age_ids", "position_ids", "value_ids", "value_num", "visit_x",
                  "visit_mask", "static_x", "labels", "attention_mask"):
            assert torch_equal(getattr(a, k), getattr(b, k)), k


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool((a == b).all())


def test_shards_out_of_subject_order_are_refused(tmp_path, cohort):
    ev = cohort.events
    ids = np.sort(ev["subject_id"].unique())
    (tmp_path / "data").mkdir()
    for i, part in enumerate([ids[150:], ids[:150]]):  # the later subjects in the first shard
        write_meds(ev[ev["subject_id"].isin(part)], tmp_path / f"p{i}", shard_size=1000)
        (tmp_path / f"p{i}" / "data" / "0.parquet").rename(tmp_path / "data" / f"{i}.parquet")
    with pytest.raises(OutOfOrder):
        list(batches(tmp_path))
