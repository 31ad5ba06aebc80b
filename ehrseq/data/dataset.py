"""A torch Dataset over a FeatureSet, and the collate function that pads to a typed Batch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ehrseq.data.batch import CLS_ID, PAD_ID, Batch
from ehrseq.featurize.featurizer import FeatureSet, build_tokens

_CLS_ONLY = np.array([CLS_ID], np.int64)
TOKEN_KEYS = ("code_ids", "age_ids", "segment_ids", "position_ids", "time_ids", "value_ids")


class SequenceDataset(Dataset):
    """Item ``i`` is label row ``i`` of the FeatureSet, sliced at its prediction_time.

    targets: (N, K) float32 array aligned with ``fs.labels`` or None (scoring).
    """

    def __init__(
        self,
        fs: FeatureSet,
        targets: np.ndarray | None = None,
        *,
        max_len: int = 256,
        max_visits: int = 64,
        max_steps: int = 64,
        tokens: bool = True,
        steps: bool = True,
        positions: str = "first",
    ) -> None:
        if targets is not None and len(targets) != len(fs):
            raise ValueError(f"targets has {len(targets)} rows but the feature set has {len(fs)}")
        self.fs = fs
        self.targets = None if targets is None else np.asarray(targets, np.float32).reshape(len(fs), -1)
        self.max_len, self.max_visits, self.max_steps = max_len, max_visits, max_steps
        self.positions = positions  # BEHRT visit numbering, see build_tokens
        self.subject_ids = fs.labels["subject_id"].to_numpy(np.int64)
        self.tokens, self.steps = tokens, steps  # which views to build (the RNN needs no tokens, BEHRT no steps)

    def __len__(self) -> int:
        return len(self.fs)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        fs = self.fs
        item = build_tokens(fs, i, self.max_len, self.max_visits, self.positions) if self.tokens else {"code_ids": _CLS_ONLY}
        if self.steps:
            lo, hi = int(fs.step_start[i]), int(fs.step_cut[i])
            item["steps"] = fs.step_x[max(lo, hi - self.max_steps):hi]
        else:
            item["steps"] = fs.step_x[:0]
        item["static"] = fs.static_x[i]
        item["subject_id"] = self.subject_ids[i]
        if self.targets is not None:
            item["labels"] = self.targets[i]
        return item


def collate(items: Sequence[dict[str, np.ndarray]]) -> Batch:
    """Pad tokens to the longest sequence (right padding) and steps to the longest history."""
    b = len(items)
    L = max(len(it["code_ids"]) for it in items)
    V = max(max(len(it["steps"]) for it in items), 1)
    F = items[0]["steps"].shape[1] if items[0]["steps"].ndim == 2 else 0
    tok = {k: np.full((b, L), PAD_ID, np.int64) for k in TOKEN_KEYS}
    mask = np.zeros((b, L), np.int64)
    num = np.zeros((b, L), np.float32)
    steps = np.zeros((b, V, F), np.float32)
    smask = np.zeros((b, V), bool)
    for r, it in enumerate(items):
        n = len(it["code_ids"])
        for k in TOKEN_KEYS:
            if k in it:
                tok[k][r, :n] = it[k]
        mask[r, :n] = 1
        if "value_num" in it:
            num[r, :n] = it["value_num"]
        m = len(it["steps"])
        steps[r, :m] = it["steps"]  # left-aligned; visit_mask marks real steps
        smask[r, :m] = True
    labels = np.stack([it["labels"] for it in items]) if "labels" in items[0] else None
    return Batch(
        subject_id=torch.as_tensor(np.array([it["subject_id"] for it in items], np.int64)),
        **{k: torch.from_numpy(v) for k, v in tok.items()},
        attention_mask=torch.from_numpy(mask),
        visit_x=torch.from_numpy(steps),
        visit_mask=torch.from_numpy(smask),
        static_x=torch.from_numpy(np.stack([it["static"] for it in items]).astype(np.float32)),
        labels=None if labels is None else torch.from_numpy(labels.astype(np.float32)),
        value_num=torch.from_numpy(num),
    )
