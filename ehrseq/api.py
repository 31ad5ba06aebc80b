"""The Python API: a few calls that do what the CLI does.

    from ehrseq import api
    api.synthesize(2000, out="runs/cohort")                       # MEDS + extract + truth
    res = api.finetune("runs/cohort/meds", target="cdai", out="runs/cdai_rnn")
    print(res.metrics["held_out"]["auroc"])
    preds = api.predict("runs/cdai_rnn", "runs/cohort/meds")       # subject_id, prediction_time, ...

A task of one's own: ``api.finetune(data, labels="labels/")`` (a MEDS label file or directory, or a label
frame) or ``api.finetune(data, task="configs/tasks/mimic/in_hospital_mortality.yaml")`` (an ACES task file).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ehrseq.artifacts import Artifact, load_artifact, save_artifact
from ehrseq.config import FinetuneConfig, config_to_dict, load_config
from ehrseq.data.dataset import SequenceDataset
from ehrseq.data.loading import LoadedData, biopsy_frame, load_data
from ehrseq.errors import ArtifactError, DataValidationError, TargetError
from ehrseq.featurize.featurizer import Featurizer
from ehrseq.pretrain import PRETRAIN_TARGET
from ehrseq.registry import (
    SEQUENCE_MODELS,
    behrt_from_pretrained,
    build_model,
    head_for,
    make_dataset,
    model_config_dict,
    model_from_artifact,
)
from ehrseq.scoring.predict import artifact_task
from ehrseq.split import PatientSplitter, assert_disjoint, ids_in, subjects_table
from ehrseq.tasks.label_files import TaskLabels
from ehrseq.tasks.resolve import builtin_params, rebuild_labels, resolve_task
from ehrseq.tasks.spec import TaskSpec
from ehrseq.utils import frame_hash, seed_everything

log = logging.getLogger(__name__)
__all__ = ["LoadedData", "load_data", "biopsy_frame", "synthesize", "finetune", "predict", "predict_meds",
           "FinetuneResult", "Prediction", "artifact_task",
           "build_model", "make_dataset", "model_config_dict", "model_from_artifact", "SEQUENCE_MODELS"]


def synthesize(n_patients: int = 2000, *, out: str | Path, n_sites: int = 2, seed: int = 0, extract: bool = True,
               biopsy_rate: float = 0.05) -> Path:
    """Write a synthetic cohort: ``out/meds`` (MEDS root with a random patient split), ``out/extract`` (CSV
    tables), ``out/truth`` (the probabilities the generator used)."""
    from ehrseq.io import write_extract, write_meds, write_subject_splits
    from ehrseq.synth.cohort import generate_cohort

    out = Path(out)
    c = generate_cohort(n_patients, n_sites=n_sites, seed=seed, biopsy_rate=biopsy_rate)
    root = write_meds(c.events, out / "meds", dataset_name="ehrseq-synthetic-ra", overwrite=True)
    write_subject_splits(PatientSplitter(seed=seed).split(subjects_table(c.events)), root)
    truth = root / "truth"
    truth.mkdir(exist_ok=True)
    c.truth_cdai.to_parquet(truth / "cdai_next.parquet", index=False)
    c.truth_flare.to_parquet(truth / "flare_hazard.parquet", index=False)
    c.biopsy_labels.to_parquet(truth / "biopsy_labels.parquet", index=False)
    c.patients.to_parquet(truth / "patients.parquet", index=False)
    if extract:
        write_extract(c.events, out / "extract", report_labels=c.biopsy_labels)
    return out


def resolve_splits(data: LoadedData, cfg: FinetuneConfig) -> pd.DataFrame:
    """The patient split of a run: the data's own subject_splits, or one drawn by ``cfg.split``."""
    s = cfg.split
    if s.strategy == "data":
        if data.splits is not None:
            splits = data.splits
        else:
            log.warning("the data has no subject_splits; making a random patient split (seed %d)", s.seed)
            splits = PatientSplitter(fractions=s.fractions, seed=s.seed).split(subjects_table(data.events))
    else:
        splits = PatientSplitter(
            strategy=s.strategy, fractions=s.fractions, held_out_sites=s.held_out_sites, cutoff=s.cutoff, seed=s.seed
        ).split(subjects_table(data.events))
    assert_disjoint(splits)
    return splits


def split_record(splits: pd.DataFrame) -> dict[str, list[int]]:
    """The patient split of a run as stored in its artifact (``split.json``): subject ids per split, so that
    evaluate and explain can score the same held-out patients on data that has no subject_splits."""
    return {name: sorted(int(i) for i in ids_in(splits, name)) for name in ("train", "tuning", "held_out")}


