"""The sequence recipe: RNN or BEHRT on a binary, regression, multiclass or multi-label task.

Set up (featurizer fitted on train, or frozen from ``--init``), train (the one trainer, early stopping on
tuning), evaluate (tuning and held-out, patient-bootstrap CIs; a calibrator and conformal sets fitted on
tuning) and save (safetensors + JSON, the task and the split recorded).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ehrseq.artifacts import Artifact, save_artifact
from ehrseq.config import FinetuneConfig, config_to_dict
from ehrseq.data.dataset import LengthOrdered, SequenceDataset, bucketed_batches
from ehrseq.errors import ArtifactError, ConfigError, TargetError
from ehrseq.featurize.featurizer import Featurizer
from ehrseq.recipes.common import FinetuneResult, Run, split_record, subsample_rows
from ehrseq.registry import (
    PRETRAIN_TARGET,
    behrt_from_pretrained,
    build_model,
    head_for,
    make_dataset,
    model_config_dict,
    model_from_artifact,
)
from ehrseq.split import ids_in
from ehrseq.tasks.arrays import target_arrays
from ehrseq.tasks.label_files import TaskLabels
from ehrseq.tasks.spec import TaskSpec
from ehrseq.utils import EVENT_HASH_COLUMNS, frame_hash

log = logging.getLogger(__name__)


def _label_names(tl: TaskLabels, splits: pd.DataFrame, cfg: FinetuneConfig) -> list[str] | None:
    if tl.spec.kind == "multiclass":
        return list(tl.spec.classes or ())
    if tl.spec.kind != "multilabel":
        return None
    tr = tl.frame.loc[tl.frame["subject_id"].isin(ids_in(splits, "train")), "codes"].explode().value_counts()
    names = sorted(str(c) for c in tr.index[tr >= cfg.min_label_count])
    if not names:
        raise TargetError("no diagnosis code occurs often enough at next visits in the train split "
                          "(min_label_count in the config)")
    return names


def _check_init(init_art: Artifact, spec: TaskSpec, model: str) -> bool:
    """True when ``init`` is a pretraining artifact; refuses one trained for another task or model."""
    from_pretrain = init_art.config.get("target") == PRETRAIN_TARGET
    if not from_pretrain:
        was = init_art.config.get("task_spec") or {"name": init_art.config.get("target")}
        if was.get("name") != spec.name:
            raise ArtifactError(f"--init artifact was trained for '{was.get('name')}', not '{spec.name}'")
    if init_art.config["model_type"] != model:
        raise ArtifactError(f"--init artifact holds a '{init_art.config['model_type']}' model, not '{model}'")
    return from_pretrain


# featurize(frozen featurizer or None, split -> (label rows, targets)) -> (featurizer, split -> dataset, data hash)
Featurize = Callable[[Featurizer | None, dict[str, tuple[pd.DataFrame, np.ndarray | None]]],
                     tuple[Featurizer, dict[str, SequenceDataset], str]]


def finetune_sequence(run: Run, cfg: FinetuneConfig, out: str | Path | None,
                      featurize: Featurize | None = None) -> FinetuneResult:
    """Train an RNN or BEHRT (``cfg.model``) on ``run``'s task; evaluate tuning and held_out; save to ``out``.

    ``featurize``: how the splits' rows become datasets; None fits (unless ``--init``) and transforms
    ``run.events`` in memory. :func:`ehrseq.recipes.streamed.finetune_streamed` passes one that streams a
    MEDS root's shards through an on-disk store instead (same rows, same arrays).
    """
    from ehrseq.provenance import training_subjects

    events, splits, tl, match, init_art = run.events, run.splits, run.task, run.label_match, run.init
    spec = tl.spec
    head = head_for(spec.kind)
    _check_monitor(cfg.train.monitor, spec)  # before the (slow) featurizer
    from_pretrain = _check_init(init_art, spec, cfg.model) if init_art is not None else False
    frozen = None
    label_names = None
    if init_art is not None:
        frozen = Featurizer.from_dict(init_art.featurizer)  # frozen: the vocabulary the weights were trained on
        label_names = None if from_pretrain else init_art.config.get("label_names")
    if featurize is None:
        fz = frozen or Featurizer(cfg.featurizer).fit(events, splits)
    if label_names is None:
        label_names = _label_names(tl, splits, cfg)

    rows: dict[str, tuple[pd.DataFrame, np.ndarray | None]] = {}
    for name in ("train", "tuning", "held_out"):
        lab = tl.subset(ids_in(splits, name)).frame
        if name == "train" and cfg.max_train_rows_per_subject:
            lab = subsample_rows(lab, cfg.max_train_rows_per_subject, cfg.seed)
        rows[name] = (lab, target_arrays(spec, lab, label_names))
    if featurize is None:
        parts = {name: make_dataset(fz.transform(events, lab), y, fz, cfg.model) for name, (lab, y) in rows.items()}
        data_hash = frame_hash(events, EVENT_HASH_COLUMNS)
    else:
        fz, parts, data_hash = featurize(frozen, rows)
    if len(parts["train"]) == 0:
        raise TargetError(f"no '{spec.name}' label rows in the train split")
    _check_trainable(spec, parts["train"], label_names)
    n_out = len(label_names) if head in ("multilabel", "multiclass") else 1
    overrides = dict(cfg.model_overrides)
    pos_weight = resolve_pos_weight(overrides.pop("pos_weight", None), spec, parts["train"])
    if from_pretrain:
        model = behrt_from_pretrained(init_art, head, n_out, overrides, pos_weight)
    elif init_art is not None:
        model = model_from_artifact(init_art)
        if pos_weight is not None:  # the class balance of this train split, not the one the artifact saw
            model.config.pos_weight = pos_weight
    else:
        model = build_model(cfg.model, head, n_out, fz, cfg.preset, overrides, pos_weight)
    from ehrseq.evaluate.summary import summarize
    from ehrseq.train.trainer import train

    torch.manual_seed(cfg.seed)
    train_cfg = replace(cfg.train, seed=cfg.seed)
    score = tuning_score(train_cfg.monitor, spec, parts["tuning"])
    monitor = train_cfg.monitor
    # BEHRT: batches of similar length (little padding), shuffled per epoch under the seed
    buckets = bucketed_batches(parts["train"], train_cfg.batch_size, train_cfg.seed) if parts["train"].tokens else None
    if score is None and monitor != "loss":  # no tuning AUROC: every epoch runs, the last weights are kept
        monitor, train_cfg = "last_epoch", replace(train_cfg, monitor="loss")
        result = train(model, parts["train"], None, train_cfg, keep_best=False, batches=buckets)
    else:
        result = train(model, parts["train"], in_length_order(parts["tuning"]), train_cfg, tuning_score=score,
                       batches=buckets)
    metrics: dict[str, Any] = {"train": {"best_epoch": result.best_epoch, "history": result.history,
                                         "sequences_per_second": result.sequences_per_second,
                                         "monitor": monitor, "pos_weight": pos_weight},
                               "label_match": match}
    if run.init_overlap is not None:
        metrics["init_overlap"] = run.init_overlap
    preds = {}
    eval_head = "multilabel" if head == "multiclass" else head
    for name in ("tuning", "held_out"):
        preds[name] = predictions_frame(model, parts[name], head, label_names)
        metrics[name] = summarize(preds[name], eval_head, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
    extras = {**post_hoc(head, preds, metrics), "split": split_record(splits)}
    artifact = None
    if out is not None:
        artifact = save_artifact(
            out,
            extras=extras,
            state_dict=model.state_dict(),
            config={
                "model_type": cfg.model, "target": spec.name, "task": head, "task_spec": spec.to_dict(),
                "label_names": label_names, "model": model_config_dict(model), "finetune": config_to_dict(cfg),
                "init": run.init_path,
            },
            featurizer=fz.to_dict(),
            metrics=metrics,
            data_hash=data_hash,
            split_hash=frame_hash(splits.sort_values("subject_id")),
            train_subjects=training_subjects(splits, init_art),
        )
    return FinetuneResult(artifact, metrics, preds, model, fz)


def resolve_pos_weight(value: Any, spec: TaskSpec, train: SequenceDataset) -> float | None:
    """``model_overrides.pos_weight`` as the BCE positive-class weight: None (unweighted), a positive number, or
    "balanced": n_negative / n_positive over the train split's label rows (binary tasks)."""
    if value is None:
        return None
    if spec.kind not in ("binary", "multilabel"):
        raise ConfigError(f"model_overrides.pos_weight weighs the positive class of a binary task; '{spec.name}' "
                          f"is {spec.kind}: remove it")
    if value == "balanced":
        if spec.kind != "binary":
            raise ConfigError(f"model_overrides.pos_weight: balanced is defined for binary tasks; '{spec.name}' is "
                              "multilabel: give one number or remove it")
        n_pos = int((train.targets[:, 0] > 0.5).sum())
        return (len(train) - n_pos) / n_pos  # _check_trainable ran: both classes are present
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError("model_overrides.pos_weight must be a positive number or 'balanced' (n_negative / "
                          "n_positive on the train split)")
    return float(value)


