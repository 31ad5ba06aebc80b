"""The typed batch every sequence model consumes.

Token layout for one patient (BEHRT): ``[CLS] v1 codes... [SEP] v2 codes... [SEP] ...``, truncated to the
most recent events (the CLS token is kept). Ids 0..4 are the special tokens PAD, UNK, MASK, CLS, SEP.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

PAD_ID, UNK_ID, MASK_ID, CLS_ID, SEP_ID = 0, 1, 2, 3, 4
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[MASK]", "[CLS]", "[SEP]")


@dataclass
class Batch:
    """A padded batch. B = batch size, L = tokens, V = visits, F = per-visit features, S = static features.

    subject_id:     (B,) int64
    code_ids:       (B, L) int64, PAD_ID where padded
    age_ids:        (B, L) int64, age in whole years at the token's visit (0 where padded)
    segment_ids:    (B, L) int64, 1/2 alternating by visit (0 where padded)
    position_ids:   (B, L) int64, visit index starting at 1 (0 where padded)
    time_ids:       (B, L) int64, bin of days since the previous visit (0 where padded)
    value_ids:      (B, L) int64, quantile bin of the token's numeric value (0 = none)
    attention_mask: (B, L) int64, 1 for real tokens
    visit_x:        (B, V, F) float32, per-visit vectors for the RNN (0 where padded)
    visit_mask:     (B, V) bool, True for real visits
    static_x:       (B, S) float32, baseline features
    labels:         (B, K) float32, or None at prediction time
    value_num:      (B, L) float32, the token's numeric value standardised per code (0 = none), or None
    """

    subject_id: torch.Tensor
    code_ids: torch.Tensor
    age_ids: torch.Tensor
    segment_ids: torch.Tensor
    position_ids: torch.Tensor
    time_ids: torch.Tensor
    value_ids: torch.Tensor
    attention_mask: torch.Tensor
    visit_x: torch.Tensor
    visit_mask: torch.Tensor
    static_x: torch.Tensor
    labels: torch.Tensor | None = None
    value_num: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        """The batch with every tensor on ``device``."""
        return Batch(**{f.name: (None if (v := getattr(self, f.name)) is None else v.to(device)) for f in fields(self)})

    def __len__(self) -> int:
        return int(self.subject_id.shape[0])
