"""The text classifier's faster paths: inference order and batch size change no probability, the masked-LM
loss on masked positions equals the full-head loss, the new options are seeded, reach the encoder and are
checked."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ehrseq.errors import ConfigError, EhrseqError  # noqa: E402
from ehrseq.models.text_classifier import TextClassifier, TextClassifierConfig  # noqa: E402
from ehrseq.models.text_net import _group, _length_batches, _mlm_loss, _pad, _TextBatch  # noqa: E402
from ehrseq.synth.reports import generate_reports  # noqa: E402

ATOL = 1e-5


def _tiny(**kw: object) -> TextClassifierConfig:
    return TextClassifierConfig.from_preset("tiny", **{"epochs": 1, "mlm_epochs": 1, "vocab_size": 300,
                                                       "device": "cpu", **kw})


@pytest.fixture(scope="module")
def data() -> dict[str, pd.DataFrame]:
    return {"train": generate_reports(40, seed=1, site="A"), "tuning": generate_reports(16, seed=2, site="A")}


@pytest.fixture(scope="module")
def model(data: dict[str, pd.DataFrame]) -> TextClassifier:
    # max_length 48: the longer reports become several windows of unequal length
    return TextClassifier(_tiny(max_length=48, stride=8)).fit(data["train"], data["tuning"])


def _old_proba(model: TextClassifier, texts: list[str]) -> np.ndarray:
    """The probabilities as the code before length-sorted inference computed them: reports in their order,
    32 at a time, every window of a batch padded to the batch's longest, max over a report's windows."""
    w = model.windows(texts)
    by_report, out = _group(w, len(texts)), []
    with torch.no_grad():
        for start in range(0, len(texts), 32):
            batch = model._batch(w, by_report, list(range(start, min(len(texts), start + 32))))  # noqa: SLF001
            out.append(torch.sigmoid(model.net_.eval()(**batch).logits).numpy())
    return np.concatenate(out).astype(np.float64)


def test_inference_batch_size_and_order_change_no_probability(model: TextClassifier) -> None:
    texts = generate_reports(12, seed=3, site="B").text.tolist() + generate_reports(12, seed=3, site="A").text.tolist()
    assert model.n_windows(texts).max() > 1  # several windows per report are pooled
    ref = _old_proba(model, texts)
    for size in (1, 5, 32, 1000):
        model.config.predict_batch = size
        np.testing.assert_allclose(model.predict_proba(texts), ref, atol=ATOL, rtol=0)
    model.config.predict_batch = 32
    perm = np.random.default_rng(0).permutation(len(texts))
    np.testing.assert_allclose(model.predict_proba([texts[i] for i in perm]), ref[perm], atol=ATOL, rtol=0)
    one = np.concatenate([model.predict_proba([t]) for t in texts[:8]])
    np.testing.assert_allclose(one, ref[:8], atol=ATOL, rtol=0)


def test_masked_positions_loss_equals_the_full_head_loss(model: TextClassifier) -> None:
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    torch.manual_seed(0)
    mlm = DistilBertForMaskedLM(DistilBertConfig(vocab_size=len(model.tokenizer_), dim=32, n_layers=1, n_heads=2,
                                                 hidden_dim=64, max_position_embeddings=64)).eval()
    w = model.windows(generate_reports(6, seed=4, site="A").text.tolist())
    ids, att = _pad(w.ids[:6], model.tokenizer_.pad_token_id)
    chosen = (torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) < 0.2) & att.bool()
    full = mlm(input_ids=ids, attention_mask=att, labels=ids.masked_fill(~chosen, -100)).loss
    b = _TextBatch({"input_ids": ids, "attention_mask": att, "targets": ids[chosen],
                    "positions": chosen.flatten().nonzero().squeeze(1)}, 6)
    torch.testing.assert_close(_mlm_loss(mlm, b), full, atol=1e-6, rtol=0)
    none = _TextBatch({**b.inputs, "targets": ids[:0, 0], "positions": ids[:0, 0]}, 6)
    assert _mlm_loss(mlm, none) is None  # nothing masked: the trainer skips the step


def test_new_training_options_are_seeded_and_reach_the_encoder(data: dict[str, pd.DataFrame]) -> None:
    train, tuning = data["train"].iloc[:20], data["tuning"].iloc[:8]
    fast = _tiny(attention_dropout=0.0, length_buckets=True, dropout=0.2)
    p1 = TextClassifier(fast).fit(train, tuning)
    np.testing.assert_array_equal(p1.predict_proba(tuning), TextClassifier(fast).fit(train, tuning).predict_proba(tuning))
    assert p1.net_.encoder.config.attention_dropout == 0.0 and p1.net_.encoder.config.dropout == 0.2
    plain = TextClassifier(_tiny(dropout=0.2)).fit(train, tuning)
    assert plain.net_.encoder.config.attention_dropout == 0.2  # None: the old behaviour, = dropout
    assert not np.allclose(plain.predict_proba(tuning), p1.predict_proba(tuning))


def test_length_batches_cover_every_row_once_with_similar_lengths() -> None:
    lengths = np.random.default_rng(0).integers(5, 200, 100)
    rows = torch.randperm(100, generator=torch.Generator().manual_seed(0))
    got = _length_batches(rows, lengths, 8, torch.Generator().manual_seed(1), pool=4)
    assert sorted(r for b in got for r in b) == list(range(100)) and all(len(b) <= 8 for b in got)
    spread = np.mean([np.ptp(lengths[b]) for b in got])
    assert spread < np.mean([np.ptp(lengths[b.numpy()]) for b in rows.split(8)]) / 2


@pytest.mark.parametrize("bad", [{"attention_dropout": 1.0}, {"attention_dropout": "0"},
                                 {"predict_batch": 0}, {"predict_batch": True}, {"length_buckets": "yes"}])
def test_new_options_are_checked(bad: dict[str, object]) -> None:
    key = next(iter(bad))
    with pytest.raises(ConfigError, match=f"model.{key}") as e:
        TextClassifierConfig(**bad)
    assert isinstance(e.value, EhrseqError) and isinstance(e.value, ValueError)


def test_old_artifact_configs_take_the_old_behaviour() -> None:
    old = TextClassifierConfig.from_dict({"vocab_size": 500, "dropout": 0.1})  # written before these options
    assert old.attention_dropout is None and old.length_buckets is False and old.predict_batch >= 1
