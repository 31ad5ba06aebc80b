"""The speed work on BEHRT (issue #15) keeps behaviour: old weights load and give the same outputs, the token cache
equals the per-row views, length buckets cover every row once per epoch under the seed, padding and batch order
change no prediction, ids are range-checked on the data side, and the same seed trains the same model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.bert.modeling_bert import BertEncoder

from ehrseq.data.dataset import LengthBucketSampler, LengthOrdered, SequenceDataset, bucketed_batches
from ehrseq.data.token_views import token_views
from ehrseq.errors import DataValidationError
from ehrseq.featurize.featurizer import Featurizer, FeaturizerConfig
from ehrseq.featurize.tokens import build_tokens
from ehrseq.io import read_meds
from ehrseq.models.behrt import BehrtModel, behrt_tiny
from ehrseq.models.behrt_encoder import fast_dropout
from ehrseq.models.masking import mask_codes
from ehrseq.registry import behrt_id_limits, build_model, make_dataset
from ehrseq.train.trainer import TrainConfig, predict_logits, train
from tests.conftest import MIMIC_COLUMN_MAP
from tests.test_behrt import VOCAB, make_batch, rows, short_window_rows


@pytest.fixture(scope="module")
def small(cohort, splits, labels):
    """80 subjects' CDAI rows featurized with a short window (many truncated rows, pinned serology)."""
    return short_window_rows(cohort, splits, labels, 80)


def _assert_views_equal(fs, max_len: int, max_visits: int, positions: str) -> None:
    offsets, flat = token_views(fs, max_len, max_visits, positions)
    assert len(offsets) == len(fs) + 1
    for i in range(len(fs)):
        want = build_tokens(fs, i, max_len, max_visits, positions)
        for k, v in want.items():
            np.testing.assert_array_equal(flat[k][offsets[i]:offsets[i + 1]], v, err_msg=f"row {i} {k}")


@pytest.mark.parametrize(("repeats", "positions", "max_len"),
                         [("last_in_visit", "last", 40), ("all", "first", 40), ("last_in_visit", "first", 12)])
def test_token_cache_equals_the_per_row_views_on_synthetic_rows(small, repeats, positions, max_len) -> None:
    ev, sp, lab, _, _ = small
    fz = Featurizer(FeaturizerConfig(max_len=max_len, repeats=repeats, positions=positions)).fit(ev, sp)
    fs = fz.transform(ev, lab)
    assert fs.counts["truncated_rows"] > 0
    _assert_views_equal(fs, max_len, fz.config.max_visits, positions)


def test_token_cache_equals_the_per_row_views_on_real_icu_data(mimic_slice) -> None:
    """Dense real data: many repeats of a code within a day, cuts inside a day, static rows."""
    import pandas as pd

    from ehrseq.split import PatientSplitter, subjects_table

    ev = read_meds(mimic_slice, column_map=MIMIC_COLUMN_MAP).events
    sp = PatientSplitter(strategy="random", seed=1).split(subjects_table(ev))
    span = ev.loc[ev["time"].notna()].groupby("subject_id")["time"].agg(["min", "max"])
    q = np.random.default_rng(0).random((len(span), 3))
    lab = pd.DataFrame({"subject_id": np.repeat(span.index.to_numpy(), 3),
                        "prediction_time": (np.repeat(span["min"].to_numpy(), 3)
                                            + np.repeat((span["max"] - span["min"]).to_numpy(), 3) * q.ravel())})
    lab["prediction_time"] = lab["prediction_time"].astype("datetime64[us]")
    for repeats in ("last_in_visit", "all"):
        fz = Featurizer(FeaturizerConfig(max_len=64, repeats=repeats)).fit(ev, sp)
        _assert_views_equal(fz.transform(ev, lab), 64, fz.config.max_visits, fz.config.positions)


def test_cached_and_uncached_datasets_give_the_same_items(small) -> None:
    _, _, _, fz, fs = small
    a = make_dataset(fs, None, fz, "behrt")
    b = SequenceDataset(fs, None, max_len=40, max_visits=fz.config.max_visits, steps=False,
                        positions=fz.config.positions, cache_tokens=False)
    assert np.array_equal(a.lengths, b.lengths)
    for i in (0, 7, len(fs) - 1):
        x, y = a[i], b[i]
        assert all(np.array_equal(x[k], y[k]) for k in y if k != "steps")


def test_out_of_range_ids_are_refused_once_on_the_data_side(small) -> None:
    _, _, _, fz, fs = small
    limits = behrt_id_limits(fz)
    SequenceDataset(fs, None, max_len=40, max_visits=fz.config.max_visits, id_limits=limits)  # fits
    too_small = {**limits, "code_ids": 6}  # a model whose vocabulary holds one real code
    with pytest.raises(DataValidationError, match="code_ids") as e:
        SequenceDataset(fs, None, max_len=40, max_visits=fz.config.max_visits, id_limits=too_small)
    assert e.value.column == "code_ids" and e.value.n_rows > 0
    assert set(e.value.subject_ids) <= set(fs.labels["subject_id"])
    assert "featurizer" in str(e.value)


