"""Scorer batches rows by length for the forward pass; each row's output is the one it gets on its own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ehrseq import api
from ehrseq.data.dataset import collate
from ehrseq.labels import prediction_times
from ehrseq.registry import make_dataset
from ehrseq.scoring.predict import Scorer


@pytest.fixture(scope="module")
def rnn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Scorer, Path]:
    tmp = tmp_path_factory.mktemp("batches")
    api.synthesize(120, out=tmp, extract=False)
    api.finetune(tmp / "meds", target="cdai", out=tmp / "art", preset="tiny", train={"epochs": 1, "progress": False},
                 n_bootstrap=0)
    return Scorer.load(tmp / "art"), tmp / "meds"


def test_length_ordered_batches_give_each_row_its_own_output_in_row_order(rnn):
    scorer, meds = rnn
    events = api.load_data(meds).events
    rows = prediction_times("cdai", events).reset_index(drop=True)
    fs = scorer.featurizer.transform(events, rows)
    lengths = np.asarray(fs.step_cut) - np.asarray(fs.step_start)
    assert len(np.unique(lengths)) > 3  # rows of many lengths: the sort reorders them
    ds = make_dataset(fs, None, scorer.featurizer, "rnn")
    pick = np.r_[0:5, len(ds) - 5:len(ds), np.argsort(lengths)[:3]]
    with torch.inference_mode():
        logits, _ = scorer._forward(fs)
        alone = torch.cat([scorer.model(collate([ds[int(i)]])).logits.float() for i in pick])
    np.testing.assert_allclose(logits[pick].numpy(), alone.numpy(), atol=1e-6)
    assert scorer.timings["forward"] > 0 and scorer.timings["views"] > 0
