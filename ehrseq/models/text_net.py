"""The biopsy-report classifier's configuration (presets), its network (encoder + pooling + linear head) and
the windows a long report is split into (with the helpers that pad, group and augment them).
:mod:`ehrseq.models.text_classifier` fits and serves them."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from transformers import PreTrainedModel

from ehrseq.codes import BIOPSY_LABELS
from ehrseq.data.dataset import length_buckets
from ehrseq.errors import ConfigError
from ehrseq.models.augment import PARAPHRASERS
from ehrseq.models.outputs import ModelOutput

MODEL_TYPE = "text_classifier"
POOLINGS = ("mean", "max", "cls", "mean_max")
TextInput = pd.DataFrame | pd.Series | list[str] | tuple[str, ...] | np.ndarray

PRESETS: dict[str, dict[str, Any]] = {
    # tiny keeps mean pooling without input masking: the fast unit-test model
    "tiny": {"vocab_size": 500, "dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64, "max_length": 128,
             "stride": 32, "lr": 3e-3, "epochs": 10, "mlm_epochs": 2, "pooling": "mean", "input_mask": 0.0},
    # small: chosen on cross-site (train A, test B) AUROC, see benchmarks/results/text_biopsy.md; no attention
    # dropout and length-bucketed batches: 2.0x faster fits at equal cross-site AUROC (results/text_speed.md)
    "small": {"vocab_size": 2000, "dim": 64, "n_layers": 2, "n_heads": 4, "hidden_dim": 256, "max_length": 256,
              "stride": 64, "lr": 2e-3, "epochs": 3, "mlm_epochs": 1, "pooling": "max", "input_mask": 0.15,
              "input_drop": 0.1, "attention_dropout": 0.0, "length_buckets": True},
}


@dataclass
class TextClassifierConfig:
    """Hyper-parameters of :class:`TextClassifier` (all JSON-serialisable).

    ``vocab_size`` .. ``hidden_dim`` describe the from-scratch DistilBERT and are ignored with ``pretrained``.
    ``stride`` is the number of tokens consecutive windows share. ``mlm_epochs`` of masked-LM domain
    pre-training run only for the from-scratch encoder. ``batch_size`` counts reports, not windows.
    ``pooling`` turns a window's token states into one vector (masked mean, masked max, [CLS], or mean and
    max concatenated). ``input_mask`` replaces that share of the (non-special) tokens of each fine-tuning
    batch by [MASK]: the model cannot lean on any one phrase, which is what carried it across sites (a site
    with other abbreviations and layout). ``input_drop`` deletes that share of the tokens instead, so the
    model also sees terser sentences than its training site writes (with ``input_mask`` 0.15 it raised
    cross-site macro AUROC over masking alone on each of 3 seeds: ``benchmarks/results/``). ``pos_weight`` weights
    positives by n_neg / n_pos in the loss. ``ensemble`` trains that many members (each its own masked-LM
    pre-training and fine-tuning, seeds ``seed``, ``seed + 1``, ...) on one shared vocabulary and averages
    their probabilities: it costs that many times the training and inference time and steadied cross-site
    AUROC, which moves by a few hundredths between single seeds. ``self_train_rounds`` rounds of
    self-training run when :meth:`TextClassifier.fit` gets ``adapt_to`` reports (see there).
    ``attention_dropout`` is the from-scratch encoder's dropout on attention probabilities (None: ``dropout``,
    as before it existed); 0 lets torch's fused CPU attention kernel run in training: a faster fit of the
    small preset at equal cross-site AUROC (``benchmarks/results/text_speed.md``). ``length_buckets``
    draws each masked-LM and fine-tuning batch from reports of similar token length (less padding; it changes
    which reports share a batch, hence the trained weights). ``predict_batch`` is the number of
    windows per inference batch (windows sorted by length; it changes no probability beyond float rounding).
    ``mark_scopes`` reads every report through :func:`ehrseq.models.scope_marking.mark_scopes` (negated, hedged
    and history words marked) before the tokenizer, in training and in prediction; ``augment`` adds that many
    label-preserving paraphrases (:func:`ehrseq.models.augment.augmented`; ``paraphraser`` "auto": the one that
    reads the training style) of each training report. Together
    they took the small model from 0.51 to 0.94 macro AUROC on reports of another style
    (``benchmarks/results/text_out_of_style.md``).
    """

    pretrained: str | None = None
    vocab_size: int = 2000
    min_frequency: int = 2
    dim: int = 128
    n_layers: int = 2
    n_heads: int = 4
    hidden_dim: int = 256
    dropout: float = 0.1
    max_length: int = 128
    stride: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.1  # share of steps with a linear warm-up
    epochs: int = 10
    batch_size: int = 16
    mlm_epochs: int = 3
    mlm_probability: float = 0.15
    threshold_metric: str = "f1"  # "f1" or "youden"
    pooling: str = "max"  # token pooling per window: "mean", "max", "cls" or "mean_max"
    input_mask: float = 0.25  # share of tokens replaced by [MASK] in fine-tuning batches (augmentation)
    input_drop: float = 0.0  # share of tokens deleted from fine-tuning windows (augmentation: terser text)
    pos_weight: bool = False  # weight positives by n_neg / n_pos per label (clipped to [1, 10])
    ensemble: int = 1  # members trained with seeds seed, seed + 1, ...; their probabilities are averaged
    self_train_rounds: int = 2  # rounds of self-training on fit(..., adapt_to=reports); no effect without them
    seed: int = 0
    labels: tuple[str, ...] = field(default_factory=lambda: tuple(BIOPSY_LABELS))
    device: str = "auto"  # where the loops train (train.device): auto, cpu, cuda or cuda:N
    mark_scopes: bool = False  # negated / hedged / history words marked before tokenisation (train and predict)
    augment: int = 0  # paraphrases per training report (ehrseq.models.augment)
    paraphraser: str = "auto"  # auto | grammar_a | grammar_b: which paraphraser augment uses (ehrseq.models.augment)
    attention_dropout: float | None = None  # dropout on attention weights (None: ``dropout``); 0: fused kernel
    length_buckets: bool = False  # masked-LM and fine-tuning batches of similar-length reports (less padding)
    predict_batch: int = 32  # windows per inference batch (sorted by length); no effect on the probabilities

    def __post_init__(self) -> None:
        self.labels = tuple(self.labels)
        if self.threshold_metric not in ("f1", "youden"):
            raise ValueError("threshold_metric must be 'f1' or 'youden'")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}")
        if not 0 <= self.stride < self.max_length - 2:
            raise ValueError("stride must be in [0, max_length - 2)")
        if self.ensemble < 1:
            raise ValueError("ensemble must be >= 1")
        if self.self_train_rounds < 0:
            raise ValueError("self_train_rounds must be >= 0")
        if not isinstance(self.augment, int) or isinstance(self.augment, bool) or self.augment < 0:
            raise ValueError(f"augment must be a whole number >= 0 (paraphrases per report), got {self.augment!r}")
        if self.paraphraser not in PARAPHRASERS:
            raise ConfigError(f"model.paraphraser must be one of {list(PARAPHRASERS)}, got {self.paraphraser!r}")
        ad = self.attention_dropout
        if ad is not None and (isinstance(ad, bool) or not isinstance(ad, int | float) or not 0.0 <= ad < 1.0):
            raise ConfigError(f"model.attention_dropout must be a number in [0, 1) or null (= dropout), got {ad!r}")
        if not isinstance(self.predict_batch, int) or isinstance(self.predict_batch, bool) or self.predict_batch < 1:
            raise ConfigError("model.predict_batch must be a whole number >= 1 (windows per inference batch), "
                              f"got {self.predict_batch!r}")
        if not isinstance(self.length_buckets, bool):
            raise ConfigError(f"model.length_buckets must be true or false, got {self.length_buckets!r}")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> TextClassifierConfig:
        """A named size (``tiny`` for tests, ``small`` for CPU benchmarks) with ``overrides`` on top."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset '{name}'; choose from {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TextClassifierConfig:
        """A config from a saved dict; unknown keys are refused, options added later take their old defaults."""
        d = {"pooling": "mean", "input_mask": 0.0, **d}  # artifacts written before these options existed
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown text classifier config key(s): {sorted(unknown)}")
        return cls(**d)


