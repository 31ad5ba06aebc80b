"""Issue #15, third round: with ``attention_probs_dropout_prob`` 0 BEHRT trains on SDPA's fused attention and
computes the same model as the written-out product; predictions in length order do not depend on the batch size;
the CDAI config sets the option and it reaches the model, pretraining and fine-tuning alike."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ehrseq.config import load_config
from ehrseq.data.dataset import LengthOrdered, bucketed_batches
from ehrseq.models import behrt_encoder
from ehrseq.models.behrt import BehrtModel, behrt_tiny
from ehrseq.models.behrt_encoder import attention
from ehrseq.registry import build_model, make_dataset
from ehrseq.train.trainer import TrainConfig, predict_logits, train
from tests.test_behrt import VOCAB, make_batch, short_window_rows

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def rows60(cohort, splits, labels):
    """60 subjects' CDAI rows (lengths vary), featurized with a short window, and their fitted featurizer."""
    _, _, lab, fz, fs = short_window_rows(cohort, splits, labels, 60)
    return lab, fz, fs


def _written_out(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return scores.masked_fill(~key_mask, float("-inf")).softmax(-1) @ v


@pytest.mark.parametrize("n_queries", [11, 1])  # every token, or the last layer's pooled query only
def test_fused_attention_without_dropout_equals_the_written_out_product_and_its_gradients(n_queries) -> None:
    g = torch.Generator().manual_seed(0)
    q0, k0, v0 = (torch.randn(3, 2, n, 8, generator=g) for n in (n_queries, 11, 11))
    key_mask = (torch.arange(11)[None] < torch.tensor([11, 6, 1])[:, None])[:, None, None, :]
    outs, grads = [], []
    for fn in (lambda q, k, v: attention(q, k, v, key_mask, 0.0), lambda q, k, v: _written_out(q, k, v, key_mask)):
        q, k, v = (t.clone().requires_grad_() for t in (q0, k0, v0))
        out = fn(q, k, v)
        (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        outs.append(out)
        grads.append([t.grad for t in (q, k, v)])
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=0)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def _sdpa_calls(monkeypatch, model: BehrtModel, batch) -> int:
    calls, sdpa = [], F.scaled_dot_product_attention

    def counted(*args, **kwargs):
        calls.append(kwargs.get("dropout_p"))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(behrt_encoder.F, "scaled_dot_product_attention", counted)
    model(batch).loss.backward()
    monkeypatch.undo()
    return len(calls)


def test_training_with_attention_dropout_0_runs_the_fused_kernel_and_the_same_model(monkeypatch) -> None:
    b = make_batch(n=5, length=20, seed=2)
    torch.manual_seed(0)
    fused = BehrtModel(behrt_tiny(vocab_size=VOCAB, head="binary", attention_probs_dropout_prob=0.0)).train()
    torch.manual_seed(0)
    dropped = BehrtModel(behrt_tiny(vocab_size=VOCAB, head="binary")).train()  # attention dropout 0.1
    assert _sdpa_calls(monkeypatch, fused, b) == 2  # both layers, in training
    assert _sdpa_calls(monkeypatch, dropped, b) == 0  # written out, with fast_dropout on the probabilities
    # hidden dropout 0 too: training mode is then the eval-mode model, forward and backward
    torch.manual_seed(0)
    m = BehrtModel(behrt_tiny(vocab_size=VOCAB, head="binary", attention_probs_dropout_prob=0.0,
                              hidden_dropout_prob=0.0))
    outs = {}
    for mode in ("train", "eval"):
        getattr(m, mode)()
        m.zero_grad()
        o = m(b)
        o.loss.backward()
        outs[mode] = (o.logits.detach(), m.encoder.layer[0].attention.self.query.weight.grad.clone())
    for a, c in zip(outs["train"], outs["eval"], strict=True):
        torch.testing.assert_close(a, c, atol=1e-6, rtol=0)


def test_bf16_training_writes_the_product_out_and_bf16_inference_runs_the_fused_kernel(monkeypatch) -> None:
    """SDPA's bfloat16 backward on the CPU is several times slower than the written-out product's."""
    b = make_batch(n=5, length=20, seed=2)
    torch.manual_seed(0)
    m = BehrtModel(behrt_tiny(vocab_size=VOCAB, head="binary", attention_probs_dropout_prob=0.0)).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _sdpa_calls(monkeypatch, m, b) == 0
        m.eval()
        with torch.no_grad():
            calls, sdpa = [], F.scaled_dot_product_attention
            monkeypatch.setattr(behrt_encoder.F, "scaled_dot_product_attention",
                                lambda *a, **k: calls.append(1) or sdpa(*a, **k))
            out = m(b).logits
            monkeypatch.undo()
    assert len(calls) == 2
    with torch.no_grad():
        torch.testing.assert_close(out, m(b).logits, atol=0.05, rtol=0.05)


def test_length_ordered_predictions_do_not_depend_on_the_inference_batch_size(rows60) -> None:
    _, fz, fs = rows60
    ds = make_dataset(fs, None, fz, "behrt")
    assert len(np.unique(ds.lengths)) > 5  # rows of many lengths: batches pad differently
    torch.manual_seed(0)
    m = build_model("behrt", "binary", 1, fz, "tiny", {}).eval()
    view = LengthOrdered(ds)
    ref = view.restore(predict_logits(m, view, batch_size=32))
    for bs in (1, 7, 256, 4096):
        np.testing.assert_allclose(view.restore(predict_logits(m, view, batch_size=bs)), ref, atol=1e-5, rtol=0)


def test_the_same_seed_trains_the_same_model_with_attention_dropout_0(rows60) -> None:
    lab, fz, fs = rows60
    ds = make_dataset(fs, lab["boolean_value"].to_numpy(np.float32)[:, None], fz, "behrt")
    cfg = TrainConfig(epochs=1, batch_size=16, seed=3, progress=False)

    def fit() -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        m = build_model("behrt", "binary", 1, fz, "tiny", {"attention_probs_dropout_prob": 0.0})
        train(m, ds, None, cfg, batches=bucketed_batches(ds, 16, 3), keep_best=False)
        return m.state_dict()

    a, b = fit(), fit()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_cdai_config_trains_without_attention_dropout_and_keeps_hidden_dropout(rows60) -> None:
    _, fz, _ = rows60
    cfg = load_config(CONFIGS / "cdai_behrt.yaml")
    assert cfg.model_overrides["attention_probs_dropout_prob"] == 0.0
    for head in ("mlm", "binary"):  # pretraining and fine-tuning build from the same overrides
        m = build_model("behrt", head, 1, fz, cfg.preset, dict(cfg.model_overrides))
        assert m.config.attention_probs_dropout_prob == 0.0 and m.config.hidden_dropout_prob == 0.1
        assert {layer.p_attn for layer in m.encoder.layer} == {0.0}
