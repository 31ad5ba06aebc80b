"""The survival recipe: a time-to-event model over the shared featurizer's tabular view, optionally joined with
patient embeddings exported by a sequence-model artifact at the same prediction_time (``finetune --target
survival``, ``--task`` with a time_to_event block, or a time-to-event label file).

The model is ``cfg.model`` when it names a discrete-time head (``logistic_hazard``, ``pmf``, ``deephit``:
:mod:`ehrseq.models.discrete_time`), else DeepSurv."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ehrseq.config import FinetuneConfig, config_to_dict
from ehrseq.errors import TargetError
from ehrseq.evaluate.bootstrap import bootstrap_ci
from ehrseq.evaluate.metrics import MetricResult
from ehrseq.evaluate.survival import (
    as_metric_result,
    concordance_index,
    concordance_td,
    default_time_grid,
    integrated_brier_score,
)
from ehrseq.featurize.featurizer import Featurizer
from ehrseq.featurize.tabular import tabular_view
from ehrseq.models.deepsurv import DeepSurvConfig
from ehrseq.split import ids_in
from ehrseq.utils import EVENT_HASH_COLUMNS, frame_hash


def _c_index(y: np.ndarray, risk: np.ndarray, sample_weight: np.ndarray | None = None) -> MetricResult:
    """Harrell's C on y = (N, 2) [duration, event]; weights are resample counts (rows repeated)."""
    if sample_weight is not None:
        idx = np.repeat(np.arange(len(y)), sample_weight.astype(int))
        y, risk = y[idx], risk[idx]
    if y[:, 1].sum() == 0:
        return MetricResult(None, "no events", len(y))
    return MetricResult(float(concordance_index(y[:, 0], y[:, 1], risk)), None, len(y))


def deepsurv_config(cfg: FinetuneConfig) -> DeepSurvConfig:
    """DeepSurv's config from a run config: its preset, then model_overrides, then the train keys set."""
    from ehrseq.registry import DEEPSURV_PRESETS, family_config

    return family_config("deepsurv", cfg, DEEPSURV_PRESETS, lambda kw: replace(DeepSurvConfig(seed=cfg.seed), **kw))


def discrete_time_config(cfg: FinetuneConfig) -> Any:
    """A discrete-time head's DiscreteTimeConfig from a run config: its preset, then model_overrides (e.g.
    ``num_durations``), then the train keys set; alpha and sigma only for deephit (elsewhere they would be
    ignored)."""
    from ehrseq.errors import ConfigError
    from ehrseq.models.discrete_time import DiscreteTimeConfig
    from ehrseq.registry import DISCRETE_TIME_PRESETS, family_config

    stray = sorted({"alpha", "sigma"} & set(cfg.model_overrides)) if cfg.model != "deephit" else []
    if stray:
        raise ConfigError(f"model_overrides.{stray[0]} applies to deephit only, not {cfg.model}; remove it")
    return family_config(cfg.model, cfg, DISCRETE_TIME_PRESETS,
                         lambda kw: replace(DiscreteTimeConfig(seed=cfg.seed), **kw))


def survival_estimator(cfg: FinetuneConfig) -> Any:
    """The unfitted time-to-event estimator ``cfg`` asks for: a discrete-time head by name, else DeepSurv."""
    from ehrseq import names
    from ehrseq.models.deepsurv import DeepSurv
    from ehrseq.registry import survival_model_class

    if cfg.model in names.DISCRETE_TIME_MODELS:
        return survival_model_class(cfg.model)(discrete_time_config(cfg))
    return DeepSurv(deepsurv_config(cfg))


def finetune_survival(run: Any, cfg: FinetuneConfig, out: str | Path | None) -> Any:
    """A time-to-event model (:func:`survival_estimator`) on ``run``'s task (frame: subject_id, prediction_time,
    duration in days, event); ``run.init`` (a sequence artifact), when given, adds its patient embeddings to the
    features."""
    from ehrseq.provenance import training_subjects
    from ehrseq.recipes.common import FinetuneResult, split_record
    from ehrseq.scoring.predict import sequence_embeddings

    events, splits, task = run.events, run.splits, run.task
    embeddings_from = run.init_path
    labels = task.frame
    fz = Featurizer(cfg.featurizer).fit(events, splits)
    X, lab = {}, {}
    for name in ("train", "tuning", "held_out"):
        lab[name] = labels.loc[labels["subject_id"].isin(ids_in(splits, name))].reset_index(drop=True)
        if lab[name].empty:
            raise TargetError(f"no '{task.spec.name}' label rows in the {name} split: a time-to-event model "
                              "needs rows in train, tuning and held_out")
    if int(lab["train"]["event"].sum()) == 0:
        raise TargetError(f"no events in the train split of '{task.spec.name}' (every row is censored): a "
                          "survival model cannot be fitted; check the event predicate or the horizon")
    for name in ("train", "tuning", "held_out"):
        X[name] = tabular_view(fz.transform(events, lab[name]))
        if embeddings_from:
            X[name] = np.concatenate([X[name], sequence_embeddings(embeddings_from, events, lab[name])], axis=1)
    model = survival_estimator(cfg).fit(
        X["train"], lab["train"]["duration"].to_numpy(), lab["train"]["event"].to_numpy(),
        X["tuning"], lab["tuning"]["duration"].to_numpy(), lab["tuning"]["event"].to_numpy(),
    )
    metrics: dict[str, Any] = {"train": {"best_epoch": model.best_epoch_}, "label_match": run.label_match}
    if run.init_overlap is not None:
        metrics["init_overlap"] = run.init_overlap
    preds = {}
    for name in ("tuning", "held_out"):
        d, e = lab[name]["duration"].to_numpy(float), lab[name]["event"].to_numpy(int)
        risk = model.predict_risk(X[name])
        grid = default_time_grid(d)
        surv = model.predict_survival(X[name], times=grid)
        y = np.stack([d, e], axis=1)
        c = bootstrap_ci(_c_index, y, risk, groups=lab[name]["subject_id"].to_numpy(), n_boot=cfg.n_bootstrap, seed=cfg.seed)
        metrics[name] = {
            "n_rows": int(len(d)), "n_events": int(e.sum()),
            "harrell_c": c.to_summary(),
            "c_td": as_metric_result(concordance_td, d, e, surv).to_dict(),
            "integrated_brier": as_metric_result(integrated_brier_score, d, e, surv).to_dict(),
        }
        preds[name] = lab[name].assign(risk=risk)
    artifact = None
    if out is not None:
        artifact = model.save(
            out,
            extra_config={"target": task.spec.name, "task": "survival", "task_spec": task.spec.to_dict(),
                          "event_code": cfg.event_code,
                          "landmark_visit": cfg.landmark_visit, "finetune": config_to_dict(cfg),
                          "embeddings_from": str(embeddings_from) if embeddings_from else None},
            featurizer=fz.to_dict(), metrics=metrics, extras={"split": split_record(splits)},
            data_hash=frame_hash(events, EVENT_HASH_COLUMNS),
            split_hash=frame_hash(splits.sort_values("subject_id")),
            train_subjects=training_subjects(splits, run.init),
        )
    return FinetuneResult(artifact, metrics, preds, model, fz)
