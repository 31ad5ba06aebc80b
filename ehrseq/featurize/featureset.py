"""The featurizer's output: flat per-event arrays plus per-label-row slice bounds (see
:mod:`ehrseq.featurize.featurizer`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class FeatureSet:
    """Featurized label rows. Token arrays are flat over all events of the subjects; rows index into them."""

    labels: pd.DataFrame  # the label rows, in order (subject_id, prediction_time, targets...)
    # token stream (one row per timed event of the labelled subjects, sorted by subject, time)
    tok_code: np.ndarray
    tok_age: np.ndarray
    tok_visit: np.ndarray  # absolute day-visit number within subject (0-based)
    tok_delta: np.ndarray
    tok_value: np.ndarray
    tok_num: np.ndarray  # float32 value standardised (log1p) per code, 0 = no value
    # per label row: [tok_start, tok_cut) is the subject's history up to prediction_time
    tok_start: np.ndarray
    tok_cut: np.ndarray
    static_tokens: list[np.ndarray]  # per label row: static code ids
    age_at_pred: np.ndarray  # per label row: age id at prediction_time
    # steps (RNN)
    step_x: np.ndarray  # (n_steps, F) float32
    step_start: np.ndarray
    step_cut: np.ndarray
    static_x: np.ndarray  # (n_rows, S) float32
    counts: dict[str, int] = field(default_factory=dict)
    tok_pin: np.ndarray | None = None  # (n_rows, P) stream index of each pinned code's first event, -1 = none
    # repeats="last_in_visit": per stream event, the index of the next event of its code in its visit (int64 max
    # if none); a row with cut c shows event j iff tok_next[j] >= c. None: every event is a token.
    tok_next: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)
