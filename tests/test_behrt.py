"""BEHRT model and masking: shapes, training signal, save/load, batching and padding invariance, seeds."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ehrseq.data.batch import CLS_ID, MASK_ID, PAD_ID, SEP_ID, Batch
from ehrseq.models.behrt import BehrtConfig, BehrtModel, behrt_base, behrt_small, behrt_tiny
from ehrseq.models.masking import IGNORE_INDEX, N_SPECIAL, mask_codes

VOCAB = 40
HEADS = ("mlm", "binary", "multilabel", "regression")


def short_window_rows(cohort, splits, labels, n_subjects: int):
    """The first ``n_subjects`` subjects' events, splits and CDAI rows, a featurizer fitted on them with a short
    window (max_len 40: many truncated rows) and its FeatureSet of the rows."""
    from ehrseq.featurize.featurizer import Featurizer, FeaturizerConfig

    keep = sorted(cohort.events["subject_id"].unique())[:n_subjects]
    ev = cohort.events.loc[cohort.events["subject_id"].isin(keep)].reset_index(drop=True)
    sp = splits.loc[splits["subject_id"].isin(keep)].reset_index(drop=True)
    lab = labels.loc[labels["subject_id"].isin(keep)].reset_index(drop=True)
    fz = Featurizer(FeaturizerConfig(max_len=40)).fit(ev, sp)
    return ev, sp, lab, fz, fz.transform(ev, lab)


def make_batch(n: int = 4, length: int = 16, seed: int = 0, n_labels: int = 1) -> Batch:
    """Random patients in BEHRT layout ``[CLS] codes [SEP] codes [SEP] ...``, right-padded to ``length``."""
    g = torch.Generator().manual_seed(seed)
    code = torch.zeros(n, length, dtype=torch.long)
    age, seg, pos, time, value, attn = (torch.zeros_like(code) for _ in range(6))
    for i in range(n):
        real = int(torch.randint(length // 2, length + 1, (1,), generator=g))
        visit, year = 1, int(torch.randint(20, 80, (1,), generator=g))
        code[i, 0], age[i, 0], seg[i, 0], pos[i, 0] = CLS_ID, year, 1, 1
        for t in range(1, real):
            is_sep = t % 4 == 0
            code[i, t] = SEP_ID if is_sep else int(torch.randint(N_SPECIAL, VOCAB, (1,), generator=g))
            age[i, t], seg[i, t], pos[i, t] = year, 2 - visit % 2, visit
            time[i, t] = int(torch.randint(1, 8, (1,), generator=g))
            value[i, t] = int(torch.randint(0, 5, (1,), generator=g))
            if is_sep:
                visit, year = visit + 1, year + 1
        attn[i, :real] = 1
    return Batch(
        subject_id=torch.arange(n),
        code_ids=code,
        age_ids=age,
        segment_ids=seg,
        position_ids=pos,
        time_ids=time,
        value_ids=value,
        attention_mask=attn,
        visit_x=torch.zeros(n, 1, 1),
        visit_mask=torch.ones(n, 1, dtype=torch.bool),
        static_x=torch.zeros(n, 1),
        labels=torch.randint(0, 2, (n, n_labels), generator=g).float(),
    )


def tiny(head: str = "binary", **kw) -> BehrtModel:
    torch.manual_seed(0)
    return BehrtModel(behrt_tiny(vocab_size=VOCAB, head=head, num_labels=3, **kw)).eval()


def rows(b: Batch, idx: slice, pad_to: int | None = None) -> Batch:
    """A slice of a batch, optionally right-padded with PAD tokens to ``pad_to`` tokens."""
    out = {}
    for name in (
        "code_ids",
        "age_ids",
        "segment_ids",
        "position_ids",
        "time_ids",
        "value_ids",
        "attention_mask",
    ):
        t = getattr(b, name)[idx]
        if pad_to is not None:
            t = torch.nn.functional.pad(t, (0, pad_to - t.shape[1]), value=PAD_ID)
        out[name] = t
    return Batch(
        subject_id=b.subject_id[idx],
        visit_x=b.visit_x[idx],
        visit_mask=b.visit_mask[idx],
        static_x=b.static_x[idx],
        labels=None if b.labels is None else b.labels[idx],
        **out,
    )


def mlm_labels(b: Batch) -> tuple[Batch, torch.Tensor]:
    masked, labels = mask_codes(
        b.code_ids, b.attention_mask, VOCAB, torch.Generator().manual_seed(1), prob=0.3
    )
    return dataclasses.replace(b, code_ids=masked), labels


# --- model ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("head", HEADS)
def test_forward_shapes_and_loss_per_head(head: str) -> None:
    b = make_batch(n=4, length=16, n_labels=3 if head == "multilabel" else 1)
    m = tiny(head)
    labels = mlm_labels(b)[1] if head == "mlm" else None
    out = m(b, labels=labels)
    want = {"mlm": (4, 16, VOCAB), "binary": (4, 1), "multilabel": (4, 3), "regression": (4, 1)}[head]
    assert out.logits.shape == want
    assert out.embeddings.shape == (4, 32)
    assert out.loss is not None and out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert torch.allclose(m.embed(b), out.embeddings)


def test_forward_accepts_named_tensors_like_a_batch() -> None:
    b, m = make_batch(), tiny("binary")
    a = m(b).logits
    c = m(
        code_ids=b.code_ids,
        attention_mask=b.attention_mask,
        age_ids=b.age_ids,
        segment_ids=b.segment_ids,
        position_ids=b.position_ids,
        time_ids=b.time_ids,
        value_ids=b.value_ids,
    ).logits
    assert torch.equal(a, c)


@pytest.mark.parametrize("head", HEADS)
def test_one_batch_overfits(head: str) -> None:
    b = make_batch(n=8, length=16, seed=3, n_labels=3 if head == "multilabel" else 1)
    if head == "regression":
        b.labels = torch.randn(8, 1, generator=torch.Generator().manual_seed(0))
    b, labels = mlm_labels(b) if head == "mlm" else (b, None)
    torch.manual_seed(0)
    m = BehrtModel(
        behrt_tiny(
            vocab_size=VOCAB,
            head=head,
            num_labels=3,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
    ).train()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = m(b, labels=labels).loss.item()
    for _step in range(200):  # stop as soon as the loss is down 80%
        loss = m(b, labels=labels).loss
        if loss.item() < 0.2 * first:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first, (head, first, loss.item())


def test_save_pretrained_roundtrip_gives_identical_outputs(tmp_path) -> None:
    b, m = make_batch(n_labels=3), tiny("multilabel", pos_weight=[1.0, 2.0, 3.0])
    m.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    m2 = BehrtModel.from_pretrained(tmp_path).eval()
    assert (
        m2.config.head == "multilabel"
        and m2.config.num_labels == 3
        and m2.config.pos_weight == [1.0, 2.0, 3.0]
    )
    o1, o2 = m(b), m2(b)
    torch.testing.assert_close(o1.logits, o2.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(o1.embeddings, o2.embeddings, atol=1e-5, rtol=0)


@pytest.mark.parametrize("head", ["binary", "mlm"])
def test_batch_and_single_row_predictions_agree(head: str) -> None:
    b, m = make_batch(n=5, length=20, seed=7), tiny(head)
    with torch.no_grad():
        full = m(b)
        for i in range(5):
            one = m(rows(b, slice(i, i + 1)))
            n = int(b.attention_mask[i].sum())
            got, want = (
                (one.logits[0, :n], full.logits[i, :n]) if head == "mlm" else (one.logits[0], full.logits[i])
            )
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
            torch.testing.assert_close(one.embeddings[0], full.embeddings[i], atol=1e-5, rtol=0)


def test_appended_padding_does_not_change_outputs() -> None:
    b, m = make_batch(n=3, length=12, seed=2), tiny("mlm")
    padded = rows(b, slice(None), pad_to=30)
    with torch.no_grad():
        o, p = m(b), m(padded)
    torch.testing.assert_close(p.embeddings, o.embeddings, atol=1e-5, rtol=0)
    real = b.attention_mask.bool()
    torch.testing.assert_close(p.logits[:, :12][real], o.logits[real], atol=1e-5, rtol=0)


def test_same_seed_builds_identical_models() -> None:
    b = make_batch()
    torch.manual_seed(123)
    m1 = BehrtModel(behrt_tiny(vocab_size=VOCAB, head="binary")).eval()
    torch.manual_seed(123)
    m2 = BehrtModel(behrt_tiny(vocab_size=VOCAB, head="binary")).eval()
    assert torch.equal(m1(b).logits, m2(b).logits)
    torch.manual_seed(124)
    m3 = BehrtModel(behrt_tiny(vocab_size=VOCAB, head="binary")).eval()
    assert not torch.equal(m1(b).logits, m3(b).logits)


def test_mlm_weights_load_into_a_binary_head(tmp_path) -> None:
    mlm = tiny("mlm")
    mlm.save_pretrained(tmp_path)
    torch.manual_seed(5)
    clf = BehrtModel.from_pretrained_encoder(tmp_path, head="binary", pos_weight=2.0)
    assert clf.config.head == "binary" and clf.config.pos_weight == 2.0
    assert not hasattr(clf, "mlm_head") and clf.classifier[-1].out_features == 1
    mlm_sd, clf_sd = mlm.state_dict(), clf.state_dict()
    encoder_keys = [k for k in mlm_sd if k.startswith(("embeddings.", "encoder."))]
    assert encoder_keys and all(torch.equal(mlm_sd[k], clf_sd[k]) for k in encoder_keys)
    b = make_batch()
    torch.testing.assert_close(clf.embed(b), mlm.embed(b))
    assert torch.isfinite(clf(b).loss)


def test_a_fine_tuned_head_is_reinitialised_even_when_shapes_match(tmp_path) -> None:
    src = tiny("binary")
    torch.nn.init.constant_(src.classifier[-1].weight, 7.0)
    src.save_pretrained(tmp_path)
    reg = BehrtModel.from_pretrained_encoder(tmp_path, head="regression")
    assert not torch.equal(reg.classifier[-1].weight, src.classifier[-1].weight)


def test_mlm_loss_is_zero_not_nan_when_nothing_is_masked() -> None:
    b, m = make_batch(), tiny("mlm")
    out = m(b, labels=torch.full_like(b.code_ids, IGNORE_INDEX))
    assert out.loss.item() == 0.0


def test_binary_pos_weight_raises_the_loss_on_positives() -> None:
    b = make_batch(n=6)
    b.labels = torch.ones(6, 1)
    plain = tiny("binary")(b).loss
    weighted = tiny("binary", pos_weight=3.0)(b).loss
    torch.testing.assert_close(weighted, 3.0 * plain)


def test_out_of_range_ids_fail_with_a_readable_error() -> None:
    """On a hand-built batch the explicit check names the tensor (forward no longer checks: host syncs); the
    data side checks once per dataset (tests/test_behrt_speed.py)."""
    b, m = make_batch(), tiny("binary")
    m.check_inputs(b)
    b.age_ids[0, 0] = 500
    with pytest.raises(ValueError, match="age_ids"):
        m.check_inputs(b)


def test_presets_and_config_validation() -> None:
    base = behrt_base(vocab_size=100)
    assert (base.hidden_size, base.num_hidden_layers, base.num_attention_heads, base.intermediate_size) == (
        288,
        6,
        12,
        512,
    )
    assert behrt_small().hidden_size == 64
    assert behrt_tiny(hidden_size=16).hidden_size == 16
    assert BehrtConfig.model_type == "ehrseq_behrt"
    with pytest.raises(ValueError, match="head"):
        behrt_tiny(head="survival")
    with pytest.raises(ValueError, match="multiple"):
        behrt_tiny(hidden_size=33)


# --- masking ----------------------------------------------------------------------------------------------


def test_masking_rates_follow_bert_80_10_10_and_skip_special_tokens() -> None:
    g = torch.Generator().manual_seed(0)
    vocab = 1000
    ids = torch.randint(0, vocab, (200, 500), generator=g)  # ~0.5% special ids scattered in
    ids[:, 0], ids[:, 250] = CLS_ID, SEP_ID
    attn = torch.ones_like(ids)
    attn[:, 400:] = 0
    ids[:, 400:] = PAD_ID
    masked, labels = mask_codes(ids, attn, vocab, g)

    eligible = (ids >= N_SPECIAL) & attn.bool()
    selected = labels != IGNORE_INDEX
    assert not (selected & ~eligible).any()  # never PAD/UNK/MASK/CLS/SEP, never padding
    assert torch.equal(masked[~selected], ids[~selected])
    assert torch.equal(labels[selected], ids[selected])
    rate = selected.sum().item() / eligible.sum().item()
    assert abs(rate - 0.15) < 0.01

    n = selected.sum().item()
    to_mask = (masked == MASK_ID) & selected
    unchanged = (masked == ids) & selected
    replaced = selected & ~to_mask & ~unchanged
    assert abs(to_mask.sum().item() / n - 0.8) < 0.02
    # a random replacement can hit the original id (1/995): it then counts as unchanged
    assert abs(replaced.sum().item() / n - 0.1) < 0.015
    assert abs(unchanged.sum().item() / n - 0.1) < 0.015
    assert (masked[replaced] >= N_SPECIAL).all() and (masked[replaced] < vocab).all()


def test_masking_is_deterministic_given_a_generator() -> None:
    b = make_batch(n=8, length=32)
    a = mask_codes(b.code_ids, b.attention_mask, VOCAB, torch.Generator().manual_seed(9))
    c = mask_codes(b.code_ids, b.attention_mask, VOCAB, torch.Generator().manual_seed(9))
    d = mask_codes(b.code_ids, b.attention_mask, VOCAB, torch.Generator().manual_seed(10))
    assert torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])
    assert not torch.equal(a[1], d[1])
    assert torch.equal(b.code_ids, make_batch(n=8, length=32).code_ids)  # input untouched


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_pooling_ignores_padding_and_agrees_between_batch_and_single_rows(pooling: str) -> None:
    b, m = make_batch(n=4, length=14, seed=3), tiny("binary", pooling=pooling)
    padded = rows(b, slice(None), pad_to=25)
    with torch.no_grad():
        o, p = m(b), m(padded)
        torch.testing.assert_close(p.logits, o.logits, atol=1e-5, rtol=0)
        for i in range(4):
            torch.testing.assert_close(m(rows(b, slice(i, i + 1))).embeddings[0], o.embeddings[i], atol=1e-5, rtol=0)
        hidden = m.encode(b.code_ids, b.attention_mask, b.age_ids, b.segment_ids, b.position_ids, b.time_ids,
                          b.value_ids)
    n = b.attention_mask.sum(1)
    if pooling == "last":  # the hidden state of each row's last real token, not of a PAD
        want = hidden[torch.arange(4), n - 1]
    else:
        want = torch.stack([hidden[i, : n[i]].mean(0) for i in range(4)])
    torch.testing.assert_close(o.embeddings, want, atol=1e-5, rtol=0)
    assert not torch.allclose(o.embeddings, hidden[:, 0])  # not the CLS state
    with pytest.raises(ValueError, match="pooling"):
        behrt_tiny(vocab_size=VOCAB, pooling="max")


def test_embed_matches_the_forward_representation_including_token_values() -> None:
    """The embedding export (used by DeepSurv) reads the same inputs as the classifier, value channel included."""
    b, m = make_batch(n=3, length=12, seed=4), tiny("binary", pooling="last")
    num = torch.randn(b.code_ids.shape, generator=torch.Generator().manual_seed(0)) * b.attention_mask
    b = dataclasses.replace(b, value_num=num)
    with torch.no_grad():
        torch.testing.assert_close(m.embed(b), m(b).embeddings, atol=1e-6, rtol=0)
        assert not torch.allclose(m.embed(b), m.embed(dataclasses.replace(b, value_num=None)))


def test_input_embedding_is_the_layer_normed_sum_of_its_seven_terms_and_trains_each() -> None:
    """BEHRT's input vector (Li et al.): code + age + segment + position + time + value-bin embeddings, plus the
    value channel's weight times the token's value, then LayerNorm. Written out here against the in-place sum
    the model uses (issue #15), with gradients reaching every table."""
    b, m = make_batch(n=3, length=12, seed=5), tiny("binary")
    num = torch.randn(b.code_ids.shape, generator=torch.Generator().manual_seed(1)) * b.attention_mask
    e = m.embeddings.eval()
    want = e.LayerNorm(e.code.weight[b.code_ids] + e.age.weight[b.age_ids] + e.segment.weight[b.segment_ids]
                       + e.position.weight[b.position_ids] + e.time.weight[b.time_ids] + e.value.weight[b.value_ids]
                       + num[..., None] * e.value_num.weight[:, 0])
    got = e(b.code_ids, b.age_ids, b.segment_ids, b.position_ids, b.time_ids, b.value_ids, num)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    got.pow(2).sum().backward()
    for name in ("code", "age", "segment", "position", "time", "value", "value_num"):
        grad = getattr(e, name).weight.grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_fixed_masks_depend_on_the_row_not_on_its_batch_or_padding() -> None:
    from ehrseq.models.masking import fixed_mask_codes

    b = make_batch(n=6, length=32, seed=4)
    keys = torch.tensor([11, 12, 13, 14, 15, 16])
    m1, l1 = fixed_mask_codes(b.code_ids, b.attention_mask, VOCAB, keys, seed=0)
    m2, l2 = fixed_mask_codes(b.code_ids, b.attention_mask, VOCAB, keys, seed=0)
    assert torch.equal(m1, m2) and torch.equal(l1, l2)  # the same every call (every epoch)
    # row 3 alone, padded further: its real tokens get the same masks
    alone = rows(b, slice(3, 4), pad_to=40)
    m3, l3 = fixed_mask_codes(alone.code_ids, alone.attention_mask, VOCAB, keys[3:4], seed=0)
    n = int(b.attention_mask[3].sum())
    assert torch.equal(m3[0, :n], m1[3, :n]) and torch.equal(l3[0, :n], l1[3, :n])
    assert (l3[0, n:] == IGNORE_INDEX).all() and (m3[0, n:] == PAD_ID).all()
    _, other_seed = fixed_mask_codes(b.code_ids, b.attention_mask, VOCAB, keys, seed=1)
    _, other_keys = fixed_mask_codes(b.code_ids, b.attention_mask, VOCAB, keys + 100, seed=0)
    assert not torch.equal(other_seed, l1) and not torch.equal(other_keys, l1)
    selected = l1 != IGNORE_INDEX
    assert not (selected & ((b.code_ids < N_SPECIAL) | ~b.attention_mask.bool())).any()


def test_fixed_masks_select_codes_at_the_bert_rate() -> None:
    from ehrseq.models.masking import fixed_mask_codes

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(N_SPECIAL, 500, (300, 200), generator=g)
    _, labels = fixed_mask_codes(ids, torch.ones_like(ids), 500, torch.arange(300), seed=3, prob=0.15)
    assert abs((labels != IGNORE_INDEX).float().mean().item() - 0.15) < 0.01


@pytest.fixture(scope="module")
def frozen_pretrain(cohort, tmp_path_factory):
    """Pretraining with lr=0 (weights never move) on 60 synthetic patients with a given split."""
    from ehrseq.api import LoadedData
    from ehrseq.recipes.pretrain import pretrain
    from ehrseq.split import PatientSplitter, subjects_table

    keep = sorted(cohort.events["subject_id"].unique())[:60]
    events = cohort.events.loc[cohort.events["subject_id"].isin(keep)].reset_index(drop=True)
    splits = PatientSplitter(strategy="random", seed=1).split(subjects_table(events))
    out = tmp_path_factory.mktemp("mlm") / "mlm"
    metrics = pretrain(LoadedData(events, splits, None, "test"), out=out, preset="tiny", seed=0,
                       featurizer={"max_len": 48},
                       train={"lr": 0.0, "epochs": 3, "patience": 5, "batch_size": 16, "progress": False})
    return metrics, splits, out


def test_pretraining_tuning_loss_uses_the_same_masks_every_epoch(frozen_pretrain) -> None:
    metrics, _, _ = frozen_pretrain
    losses = [row["tuning_loss"] for row in metrics["train"]["history"]]
    assert len(losses) == 3
    # the weights do not move (lr=0): with fresh masks each epoch the tuning loss would still change
    assert losses[1] == pytest.approx(losses[0], rel=1e-6) and losses[2] == pytest.approx(losses[0], rel=1e-6)
    assert "fixed" in metrics["train"]["tuning_masks"]


def test_a_pretraining_artifact_records_its_train_subjects(frozen_pretrain) -> None:
    from ehrseq.artifacts import load_artifact
    from ehrseq.split import ids_in

    _, splits, out = frozen_pretrain
    assert load_artifact(out).train_subjects == sorted(int(i) for i in ids_in(splits, "train"))
