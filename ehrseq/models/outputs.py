"""The one output type every ehrseq model returns from ``forward``."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ModelOutput:
    """What a forward pass gives back.

    logits:     (B, K) raw scores: K=1 for binary/regression/risk, K=labels for multi-label,
                (B, L, V) for masked-code pretraining.
    loss:       scalar, present when targets were passed.
    embeddings: (B, H) patient representation at prediction_time (used by DeepSurv and `embed`).
    """

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
