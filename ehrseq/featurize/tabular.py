"""The tabular view of a FeatureSet (DeepSurv's input and the baselines')."""

from __future__ import annotations

import numpy as np

from ehrseq.featurize.featureset import FeatureSet


def tabular_view(fs: FeatureSet) -> np.ndarray:
    """(N, S + F): static features and the most recent step vector at prediction_time (zeros if none)."""
    has = fs.step_cut > fs.step_start
    last = np.zeros((len(fs), fs.step_x.shape[1]), np.float32)
    last[has] = fs.step_x[fs.step_cut[has] - 1]
    return np.concatenate([fs.static_x, last], axis=1)
