"""Discrete-time survival heads on an MLP: LogisticHazard, PMF and DeepHit (single risk).

Time is cut at ``num_durations`` points tau_0 = 0 < tau_1 < ... < tau_{m-1} fitted on the training durations by
pycox's ``LabTransDiscreteTime`` (``cut_scheme``: "quantiles", the default, at equal steps of the Kaplan-Meier
curve, or "equidistant" up to the longest duration, which leaves few cuts where most events are when durations
are skewed); an event moves to the next cut point, a censoring to the previous one (later ones are
censored at tau_{m-1}). An MLP with the layout of DeepSurv's ``RiskNet`` maps standardised features x to m
outputs phi(x), read by each head as:

- ``LogisticHazard`` (Kvamme & Borgan 2019): discrete hazards h_j = sigmoid(phi_j),
  S(tau_j) = prod_{k<=j} (1 - h_k); trained on pycox's ``NLLLogistiHazardLoss``.
- ``PMF`` (Kvamme & Borgan 2019): event probabilities p = softmax([phi, 0]) (the extra cell: no event by
  tau_{m-1}), S(tau_j) = 1 - sum_{k<=j} p_k; trained on pycox's ``NLLPMFLoss``.
- ``DeepHit`` (Lee et al. 2018), single risk: the PMF read of phi, trained on pycox's ``DeepHitSingleLoss``,
  alpha * NLL + (1 - alpha) * ranking loss(sigma), with ranking pairs taken within each batch.

**Start.** The output layer's bias starts at the training Kaplan-Meier curve of the discretised labels (the
logits of its discrete hazards; for PMF and DeepHit the log-ratios of its event probabilities), not at pycox's
default of hazards near 1/2 per interval: with early stopping on small data the default can stop before the
curves have left it (on veterans_lung_cancer, LogisticHazard's IBS was then worse than Kaplan-Meier's).

**Curves between cut points.** S is interpolated linearly between cut points: a constant event density in each
interval, pycox's "const_pdf" scheme (``model.interpolate()``, evaluated there on ``sub`` points per interval;
here at any time asked, equal to pycox's on its grid: tested). After tau_{m-1} S stays at S(tau_{m-1}): the
model knows nothing past the longest training duration. Without interpolation the curves are steps with a
handful of levels and time-dependent concordance counts the many tied pairs as 1/2 (pycox: 0), far too low.

**Risk score** (``predict_risk``): the cumulative incidence averaged over [0, tau_{m-1}],
``r(x) = 1 - RMST(x) / tau_{m-1}`` with RMST(x) = the integral of S(t | x) up to tau_{m-1} (exact for the
piecewise-linear S): in [0, 1], higher means earlier events, ordered like the restricted mean survival time
(reversed). It reads the whole curve, not one horizon, so it stays meaningful when curves cross.

Artifacts: weights as safetensors; cut points, training event times, scaler and config as JSON. pycox's own
save/load (pickles, ``torch.load``) is never used. pycox is imported through :mod:`ehrseq.models.pycox_compat`.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ehrseq.artifacts import load_artifact, save_artifact
from ehrseq.errors import ArtifactError, ConfigError, DataValidationError
from ehrseq.models.deepsurv import DeepSurvConfig, FeatureFitted, check_survival_data
from ehrseq.models.heads import mlp
from ehrseq.models.outputs import ModelOutput
from ehrseq.train.trainer import model_device, train
from ehrseq.utils import seed_everything

ArrayLike = np.ndarray | pd.DataFrame | pd.Series | list
CUT_SCHEMES = ("equidistant", "quantiles")
DENSE_SUB = 10  # default grid of predict_survival: this many points per interval between cut points (pycox's)


def _pycox() -> Any:
    """ehrseq.models.pycox_compat, imported when a model trains (pycox pulls in scipy.stats, sklearn and numba:
    over a second that scoring, which needs none of it, does not pay)."""
    from ehrseq.models import pycox_compat

    return pycox_compat


@dataclass
class DiscreteTimeConfig(DeepSurvConfig):
    """Hyper-parameters of the discrete-time heads (all JSON-serialisable): DeepSurv's MLP and training knobs
    (:class:`~ehrseq.models.deepsurv.DeepSurvConfig`) plus the time axis and DeepHit's loss weights."""

    num_durations: int = 20  # cut points of the time axis (pycox LabTransDiscreteTime)
    cut_scheme: str = "quantiles"  # equal steps of the training Kaplan-Meier curve; or "equidistant"
    alpha: float = 0.2  # DeepHit only: weight of the likelihood; 1 - alpha on the ranking loss
    sigma: float = 0.1  # DeepHit only: scale of the ranking loss

    def __post_init__(self) -> None:
        super().__post_init__()
        n = self.num_durations
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            raise ConfigError(f"num_durations must be an integer >= 2 (cut points of the time axis), got "
                              f"{self.num_durations!r}")
        if self.cut_scheme not in CUT_SCHEMES:
            raise ConfigError(f"cut_scheme must be one of {', '.join(CUT_SCHEMES)}, got {self.cut_scheme!r}")
        if not 0.0 <= self.alpha <= 1.0 or not self.sigma > 0:
            raise ConfigError(f"DeepHit needs 0 <= alpha <= 1 and sigma > 0, got alpha={self.alpha}, "
                              f"sigma={self.sigma}")