def tuning_score(monitor: str, spec: TaskSpec, tuning: SequenceDataset) -> Callable[[torch.nn.Module], float] | None:
    """What the trainer early-stops on under ``train.monitor``: None for the loss; for "auroc" the tuning AUROC
    of a binary task's logits. None, with a warning, when tuning lacks a class: then no epoch can be chosen on
    tuning (its loss would reward predicting the one class it holds), so every epoch runs and the last is kept."""
    if monitor == "loss":
        return None
    _check_monitor(monitor, spec)
    from ehrseq.evaluate.metrics import auroc

    y = tuning.targets[:, 0] if tuning.targets is not None and len(tuning) else np.zeros(0, np.float32)
    if len(np.unique(y)) < 2:
        log.warning("train.monitor: %s needs both classes on the tuning split; '%s' has %d tuning rows, %d positive: "
                    "no early stopping, the weights after the last epoch are kept", monitor, spec.name, len(y),
                    int(y.sum()))
        return None

    def score(model: torch.nn.Module) -> float:
        return float(auroc(y, predict_sequence_logits(model, tuning)[:, 0]).value)

    return score


def _check_monitor(monitor: str, spec: TaskSpec) -> None:
    if monitor != "loss" and spec.kind != "binary":
        raise ConfigError(f"train.monitor: {monitor} is for binary tasks; '{spec.name}' is {spec.kind}: remove "
                          "train.monitor or set it to loss")


