"""Predictions for a dataset through the one predictor (:class:`ehrseq.scoring.predict.Scorer`): the rows to
predict at (a label file, a frame, or the artifact's task rebuilt on the data) and the outputs in two forms,
evaluation columns (y_true / y_prob ...) and the MEDS prediction schema."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ehrseq.artifacts import Artifact, load_artifact
from ehrseq.errors import TargetError
from ehrseq.scoring.predict import TEXT_MODEL, Scorer
from ehrseq.tasks.arrays import target_arrays
from ehrseq.tasks.label_files import VALUE_COLUMNS, TaskLabels
from ehrseq.tasks.spec import TaskSpec


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


def predict_rows(artifact: str | Path | Artifact, data: Any, labels: str | Path | pd.DataFrame | None = None, *,
                 column_map: Mapping[str, str] | None = None) -> Prediction:
    """The one inference path for a dataset: ``data`` (a path or LoadedData) scored by ``artifact`` at the rows
    of ``labels`` (a MEDS label file/directory or a frame of subject_id and prediction_time), or at the
    artifact's task rebuilt on the data (built-in targets, task files, report times for the text model)."""
    from ehrseq.data.loading import LoadedData, load_data

    art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
    d = data if isinstance(data, LoadedData) else load_data(data, column_map=column_map)
    scorer = Scorer(art)
    if labels is None and scorer.model_type == TEXT_MODEL:
        rows, has_truth = scorer.default_rows(d.events), False
    else:
        rows, has_truth = rows_to_score(art, scorer.spec, d.events, labels)
    return Prediction(rows, has_truth, scorer.predict_values(d.events, rows), scorer)


def rows_to_score(art: Artifact, spec: TaskSpec, events: pd.DataFrame,
                   labels: str | Path | pd.DataFrame | None) -> tuple[pd.DataFrame, bool]:
    """The label rows to predict at (canonical TaskLabels frame), and whether they carry the truth."""
    from ehrseq.tasks.resolve import rebuild_labels, resolve_task

    if labels is None:
        tl = rebuild_labels(spec, events, dict(art.config.get("finetune") or {}))
        if tl is None:
            raise TargetError(f"{art.path}: its task '{spec.name}' came from a label file; pass labels to predict "
                              "at (a MEDS label file, or a frame of subject_id and prediction_time)")
        return tl.frame, True
    if isinstance(labels, pd.DataFrame):
        frame = labels.reset_index(drop=True)
        frame = frame.assign(prediction_time=frame["prediction_time"].astype("datetime64[us]"))
        if all(c in frame for c in spec.value_columns):  # already canonical (e.g. a built-in target's rows)
            return frame, True
        if not any(c in frame for c in VALUE_COLUMNS):  # where to predict, without the truth
            return frame[["subject_id", "prediction_time"]], False
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
