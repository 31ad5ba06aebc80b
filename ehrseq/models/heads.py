"""Prediction heads shared by the sequence models (one loss per task, as pure functions), and the MLP body the
tabular survival models (DeepSurv's ``RiskNet``, the discrete-time heads' ``DiscreteTimeNet``) share."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

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


def mlp(n_in: int, hidden_sizes: Sequence[int], *, batch_norm: bool, dropout: float) -> tuple[nn.Sequential, int]:
    """An MLP body ``[Linear -> ReLU -> BatchNorm? -> Dropout?]`` per hidden size, and its output width.

    The layer order fixes the state-dict keys (``0.weight``, ...) that saved artifacts hold."""
    layers: list[nn.Module] = []
    width = n_in
    for h in hidden_sizes:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if batch_norm:
            layers.append(nn.BatchNorm1d(h))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    return nn.Sequential(*layers), width