class DiscreteTimeNet(nn.Module):
    """MLP ``(B, n_features) -> (B, n_durations)`` phi; [Linear -> ReLU -> BatchNorm? -> Dropout] per layer."""

    def __init__(self, n_features: int, n_durations: int, config: DiscreteTimeConfig) -> None:
        super().__init__()
        self.body, width = mlp(n_features, config.hidden_sizes, batch_norm=config.batch_norm, dropout=config.dropout)
        self.head = nn.Linear(width, n_durations)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        """x: (B, n_features) standardised -> logits (B, n_durations) phi, embeddings (B, last hidden)."""
        z = self.body(x)
        return ModelOutput(logits=self.head(z), embeddings=z)


def rank_matrix(idx_durations: torch.Tensor, events: torch.Tensor) -> torch.Tensor:
    """(B, B) float32 DeepHit ranking pairs: R_ij = 1 when i has an event and an earlier discrete time than j
    (or the same time with j censored). Equals ``pycox.models.data.pair_rank_mat`` without its numba compile."""
    d_i, d_j = idx_durations.view(-1, 1), idx_durations.view(1, -1)
    e_i, e_j = events.view(-1, 1) == 1, events.view(1, -1) == 1
    return (e_i & ((d_i < d_j) | ((d_i == d_j) & ~e_j))).float()


@dataclass
class _Rows:
    """A batch for the shared trainer: standardised features, cut-point index of each duration, events."""

    x: torch.Tensor
    idx: torch.Tensor
    e: torch.Tensor

    def to(self, device: torch.device | str) -> _Rows:
        """The batch on ``device``."""
        return _Rows(self.x.to(device), self.idx.to(device), self.e.to(device))

    def __len__(self) -> int:
        return len(self.idx)


