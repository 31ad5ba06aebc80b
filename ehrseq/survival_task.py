"""``finetune --target survival``: DeepSurv over the shared featurizer's tabular view, optionally joined with
patient embeddings exported by a sequence-model artifact at the same prediction_time."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ehrseq.artifacts import load_artifact
from ehrseq.config import FinetuneConfig, config_to_dict
from ehrseq.errors import TargetError
from ehrseq.evaluate.bootstrap import bootstrap_ci
from ehrseq.evaluate.metrics import MetricResult
from ehrseq.evaluate.survival import (
    concordance_index,
    concordance_td,
    default_time_grid,
    integrated_brier_score,
)
from ehrseq.featurize.featurizer import FeatureSet, Featurizer
from ehrseq.models.deepsurv import DeepSurv, DeepSurvConfig
from ehrseq.split import ids_in
from ehrseq.tasks.label_files import TaskLabels
from ehrseq.utils import frame_hash


def tabular_view(fs: FeatureSet) -> np.ndarray:
    """(N, S + F): static features and the most recent step vector at prediction_time (zeros if none)."""
    has = fs.step_cut > fs.step_start
    last = np.zeros((len(fs), fs.step_x.shape[1]), np.float32)
    last[has] = fs.step_x[fs.step_cut[has] - 1]
    return np.concatenate([fs.static_x, last], axis=1)


def sequence_embeddings(artifact: str | Path, events: pd.DataFrame, labels: pd.DataFrame) -> np.ndarray:
    """(N, H) embeddings of a trained RNN/BEHRT artifact for the label rows (its featurizer, frozen)."""
    from ehrseq.registry import make_dataset, model_from_artifact
    from ehrseq.train.trainer import predict_logits

    art = load_artifact(artifact)
    fz = Featurizer.from_dict(art.featurizer)
    fs = fz.transform(events, labels.reset_index(drop=True))
    ds = make_dataset(fs, None, fz, art.config["model_type"])
    _, emb = predict_logits(model_from_artifact(art), ds, with_embeddings=True)
    return emb


def _c_index(y: np.ndarray, risk: np.ndarray, sample_weight: np.ndarray | None = None) -> MetricResult:
    """Harrell's C on y = (N, 2) [duration, event]; weights are resample counts (rows repeated)."""
    if sample_weight is not None:
        idx = np.repeat(np.arange(len(y)), sample_weight.astype(int))
        y, risk = y[idx], risk[idx]
    if y[:, 1].sum() == 0:
        return MetricResult(None, "no events", len(y))
    return MetricResult(float(concordance_index(y[:, 0], y[:, 1], risk)), None, len(y))


def finetune_survival(events: pd.DataFrame, splits: pd.DataFrame, cfg: FinetuneConfig, out: str | Path | None,
                      task: TaskLabels, embeddings_from: str | Path | None = None,
                      label_match: dict[str, int] | None = None) -> Any:
    """DeepSurv on a time-to-event task (``task.frame``: subject_id, prediction_time, duration in days, event)."""
    from ehrseq.api import FinetuneResult, split_record

    labels = task.frame
    fz = Featurizer(cfg.featurizer).fit(events, splits)
    X, lab = {}, {}
    for name in ("train", "tuning", "held_out"):
        lab[name] = labels.loc[labels["subject_id"].isin(ids_in(splits, name))].reset_index(drop=True)
        if lab[name].empty:
            raise TargetError(f"no '{task.spec.name}' label rows in the {name} split: DeepSurv needs rows in "
                              "train, tuning and held_out")
    if int(lab["train"]["event"].sum()) == 0:
        raise TargetError(f"no events in the train split of '{task.spec.name}' (every row is censored): a Cox "
                          "model cannot be fitted; check the event predicate or the horizon")
    for name in ("train", "tuning", "held_out"):
        X[name] = tabular_view(fz.transform(events, lab[name]))
        if embeddings_from:
            X[name] = np.concatenate([X[name], sequence_embeddings(embeddings_from, events, lab[name])], axis=1)
    overrides = {"lr": 1e-2, **dict(cfg.model_overrides)}
    ds_cfg = replace(DeepSurvConfig(seed=cfg.seed), **overrides)
    model = DeepSurv(ds_cfg).fit(
        X["train"], lab["train"]["duration"].to_numpy(), lab["train"]["event"].to_numpy(),
        X["tuning"], lab["tuning"]["duration"].to_numpy(), lab["tuning"]["event"].to_numpy(),
    )
    metrics: dict[str, Any] = {"train": {"best_epoch": model.best_epoch_}, "label_match": label_match or {}}
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
            "harrell_c": {"value": c.estimate, "lo": c.lo, "hi": c.hi},
            "c_td": {"value": float(concordance_td(d, e, surv))},
            "integrated_brier": {"value": float(integrated_brier_score(d, e, surv))},
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
            data_hash=frame_hash(events, ["subject_id", "time", "code", "numeric_value"]),
            split_hash=frame_hash(splits.sort_values("subject_id")),
        )
    return FinetuneResult(artifact, metrics, preds, model, fz)
