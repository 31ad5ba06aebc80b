"""RNN forecaster: shapes, learning, padding, save/load, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ehrseq.data.batch import Batch
from ehrseq.models.rnn_forecaster import RNNConfig, RNNForecaster


def make_batch(b: int = 6, v: int = 5, f: int = 7, s: int = 4, seed: int = 0, labels: bool = True) -> Batch:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, v + 1, (b,), generator=g)
    mask = torch.arange(v)[None, :] < lengths[:, None]
    x = torch.randn(b, v, f, generator=g) * mask[..., None]
    z = torch.zeros(b, 1, dtype=torch.long)
    return Batch(
        subject_id=torch.arange(b), code_ids=z, age_ids=z, segment_ids=z, position_ids=z, time_ids=z, value_ids=z,
        attention_mask=z, visit_x=x, visit_mask=mask, static_x=torch.randn(b, s, generator=g),
        labels=(torch.rand(b, 1, generator=g) > 0.5).float() if labels else None,
    )


def tiny(head: str = "binary", k: int = 1, cell: str = "gru") -> RNNForecaster:
    torch.manual_seed(0)
    return RNNForecaster(RNNConfig(7, 4, hidden_size=8, static_hidden=4, dropout=0.0, head=head, num_labels=k, cell=cell))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_forward_shapes_and_loss(cell):
    out = tiny(cell=cell)(make_batch())
    assert out.logits.shape == (6, 1)
    assert out.embeddings.shape == (6, 12)
    assert out.loss is not None and torch.isfinite(out.loss)


def test_padding_steps_does_not_change_outputs():
    m = tiny().eval()
    b = make_batch()
    pad = Batch(**{**b.__dict__, "visit_x": torch.cat([b.visit_x, torch.randn(6, 3, 7)], 1),
                   "visit_mask": torch.cat([b.visit_mask, torch.zeros(6, 3, dtype=torch.bool)], 1)})
    torch.testing.assert_close(m(b).logits, m(pad).logits, atol=1e-6, rtol=0)


def test_batch_and_single_row_predictions_agree():
    m = tiny().eval()
    b = make_batch()
    full = m(b).logits
    for i in range(6):
        n = int(b.visit_mask[i].sum())
        one = Batch(**{k: None if v is None else (v[i:i + 1, :n] if k in ("visit_x", "visit_mask") else v[i:i + 1])
                       for k, v in b.__dict__.items()})
        torch.testing.assert_close(m(one).logits, full[i:i + 1], atol=1e-5, rtol=0)


def test_one_batch_overfits():
    m = tiny()
    b = make_batch(b=8, seed=1)
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    first = m(b).loss.item()
    for _ in range(150):
        loss = m(b).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


def test_same_seed_same_weights_and_outputs():
    b = make_batch()
    torch.testing.assert_close(tiny()(b).logits, tiny()(b).logits)


def test_no_history_row_gives_static_only_embedding():
    m = tiny().eval()
    b = make_batch()
    b.visit_mask[0] = False
    out = m(b)
    assert torch.all(out.embeddings[0, :8] == 0)


def test_multilabel_and_regression_heads():
    b = make_batch()
    ml = tiny("multilabel", 3)
    assert ml(Batch(**{**b.__dict__, "labels": torch.ones(6, 3)})).logits.shape == (6, 3)
    reg = tiny("regression")
    out = reg(Batch(**{**b.__dict__, "labels": torch.full((6, 1), 12.0)}))
    assert out.loss.item() > 0


def test_unknown_head_is_refused():
    with pytest.raises(ValueError, match="unknown head"):
        RNNForecaster(RNNConfig(3, 2, head="ordinal"))


def test_state_dict_round_trip_through_artifact(tmp_path):
    from ehrseq.artifacts import load_artifact, save_artifact

    m = tiny().eval()
    save_artifact(tmp_path / "a", state_dict=m.state_dict(), config={"model_type": "rnn", "model": m.config.to_dict()})
    art = load_artifact(tmp_path / "a")
    m2 = RNNForecaster(RNNConfig(**art.config["model"])).eval()
    m2.load_state_dict(art.state_dict)
    b = make_batch()
    np.testing.assert_allclose(m(b).logits.detach().numpy(), m2(b).logits.detach().numpy(), atol=1e-6)