class TextClassifierNet(nn.Module):
    """Encoder + linear head. ``forward`` maps windows ``(W, L)`` to logits, pooled per report when asked."""

    def __init__(self, encoder: PreTrainedModel, n_labels: int, dropout: float = 0.1, pooling: str = "mean") -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        width = encoder.config.hidden_size * (2 if pooling == "mean_max" else 1)
        self.head = nn.Linear(width, n_labels)
        self.pos_weight: torch.Tensor | None = None

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        sample_map: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        n_reports: int | None = None,
    ) -> ModelOutput:
        """input_ids / attention_mask: (W, L); inputs_embeds: (W, L, H) instead of input_ids;
        sample_map: (W,) report index of each window in 0..B-1; labels: (B, K) floats in {0, 1};
        n_reports: B when known (saves reading ``sample_map.max()`` back from the device).

        Returns logits (B, K) pooled by max over windows (or (W, K) without ``sample_map``), embeddings
        (B, H) pooled the same way, and the mean binary cross-entropy when ``labels`` is given.
        """
        if attention_mask is None:
            ref = input_ids if input_ids is not None else inputs_embeds[..., 0]
            attention_mask = torch.ones_like(ref, dtype=torch.long)
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds
        ).last_hidden_state  # (W, L, H)
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        parts = []
        if self.pooling in ("mean", "mean_max"):
            parts.append((hidden * m).sum(1) / m.sum(1).clamp(min=1.0))  # (W, H) masked mean over tokens
        if self.pooling in ("max", "mean_max"):
            parts.append(hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).amax(1))  # masked max
        if self.pooling == "cls":
            parts.append(hidden[:, 0])
        emb = torch.cat(parts, -1) if len(parts) > 1 else parts[0]
        logits = self.head(self.dropout(emb))  # (W, K)
        if sample_map is not None:
            logits, emb = _max_pool(logits, sample_map, n_reports), _max_pool(emb, sample_map, n_reports)
        loss = None
        if labels is not None:
            loss = nn.functional.binary_cross_entropy_with_logits(
                logits, labels.to(logits.dtype),
                pos_weight=None if self.pos_weight is None else self.pos_weight.to(logits.device),
            )
        return ModelOutput(logits=logits, loss=loss, embeddings=emb)


