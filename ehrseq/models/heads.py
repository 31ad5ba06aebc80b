"""Prediction heads shared by the sequence models: one loss per task, as pure functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

HEADS = ("binary", "multilabel", "regression", "multiclass")


def head_loss(head: str, logits: torch.Tensor, labels: torch.Tensor, pos_weight: float | None = None) -> torch.Tensor:
    """logits (B, K), labels (B, K) float. Binary and multi-label use BCE-with-logits, regression MSE;
    multiclass: labels (B, 1) hold the class index, softmax cross-entropy over the K logits."""
    if head == "multiclass":
        return F.cross_entropy(logits, labels.reshape(-1).long())
    if head in ("binary", "multilabel"):
        pw = None if pos_weight is None else torch.full((logits.shape[-1],), float(pos_weight), device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, labels, pos_weight=pw)
    if head == "regression":
        return F.mse_loss(logits, labels)
    raise ValueError(f"unknown head '{head}'; choose one of {HEADS}")


def to_prediction(head: str, logits: torch.Tensor) -> torch.Tensor:
    """Probabilities for classification heads, values for regression."""
    if head == "multiclass":
        return torch.softmax(logits, dim=-1)
    return torch.sigmoid(logits) if head in ("binary", "multilabel") else logits