def _check_trainable(spec: TaskSpec, train: SequenceDataset, label_names: list[str] | None) -> None:
    """Refuse, before any training, a train split whose labels cannot teach the task (one class only)."""
    y = train.targets
    if spec.kind == "binary" and len(np.unique(y)) < 2:
        raise TargetError(f"every '{spec.name}' label in the train split is {bool(y[0, 0])}: a classifier needs "
                          "both classes (check the task definition or the split)")
    if spec.kind == "multiclass" and len(np.unique(y)) < 2:
        raise TargetError(f"the train split of '{spec.name}' holds one class only; a classifier needs two or more")


def post_hoc(head: str, preds: dict[str, pd.DataFrame], metrics: dict[str, Any]) -> dict[str, Any]:
    """Fit on the tuning split what is stored beside the weights: a temperature calibrator and split-conformal
    sets (binary), conformal intervals (regression); record held-out ECE before/after and coverage."""
    from ehrseq.evaluate.calibration import TemperatureScaler, ece
    from ehrseq.evaluate.conformal import (
        SplitConformalClassifier,
        SplitConformalRegressor,
        interval_coverage,
        set_coverage,
    )

    tune, ho = preds["tuning"], preds["held_out"]
    extras: dict[str, Any] = {}
    if head == "binary" and tune["y_true"].nunique() == 2:
        ts = TemperatureScaler(inputs="prob").fit(tune["y_prob"], tune["y_true"])
        conf = SplitConformalClassifier(alpha=0.1).fit(tune["y_prob"], tune["y_true"])
        extras = {"calibrator": {"kind": "temperature", **ts.to_dict()}, "conformal": conf.to_dict()}
        if len(ho):
            metrics["held_out"]["ece"] = {"value": float(ece(ho["y_true"], ho["y_prob"]))}
            metrics["held_out"]["ece_calibrated"] = {"value": float(ece(ho["y_true"], ts.transform(ho["y_prob"])))}
            cov = set_coverage(conf.predict_sets(ho["y_prob"].to_numpy()), ho["y_true"].astype(int).to_numpy())
            metrics["held_out"]["conformal_90"] = cov
    elif head == "regression" and len(tune):
        conf = SplitConformalRegressor(alpha=0.1).fit(tune["y_pred"], tune["y_true"])
        extras = {"conformal": conf.to_dict()}
        if len(ho):
            lo, hi = conf.predict_interval(ho["y_pred"].to_numpy())
            metrics["held_out"]["conformal_90"] = interval_coverage(lo, hi, ho["y_true"].to_numpy())
    return extras


def in_length_order(ds: SequenceDataset) -> SequenceDataset | LengthOrdered:
    """BEHRT's ``ds`` read in length order (batches pad to little; per-row results do not change); others as is."""
    return LengthOrdered(ds) if ds.tokens else ds


def predict_sequence_logits(model: torch.nn.Module, ds: SequenceDataset) -> np.ndarray:
    """(N, K) logits in ``ds``'s order; BEHRT's computed in length order (:func:`in_length_order`)."""
    from ehrseq.train.trainer import predict_logits

    view = in_length_order(ds)
    logits = predict_logits(model, view)
    return view.restore(logits) if isinstance(view, LengthOrdered) else logits


def predictions_frame(model: torch.nn.Module, ds: SequenceDataset, head: str, label_names: list[str] | None) -> pd.DataFrame:
    """subject_id, prediction_time and y_true / y_prob (binary), y_pred (regression), or y_true_<name> /
    y_prob_<name> per label (multilabel) or per class (multiclass, one-hot truth)."""
    from ehrseq.models.heads import to_prediction

    logits = predict_sequence_logits(model, ds)
    pred = to_prediction(head, torch.from_numpy(logits)).numpy()
    df = ds.fs.labels[["subject_id", "prediction_time"]].copy()
    if head in ("multilabel", "multiclass"):
        truth = ds.targets
        if head == "multiclass" and truth is not None:
            truth = np.eye(len(label_names or []), dtype=np.float32)[truth[:, 0].astype(int)]
        for j, n in enumerate(label_names or []):
            df[f"y_true_{n}"] = truth[:, j] if truth is not None else np.nan
            df[f"y_prob_{n}"] = pred[:, j]
    else:
        if ds.targets is not None:
            df["y_true"] = ds.targets[:, 0]
        df["y_pred" if head == "regression" else "y_prob"] = pred[:, 0]
    return df
