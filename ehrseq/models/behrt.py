"""BEHRT: a BERT encoder over a patient's sequence of coded events (Li et al., Sci Rep 2020).

One patient is a token sequence ``[CLS] v1 codes... [SEP] v2 codes... [SEP] ...`` (see
:mod:`ehrseq.data.batch`). Each token's input vector is the sum of six embeddings::

    code      what happened (diagnosis, drug, lab, ...)                  code_ids      (B, L)
    age       whole years of age at the token's visit                     age_ids       (B, L)
    segment   1/2 alternating by visit, 0 for padding                     segment_ids   (B, L)
    position  visit index, so all codes of a visit share one position     position_ids  (B, L)
              (BEHRT has no per-token position); counted back from the
              prediction time by default (2 = latest visit, 1 = CLS and
              header), or from the first visit as in the paper
    time      bin of days since the previous visit                        time_ids      (B, L)
    value     quantile bin of the token's numeric value (0 = none)        value_ids     (B, L)

followed by LayerNorm and dropout, then a stack of BERT encoder layers (:mod:`ehrseq.models.behrt_encoder`: the
parameters of transformers' ``BertEncoder``, computed with fused attention and a cheaper CPU dropout). The
patient representation (B, H) is chosen by ``config.pooling``: the final hidden state at the last real token (the
SEP closing the most recent visit; the default), at the CLS token (index 0, the paper's choice), or the masked
mean.

Heads (``config.head``)::

    "mlm"         logits (B, L, vocab)   cross-entropy on positions whose label != -100 (pretraining)
    "binary"      logits (B, 1)          BCE-with-logits, optional pos_weight
    "multilabel"  logits (B, K)          BCE-with-logits per label, optional per-label pos_weight
    "regression"  logits (B, 1)          mean squared error

Pretrain then fine-tune::

    mlm = BehrtModel(behrt_small(vocab_size=V, head="mlm")); ...train...; mlm.save_pretrained(path)
    clf = BehrtModel.from_pretrained_encoder(path, head="binary")  # embeddings + encoder transfer, head is new

Presets are plain functions returning a config: :func:`behrt_tiny`, :func:`behrt_small`, :func:`behrt_base`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, PretrainedConfig, PreTrainedModel

from ehrseq.data.batch import PAD_ID, Batch
from ehrseq.models import behrt_encoder as enc
from ehrseq.models.behrt_encoder import BehrtEncoder, FastDropout
from ehrseq.models.behrt_loss import behrt_loss
from ehrseq.models.masking import IGNORE_INDEX
from ehrseq.models.outputs import ModelOutput

HEADS = ("mlm", "binary", "multilabel", "regression", "multiclass")
N_SEGMENTS = 3  # 0 = padding, 1 and 2 alternate by visit
POOLINGS = ("cls", "last", "mean")


class BehrtConfig(PretrainedConfig):
    """Hyper-parameters of a BEHRT model; saved as ``config.json`` by ``save_pretrained``.

    Embedding table sizes are exclusive upper bounds: every id must be in ``[0, size)``.

    vocab_size:              code vocabulary, special tokens (ids 0..4) included
    age_vocab_size:          ages 0..age_vocab_size-1 in whole years
    max_visits:              visit positions 0..max_visits-1 (0 = padding, 1 = first visit)
    time_vocab_size:         bins of days since the previous visit
    value_vocab_size:        numeric-value bins (0 = token has no value)
    max_position_embeddings: longest token sequence L the model accepts
    head:                    one of "mlm", "binary", "multilabel", "regression", "multiclass"
    num_labels:              K for the "multilabel" and "multiclass" heads (binary and regression output 1)
    pos_weight:              BCE positive-class weight: a float, or one per label for "multilabel"
    pooling:                 patient representation: "cls", "last" (last real token) or "mean" (masked mean)
    hidden_dropout_prob:     dropout on embeddings, block outputs and the classifier input (training only)
    attention_probs_dropout_prob: dropout on attention probabilities (training only). 0 lets training use
                             SDPA's fused attention, forward and backward; with dropout the CPU computes the
                             product written out (benchmarks/results/behrt_speed.md, "Third round")
    """

    model_type = "ehrseq_behrt"

    vocab_size: int = 1000
    age_vocab_size: int = 121
    max_visits: int = 128
    time_vocab_size: int = 32
    value_vocab_size: int = 16
    hidden_size: int = 288
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 512
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    head: str = "mlm"
    pos_weight: float | list[float] | None = None
    pooling: str = "last"

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self.validate_behrt()

    def validate_behrt(self) -> None:
        """Raise ValueError on an unknown head or a hidden size the heads cannot split."""
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )

    def id_limits(self) -> dict[str, int]:
        """Exclusive upper bound of each id tensor the embeddings read (its table size)."""
        return {"code_ids": self.vocab_size, "age_ids": self.age_vocab_size, "segment_ids": N_SEGMENTS,
                "position_ids": self.max_visits, "time_ids": self.time_vocab_size,
                "value_ids": self.value_vocab_size}

    @property
    def out_dim(self) -> int:
        """Width of the head's logits: vocab for "mlm", K for "multilabel", else 1."""
        if self.head == "mlm":
            return self.vocab_size
        return self.num_labels if self.head in ("multilabel", "multiclass") else 1

    def bert_config(self) -> BertConfig:
        """The BertConfig that transformers' ``BertEncoder`` layers are built from."""
        return BertConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            hidden_act=self.hidden_act,
            hidden_dropout_prob=self.hidden_dropout_prob,
            attention_probs_dropout_prob=self.attention_probs_dropout_prob,
            max_position_embeddings=self.max_position_embeddings,
            layer_norm_eps=self.layer_norm_eps,
            initializer_range=self.initializer_range,
        )