def _restrict(events: pd.DataFrame, splits: pd.DataFrame, cfg: FinetuneConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep only the configured sites, and a seeded share of the train patients."""
    if cfg.sites:
        subj = subjects_table(events)
        keep = subj.loc[subj["site"].isin(cfg.sites), "subject_id"]
        if keep.empty:
            raise DataValidationError(f"no subjects at site(s) {list(cfg.sites)}", column="SITE//")
        splits = splits.loc[splits["subject_id"].isin(keep)]
    if cfg.train_fraction < 1.0:
        if not 0 < cfg.train_fraction <= 1:
            raise ValueError("train_fraction must be in (0, 1]")
        tr = np.sort(ids_in(splits, "train"))
        rng = np.random.default_rng(cfg.seed)
        n = max(1, int(round(cfg.train_fraction * len(tr))))
        drop = np.setdiff1d(tr, rng.choice(tr, size=n, replace=False))
        splits = splits.loc[~splits["subject_id"].isin(drop)]
    events = events.loc[events["subject_id"].isin(splits["subject_id"])]
    return events, splits.reset_index(drop=True)


# ------------------------------------------------------------------------- targets
def target_arrays(spec: TaskSpec, frame: pd.DataFrame, label_names: list[str] | None) -> np.ndarray:
    """(N, K) float32 training targets of a task's label rows (multiclass: the class index, K = 1)."""
    if spec.kind == "binary":
        return frame["boolean_value"].to_numpy(np.float32)[:, None]
    if spec.kind == "regression":
        return frame["float_value"].to_numpy(np.float32)[:, None]
    if spec.kind == "multiclass":
        return frame["integer_value"].to_numpy(np.float32)[:, None]
    if spec.kind == "multilabel":
        pos = {c: i for i, c in enumerate(label_names or [])}
        y = np.zeros((len(frame), len(pos)), np.float32)
        for r, cs in enumerate(frame["codes"]):
            for c in cs:
                if c in pos:
                    y[r, pos[c]] = 1.0
        return y
    raise TargetError(f"a '{spec.kind}' task has no array form for sequence models")


def subsample_rows(labels: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    """At most ``k`` label rows per subject, drawn with a seed, kept in their original order."""
    key = np.random.default_rng(seed).random(len(labels))
    rank = pd.Series(key).groupby(labels["subject_id"].to_numpy()).rank(method="first").to_numpy()
    return labels.loc[rank <= k].reset_index(drop=True)


# ------------------------------------------------------------------------ finetune
@dataclass
class FinetuneResult:
    artifact: Path | None
    metrics: dict[str, Any]
    predictions: dict[str, pd.DataFrame]
    model: Any = None
    featurizer: Featurizer | None = None


def _task_overrides(overrides: dict[str, Any], labels: Any, task: Any) -> Any:
    """Label files and task files given to the API: paths go into the config, frames/TaskLabels stay objects."""
    obj = None
    if labels is not None:
        if isinstance(labels, (str, Path)):
            overrides["labels"] = str(labels)
        else:
            obj = labels
    if task is not None:
        overrides["task"] = str(task)
    return obj


def _read_task_early(cfg: FinetuneConfig, label_obj: Any) -> Any:
    """Read a label file, or check a task file, before the (slow) data read; returns the label object."""
    from ehrseq.tasks.label_files import labels_from_frame, read_task_labels

    if label_obj is None and cfg.labels is not None:
        return read_task_labels(cfg.labels, kind=cfg.label_kind)
    if isinstance(label_obj, pd.DataFrame):
        return labels_from_frame(label_obj, kind=cfg.label_kind, name="labels", file="labels frame")
    if cfg.task is not None:
        from ehrseq.tasks.aces import load_task_file

        load_task_file(cfg.task, cfg.predicates)
    return label_obj


def _check_task_choice(cfg: FinetuneConfig, has_label_object: bool) -> None:
    chosen = [n for n, v in (("labels", cfg.labels or has_label_object), ("task", cfg.task)) if v]
    if len(chosen) > 1:
        raise TargetError("pass either a label file (--labels) or a task file (--task), not both")
    if chosen and cfg.target not in ("cdai",):
        raise TargetError(f"target '{cfg.target}' and --{chosen[0]} both name the task: keep one")
    if chosen and cfg.model == "text":
        raise TargetError("the text classifier trains on biopsy reports (--target biopsy); label and task files "
                          "train the sequence models (rnn, behrt) and deepsurv")


def finetune(
    data: str | Path | LoadedData,
    *,
    out: str | Path | None = None,
    config: FinetuneConfig | str | Path | None = None,
    init: str | Path | None = None,
    labels: str | Path | pd.DataFrame | TaskLabels | None = None,
    task: str | Path | None = None,
    column_map: Mapping[str, str] | None = None,
    **overrides: Any,
) -> FinetuneResult:
    """Fit a model for a task on the train split, early-stop on tuning, evaluate tuning and held_out.

    The task is ``labels`` (a MEDS label file or directory, a label frame, or TaskLabels), else ``task`` (an
    ACES task file), else the built-in ``target`` override (default ``cdai``). ``init``: an artifact to start
    from (transfer learning or BEHRT pretraining): its featurizer is reused frozen and its weights are the
    starting point. Other overrides are FinetuneConfig fields (model=..., train={"epochs": 3}, ...).
    ``column_map`` renames the columns of a MEDS export as it is read.
    """
    label_obj = _task_overrides(overrides, labels, task)
    cfg = load_config(config, **overrides)  # config errors come before any data is read
    _check_task_choice(cfg, label_obj is not None)
    label_obj = _read_task_early(cfg, label_obj)  # a bad label or task file fails before the data is read
    seed_everything(cfg.seed)
    d = data if isinstance(data, LoadedData) else load_data(data, column_map=column_map)
    has_task = cfg.labels is not None or cfg.task is not None or label_obj is not None
    if not has_task and (cfg.target == "biopsy" or cfg.model == "text"):
        return _finetune_text(d, cfg, out)
    splits = resolve_splits(d, cfg)
    events, splits = _restrict(d.events, splits, cfg)
    tl, match = resolve_task(events, labels=label_obj if label_obj is not None else cfg.labels, task=cfg.task,
                             predicates=cfg.predicates, label_kind=cfg.label_kind, target=cfg.target,
                             params=builtin_params(cfg.target, config_to_dict(cfg)),
                             max_unmatched_fraction=cfg.max_unmatched_label_fraction)
    if tl.spec.kind == "survival" or cfg.model == "deepsurv":
        if tl.spec.kind != "survival":
            raise TargetError(f"deepsurv fits time-to-event tasks; this task is '{tl.spec.kind}'")
        from ehrseq.survival_task import finetune_survival

        return finetune_survival(events, splits, cfg, out, tl, embeddings_from=init, label_match=match)
    if cfg.model not in SEQUENCE_MODELS:
        raise TargetError(f"model '{cfg.model}' cannot fit a '{tl.spec.kind}' task; use one of "
                          f"{', '.join(SEQUENCE_MODELS)}")
    return _finetune_sequence(events, splits, cfg, out, tl, match, init)


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


def _finetune_sequence(events: pd.DataFrame, splits: pd.DataFrame, cfg: FinetuneConfig, out: str | Path | None,
                       tl: TaskLabels, match: dict[str, int], init: str | Path | None) -> FinetuneResult:
    spec = tl.spec
    head = head_for(spec.kind)
    init_art = load_artifact(init) if init else None
    from_pretrain = _check_init(init_art, spec, cfg.model) if init_art is not None else False
    if init_art is not None:
        fz = Featurizer.from_dict(init_art.featurizer)  # frozen: the vocabulary the weights were trained on
        label_names = None if from_pretrain else init_art.config.get("label_names")
    else:
        fz = Featurizer(cfg.featurizer).fit(events, splits)
        label_names = None
    if label_names is None:
        label_names = _label_names(tl, splits, cfg)

    parts: dict[str, SequenceDataset] = {}
    for name in ("train", "tuning", "held_out"):
        lab = tl.subset(ids_in(splits, name)).frame
        if name == "train" and cfg.max_train_rows_per_subject:
            lab = subsample_rows(lab, cfg.max_train_rows_per_subject, cfg.seed)
        fs = fz.transform(events, lab)
        parts[name] = make_dataset(fs, target_arrays(spec, lab, label_names), fz, cfg.model)
    if len(parts["train"]) == 0:
        raise TargetError(f"no '{spec.name}' label rows in the train split")
    _check_trainable(spec, parts["train"], label_names)
    n_out = len(label_names) if head in ("multilabel", "multiclass") else 1
    if from_pretrain:
        model = behrt_from_pretrained(init_art, head, n_out, dict(cfg.model_overrides))
    elif init_art is not None:
        model = model_from_artifact(init_art)
    else:
        model = build_model(cfg.model, head, n_out, fz, cfg.preset, dict(cfg.model_overrides), None)
    from ehrseq.evaluate.summary import summarize
    from ehrseq.train.trainer import train

    torch.manual_seed(cfg.seed)
    result = train(model, parts["train"], parts["tuning"], replace(cfg.train, seed=cfg.seed))
    metrics: dict[str, Any] = {"train": {"best_epoch": result.best_epoch, "history": result.history,
                                         "sequences_per_second": result.sequences_per_second},
                               "label_match": match}
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
                "init": str(init) if init else None,
            },
            featurizer=fz.to_dict(),
            metrics=metrics,
            data_hash=frame_hash(events, ["subject_id", "time", "code", "numeric_value"]),
            split_hash=frame_hash(splits.sort_values("subject_id")),
        )
    return FinetuneResult(artifact, metrics, preds, model, fz)


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