def _max_pool(x: torch.Tensor, sample_map: torch.Tensor, n: int | None = None) -> torch.Tensor:
    """(W, D) rows -> (B, D) maxima per report, B = ``n`` or sample_map.max() + 1 (gradient flows to the argmax)."""
    n = int(sample_map.max()) + 1 if n is None else n
    idx = sample_map.unsqueeze(-1).expand_as(x)
    return x.new_zeros(n, x.shape[1]).scatter_reduce(0, idx, x, reduce="amax", include_self=False)


@dataclass
class Windows:
    """Tokenised reports: ``ids[j]`` is window j's token ids, ``report[j]`` its report's row position."""

    ids: list[list[int]]
    report: np.ndarray  # (W,) int

    def per_report(self, n: int) -> np.ndarray:
        """(n,) number of windows of each of ``n`` reports."""
        return np.bincount(self.report, minlength=n)

    def lengths(self) -> np.ndarray:
        """(W,) token count of each window."""
        return np.fromiter(map(len, self.ids), np.int64, len(self.ids))


def choose_thresholds(y: np.ndarray, p: np.ndarray, metric: str = "f1") -> np.ndarray:
    """(K,) per-label cut-offs on tuning data maximising F1 or Youden's J; 0.5 where a label has one class.

    y, p: (N, K). Among cut-offs with the best score the lowest is taken, then moved half-way down to the
    next lower tuning score, so that new reports scoring just below the tuning positives still count.
    """
    out = np.full(y.shape[1], 0.5)
    for k in range(y.shape[1]):
        yk, pk = y[:, k].astype(bool), p[:, k]
        if yk.all() or not yk.any():
            continue
        cands = np.unique(pk)
        pred = pk[None, :] >= cands[:, None]  # (C, N)
        tp = (pred & yk).sum(1)
        fp = (pred & ~yk).sum(1)
        fn = yk.sum() - tp
        if metric == "f1":
            score = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
        else:
            score = tp / yk.sum() - fp / (~yk).sum()
        i = int(np.argmax(score))  # lowest cut-off reaching the best score; move it half-way to the next
        out[k] = float((cands[i] + cands[i - 1]) / 2) if i > 0 else float(cands[i])  # lower score (margin)
    return out


