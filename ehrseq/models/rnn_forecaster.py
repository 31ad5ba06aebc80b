"""RNN disease-activity forecaster (after Norgeot et al., JAMA Netw Open 2019).

A GRU (or LSTM) reads one vector per visit step (labs with missing flags, drugs and diagnoses as a multi-hot,
CDAI, log days since the previous step); its last hidden state is joined with an MLP of the static baseline
features (age, sex, RF, anti-CCP) and a head predicts the next visit: controlled vs uncontrolled CDAI
(binary), the next CDAI (regression) or next-visit diagnoses (multi-label).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from ehrseq.data.batch import Batch
from ehrseq.models.heads import HEADS, head_loss
from ehrseq.models.outputs import ModelOutput


@dataclass
class RNNConfig:
    """Sizes and head of :class:`RNNForecaster` (all JSON-serialisable)."""

    n_step_features: int
    n_static_features: int
    hidden_size: int = 64
    num_layers: int = 1
    cell: str = "gru"  # "gru" | "lstm"
    static_hidden: int = 32
    dropout: float = 0.1
    head: str = "binary"
    num_labels: int = 1
    pos_weight: float | None = None

    def to_dict(self) -> dict:
        """The config as a plain dict."""
        return asdict(self)


def rnn_tiny(**kw) -> dict:
    """Keyword arguments of the tiny RNN (tests, smoke runs); ``kw`` wins."""
    return {"hidden_size": 16, "static_hidden": 8, "num_layers": 1, "dropout": 0.0, **kw}


def rnn_small(**kw) -> dict:
    """Keyword arguments of the small RNN (the default size); ``kw`` wins."""
    return {"hidden_size": 64, "static_hidden": 32, "num_layers": 1, "dropout": 0.1, **kw}


RNN_PRESETS = {"tiny": rnn_tiny, "small": rnn_small}


class RNNForecaster(nn.Module):
    """GRU/LSTM over visit steps joined with an MLP of the static features, and one task head."""

    def __init__(self, config: RNNConfig) -> None:
        super().__init__()
        if config.head not in HEADS:
            raise ValueError(f"unknown head '{config.head}'; choose one of {HEADS}")
        if config.cell not in ("gru", "lstm"):
            raise ValueError(f"unknown cell '{config.cell}'; choose gru or lstm")
        self.config = config
        rnn = nn.GRU if config.cell == "gru" else nn.LSTM
        self.rnn = rnn(
            config.n_step_features,
            config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.static = nn.Sequential(nn.Linear(config.n_static_features, config.static_hidden), nn.ReLU())
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size + config.static_hidden, config.num_labels)

    @property
    def embedding_size(self) -> int:
        """Width of the embedding the head reads (RNN state + static MLP)."""
        return self.config.hidden_size + self.config.static_hidden

    def forward(self, batch: Batch) -> ModelOutput:
        """Logits (B, K), the loss when the batch has labels, and the (B, H) embeddings."""
        x, mask = batch.visit_x, batch.visit_mask  # (B, V, F), (B, V)
        lengths = mask.sum(dim=1)  # (B,)
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.rnn(packed)
        if isinstance(h, tuple):  # LSTM gives (h, c)
            h = h[0]
        last = h[-1] * (lengths > 0).unsqueeze(1).to(h.dtype)  # (B, H); no history -> zeros
        emb = torch.cat([last, self.static(batch.static_x)], dim=1)  # (B, H + S')
        logits = self.head(self.dropout(emb))  # (B, K)
        loss = None
        if batch.labels is not None:
            loss = head_loss(self.config.head, logits, batch.labels, self.config.pos_weight)
        return ModelOutput(logits=logits, loss=loss, embeddings=emb)