def predictions_frame(model: torch.nn.Module, ds: SequenceDataset, head: str, label_names: list[str] | None) -> pd.DataFrame:
    """subject_id, prediction_time and y_true / y_prob (binary), y_pred (regression), or y_true_<name> /
    y_prob_<name> per label (multilabel) or per class (multiclass, one-hot truth)."""
    from ehrseq.models.heads import to_prediction
    from ehrseq.train.trainer import predict_logits

    logits = predict_logits(model, ds)
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


@dataclass
class Prediction:
    """What the one predictor returned for some label rows: the rows (canonical truth columns when
    ``has_truth``), the model outputs and the Scorer that made them."""

    rows: pd.DataFrame
    has_truth: bool
    values: dict[str, np.ndarray]
    scorer: Any

    def eval_frame(self) -> pd.DataFrame:
        """subject_id, prediction_time and the evaluation columns: y_true / y_prob (binary), y_true / y_pred
        (regression), y_true_<name> / y_prob_<name> (multilabel, multiclass), duration / event / risk (survival)."""
        sc, rows = self.scorer, self.rows
        spec, head, names = sc.spec, sc.head, sc.label_names
        df = rows[["subject_id", "prediction_time"]].copy()
        if head == "survival":
            if self.has_truth:
                df["duration"], df["event"] = rows["duration"].to_numpy(), rows["event"].to_numpy()
            return df.assign(risk=self.values["risk"])
        pred = self.values["pred"]
        truth = target_arrays(spec, rows, names) if self.has_truth else None
        if head in ("multilabel", "multiclass"):
            if head == "multiclass" and truth is not None:
                truth = np.eye(len(names), dtype=np.float32)[truth[:, 0].astype(int)]
            for j, n in enumerate(names):
                df[f"y_true_{n}"] = truth[:, j] if truth is not None else np.nan
                df[f"y_prob_{n}"] = pred[:, j]
            return df
        if truth is not None:
            df["y_true"] = truth[:, 0]
        df["y_pred" if head == "regression" else "y_prob"] = pred[:, 0]
        return df

    def meds_frame(self) -> pd.DataFrame:
        """The rows in the MEDS prediction schema (see :mod:`ehrseq.scoring.predict`), truth included."""
        return self.meds_table().to_pandas()

    def meds_table(self) -> Any:
        """:meth:`meds_frame` as an Arrow table, with the artifact's id in its metadata."""
        rows = self.rows
        if self.has_truth and self.scorer.head != "multilabel":
            from ehrseq.tasks.label_files import to_meds_frame

            meds = to_meds_frame(TaskLabels(rows, self.scorer.spec))
            rows = rows[["subject_id", "prediction_time"]].join(meds.drop(columns=["subject_id", "prediction_time"]))
        return self.scorer._table(rows, self.values)


