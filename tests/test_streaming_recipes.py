"""finetune and pretrain on a sharded MEDS root stream it (no whole read) and give the in-memory path's results.

A small synthetic cohort is written as three shards with its split; each recipe runs once streamed (the default for
such a root) and once in memory (``EHRSEQ_STREAM=0``), with the same seed: metrics, predictions, fitted
featurizer and recorded data hash must be equal. A bad row in one shard raises the in-memory path's error.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

import ehrseq.api
import ehrseq.data.loading
from ehrseq import api
from ehrseq.data import sharded
from ehrseq.errors import DataValidationError
from ehrseq.io import write_meds, write_subject_splits
from ehrseq.recipes.pretrain import pretrain
from ehrseq.split import PatientSplitter, ids_in, subjects_table
from ehrseq.synth.cohort import generate_cohort

TRAIN = {"epochs": 1, "progress": False, "batch_size": 64}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A small cohort (fast training) in three shards, with its split."""
    events = generate_cohort(120, seed=5, biopsy_rate=0.0).events
    r = tmp_path_factory.mktemp("sharded") / "meds"
    write_meds(events, r, shard_size=45)
    write_subject_splits(PatientSplitter(seed=2).split(subjects_table(events)), r)
    return r


@pytest.fixture
def no_whole_read(monkeypatch):
    """Reading the extract whole fails: the streamed path must not do it."""
    def refuse(*a, **k):
        raise AssertionError("the data was read whole")
    monkeypatch.setattr(sharded, "BATCH_ROWS", 2000)
    monkeypatch.setattr(ehrseq.api, "load_data", refuse)
    monkeypatch.setattr(ehrseq.data.loading, "load_data", refuse)


def _untimed(metrics):
    """The metrics without the training speed (wall time, not a result)."""
    return {**metrics, "train": {k: v for k, v in metrics["train"].items() if k != "sequences_per_second"}}


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


@pytest.fixture(scope="module")
def in_memory(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("mem")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(sharded.STREAM_ENV, "0")
        ft = api.finetune(root, target="cdai", model="rnn", preset="tiny", train=TRAIN, n_bootstrap=0,
                          out=out / "ft")
        pt = pretrain(root, model="behrt", preset="tiny", train=TRAIN, prefixes_per_subject=2, out=out / "pt")
    return ft, pt, out


def test_finetune_streamed_equals_in_memory(root, in_memory, no_whole_read, tmp_path):
    want, _, out = in_memory
    got = api.finetune(root, target="cdai", model="rnn", preset="tiny", train=TRAIN, n_bootstrap=0,
                       out=tmp_path / "ft")
    assert _untimed(got.metrics) == _untimed(want.metrics)
    for split in ("tuning", "held_out"):
        pd.testing.assert_frame_equal(got.predictions[split], want.predictions[split])
    assert got.featurizer.to_dict() == want.featurizer.to_dict()
    assert _manifest(tmp_path / "ft")["data_hash"] == _manifest(out / "ft")["data_hash"]
    splits = pd.read_parquet(root / "metadata" / "subject_splits.parquet")
    assert set(got.predictions["held_out"]["subject_id"]) <= set(ids_in(splits, "held_out"))


def test_pretrain_streamed_equals_in_memory(root, in_memory, no_whole_read, tmp_path):
    _, want, out = in_memory
    got = pretrain(root, model="behrt", preset="tiny", train=TRAIN, prefixes_per_subject=2, out=tmp_path / "pt")
    assert _untimed(got) == _untimed(want)
    assert _manifest(tmp_path / "pt")["data_hash"] == _manifest(out / "pt")["data_hash"]


def test_a_bad_row_in_a_shard_raises_the_same_error(root, tmp_path, monkeypatch):
    bad = tmp_path / "bad"
    (bad / "data").mkdir(parents=True)
    (bad / "metadata").mkdir()
    for f in ("subject_splits.parquet",):
        (bad / "metadata" / f).write_bytes((root / "metadata" / f).read_bytes())
    for f in sorted((root / "data").glob("*.parquet")):
        df = pd.read_parquet(f)
        if f.name == "1.parquet":
            df.loc[5, "code"] = None
        df.to_parquet(bad / "data" / f.name, index=False)
    errors = []
    for stream in ("1", "0"):
        monkeypatch.setenv(sharded.STREAM_ENV, stream)
        with pytest.raises(DataValidationError) as e:
            api.finetune(bad, target="cdai", model="rnn", preset="tiny", train=TRAIN, n_bootstrap=0)
        errors.append(str(e.value))
    assert errors[0] == errors[1]
    assert "1.parquet" in errors[0] and "code" in errors[0]


def test_the_mmap_threshold_is_fixed_where_glibc_has_mallopt() -> None:
    import ctypes.util
    import platform

    from ehrseq.utils import fix_mmap_threshold

    has_glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" and ctypes.util.find_library("c")
    assert fix_mmap_threshold() is bool(has_glibc)
