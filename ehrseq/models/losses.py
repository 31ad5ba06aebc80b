"""Loss functions as pure, typed functions (no state, no modules).

Cox partial likelihood
----------------------
For subjects with log-risk ``f_i``, follow-up ``t_i`` and event flag ``d_i`` the Breslow negative partial
log-likelihood, averaged over events, is::

    L = -(1 / sum_i d_i) * sum_{i: d_i = 1} [ f_i - log sum_{j: t_j >= t_i} exp(f_j) ]

Ties are handled the Breslow way: every subject whose time equals ``t_i`` is in the risk set of ``i``
(pycox's ``cox_ph_loss`` instead uses a running sum over sorted rows, which puts only part of a tied group
in the risk set).

Zero events: the partial likelihood is undefined when a batch holds no event (the average divides by zero).
:func:`cox_ph_loss` returns ``None`` and emits a ``RuntimeWarning`` rather than a silent NaN or 0; the
DeepSurv trainer avoids such batches altogether by spreading events over batches (see
``ehrseq.models.deepsurv._event_stratified_batches``), so the warning means a caller built its own batches.
"""

from __future__ import annotations

import warnings

import torch


def cox_ph_loss(
    log_risk: torch.Tensor, durations: torch.Tensor, events: torch.Tensor
) -> torch.Tensor | None:
    """Breslow negative Cox partial log-likelihood, averaged over events.

    Args:
        log_risk: (N,) or (N, 1) log relative hazard ``f(x)`` from the network (any units).
        durations: (N,) follow-up times (event or censoring), any positive unit.
        events: (N,) 1 for an observed event, 0 for censored (bool, int or float).

    Returns:
        A scalar tensor (differentiable in ``log_risk``), or ``None`` with a ``RuntimeWarning`` when the
        batch holds no event. Risk sets are restricted to the rows passed in (a minibatch approximation).
    """
    log_risk = log_risk.reshape(-1)
    durations = durations.reshape(-1).to(log_risk.device)
    events = events.reshape(-1).to(device=log_risk.device, dtype=log_risk.dtype)
    if not (log_risk.shape == durations.shape == events.shape):
        raise ValueError(
            f"log_risk, durations and events must have the same length, got "
            f"{log_risk.numel()}, {durations.numel()}, {events.numel()}"
        )
    n_events = events.sum()
    if n_events.item() == 0:
        warnings.warn(
            "cox_ph_loss: batch has no events, partial likelihood undefined; returning None (skip it)",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    # Sort by time, longest first, so the risk set of row k is rows 0..last(k), where last(k) is the
    # final row tied with k (Breslow: the whole tied group is at risk).
    order = torch.argsort(durations, descending=True, stable=True)
    f = log_risk[order]
    d = events[order]
    t_asc = -durations[order]  # ascending, for searchsorted
    last_tied = torch.searchsorted(t_asc.contiguous(), t_asc.contiguous(), right=True) - 1
    log_cum = torch.logcumsumexp(f, dim=0)  # (N,) log sum_{j<=k} exp(f_j)
    log_risk_set = log_cum[last_tied]
    return -((f - log_risk_set) * d).sum() / n_events
