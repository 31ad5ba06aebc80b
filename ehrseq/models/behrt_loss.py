"""BEHRT's training losses per head (see :class:`~ehrseq.models.behrt.BehrtModel`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ehrseq.models.masking import IGNORE_INDEX


def behrt_loss(head: str, pos_weight: float | list[float] | None, logits: torch.Tensor, labels: torch.Tensor
               ) -> torch.Tensor:
    """The loss of ``head``'s ``logits`` against ``labels``.

    "mlm": cross-entropy over positions whose label is not -100 (zero, not NaN, when nothing was masked);
    "multiclass": cross-entropy on class indices (B,) or (B, 1); "regression": mean squared error; "binary" and
    "multilabel": BCE-with-logits with the optional ``pos_weight``. A label count that does not match the logits
    is a ValueError naming both shapes.
    """
    if head == "mlm":
        labels = labels.long()
        if labels.numel() == 0 or not bool((labels != IGNORE_INDEX).any()):
            return logits.sum() * 0.0  # nothing was masked: a zero loss that keeps the graph, not NaN
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    if head == "multiclass":  # labels (B,) or (B, 1): class index
        return F.cross_entropy(logits, labels.reshape(-1).long())
    if labels.numel() != logits.numel():
        raise ValueError(f"head {head!r} gives logits {tuple(logits.shape)} but labels have shape {tuple(labels.shape)}")
    target = labels.reshape(logits.shape).to(logits.dtype)  # (B,) -> (B, 1) for binary / regression
    if head == "regression":
        return F.mse_loss(logits, target)
    pw = None if pos_weight is None else torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw)
