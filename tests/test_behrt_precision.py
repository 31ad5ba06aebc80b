"""train.precision (bf16 autocast, issue #15) and the trainer's flat AdamW: validated, falls back to fp32 where
bf16 is not native, trains BEHRT to finite losses, and pads shapes without changing any result."""

from __future__ import annotations

import copy
import logging
from dataclasses import replace

import pytest
import torch
from torch import nn

from ehrseq.config import load_config
from ehrseq.errors import ConfigError
from ehrseq.models.behrt import BehrtModel, behrt_tiny
from ehrseq.models.behrt_encoder import fast_dropout
from ehrseq.models.masking import mask_codes
from ehrseq.train import trainer
from ehrseq.train.trainer import TrainConfig, autocast_for, bf16_supported, make_adamw, predict_logits, train
from tests.test_behrt import VOCAB, make_batch

CPU = torch.device("cpu")
needs_bf16 = pytest.mark.skipif(not bf16_supported(CPU), reason="this CPU has no native bf16 kernels")


def test_precision_is_validated_with_a_config_error_naming_the_key() -> None:
    assert TrainConfig().precision == "fp32"  # the default is unchanged
    assert load_config(train={"precision": "bf16"}).train.precision == "bf16"
    with pytest.raises(ConfigError, match=r"train\.precision must be one of \('fp32', 'bf16'\), got 'fp16'"):
        load_config(train={"precision": "fp16"})
    with pytest.raises(ConfigError, match="train.precision"):
        autocast_for("half", CPU)


def test_bf16_falls_back_to_fp32_with_one_warning_where_not_native(monkeypatch, caplog) -> None:
    monkeypatch.setattr(trainer, "bf16_supported", lambda device: False)
    monkeypatch.setattr(trainer, "_warned_precision", set())
    with caplog.at_level(logging.WARNING, logger="ehrseq.train.trainer"):
        for _ in range(3):
            with autocast_for("bf16", CPU):
                assert not torch.is_autocast_enabled("cpu")
    assert [r.message for r in caplog.records].count(
        "train.precision: bf16 is not supported natively on this cpu; running in fp32") == 1
    with autocast_for("fp32", CPU):
        assert not torch.is_autocast_enabled("cpu")


@needs_bf16
def test_bf16_autocast_is_on_for_the_model_device_type() -> None:
    with autocast_for("bf16", CPU):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16


@needs_bf16
@pytest.mark.parametrize("head", ["binary", "mlm"])
def test_bf16_forward_pads_shapes_but_gives_the_fp32_result_shapes_and_close_values(head) -> None:
    torch.manual_seed(0)
    m = BehrtModel(behrt_tiny(vocab_size=VOCAB, head=head)).eval()
    b = make_batch(n=5, length=13, seed=3)  # 13 tokens: padded to 16 under autocast
    labels = None
    if head == "mlm":
        masked, labels = mask_codes(b.code_ids, b.attention_mask, VOCAB, torch.Generator().manual_seed(1))
        b = replace(b, code_ids=masked, labels=None)
    with torch.no_grad():
        want = m(b, labels=labels)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = m(b, labels=labels)
            if head == "mlm":
                got_rows = m(b, labels=labels, masked_only=True)
    assert got.logits.dtype == torch.float32 and got.logits.shape == want.logits.shape
    torch.testing.assert_close(got.logits, want.logits, atol=0.05, rtol=0.05)
    torch.testing.assert_close(got.loss, want.loss, atol=0.02, rtol=0.02)
    assert not torch.equal(got.logits, want.logits)  # bf16 kernels did run
    if head == "mlm":
        n = int((labels != -100).sum())
        assert got_rows.logits.shape == (n, VOCAB)  # the padded rows are cut off again
        torch.testing.assert_close(got_rows.loss, want.loss, atol=0.02, rtol=0.02)


@needs_bf16
def test_bf16_training_gives_finite_losses_close_to_fp32() -> None:
    ds = [make_batch(n=8, length=12 + i % 5, seed=i) for i in range(6)]
    cfg = TrainConfig(epochs=2, batch_size=8, lr=5e-3, progress=False, device="cpu")
    runs = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        m = BehrtModel(behrt_tiny(vocab_size=VOCAB, head="binary"))
        r = train(m, ds, ds[:1], replace(cfg, precision=precision), batches=lambda epoch: ds,
                  collate_fn=lambda items: items[0])  # the tuning "dataset" is one ready batch
        runs[precision] = (r, m)
    hist = {p: [v for row in r.history for v in (row["train_loss"], row["tuning_loss"])] for p, (r, _) in runs.items()}
    assert all(torch.isfinite(torch.tensor(hist["bf16"])))
    assert hist["bf16"] != hist["fp32"]  # bf16 really ran
    torch.testing.assert_close(torch.tensor(hist["bf16"]), torch.tensor(hist["fp32"]), atol=0.03, rtol=0.03)
    assert all(p.dtype == torch.float32 for p in runs["bf16"][1].parameters())  # fp32 master weights


def test_fast_dropout_in_bf16_keeps_one_minus_p_scaled() -> None:
    torch.manual_seed(0)
    y = fast_dropout(torch.ones(100, 1000, dtype=torch.bfloat16), 0.1)
    kept = y != 0
    assert y.dtype == torch.bfloat16 and abs(kept.float().mean().item() - 0.9) < 0.005
    assert torch.equal(y[kept], torch.full_like(y[kept], 1 / 0.9))


@pytest.mark.parametrize("grad_clip", [0.0, 0.05])
def test_the_trainers_fused_adamw_updates_as_torch_foreach_adamw(grad_clip: float) -> None:
    torch.manual_seed(0)
    m1 = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    m2 = copy.deepcopy(m1)
    o1 = torch.optim.AdamW(m1.parameters(), lr=1e-2, weight_decay=1e-2, foreach=True)
    o2 = make_adamw(m2.parameters(), lr=1e-2, weight_decay=1e-2, device=CPU)
    assert o2.defaults["fused"] is True
    for i in range(12):
        x = torch.randn(16, 5)
        for m, o in ((m1, o1), (m2, o2)):
            o.zero_grad()
            m(x).pow(2).mean().backward()
            if i == 7:
                m[2].bias.grad = None  # a parameter without a gradient is skipped by both
            if grad_clip:
                nn.utils.clip_grad_norm_(m.parameters(), grad_clip)
            o.step()
    for (name, a), b in zip(m1.named_parameters(), m2.parameters(), strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5, msg=name)


@needs_bf16
def test_bf16_inference_is_close_to_fp32() -> None:
    torch.manual_seed(0)
    m = BehrtModel(behrt_tiny(vocab_size=VOCAB, head="binary")).eval()
    ds = [make_batch(n=4, length=10 + i, seed=i) for i in range(3)]  # already batches: one per loader step
    kw = {"batch_size": 1, "collate_fn": lambda items: items[0]}
    want = predict_logits(m, ds, **kw)
    got = predict_logits(m, ds, precision="bf16", **kw)
    assert got.dtype == want.dtype and got.shape == want.shape == (12, 1)
    assert 0 < abs(got - want).max() < 0.05