def sharpen(p: np.ndarray) -> np.ndarray:
    """Self-training targets: ``p^2 / (p^2 + (1 - p)^2)``, i.e. temperature 1/2 (surer, never hard)."""
    return p**2 / (p**2 + (1 - p) ** 2)


def _drop_tokens(
    batch: dict[str, torch.Tensor], p: float, special: torch.Tensor, pad_id: int, gen: torch.Generator
) -> dict[str, torch.Tensor]:
    """Delete a share ``p`` of each window's non-special tokens (the rest close up); re-pad the batch."""
    ids, att = batch["input_ids"], batch["attention_mask"].bool()
    keep = att & ~((torch.rand(ids.shape, generator=gen) < p) & ~torch.isin(ids, special))
    new_ids, new_att = _pad([row[k].tolist() for row, k in zip(ids, keep)], pad_id)
    return {**batch, "input_ids": new_ids, "attention_mask": new_att}


def _pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest: ids (W, L) and attention mask (W, L)."""
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), length), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        att[i, : len(s)] = 1
    return ids, att


def _group(w: Windows, n: int) -> list[list[int]]:
    by_report: list[list[int]] = [[] for _ in range(n)]
    for j, r in enumerate(w.report.tolist()):
        by_report[r].append(j)
    return by_report


def _bce(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


@dataclass
class _TextBatch:
    """One step of a text loop for the shared trainer: the network's keyword inputs and their report count."""

    inputs: dict[str, torch.Tensor | int]
    n: int

    def to(self, device: torch.device | str) -> _TextBatch:
        """The step's tensors on ``device``."""
        return _TextBatch({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.inputs.items()},
                          self.n)

    def __len__(self) -> int:
        return self.n


def _loss(model: nn.Module, b: _TextBatch) -> torch.Tensor:
    """The step's loss: the network (TextClassifierNet or DistilBertForMaskedLM) on the batch's inputs."""
    return model(**b.inputs).loss


def _mlm_loss(mlm: nn.Module, b: _TextBatch) -> torch.Tensor | None:
    """A masked-LM step of a ``DistilBertForMaskedLM``: its vocabulary head runs on the masked positions only
    (``positions``: flat indices into the (W * L) tokens, ``targets``: their true ids), which is the loss its own
    forward computes over all positions with the others ignored, without the (W, L, vocab) logits. None (the
    trainer skips the step) when no token was masked."""
    x = b.inputs
    if x["targets"].numel() == 0:
        return None
    hidden = mlm.distilbert(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).last_hidden_state
    h = hidden.flatten(0, 1).index_select(0, x["positions"])
    logits = mlm.vocab_projector(mlm.vocab_layer_norm(mlm.activation(mlm.vocab_transform(h))))
    return nn.functional.cross_entropy(logits, x["targets"])


def _length_batches(rows: torch.Tensor, lengths: np.ndarray, size: int, gen: torch.Generator,
                    pool: int = 50) -> list[list[int]]:
    """``rows`` (a random order) in batches of ``size`` items of similar length
    (:func:`ehrseq.data.dataset.length_buckets`, sorting windows of ``pool`` batches), the batches' order then
    shuffled with ``gen``."""
    out = length_buckets(rows.numpy(), np.asarray(lengths), size, pool)
    return [out[i].tolist() for i in torch.randperm(len(out), generator=gen).tolist()]


def _report_lengths(w: Windows, n: int) -> np.ndarray:
    """(n,) the longest window of each report (what its rows of a batch are padded to)."""
    out = np.zeros(n, dtype=np.int64)
    np.maximum.at(out, w.report, w.lengths())
    return out
