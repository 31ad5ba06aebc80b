"""Prediction heads shared by the sequence models: one loss per task, as pure functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

HEADS = ("binary", "multilabel", "regression")


def head_loss(head: str, logits: torch.Tensor, labels: torch.Tensor, pos_weight: float | None = None) -> torch.Tensor:
    """logits (B, K), labels (B, K) float. Binary and multi-label use BCE-with-logits, regression MSE."""
    if head in ("binary", "multilabel"):
        pw = None if pos_weight is None else torch.full((logits.shape[-1],), float(pos_weight), device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, labels, pos_weight=pw)
    if head == "regression":
        return F.mse_loss(logits, labels)
    raise ValueError(f"unknown head '{head}'; choose one of {HEADS}")


def to_prediction(head: str, logits: torch.Tensor) -> torch.Tensor:
    """Probabilities for classification heads, values for regression."""
    return torch.sigmoid(logits) if head in ("binary", "multilabel") else logits