# ---------------------------------------------------------------------------------------------------------
# presets: plain functions, overrides win


def behrt_tiny(**overrides: Any) -> BehrtConfig:
    """A tiny model (tens of thousands of parameters) for tests and smoke runs."""
    kw: dict[str, Any] = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                              max_position_embeddings=256)
    return BehrtConfig(**(kw | overrides))


def behrt_small(**overrides: Any) -> BehrtConfig:
    """A CPU-trainable model for cohorts of a few thousand patients.

    Chosen on the CDAI benchmark: hidden 64 x 2 layers matched hidden 128 x 4 layers on AUROC at a fraction of
    the training time, which buys training on every label row instead of a subsample
    (``benchmarks/results/sequence_models.md``).
    """
    kw: dict[str, Any] = dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
    )
    return BehrtConfig(**(kw | overrides))


def behrt_base(**overrides: Any) -> BehrtConfig:
    """The size used in the BEHRT paper: hidden 288, 6 layers, 12 heads, intermediate 512."""
    kw: dict[str, Any] = dict(
        hidden_size=288, num_hidden_layers=6, num_attention_heads=12, intermediate_size=512
    )
    return BehrtConfig(**(kw | overrides))


# ---------------------------------------------------------------------------------------------------------
# modules


class BehrtEmbeddings(nn.Module):
    """Sum of code, age, segment, visit-position, time-delta and value embeddings -> LayerNorm -> dropout."""

    def __init__(self, config: BehrtConfig) -> None:
        super().__init__()
        H = config.hidden_size
        self.code = nn.Embedding(config.vocab_size, H, padding_idx=PAD_ID)
        self.age = nn.Embedding(config.age_vocab_size, H)
        self.segment = nn.Embedding(N_SEGMENTS, H)
        self.position = nn.Embedding(config.max_visits, H)
        self.time = nn.Embedding(config.time_vocab_size, H)
        self.value = nn.Embedding(config.value_vocab_size, H)
        # The value itself (standardised per code), not only its quantile bin: CDAI 11 and 22 differ. Only its
        # (H, 1) weight is used (forward); kept a Linear so saved models' state dicts load unchanged.
        self.value_num = nn.Linear(1, H, bias=False)
        self.LayerNorm = nn.LayerNorm(H, eps=config.layer_norm_eps)  # name lets transformers' init find it
        self.dropout = FastDropout(config.hidden_dropout_prob)

    def forward(
        self,
        code_ids: torch.Tensor,
        age_ids: torch.Tensor,
        segment_ids: torch.Tensor,
        position_ids: torch.Tensor,
        time_ids: torch.Tensor,
        value_ids: torch.Tensor,
        value_num: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, L) ids (and optional (B, L) values) -> (B, L, H) summed, normalised embeddings."""
        # Summed in place into the first lookup (a fresh tensor), and the value term as a broadcast product
        # rather than a K=1 matrix product: at (256, 88, 64) forward 1.24x faster in fp32, 1.5-1.6x under bf16
        # autocast, forward + backward 1.07x (benchmarks/kernels.py, issue #15); the same sum in fp32.
        x = self.code(code_ids)  # (B, L, H)
        x += self.age(age_ids)
        x += self.segment(segment_ids)
        x += self.position(position_ids)
        x += self.time(time_ids)
        x += self.value(value_ids)
        if value_num is not None:  # (B, L) float, 0 where the token has no value
            x += value_num.unsqueeze(-1).to(x.dtype) * self.value_num.weight[:, 0]
        return self.dropout(self.LayerNorm(x))


class BehrtMLMHead(nn.Module):
    """BERT's masked-token head: dense -> GELU -> LayerNorm -> vocabulary logits (not tied to the input table)."""

    def __init__(self, config: BehrtConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, L, H) -> (B, L, vocab)
        """(B, L, H) hidden states -> (B, L, vocab) logits."""
        return self.decoder(self.LayerNorm(F.gelu(self.dense(hidden))))