def _predict(artifact: str | Path | Artifact, data: str | Path | LoadedData,
             labels: str | Path | pd.DataFrame | None, column_map: Mapping[str, str] | None) -> Prediction:
    from ehrseq.scoring.predict import Scorer

    art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
    d = data if isinstance(data, LoadedData) else load_data(data, column_map=column_map)
    scorer = Scorer(art)
    rows, has_truth = _rows_to_score(art, scorer.spec, d.events, labels)
    return Prediction(rows, has_truth, scorer.predict_values(d.events, rows), scorer)


def predict(artifact: str | Path | Artifact, data: str | Path | LoadedData,
            labels: str | Path | pd.DataFrame | None = None, *,
            column_map: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Score ``data`` with an RNN, BEHRT or DeepSurv artifact at the rows of ``labels`` (a MEDS label file or
    directory, or a frame with subject_id and prediction_time; its truth columns, when present, come back
    as y_true). Returns the evaluation columns of :meth:`Prediction.eval_frame`.

    Without ``labels`` the artifact's task is rebuilt on ``data`` (built-in targets and task files); a task
    that came from a label file needs ``labels``. :func:`predict_meds` returns the MEDS prediction schema.
    """
    return _predict(artifact, data, labels, column_map).eval_frame()


def predict_meds(artifact: str | Path | Artifact, data: str | Path | LoadedData,
                 labels: str | Path | pd.DataFrame | None = None, *,
                 column_map: Mapping[str, str] | None = None) -> pd.DataFrame:
    """As :func:`predict`, in the MEDS prediction schema (``predicted_boolean_probability``, ...; binary
    tasks with their truth are exactly meds-evaluation's PredictionSchema)."""
    return _predict(artifact, data, labels, column_map).meds_frame()


def _rows_to_score(art: Artifact, spec: TaskSpec, events: pd.DataFrame,
                   labels: str | Path | pd.DataFrame | None) -> tuple[pd.DataFrame, bool]:
    """The label rows to predict at, and whether they carry the truth."""
    if labels is None:
        tl = rebuild_labels(spec, events, dict(art.config.get("finetune") or {}))
        if tl is None:
            raise TargetError(f"{art.path}: its task '{spec.name}' came from a label file; pass labels to predict "
                              "at (a MEDS label file, or a frame of subject_id and prediction_time)")
        return tl.frame, True
    if isinstance(labels, pd.DataFrame) and not any(c in labels for c in spec.value_columns):
        frame = labels[["subject_id", "prediction_time"]].reset_index(drop=True)
        return frame.assign(prediction_time=frame["prediction_time"].astype("datetime64[us]")), False
    tl, _ = resolve_task(events, labels=labels, label_kind=spec.kind if spec.kind == "survival" else None,
                         max_unmatched_fraction=1.0)
    if tl.spec.kind == "multiclass" and spec.classes:
        tl.frame["integer_value"] = _reindex_classes(tl, spec)
    return tl.frame, True


def _reindex_classes(tl: TaskLabels, spec: TaskSpec) -> np.ndarray:
    index = {c: i for i, c in enumerate(spec.classes or ())}
    names = [tl.spec.classes[i] for i in tl.frame["integer_value"]] if tl.spec.classes else []
    out = np.array([index.get(n, -1) for n in names], np.int64)
    if (out < 0).any():
        raise TargetError(f"the labels hold classes the model was not trained on (it knows {len(index)})")
    return out


# ------------------------------------------------------------------ text
def _finetune_text(d: LoadedData, cfg: FinetuneConfig, out: str | Path | None) -> FinetuneResult:
    from ehrseq.models.text_classifier import TextClassifierConfig, finetune_biopsy

    every = biopsy_frame(d)
    splits = resolve_splits(d, cfg)
    df = every.loc[every["site"].isin(cfg.sites)] if cfg.sites else every
    part = {n: df.loc[df["subject_id"].isin(ids_in(splits, n))].reset_index(drop=True) for n in ("train", "tuning", "held_out")}
    for name, p in part.items():
        if p.empty:
            raise TargetError(f"no labelled biopsy reports in the {name} split; the biopsy target needs reports in "
                              "train, tuning and held_out")
    adapt, also = None, {}
    if cfg.adapt_sites:
        overlap = set(cfg.adapt_sites) & set(cfg.sites)
        if overlap or not cfg.sites:
            raise TargetError(f"adapt_sites {list(cfg.adapt_sites)} must be other sites than the labelled ones: "
                              "set sites (e.g. --sites A --adapt-sites B)")
        new = every.loc[every["site"].isin(cfg.adapt_sites)]
        adapt = new.loc[new["subject_id"].isin(ids_in(splits, "train")), "text"]  # labels are never read
        new_held_out = new.loc[new["subject_id"].isin(ids_in(splits, "held_out"))].reset_index(drop=True)
        if not new_held_out.empty:  # the new site's labelled held-out reports, scored next to held_out
            also["held_out_adapt_sites"] = new_held_out
        if adapt.empty:
            raise TargetError(f"no reports of site(s) {list(cfg.adapt_sites)} in the train split to adapt to")
    preset = cfg.preset if cfg.preset in ("tiny", "small") else "small"
    tcfg = TextClassifierConfig.from_preset(preset, seed=cfg.seed, **dict(cfg.model_overrides))
    metrics = finetune_biopsy(part["train"], part["tuning"], part["held_out"], out, tcfg, adapt_to=adapt,
                              also_evaluate=also)
    extra = {name: metrics.pop(name) for name in also}
    return FinetuneResult(Path(out) if out else None, {"held_out": metrics, **extra}, {})
