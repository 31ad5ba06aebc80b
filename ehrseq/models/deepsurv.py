"""DeepSurv: a Cox proportional-hazards model whose log-risk is an MLP (Katzman et al., 2018).

    h(t | x) = h0(t) * exp(f(x)),   f = MLP(standardised x)      S(t | x) = exp(-H0(t) * exp(f(x)))

``f`` is trained on the Breslow partial likelihood (:func:`ehrseq.models.losses.cox_ph_loss`) with early
stopping on a validation set; ``H0`` is the Breslow estimate on the training rows after fit, stored as two
plain arrays (``baseline_times_``, ``baseline_cumhaz_``).

Why not pycox's ``CoxPH`` wrapper: pycox pickles nets and baseline hazards, and with torch >= 2.6 its
``load_net`` fails on the new ``torch.load(weights_only=True)`` default. We store weights as safetensors and
the baseline hazard and scaler as JSON through :mod:`ehrseq.artifacts`, so no pickle is ever read.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ehrseq.artifacts import load_artifact, save_artifact
from ehrseq.errors import ArtifactError, DataValidationError
from ehrseq.models.heads import mlp
from ehrseq.models.losses import cox_ph_loss
from ehrseq.models.outputs import ModelOutput
from ehrseq.train.trainer import TrainConfig, model_device, train
from ehrseq.utils import seed_everything

MODEL_TYPE = "deepsurv"
ArrayLike = np.ndarray | pd.DataFrame | pd.Series | list


@dataclass
class DeepSurvConfig:
    """Hyper-parameters of :class:`DeepSurv` (all JSON-serialisable)."""

    hidden_sizes: tuple[int, ...] = (32, 32)
    dropout: float = 0.1
    batch_norm: bool = True
    lr: float = 1e-3
    weight_decay: float = 1e-4  # decoupled (AdamW)
    epochs: int = 200
    batch_size: int = 256
    patience: int = 10  # epochs without a better validation loss before stopping
    seed: int = 0
    device: str = "auto"  # where the net trains (train.device): auto, cpu, cuda or cuda:N

    def __post_init__(self) -> None:
        self.hidden_sizes = tuple(int(h) for h in self.hidden_sizes)


class RiskNet(nn.Module):
    """MLP ``(B, n_features) -> (B, 1)`` log-risk; [Linear -> ReLU -> BatchNorm? -> Dropout] per layer."""

    def __init__(self, n_features: int, config: DeepSurvConfig) -> None:
        super().__init__()
        self.body, width = mlp(n_features, config.hidden_sizes, batch_norm=config.batch_norm, dropout=config.dropout)
        # No bias: a constant shift of f is absorbed by the baseline hazard and is not identifiable.
        self.head = nn.Linear(width, 1, bias=False)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        """x: (B, n_features) standardised -> logits (B, 1) log-risk, embeddings (B, last hidden)."""
        z = self.body(x)
        return ModelOutput(logits=self.head(z), embeddings=z)


class FeatureFitted:
    """What DeepSurv and the discrete-time heads (:mod:`ehrseq.models.discrete_time`) share around their nets:
    the feature scaler fitted in ``fit``, the checks of ``X`` at predict time, the checks of the validation
    arrays, and the shared trainer's config and history. Each subclass defines ``_check_fitted``."""

    n_features_in_: int
    feature_names_in_: list[str] | None
    mean_: np.ndarray
    std_: np.ndarray

    def _check_fitted(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must say when it is fitted")

    def _fit_scaler(self, X: ArrayLike, x: np.ndarray) -> None:
        """Feature names (from a DataFrame), count, mean and std (1 where constant) of the training ``x``."""
        self.feature_names_in_ = list(map(str, X.columns)) if isinstance(X, pd.DataFrame) else None
        self.n_features_in_ = x.shape[1]
        self.mean_ = x.mean(axis=0)
        std = x.std(axis=0)
        self.std_ = np.where(std > 0, std, 1.0)

    def _to_tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((x - self.mean_) / self.std_).astype(np.float32))

    def _check_features(self, X: ArrayLike) -> np.ndarray:
        self._check_fitted()
        x = _as_2d_float(X, "X")
        if x.shape[1] != self.n_features_in_:
            raise DataValidationError(
                f"X has {x.shape[1]} features, the model was fitted on {self.n_features_in_}",
                hint="use the same featurizer as at fit time",
            )
        if isinstance(X, pd.DataFrame) and self.feature_names_in_ is not None:
            if list(map(str, X.columns)) != self.feature_names_in_:
                raise DataValidationError(
                    "X columns differ from (or are ordered differently to) the columns seen at fit",
                    hint="select and order columns as at fit time",
                )
        _raise_on_nonfinite(x, "X")
        return x

    @staticmethod
    def _validation(X_val: ArrayLike | None, durations_val: ArrayLike | None, events_val: ArrayLike | None,
                    n_features: int, check: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The validation arrays checked by ``check`` (None without ``X_val``): all three or none, and as many
        features as the training data."""
        if X_val is None:
            return None
        if durations_val is None or events_val is None:
            raise DataValidationError(
                "X_val was given without durations_val and events_val",
                hint="pass all three validation arrays or none",
            )
        xv, tv, ev = check(X_val, durations_val, events_val, name="validation")
        if xv.shape[1] != n_features:
            raise DataValidationError(
                f"validation data has {xv.shape[1]} features, training data has {n_features}",
                hint="build both from the same featurizer",
            )
        return xv, tv, ev

    @staticmethod
    def _train_config(cfg: DeepSurvConfig) -> TrainConfig:
        """The shared trainer's settings for these small nets: no clipping, no progress bar, no reseeding
        beyond the fit's own seed."""
        return TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                           patience=cfg.patience, grad_clip=0.0, seed=cfg.seed, progress=False, min_delta=1e-6,
                           device=cfg.device)

    def _keep_history(self, result: Any) -> None:
        """``best_epoch_`` and ``history_`` (0-based epochs, ``val_loss``) from the trainer's result."""
        self.best_epoch_ = result.best_epoch - 1
        self.history_ = [{"epoch": r["epoch"] - 1, "train_loss": r["train_loss"],
                          **({"val_loss": r["tuning_loss"]} if "tuning_loss" in r else {})} for r in result.history]