class BehrtModel(PreTrainedModel):
    """BEHRT encoder with one task head. ``forward`` returns :class:`ModelOutput`.

    Parameter names: ``embeddings.*`` and ``encoder.*`` form the transferable encoder; the head is
    ``mlm_head.*`` (head "mlm") or ``classifier.*`` (every other head).
    """

    config_class = BehrtConfig
    config: BehrtConfig
    base_model_prefix = "behrt"
    main_input_name = "code_ids"
    _supports_sdpa = True
    _supports_attention_backend = True

    def __init__(self, config: BehrtConfig) -> None:
        super().__init__(config)
        self.embeddings = BehrtEmbeddings(config)
        self.encoder = BehrtEncoder(config.bert_config())  # BertEncoder's parameter names and shapes
        if config.head == "mlm":
            self.mlm_head = BehrtMLMHead(config)
        else:
            self.classifier = nn.Sequential(
                FastDropout(config.hidden_dropout_prob), nn.Linear(config.hidden_size, config.out_dim)
            )
        self.post_init()

    # -- loading ---------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained_encoder(
        cls,
        path: str | Path,
        *,
        head: str,
        num_labels: int | None = None,
        pos_weight: float | list[float] | None = None,
        **config_overrides: Any,
    ) -> BehrtModel:
        """Load a saved BEHRT (typically MLM-pretrained) and put a freshly initialised ``head`` on it.

        The embedding and encoder weights are copied from ``path``; the old head's weights are dropped and the
        new head is initialised from scratch (even when its shape would fit, e.g. binary -> regression).
        ``config_overrides`` may change e.g. dropout, never a shape. Like ``from_pretrained`` the model is
        returned in eval mode: call ``.train()`` before fine-tuning.
        """
        pretrained = cls.from_pretrained(path)
        config = copy.deepcopy(pretrained.config)
        config.head, config.pos_weight = head, pos_weight
        if num_labels is not None:
            config.num_labels = num_labels  # the setter rewrites id2label / label2id
        for key, value in config_overrides.items():
            setattr(config, key, value)
        config.validate_behrt()
        model = cls(config)
        # strict loads: a shape change (e.g. a different vocab_size override) fails loudly here
        model.embeddings.load_state_dict(pretrained.embeddings.state_dict())
        model.encoder.load_state_dict(pretrained.encoder.state_dict())
        return model.eval()

    # -- forward ---------------------------------------------------------------------------------------

    def check_inputs(self, batch: Batch) -> None:
        """ValueError naming the tensor when an id lies outside its embedding table (a readable message instead
        of an index error deep in nn.Embedding).

        Not called by ``forward``: the check costs a host sync per tensor, so the data side runs it once per
        dataset (:class:`~ehrseq.data.dataset.SequenceDataset`'s ``id_limits``). Call it on hand-built batches.
        """
        for name, size in self.config.id_limits().items():
            t = getattr(batch, name)
            lo, hi = int(t.min()), int(t.max())
            if lo < 0 or hi >= size:
                raise ValueError(f"{name} must lie in [0, {size}), got values in [{lo}, {hi}]")

    def encode(
        self,
        code_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        age_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        time_ids: torch.Tensor | None = None,
        value_ids: torch.Tensor | None = None,
        value_num: torch.Tensor | None = None,
        query_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final hidden states (B, L, H). Missing id tensors default to zeros (that embedding row only).

        With ``query_index`` (B, Q) int64: the final states of those tokens of each row only, (B, Q, H), for
        which the last layer computes Q queries per row (see :class:`~ehrseq.models.behrt_encoder.BehrtEncoder`).
        """
        given = {"age_ids": age_ids, "segment_ids": segment_ids, "position_ids": position_ids, "time_ids": time_ids,
                 "value_ids": value_ids}
        ids = {"code_ids": code_ids, **{k: torch.zeros_like(code_ids) if v is None else v for k, v in given.items()}}
        L = code_ids.shape[1]
        if L > self.config.max_position_embeddings:  # a shape: no host sync
            raise ValueError(f"sequence length {L} exceeds max_position_embeddings={self.config.max_position_embeddings}")
        if low := enc.lowp_autocast(code_ids.device):  # L padded to a multiple of 8: few oneDNN kernel shapes
            ids, attention_mask, value_num = enc.pad_lengths(ids, attention_mask, value_num)
        h = self.embeddings(**ids, value_num=value_num)  # (B, L, H)
        # padded keys get no attention weight, so appending PAD tokens leaves the real tokens' outputs unchanged
        out = self.encoder(h, attention_mask, query_index)  # (B, L, H), or (B, Q, H) with query_index
        return out[:, :L] if low and query_index is None else out

    def forward(
        self,
        batch: Batch | None = None,
        *,
        code_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        age_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        time_ids: torch.Tensor | None = None,
        value_ids: torch.Tensor | None = None,
        value_num: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        masked_only: bool = False,
    ) -> ModelOutput:
        """Run the encoder and head on a :class:`Batch` (or the same tensors passed by name).

        labels: "mlm" (B, L) int64 target code ids, -100 where not predicted (see ``ehrseq.models.masking``);
                "binary"/"regression" (B,) or (B, 1); "multilabel" (B, K). With a Batch and no ``labels``,
                non-MLM heads use ``batch.labels``.
        masked_only: head "mlm" with labels: run the vocabulary head on the predicted positions only; logits are
                then (n_predicted, vocab) in row-major order and the loss is the same as without it; the last
                layer computes those tokens only (pretraining: about 15%; one host sync, for their count).
        Returns ModelOutput(logits, loss or None, embeddings = pooled hidden state (B, H)).
        """
        if batch is not None:
            code_ids, attention_mask = batch.code_ids, batch.attention_mask
            age_ids, segment_ids, position_ids = batch.age_ids, batch.segment_ids, batch.position_ids
            time_ids, value_ids, value_num = batch.time_ids, batch.value_ids, batch.value_num
            if labels is None and self.config.head != "mlm":
                labels = batch.labels
        if code_ids is None:
            raise ValueError("pass a Batch or code_ids")
        if attention_mask is None:
            attention_mask = (code_ids != PAD_ID).long()
        args = (code_ids, attention_mask, age_ids, segment_ids, position_ids, time_ids, value_ids, value_num)
        if self.config.head != "mlm":  # the head reads the pooled state only
            pooled = self._pooled(*args)
            logits = self.classifier(pooled)  # (B, out_dim)
        elif masked_only and labels is not None and self.config.pooling != "mean":
            picked = labels != IGNORE_INDEX  # (B, L)
            n = picked.sum(1)
            q = enc.query_count(int(n.max()), picked.shape[1], code_ids.device)  # int(n.max()), or more under bf16
            masked = torch.argsort((~picked).to(torch.int8), dim=1, stable=True)[:, :q]  # picked first
            states = self.encode(*args, query_index=torch.cat([masked, self._pool_index(attention_mask)], 1))
            pooled, states = states[:, -1], states[:, :-1]  # the pooled token's state, then the masked tokens'
            real = torch.arange(states.shape[1], device=n.device)[None] < n[:, None]  # (B, Q)
            labels = labels[picked]  # (n,), row-major as states[real]
            logits = enc.padded_rows(self.mlm_head, states[real])  # (n, vocab)
        else:
            hidden = self.encode(*args)
            pooled = self._pool(hidden, attention_mask)  # (B, H)
            if masked_only and labels is not None:
                labels, hidden = labels[labels != IGNORE_INDEX], hidden[labels != IGNORE_INDEX]
            logits = self.mlm_head(hidden)  # (B, L, vocab), or (n, vocab) masked_only
        logits = logits.float()  # fp32 under autocast too: the loss and the caller read fp32
        loss = None if labels is None else self._loss(logits, labels)
        return ModelOutput(logits=logits, loss=loss, embeddings=pooled)

    def _pooled(self, code_ids: torch.Tensor, attention_mask: torch.Tensor, *ids: torch.Tensor | None
                ) -> torch.Tensor:
        """(B, H) ``config.pooling`` of the final states; CLS and last-token pooling compute that token only."""
        if self.config.pooling == "mean":
            return self._pool(self.encode(code_ids, attention_mask, *ids), attention_mask)
        return self.encode(code_ids, attention_mask, *ids, query_index=self._pool_index(attention_mask))[:, 0]

    def _pool_index(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, 1) the token CLS or last-token pooling reads: 0, or the last real one (right padding)."""
        if self.config.pooling == "cls":
            return torch.zeros(attention_mask.shape[0], 1, dtype=torch.long, device=attention_mask.device)
        return (attention_mask.sum(1, keepdim=True).long() - 1).clamp(min=0)

    def _pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, H) -> (B, H) by ``config.pooling``; padding never contributes."""
        if self.config.pooling != "mean":
            return hidden[torch.arange(hidden.shape[0], device=hidden.device)[:, None], self._pool_index(attention_mask)][:, 0]
        m = attention_mask.to(hidden.dtype)  # (B, L), right padding
        return (hidden * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp(min=1.0)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return behrt_loss(self.config.head, self.config.pos_weight, logits, labels)

    def embed(self, batch: Batch) -> torch.Tensor:
        """The patient representation (B, H) the classifier reads (``config.pooling``), whatever the head.

        Gradients flow (so a downstream model such as DeepSurv can fine-tune through it); wrap the call in
        ``torch.no_grad()`` and call ``.eval()`` first to use BEHRT as a frozen feature extractor.
        """
        return self._pooled(batch.code_ids, batch.attention_mask, batch.age_ids, batch.segment_ids,
                            batch.position_ids, batch.time_ids, batch.value_ids, batch.value_num)
