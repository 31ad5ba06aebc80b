"""Learning-rate schedules as pure functions (the trainer and the text classifier's loops share them)."""

from __future__ import annotations

import math


def lr_factor(step: int, total: int, schedule: str, warmup: float) -> float:
    """Multiplier of the base learning rate at optimiser ``step`` (0-based) of ``total``.

    The warm-up spans ``warmup`` of the steps, at least one (whose factor is 1: no warm-up in effect)."""
    n_warm = max(1, int(warmup * total))
    if step < n_warm:
        return (step + 1) / n_warm
    if schedule == "constant":
        return 1.0
    frac = (step - n_warm) / max(total - n_warm, 1)
    return max(0.0, 1.0 - frac) if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))