def test_length_buckets_cover_every_row_once_per_epoch_and_follow_the_seed() -> None:
    lengths = np.random.default_rng(0).integers(3, 97, 1003)
    s = LengthBucketSampler(lengths, 32, seed=5, epoch=0, window=4)
    batches = list(s)
    assert len(batches) == len(s) == 32  # ceil(1003 / 32), as an unbucketed loader gives
    flat = np.concatenate(batches)
    assert np.array_equal(np.sort(flat), np.arange(1003))  # every row exactly once
    assert batches == list(LengthBucketSampler(lengths, 32, seed=5, epoch=0, window=4))  # same seed, same batches
    assert batches != list(LengthBucketSampler(lengths, 32, seed=5, epoch=1, window=4))  # reshuffled per epoch
    assert batches != list(LengthBucketSampler(lengths, 32, seed=6, epoch=0, window=4))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    rand = np.random.default_rng(1).permutation(1003)
    padded_random = sum(len(b) * lengths[b].max() for b in np.array_split(rand, 32))
    assert padded < 0.75 * padded_random  # far less padding than random batches
    assert list(LengthBucketSampler(lengths[:0], 8)) == []


def test_length_ordered_predictions_equal_dataset_order_predictions(small) -> None:
    _, _, _, fz, fs = small
    ds = make_dataset(fs, None, fz, "behrt")
    torch.manual_seed(0)
    m = build_model("behrt", "binary", 1, fz, "tiny", {}).eval()
    view = LengthOrdered(ds)
    assert (np.diff(ds.lengths[view.order]) >= 0).all()
    np.testing.assert_allclose(view.restore(predict_logits(m, view, batch_size=16)),
                               predict_logits(m, ds, batch_size=16), atol=1e-5, rtol=0)


def test_old_weights_load_and_give_the_same_outputs(tmp_path) -> None:
    """An artifact of the old model (transformers' BertEncoder) loads into the new one: same names, shapes and
    outputs; the new encoder equals BertEncoder given the same weights."""
    from benchmarks.behrt_baseline import BehrtConfig as OldConfig
    from benchmarks.behrt_baseline import BehrtModel as OldModel

    torch.manual_seed(0)
    old = OldModel(OldConfig(**behrt_tiny(vocab_size=VOCAB, head="binary").to_dict())).eval()
    old.save_pretrained(tmp_path)
    new = BehrtModel.from_pretrained(tmp_path).eval()
    assert {k: v.shape for k, v in old.state_dict().items()} == {k: v.shape for k, v in new.state_dict().items()}
    b = make_batch(n=5, length=20, seed=3)
    with torch.no_grad():
        o, n = old(b), new(b)
        torch.testing.assert_close(n.logits, o.logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(n.embeddings, o.embeddings, atol=1e-5, rtol=0)
        bert = new.config.bert_config()
        bert._attn_implementation = "sdpa"  # what the old model ran
        hf = BertEncoder(bert).eval()
        hf.load_state_dict(new.encoder.state_dict())
        h = torch.randn(5, 20, 32)
        mask = create_bidirectional_mask(config=hf.config, inputs_embeds=h, attention_mask=b.attention_mask.bool())
        torch.testing.assert_close(new.encoder(h, b.attention_mask), hf(h, attention_mask=mask).last_hidden_state,
                                   atol=1e-5, rtol=0)


def test_masked_only_mlm_loss_and_logits_equal_the_full_head() -> None:
    torch.manual_seed(0)
    m = BehrtModel(behrt_tiny(vocab_size=VOCAB, head="mlm")).eval()
    b = make_batch(n=6, length=24, seed=5)
    masked, labels = mask_codes(b.code_ids, b.attention_mask, VOCAB, torch.Generator().manual_seed(0), prob=0.3)
    b = dataclasses.replace(b, code_ids=masked)
    with torch.no_grad():
        full, part = m(b, labels=labels), m(b, labels=labels, masked_only=True)
    picked = labels != -100
    assert part.logits.shape == (int(picked.sum()), VOCAB)
    torch.testing.assert_close(part.logits, full.logits[picked], atol=1e-5, rtol=0)
    torch.testing.assert_close(part.loss, full.loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(part.embeddings, full.embeddings, atol=1e-5, rtol=0)
    # padding appended to the batch changes neither
    with torch.no_grad():
        padded = m(rows(b, slice(None), pad_to=40), labels=torch.nn.functional.pad(labels, (0, 16), value=-100),
                   masked_only=True)
    torch.testing.assert_close(padded.loss, part.loss, atol=1e-6, rtol=0)
    nothing = m(b, labels=torch.full_like(labels, -100), masked_only=True)
    assert nothing.loss.item() == 0.0 and nothing.logits.shape == (0, VOCAB)


def test_fast_dropout_keeps_one_minus_p_scaled_and_follows_the_seed() -> None:
    x = torch.ones(200, 1000)
    torch.manual_seed(0)
    y = fast_dropout(x, 0.1)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.005
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.9))
    torch.manual_seed(0)
    assert torch.equal(fast_dropout(x, 0.1), y)
    assert fast_dropout(x, 0.1, training=False) is x and fast_dropout(x, 0.0) is x
    assert (fast_dropout(x, 1.0) == 0).all()
    g = torch.ones(10, 10, requires_grad=True)
    out = fast_dropout(g, 0.5)
    out.sum().backward()
    torch.testing.assert_close(g.grad, (out != 0).float() * 2.0)


def test_the_same_seed_trains_the_same_model_with_length_buckets(small) -> None:
    _, _, lab, fz, fs = small
    ds = make_dataset(fs, lab["boolean_value"].to_numpy(np.float32)[:, None], fz, "behrt")
    cfg = TrainConfig(epochs=1, batch_size=16, seed=3, progress=False)

    def fit() -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        m = build_model("behrt", "binary", 1, fz, "tiny", {})
        train(m, ds, None, cfg, batches=bucketed_batches(ds, 16, 3), keep_best=False)
        return m.state_dict()

    a, b = fit(), fit()
    assert all(torch.equal(a[k], b[k]) for k in a)
