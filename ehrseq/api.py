"""The Python API: a few calls that do what the CLI does.

    from ehrseq import api
    api.synthesize(2000, out="runs/cohort")                       # MEDS + extract + truth
    res = api.finetune("runs/cohort/meds", target="cdai", out="runs/cdai_rnn")
    print(res.metrics["held_out"]["auroc"])
    preds = api.predict("runs/cdai_rnn", "runs/cohort/meds")       # MEDS prediction columns, as `score`

A task of one's own: ``api.finetune(data, labels="labels/")`` (a MEDS label file or directory, or a label
frame) or ``api.finetune(data, task="configs/tasks/mimic/in_hospital_mortality.yaml")`` (an ACES task file).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ehrseq.artifacts import Artifact, check_artifact_out
from ehrseq.config import FinetuneConfig, load_config
from ehrseq.data.loading import LoadedData, biopsy_frame, load_data, with_code_map
from ehrseq.errors import TargetError
from ehrseq.io.code_map import resolve_code_map
from ehrseq.io.guards import check_training_cohort
from ehrseq.recipes import RECIPES, recipe_for
from ehrseq.recipes.common import FinetuneResult, prepare
from ehrseq.registry import (
    SEQUENCE_MODELS,
    build_model,
    make_dataset,
    model_config_dict,
    model_from_artifact,
)
from ehrseq.scoring.predict import artifact_task
from ehrseq.scoring.prediction import Prediction, predict_rows, rows_to_score
from ehrseq.split import PatientSplitter, ids_in, subjects_table
from ehrseq.tasks.label_files import TaskLabels
from ehrseq.utils import seed_everything

if TYPE_CHECKING:
    from ehrseq.synth.shift import SiteShift

log = logging.getLogger(__name__)
_rows_to_score = rows_to_score  # the name explain used before the predictor moved to ehrseq.scoring.predict
__all__ = ["LoadedData", "load_data", "biopsy_frame", "synthesize", "finetune", "predict", "predict_meds",
           "FinetuneResult", "Prediction", "artifact_task",
           "build_model", "make_dataset", "model_config_dict", "model_from_artifact", "SEQUENCE_MODELS"]


def synthesize(n_patients: int = 2000, *, out: str | Path, n_sites: int = 2, seed: int = 0, extract: bool = True,
               biopsy_rate: float = 0.05, shift: SiteShift | str | None = None) -> Path:
    """Write a synthetic cohort: ``out/meds`` (MEDS root with a random patient split), ``out/extract`` (CSV
    tables), ``out/meds/truth`` (the probabilities the generator used). ``shift``: how site B differs
    (:mod:`ehrseq.synth.shift`: None/"mild", "realistic" or a SiteShift); a shift that recodes B also writes
    ``truth/code_map_b_to_a.csv`` (B's codes -> A's, for ``--code-map``). The CSV extract holds ICD-10 only: with
    ICD-9 diagnoses at B it is not written (logged)."""
    from ehrseq.io import write_extract, write_meds, write_subject_splits
    from ehrseq.io.code_map import write_code_map
    from ehrseq.synth.cohort import generate_cohort
    from ehrseq.synth.shift import code_map_to_a, resolve_shift

    out = Path(out)
    sh = resolve_shift(shift)
    c = generate_cohort(n_patients, n_sites=n_sites, seed=seed, biopsy_rate=biopsy_rate, shift=sh)
    root = write_meds(c.events, out / "meds", dataset_name="ehrseq-synthetic-ra", overwrite=True)
    write_subject_splits(PatientSplitter(seed=seed).split(subjects_table(c.events)), root)
    truth = root / "truth"
    truth.mkdir(exist_ok=True)
    c.truth_cdai.to_parquet(truth / "cdai_next.parquet", index=False)
    c.truth_flare.to_parquet(truth / "flare_hazard.parquet", index=False)
    c.biopsy_labels.to_parquet(truth / "biopsy_labels.parquet", index=False)
    c.patients.to_parquet(truth / "patients.parquet", index=False)
    if code_map_to_a(sh):
        write_code_map(code_map_to_a(sh), truth / "code_map_b_to_a.csv")
    if extract and sh.icd9:
        log.warning("no CSV extract written: its diagnoses table holds ICD-10 codes and site B writes ICD-9")
    elif extract:
        write_extract(c.events, out / "extract", report_labels=c.biopsy_labels)
    return out


# ------------------------------------------------------------------------- targets
# ------------------------------------------------------------------------ finetune
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
    code_map: str | Path | Mapping[str, str] | None = None,
    overwrite: bool = False,
    **overrides: Any,
) -> FinetuneResult:
    """Fit a model for a task on the train split, early-stop on tuning, evaluate tuning and held_out.

    The task is ``labels`` (a MEDS label file or directory, a label frame, or TaskLabels), else ``task`` (an
    ACES task file), else the built-in ``target`` override (default ``cdai``). ``init``: an artifact to start
    from (transfer learning or BEHRT pretraining): its featurizer is reused frozen and its weights are the
    starting point. Other overrides are FinetuneConfig fields (model=..., train={"epochs": 3}, ...).
    ``column_map`` renames the columns of a MEDS export as it is read; ``code_map`` (a code map file or mapping,
    :mod:`ehrseq.io.code_map`) renames its codes, e.g. a second site's local codes to ``init``'s. An existing
    ``out`` is replaced only with ``overwrite=True``; it and its writability are checked before anything is
    read. A train split below ``min_train_subjects`` / ``min_class_count`` is refused before the featurizer is
    fitted.
    """
    if out is not None:
        check_artifact_out(out, overwrite=overwrite)
    label_obj = _task_overrides(overrides, labels, task)
    cfg = load_config(config, **overrides)  # config errors come before any data is read
    _check_task_choice(cfg, label_obj is not None)
    label_obj = _read_task_early(cfg, label_obj)  # a bad label or task file fails before the data is read
    seed_everything(cfg.seed)
    if label_obj is None and code_map is None:  # a MEDS root streamed in batches (ehrseq.recipes.streamed)
        from ehrseq.recipes.streamed import finetune_streamed

        streamed = finetune_streamed(data, cfg, out, init=init, column_map=column_map)
        if streamed is not None:
            return streamed
    d = _data(data, column_map, resolve_code_map(code_map))
    has_task = cfg.labels is not None or cfg.task is not None or label_obj is not None
    if not has_task and (cfg.target == "biopsy" or cfg.model == "text"):
        return RECIPES["text"](d, cfg, out)
    run = prepare(d, cfg, label_obj, init)
    check_training_cohort(run.task.frame, run.task.spec.kind, ids_in(run.splits, "train"), task=run.task.spec.name,
                          min_train_subjects=cfg.min_train_subjects, min_class_count=cfg.min_class_count)
    return RECIPES[recipe_for(run.task.spec.kind, cfg.model)](run, cfg, out)


def predict(artifact: str | Path | Artifact, data: str | Path | LoadedData,
            labels: str | Path | pd.DataFrame | None = None, *,
            column_map: Mapping[str, str] | None = None,
            code_map: str | Path | Mapping[str, str] | None = None) -> pd.DataFrame:
    """Score ``data`` with an artifact at the rows of ``labels`` (a MEDS label file or directory, or a frame with
    subject_id and prediction_time; its truth columns, when present, are carried through).

    Returns the same columns as the files of ``ehrseq score`` and evaluate's ``predictions.parquet``: the MEDS
    prediction schema (``predicted_boolean_probability``, ``predicted_boolean_value``, ``boolean_value``, ...;
    see :mod:`ehrseq.scoring.predict`); a binary task with its truth is exactly meds-evaluation's
    ``PredictionSchema``. Without ``labels`` the artifact's task is rebuilt on ``data`` (built-in targets and
    task files); a task that came from a label file needs ``labels``.
    """
    return predict_rows(artifact, _data(data, column_map, code_map), labels).meds_frame()


def retune_thresholds(artifact: str | Path, reports: str | Path | pd.DataFrame, out: str | Path, *,
                      metric: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """A biopsy text artifact with its decision thresholds re-chosen on labelled reports of a new site.

    ``reports``: a CSV / Parquet file or a frame with ``text`` and one 0/1 column per label. Every weight is
    kept; ``out`` is a new artifact (the source is never changed). Returns the metrics written with it: the
    thresholds before and after, and F1 at both on those same reports (optimistic: chosen on them).
    """
    from ehrseq.recipes.retune import retune_artifact

    return retune_artifact(artifact, reports, out, metric=metric, overwrite=overwrite)


def predict_meds(artifact: str | Path | Artifact, data: str | Path | LoadedData,
                 labels: str | Path | pd.DataFrame | None = None, *,
                 column_map: Mapping[str, str] | None = None,
                 code_map: str | Path | Mapping[str, str] | None = None) -> pd.DataFrame:
    """Deprecated alias of :func:`predict`, which now returns the MEDS prediction schema itself."""
    warnings.warn("api.predict_meds is api.predict now (the same MEDS prediction columns); it will be removed",
                  FutureWarning, stacklevel=2)
    return predict(artifact, data, labels, column_map=column_map, code_map=code_map)


def _data(data: str | Path | LoadedData, column_map: Mapping[str, str] | None,
          code_map: str | Path | Mapping[str, str] | None) -> LoadedData:
    """``data`` read (or taken as loaded), with ``code_map`` applied to its event codes."""
    if isinstance(data, LoadedData):
        return with_code_map(data, code_map)
    return load_data(data, column_map=column_map, code_map=code_map)