@dataclass(eq=False)
class DeepSurv(FeatureFitted):
    """DeepSurv estimator with an sklearn-like contract; learned state ends in ``_``.

    Durations may be in any positive unit (days, years); survival curves are indexed in the same unit.
    """

    config: DeepSurvConfig = field(default_factory=DeepSurvConfig)

    # ----------------------------------------------------------------------------------- fitting
    def fit(
        self,
        X: ArrayLike,
        durations: ArrayLike,
        events: ArrayLike,
        X_val: ArrayLike | None = None,
        durations_val: ArrayLike | None = None,
        events_val: ArrayLike | None = None,
    ) -> DeepSurv:
        """Train the risk net, then estimate the Breslow baseline hazard on (X, durations, events).

        X: (N, F) numeric features. durations: (N,) > 0. events: (N,) in {0, 1}.
        With a validation set, training stops after ``patience`` epochs without a lower validation loss
        and the best epoch's weights are kept; without one, all ``epochs`` run and the last weights are kept.
        """
        cfg = self.config
        x, t, e = check_survival_data(X, durations, events, name="training")
        # Canonical row order, so the fitted model does not depend on how the caller ordered the rows.
        canon = np.lexsort(np.column_stack([x, t, e]).T[::-1])
        x, t, e = x[canon], t[canon], e[canon]
        val = self._validation(X_val, durations_val, events_val, x.shape[1], check_survival_data)
        self._fit_scaler(X, x)

        seed_everything(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        self.net_ = RiskNet(self.n_features_in_, cfg)
        xt, tt, et = self._to_tensor(x), torch.tensor(t), torch.tensor(e)
        tuning = None
        if val is not None:
            xvt, tvt, evt = self._to_tensor(val[0]), torch.tensor(val[1]), torch.tensor(val[2])
            tuning = lambda _m: self._full_loss(xvt, tvt, evt)  # noqa: E731  (the whole tuning set's Cox loss)

        def epoch_batches(_epoch: int) -> list[_Rows]:
            return [_Rows(xt[i], tt[i], et[i]) for i in _event_stratified_batches(e, cfg.batch_size, gen)
                    if not (len(i) < 2 and cfg.batch_norm)]  # BatchNorm cannot normalise a single row

        def cox_step(net: nn.Module, b: _Rows) -> torch.Tensor | None:
            return cox_ph_loss(net(b.x).logits, b.t, b.e)  # None (skipped) for a batch without events

        result = train(self.net_, _Rows(xt, tt, et), None, self._train_config(cfg), loss_fn=cox_step,
                       batches=epoch_batches, tuning_loss=tuning, keep_best=False)
        self._keep_history(result)  # 0-based epochs, as before the shared trainer
        self.net_.eval()
        self._fit_baseline(x, t, e)
        return self

    def _fit_baseline(self, x: np.ndarray, t: np.ndarray, e: np.ndarray) -> None:
        """Breslow: dH0(s) = d(s) / sum_{j: t_j >= s} exp(f_j) at each distinct event time s."""
        risk = np.exp(self._log_risk(x))
        times, inverse = np.unique(t, return_inverse=True)
        deaths = np.bincount(inverse, weights=e, minlength=len(times))
        risk_at_time = np.bincount(inverse, weights=risk, minlength=len(times))
        at_risk = np.cumsum(risk_at_time[::-1])[::-1]  # sum of exp(f) over t_j >= s
        keep = deaths > 0
        self.baseline_times_ = times[keep]
        self.baseline_cumhaz_ = np.cumsum(deaths[keep] / at_risk[keep])

    # -------------------------------------------------------------------------------- prediction
    def predict_risk(self, X: ArrayLike) -> np.ndarray:
        """(N,) log relative hazard f(x); higher means earlier expected events."""
        return self._log_risk(self._check_features(X))

    def predict_survival(self, X: ArrayLike, times: ArrayLike | None = None) -> pd.DataFrame:
        """Survival probabilities S(t | x) as a frame of shape (n_times, N).

        Index: ``times`` (default: the distinct training event times), in the unit of the durations.
        Columns: the rows of X (X's index for a DataFrame, else 0..N-1). S is a right-continuous step
        function; before the first training event time it is 1.
        """
        self._check_fitted()
        risk = np.exp(self.predict_risk(X))
        grid = self.baseline_times_ if times is None else np.sort(np.asarray(times, dtype=np.float64))
        pos = np.searchsorted(self.baseline_times_, grid, side="right") - 1
        cumhaz = np.where(pos >= 0, self.baseline_cumhaz_[np.clip(pos, 0, None)], 0.0)
        surv = np.exp(-np.outer(cumhaz, risk))
        columns = X.index if isinstance(X, pd.DataFrame) else pd.RangeIndex(len(risk))
        return pd.DataFrame(surv, index=pd.Index(grid, name="time"), columns=columns)

    def _log_risk(self, x: np.ndarray) -> np.ndarray:
        self.net_.eval()
        with torch.no_grad():
            return self.net_(self._to_tensor(x)).logits.reshape(-1).double().numpy()

    def _full_loss(self, x: torch.Tensor, t: torch.Tensor, e: torch.Tensor) -> float:
        self.net_.eval()
        dev = model_device(self.net_)
        with torch.no_grad():
            loss = cox_ph_loss(self.net_(x.to(dev)).logits, t.to(dev), e.to(dev))
        return math.inf if loss is None else float(loss)

    def _check_fitted(self) -> None:
        if not hasattr(self, "baseline_cumhaz_"):
            raise RuntimeError("DeepSurv is not fitted; call fit() or DeepSurv.load() first")

    # ----------------------------------------------------------------------------- persistence
    def save(self, out_dir: str | Path, extra_config: dict[str, Any] | None = None, **artifact_kw: Any) -> Path:
        """Write an ehrseq artifact: weights as safetensors, baseline hazard and scaler as JSON extras.

        ``extra_config`` is merged into config.json (e.g. ``{"target": "time_to_flare"}``); ``artifact_kw``
        (featurizer, metrics, data_hash, split_hash) pass through to :func:`ehrseq.artifacts.save_artifact`.
        """
        self._check_fitted()
        config: dict[str, Any] = {
            "model_type": MODEL_TYPE,
            "model": asdict(self.config),
            "n_features_in": self.n_features_in_,
            "feature_names_in": self.feature_names_in_,
            "best_epoch": self.best_epoch_,
        }
        clash = set(extra_config or {}) & set(config)
        if clash:
            raise ArtifactError(f"extra_config keys clash with DeepSurv config keys: {sorted(clash)}")
        config.update(extra_config or {})
        extras = {
            **artifact_kw.pop("extras", {}),
            "baseline_hazard": {
                "times": self.baseline_times_.tolist(),
                "cumulative_hazard": self.baseline_cumhaz_.tolist(),
            },
            "scaler": {"mean": self.mean_.tolist(), "std": self.std_.tolist()},
        }
        return save_artifact(out_dir, state_dict=self.net_.state_dict(), config=config, extras=extras, **artifact_kw)

    @classmethod
    def load(cls, path: str | Path) -> DeepSurv:
        """Rebuild a fitted model from :meth:`save` output (verifies hashes; reads no pickle)."""
        art = load_artifact(path, expect_model_type=MODEL_TYPE)
        for name in ("baseline_hazard", "scaler"):
            if name not in art.extras:
                raise ArtifactError(f"{path}: missing {name}.json; not a complete DeepSurv artifact")
        model = cls(DeepSurvConfig(**art.config["model"]))
        model.n_features_in_ = int(art.config["n_features_in"])
        model.feature_names_in_ = art.config.get("feature_names_in")
        model.best_epoch_ = art.config.get("best_epoch")
        model.history_ = []
        model.mean_ = np.asarray(art.extras["scaler"]["mean"], dtype=np.float64)
        model.std_ = np.asarray(art.extras["scaler"]["std"], dtype=np.float64)
        model.baseline_times_ = np.asarray(art.extras["baseline_hazard"]["times"], dtype=np.float64)
        model.baseline_cumhaz_ = np.asarray(
            art.extras["baseline_hazard"]["cumulative_hazard"], dtype=np.float64
        )
        model.net_ = RiskNet(model.n_features_in_, model.config)
        model.net_.load_state_dict(art.state_dict)
        model.net_.eval()
        return model


# --------------------------------------------------------------------------------------- helpers
@dataclass
class _Rows:
    """A batch of DeepSurv rows for the shared trainer: standardised features, durations, events."""

    x: torch.Tensor
    t: torch.Tensor
    e: torch.Tensor

    def to(self, device: torch.device | str) -> _Rows:
        """The batch on ``device``."""
        return _Rows(self.x.to(device), self.t.to(device), self.e.to(device))

    def __len__(self) -> int:
        return len(self.t)


def _event_stratified_batches(
    events: np.ndarray, batch_size: int, gen: torch.Generator
) -> list[torch.Tensor]:
    """Shuffle rows into batches that each hold at least one event (when there are any).

    Events and censored rows are shuffled separately and dealt round-robin into
    ``min(ceil(N / batch_size), n_events)`` batches, so every batch has a defined partial likelihood.
    """
    n = len(events)
    ev_idx = np.flatnonzero(events == 1)
    ce_idx = np.flatnonzero(events == 0)
    n_batches = max(1, min(math.ceil(n / batch_size), len(ev_idx)))
    ev = torch.from_numpy(ev_idx)[torch.randperm(len(ev_idx), generator=gen)]
    ce = torch.from_numpy(ce_idx)[torch.randperm(len(ce_idx), generator=gen)]
    order = torch.cat([ev, ce])
    return [order[b::n_batches] for b in range(n_batches)]


def _as_2d_float(X: ArrayLike, name: str) -> np.ndarray:
    try:
        x = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataValidationError(
            f"{name} is not numeric",
            hint="one-hot encode categorical columns and convert booleans before fitting",
        ) from exc
    if x.ndim != 2:
        raise DataValidationError(f"{name} must be 2-D (rows, features), got {x.ndim}-D")
    return x


def _rows(mask: np.ndarray, n: int = 5) -> str:
    return ", ".join(str(i) for i in np.flatnonzero(mask)[:n])


def _raise_on_nonfinite(x: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        bad_rows = bad.any(axis=1)
        cols = np.flatnonzero(bad.any(axis=0))[:5].tolist()
        raise DataValidationError(
            f"{name} has NaN or infinite values in feature column(s) {cols} at row index {_rows(bad_rows)}",
            n_rows=int(bad_rows.sum()),
            hint="impute or drop missing values before fitting (fit the imputer on the training split)",
        )


def check_survival_data(
    X: ArrayLike, durations: ArrayLike, events: ArrayLike, name: str = "training"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate survival inputs and return (X (N, F) float64, durations (N,) float64, events (N,) float64).

    Raises DataValidationError naming the problem, the count and the first offending row positions (never
    values): length mismatch, non-finite features, NaN/inf/zero/negative durations, events not in {0, 1},
    no events at all.
    """
    x = _as_2d_float(X, f"{name} X")
    t = np.asarray(durations, dtype=np.float64).reshape(-1)
    try:
        e = np.asarray(events, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DataValidationError(f"{name} events are not numeric", hint="encode events as 0/1") from exc
    if not (len(x) == len(t) == len(e)):
        raise DataValidationError(
            f"{name} X, durations and events have different lengths ({len(x)}, {len(t)}, {len(e)})",
            hint="build them from the same label table",
        )
    if len(x) == 0:
        raise DataValidationError(f"{name} data has no rows")
    _raise_on_nonfinite(x, f"{name} X")
    bad = ~np.isfinite(t)
    if bad.any():
        raise DataValidationError(
            f"{name} durations are NaN or infinite at row index {_rows(bad)}",
            column="durations",
            n_rows=int(bad.sum()),
            hint="drop rows without follow-up, or set the censoring time to the end of follow-up",
        )
    bad = t <= 0
    if bad.any():
        raise DataValidationError(
            f"{name} durations must be > 0; zero or negative at row index {_rows(bad)}",
            column="durations",
            n_rows=int(bad.sum()),
            hint="check that event dates are after prediction_time; events on the index date can be "
            "shifted by a small amount (e.g. half a day)",
        )
    bad = ~np.isin(e, (0.0, 1.0))
    if bad.any():
        raise DataValidationError(
            f"{name} events must be 0 (censored) or 1 (event); other values at row index {_rows(bad)}",
            column="events",
            n_rows=int(bad.sum()),
            hint="encode the event indicator as 0/1 (competing risks are not supported)",
        )
    if e.sum() == 0:
        raise DataValidationError(
            f"{name} data has no events, so the Cox partial likelihood is undefined",
            column="events",
            n_rows=len(e),
            hint="use a longer follow-up window or a split with events in every part",
        )
    return x, t, e