@dataclass(eq=False)
class DiscreteTimeSurvival(FeatureFitted):
    """Base of the three heads (sklearn-like contract; learned state ends in ``_``). Durations may be in any
    positive unit; survival curves are indexed in the same unit. Use :class:`LogisticHazard`, :class:`PMF` or
    :class:`DeepHit`; ``DiscreteTimeSurvival.load`` loads any of them."""

    config: DiscreteTimeConfig = field(default_factory=DiscreteTimeConfig)
    MODEL_TYPE: ClassVar[str] = ""

    # ----------------------------------------------------------------------------------- per head
    def _loss(self, phi: torch.Tensor, b: _Rows) -> torch.Tensor:
        raise NotImplementedError

    def _base_logits(self, hazards: torch.Tensor) -> torch.Tensor:
        """(m,) phi whose curve is the one of the discrete hazards (m,) (PMF and DeepHit: log p_j - log p_m)."""
        surv = torch.cumprod(1.0 - hazards, 0)
        pmf = torch.cat([1.0 - surv[:1], surv[:-1] - surv[1:], surv[-1:]]).clamp_min(1e-6)
        return (pmf[:-1].log() - pmf[-1].log()).float()

    def _survival_at_cuts(self, phi: torch.Tensor) -> torch.Tensor:
        """(N, m) S(tau_j | x) from phi (float64)."""
        pmf = F.pad(phi, (0, 1)).softmax(1)[:, :-1]  # PMF and DeepHit (pycox's pad_col: a zero logit last)
        return (1.0 - pmf.cumsum(1)).clamp(0.0, 1.0)

    # ----------------------------------------------------------------------------------- fitting
    def fit(
        self,
        X: ArrayLike,
        durations: ArrayLike,
        events: ArrayLike,
        X_val: ArrayLike | None = None,
        durations_val: ArrayLike | None = None,
        events_val: ArrayLike | None = None,
    ) -> DiscreteTimeSurvival:
        """Cut the time axis on (durations, events), then train the MLP on the head's pycox loss.

        X: (N, F) numeric features. durations: (N,) > 0. events: (N,) in {0, 1}. With a validation set,
        training stops after ``patience`` epochs without a lower validation loss and keeps the best epoch's
        weights; without one, all ``epochs`` run and the last weights are kept.
        """
        cfg = self.config
        x, t, e = _checked(X, durations, events, "training")
        canon = np.lexsort(np.column_stack([x, t, e]).T[::-1])  # the fit does not depend on the callers' order
        x, t, e = x[canon], t[canon], e[canon]
        val = self._validation(X_val, durations_val, events_val, x.shape[1], _checked)
        if val is not None:
            vc = np.lexsort(np.column_stack(val).T[::-1])
            val = tuple(a[vc] for a in val)
        self._fit_scaler(X, x)
        labtrans = _fit_cuts(cfg, t, e)
        self.cuts_ = np.asarray(labtrans.cuts, dtype=np.float64)
        self.event_times_ = np.unique(t[e == 1])

        seed_everything(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        self.net_ = DiscreteTimeNet(self.n_features_in_, len(self.cuts_), cfg)
        rows = self._rows(x, *labtrans.transform(t, e))
        with torch.no_grad():  # start at the training Kaplan-Meier curve, not at hazards of 1/2 per interval
            self.net_.head.bias.copy_(self._base_logits(_discrete_hazards(rows, len(self.cuts_))))
        tuning = None
        if val is not None:
            vrows = self._rows(val[0], *labtrans.transform(val[1], val[2]))
            tuning = lambda net: self._mean_loss(net, vrows)  # noqa: E731

        def epoch_batches(_epoch: int) -> list[_Rows]:
            order = torch.randperm(len(rows), generator=gen)
            return [b for b in _chunks(rows, cfg.batch_size, order) if not (len(b) < 2 and cfg.batch_norm)]

        result = train(self.net_, rows, None, self._train_config(cfg),
                       loss_fn=lambda net, b: self._loss(net(b.x).logits, b), batches=epoch_batches,
                       tuning_loss=tuning, keep_best=False)
        self._keep_history(result)  # 0-based, as DeepSurv's
        self.net_.eval()
        return self

    def _rows(self, x: np.ndarray, idx: np.ndarray, e: np.ndarray) -> _Rows:
        return _Rows(self._to_tensor(x), torch.from_numpy(np.asarray(idx, np.int64)),
                     torch.from_numpy(np.asarray(e, np.float32)))

    def _mean_loss(self, net: nn.Module, rows: _Rows) -> float:
        """The loss over ``rows`` in fixed batches of ``batch_size`` (DeepHit ranks within each, as in fit)."""
        total, dev = 0.0, model_device(net)
        for b in _chunks(rows, self.config.batch_size, torch.arange(len(rows))):
            b = b.to(dev)
            total += float(self._loss(net(b.x).logits, b)) * len(b)
        return total / len(rows)

    # -------------------------------------------------------------------------------- prediction
    def predict_survival_at_cuts(self, X: ArrayLike) -> np.ndarray:
        """(N, m) S(tau_j | x) at the cut points ``cuts_`` (non-increasing in j, in [0, 1])."""
        x = self._check_features(X)
        self.net_.eval()
        with torch.no_grad():
            phi = self.net_(self._to_tensor(x)).logits.double()
            return self._survival_at_cuts(phi).numpy()

    def predict_survival(self, X: ArrayLike, times: ArrayLike | None = None) -> pd.DataFrame:
        """Survival probabilities S(t | x) as a frame of shape (n_times, N), linear between cut points.

        Index: ``times`` sorted (default: pycox's interpolation grid, ``DENSE_SUB`` points per interval between
        cut points, joined with the distinct training event times, so that metrics which read S at each event
        time, such as C-td, find a grid point there), in the unit of the durations. Columns: the rows of X (X's
        index for a DataFrame, else 0..N-1). S is 1 before the first cut point and constant after the last.
        """
        s = self.predict_survival_at_cuts(X)
        grid = np.union1d(dense_grid(self.cuts_), self.event_times_) if times is None else \
            np.sort(np.asarray(times, dtype=np.float64).reshape(-1))
        columns = X.index if isinstance(X, pd.DataFrame) else pd.RangeIndex(len(s))
        return pd.DataFrame(interpolate(self.cuts_, s, grid).T, index=pd.Index(grid, name="time"),
                            columns=columns)

    def predict_risk(self, X: ArrayLike) -> np.ndarray:
        """(N,) mean cumulative incidence over [0, tau_{m-1}]: 1 - RMST / tau_{m-1}; higher: earlier events."""
        s = self.predict_survival_at_cuts(X)
        span = self.cuts_[-1] - self.cuts_[0]
        rmst = np.sum((s[:, 1:] + s[:, :-1]) / 2.0 * np.diff(self.cuts_), axis=1)
        return 1.0 - rmst / span

    def _check_fitted(self) -> None:
        if not hasattr(self, "net_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() or load() first")

    # ----------------------------------------------------------------------------- persistence
    def save(self, out_dir: str | Path, extra_config: dict[str, Any] | None = None, **artifact_kw: Any) -> Path:
        """Write an ehrseq artifact: weights as safetensors; cut points, event times and scaler as JSON extras.

        ``extra_config`` is merged into config.json; ``artifact_kw`` (featurizer, metrics, data_hash,
        split_hash, extras, train_subjects) pass through to :func:`ehrseq.artifacts.save_artifact`.
        """
        self._check_fitted()
        config: dict[str, Any] = {
            "model_type": self.MODEL_TYPE, "model": asdict(self.config), "n_features_in": self.n_features_in_,
            "feature_names_in": self.feature_names_in_, "best_epoch": self.best_epoch_}
        clash = set(extra_config or {}) & set(config)
        if clash:
            raise ArtifactError(f"extra_config keys clash with the {self.MODEL_TYPE} config: {sorted(clash)}")
        config.update(extra_config or {})
        extras = {**artifact_kw.pop("extras", {}),
                  "discretization": {"cuts": self.cuts_.tolist(), "event_times": self.event_times_.tolist()},
                  "scaler": {"mean": self.mean_.tolist(), "std": self.std_.tolist()}}
        return save_artifact(out_dir, state_dict=self.net_.state_dict(), config=config, extras=extras,
                             **artifact_kw)

    @classmethod
    def load(cls, path: str | Path) -> DiscreteTimeSurvival:
        """Rebuild a fitted model from :meth:`save` output (verifies hashes; reads no pickle). On the base class
        it loads whichever head the artifact holds."""
        art = load_artifact(path, expect_model_type=cls.MODEL_TYPE or None)
        kind = art.config.get("model_type")
        if kind not in DISCRETE_TIME_MODELS:
            raise ArtifactError(f"{path}: holds a '{kind}' model, not a discrete-time survival model "
                                f"({', '.join(DISCRETE_TIME_MODELS)})")
        for name in ("discretization", "scaler"):
            if name not in art.extras:
                raise ArtifactError(f"{path}: missing {name}.json; not a complete {kind} artifact")
        try:
            model = DISCRETE_TIME_MODELS[kind](DiscreteTimeConfig(**art.config["model"]))
        except (TypeError, ConfigError) as e:
            raise ArtifactError(f"{path}: config.json 'model' cannot be read by this ehrseq ({e})") from e
        model.n_features_in_ = int(art.config["n_features_in"])
        model.feature_names_in_ = art.config.get("feature_names_in")
        model.best_epoch_ = art.config.get("best_epoch")
        model.history_ = []
        model.mean_ = np.asarray(art.extras["scaler"]["mean"], dtype=np.float64)
        model.std_ = np.asarray(art.extras["scaler"]["std"], dtype=np.float64)
        model.cuts_ = np.asarray(art.extras["discretization"]["cuts"], dtype=np.float64)
        model.event_times_ = np.asarray(art.extras["discretization"]["event_times"], dtype=np.float64)
        model.net_ = DiscreteTimeNet(model.n_features_in_, len(model.cuts_), model.config)
        model.net_.load_state_dict(art.state_dict)
        model.net_.eval()
        return model


class LogisticHazard(DiscreteTimeSurvival):
    """Discrete hazards h_j = sigmoid(phi_j) on pycox's ``NLLLogistiHazardLoss``."""

    MODEL_TYPE: ClassVar[str] = "logistic_hazard"

    def _loss(self, phi: torch.Tensor, b: _Rows) -> torch.Tensor:
        return _pycox().loss.NLLLogistiHazardLoss()(phi, b.idx, b.e)

    def _base_logits(self, hazards: torch.Tensor) -> torch.Tensor:
        return torch.logit(hazards.clamp(1e-4, 1 - 1e-4)).float()

    def _survival_at_cuts(self, phi: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(-F.softplus(phi), dim=1).exp()  # log(1 - sigmoid(phi)) = -softplus(phi), exactly


class PMF(DiscreteTimeSurvival):
    """Event probabilities softmax([phi, 0]) on pycox's ``NLLPMFLoss``."""

    MODEL_TYPE: ClassVar[str] = "pmf"

    def _loss(self, phi: torch.Tensor, b: _Rows) -> torch.Tensor:
        return _pycox().loss.NLLPMFLoss()(phi, b.idx, b.e)


class DeepHit(DiscreteTimeSurvival):
    """PMF read of phi on pycox's ``DeepHitSingleLoss(alpha, sigma)``, ranking pairs within each batch."""

    MODEL_TYPE: ClassVar[str] = "deephit"

    def _loss(self, phi: torch.Tensor, b: _Rows) -> torch.Tensor:
        return _pycox().loss.DeepHitSingleLoss(self.config.alpha, self.config.sigma)(phi, b.idx, b.e,
                                                                              rank_matrix(b.idx, b.e))


DISCRETE_TIME_MODELS: dict[str, type[DiscreteTimeSurvival]] = {
    m.MODEL_TYPE: m for m in (LogisticHazard, PMF, DeepHit)}


# --------------------------------------------------------------------------------------- helpers
def dense_grid(cuts: np.ndarray, sub: int = DENSE_SUB) -> np.ndarray:
    """``sub`` evenly spaced points in each interval between cut points, then the last cut (pycox's
    ``make_subgrid``): (sub * (m - 1) + 1,) times."""
    c = np.asarray(cuts, dtype=np.float64)
    steps = np.arange(sub) / sub
    inner = (c[:-1, None] + np.diff(c)[:, None] * steps[None, :]).reshape(-1)
    return np.append(inner, c[-1])


def interpolate(cuts: np.ndarray, surv_at_cuts: np.ndarray, times: np.ndarray) -> np.ndarray:
    """(N, T) S at ``times`` from (N, m) S at ``cuts``: linear in between (constant density), 1 before the
    first cut, constant after the last."""
    c, s, q = np.asarray(cuts, np.float64), np.asarray(surv_at_cuts, np.float64), np.asarray(times, np.float64)
    pos = np.clip(np.searchsorted(c, q, side="right") - 1, 0, len(c) - 2)
    w = np.clip((q - c[pos]) / (c[pos + 1] - c[pos]), 0.0, 1.0)
    out = s[:, pos] * (1.0 - w) + s[:, pos + 1] * w
    out[:, q < c[0]] = 1.0
    return out


def _discrete_hazards(rows: _Rows, m: int) -> torch.Tensor:
    """(m,) float64 Kaplan-Meier hazards of the discretised labels: events at cut j / rows whose index is >= j
    (a row censored at index j counts as surviving interval j, as in pycox's losses)."""
    idx = rows.idx
    events = torch.bincount(idx, weights=rows.e.double(), minlength=m)
    at_risk = torch.bincount(idx, minlength=m).double().flip(0).cumsum(0).flip(0)
    return torch.where(at_risk > 0, events / at_risk.clamp_min(1.0), torch.zeros_like(events))


def _chunks(rows: _Rows, size: int, order: torch.Tensor) -> list[_Rows]:
    return [_Rows(rows.x[i], rows.idx[i], rows.e[i]) for i in torch.split(order, size)]


def _checked(X: ArrayLike, d: ArrayLike, e: ArrayLike, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`ehrseq.models.deepsurv.check_survival_data`, with a no-events message that fits these models."""
    try:
        return check_survival_data(X, d, e, name=name)
    except DataValidationError as exc:
        if exc.column == "events" and "no events" in exc.problem:
            raise DataValidationError(f"{name} data has no events, so a discrete-time survival model has "
                                      "nothing to learn", column="events", n_rows=exc.n_rows,
                                      hint="use a longer follow-up window or a split with events in every part"
                                      ) from None
        raise


def _fit_cuts(cfg: DiscreteTimeConfig, t: np.ndarray, e: np.ndarray) -> Any:
    """pycox's LabTransDiscreteTime fitted on the training durations (its quantile scheme may merge cuts)."""
    labtrans = _pycox().LabTransDiscreteTime(cfg.num_durations, scheme=cfg.cut_scheme)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="cuts are not unique")  # fewer cuts: recorded in cuts_
            labtrans.fit(t, e)
    except (ValueError, AssertionError) as exc:
        raise DataValidationError(f"the training durations cannot be cut into {cfg.num_durations} "
                                  f"'{cfg.cut_scheme}' intervals ({exc})", column="durations", n_rows=len(t),
                                  hint="use fewer num_durations or cut_scheme 'equidistant'") from exc
    if len(labtrans.cuts) < 2:
        raise DataValidationError(f"the training durations give {len(labtrans.cuts)} distinct "
                                  f"'{cfg.cut_scheme}' cut point(s); at least 2 are needed", column="durations",
                                  n_rows=len(t),
                                  hint="use cut_scheme 'equidistant' or more rows with events")
    return labtrans
