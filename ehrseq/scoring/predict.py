"""The per-shard scoring function: label rows for a shard, frozen featurizer, forward pass, output table."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import torch

from ehrseq.artifacts import Artifact, load_artifact, sha256_file
from ehrseq.errors import ArtifactError, TargetError
from ehrseq.scoring.constants import _PRED_BATCH


# ============================================================================ the per-shard scoring function
@dataclass(frozen=True)
class LabelSource:
    """Where a shard's prediction rows come from: a MEDS label file, one fixed time, or the target default."""

    mode: Literal["labels", "time", "default"]
    prediction_time: str | None = None
    labels_files: tuple[str, ...] = ()

    def rows(self, events: pd.DataFrame, target: str, finetune_cfg: Mapping[str, Any]) -> pd.DataFrame:
        """Label rows (subject_id, prediction_time) for the subjects of ``events``."""
        subjects = pd.unique(events["subject_id"])
        if self.mode == "time":
            t = _parse_prediction_time(self.prediction_time)
            return pd.DataFrame({"subject_id": subjects.astype(np.int64),
                                 "prediction_time": pd.Series([t] * len(subjects), dtype="datetime64[us]")})
        if self.mode == "labels":
            from ehrseq.io.meds import validate_labels

            table = pads.dataset(list(self.labels_files), format="parquet").to_table(
                columns=["subject_id", "prediction_time"],
                filter=pc.field("subject_id").isin(pa.array(subjects.astype(np.int64))))
            if table.num_rows == 0:
                return _empty_labels()
            return validate_labels(table.to_pandas(), file=self.labels_files[0])[["subject_id", "prediction_time"]]
        from ehrseq.labels import prediction_times

        try:
            return prediction_times(target, events)
        except TargetError:  # e.g. no subject of this shard has a CDAI measurement
            return _empty_labels()


def _empty_labels() -> pd.DataFrame:
    return pd.DataFrame({"subject_id": pd.Series([], dtype="int64"),
                         "prediction_time": pd.Series([], dtype="datetime64[us]")})


def _parse_prediction_time(value: str | None) -> pd.Timestamp:
    try:
        t = pd.Timestamp(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"prediction_time '{value}' is not an ISO 8601 timestamp (YYYY-MM-DD[THH:MM:SS])") from e
    if pd.isna(t):
        raise ValueError("prediction_time is empty")
    if t.tzinfo is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    return t


class Scorer:
    """A loaded artifact ready to score: frozen featurizer, model in eval mode, output schema.

    ``score_events(events, source)`` is the one scoring function both engines call on a shard.
    """

    def __init__(self, art: Artifact) -> None:
        from ehrseq.api import SEQUENCE_MODELS, model_from_artifact
        from ehrseq.featurize.featurizer import FORMAT, Featurizer

        kind = art.config.get("model_type")
        if kind not in SEQUENCE_MODELS:
            raise ArtifactError(f"{art.path}: `ehrseq score` scores sequence models {SEQUENCE_MODELS}; this "
                                f"artifact holds a '{kind}' model")
        if art.featurizer is None:
            raise ArtifactError(f"{art.path}: no featurizer.json; a sequence-model artifact needs its featurizer")
        if art.featurizer.get("format") != FORMAT:
            raise ArtifactError(
                f"{art.path}: featurizer.json has format '{art.featurizer.get('format')}' but this ehrseq reads "
                f"'{FORMAT}'; score with the ehrseq version that wrote the artifact ({art.manifest.get('ehrseq_version')}) "
                "or re-run finetune")
        try:
            self.featurizer = Featurizer.from_dict(art.featurizer)
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"{art.path}: featurizer.json cannot be read by this ehrseq ({e})") from e
        self.head = art.config.get("task")
        if self.head not in ("binary", "regression", "multilabel"):
            raise ArtifactError(f"{art.path}: task '{self.head}' cannot be scored by `ehrseq score`")
        self.art = art
        self.target = art.config["target"]
        self.finetune_cfg = dict(art.config.get("finetune") or {})
        self.label_names = list(art.config.get("label_names") or [])
        self.threshold = decision_threshold(art)
        self.model = model_from_artifact(art).eval()
        self.artifact_id = art.artifact_id
        self.artifact_sha256 = sha256_file(art.path / "manifest.json")
        self.schema = prediction_schema(self.head, self.label_names)

    @classmethod
    def load(cls, path: str | Path) -> Scorer:
        return cls(load_artifact(path))  # verifies every file hash; raises ArtifactError when tampered

    @torch.no_grad()
    def score_events(self, events: pd.DataFrame, source: LabelSource) -> tuple[pa.Table, dict[str, float]]:
        """Predict every label row of ``source`` for the subjects of ``events`` (canonical, whole subjects).

        Rows come out ordered by the subjects' order in ``events``, then prediction_time.
        Returns the table (``self.schema``) and seconds spent per stage (labels, featurize, forward).
        """
        from ehrseq.api import make_dataset
        from ehrseq.data.dataset import collate
        from ehrseq.models.heads import to_prediction

        tm = {"labels": 0.0, "featurize": 0.0, "forward": 0.0}
        t0 = time.perf_counter()
        if len(events) == 0:
            return self.schema.empty_table(), tm
        labels = source.rows(events, self.target, self.finetune_cfg)
        order = {int(s): i for i, s in enumerate(pd.unique(events["subject_id"]))}
        labels = labels.assign(prediction_time=labels["prediction_time"].astype("datetime64[us]"))
        labels = labels.loc[labels["subject_id"].isin(list(order))]
        rank = labels["subject_id"].map(order).to_numpy(np.int64)
        t_us = labels["prediction_time"].to_numpy().view("int64")
        labels = labels.iloc[np.lexsort((t_us, rank))].reset_index(drop=True)
        tm["labels"] = time.perf_counter() - t0
        if len(labels) == 0:
            return self.schema.empty_table(), tm
        t0 = time.perf_counter()
        fz = self.featurizer
        ds = make_dataset(fz.transform(events, labels), None, fz, self.art.config["model_type"])
        tm["featurize"] += time.perf_counter() - t0
        self.model.eval()
        out = []
        for a in range(0, len(ds), _PRED_BATCH):
            t0 = time.perf_counter()
            batch = collate([ds[i] for i in range(a, min(a + _PRED_BATCH, len(ds)))])
            t1 = time.perf_counter()
            out.append(self.model(batch).logits.float())
            tm["featurize"] += t1 - t0
            tm["forward"] += time.perf_counter() - t1
        pred = to_prediction(self.head, torch.cat(out)).numpy().astype(np.float64)
        return self._table(labels, pred), tm

    def _table(self, labels: pd.DataFrame, pred: np.ndarray) -> pa.Table:
        n = len(labels)
        cols: dict[str, Any] = {
            "subject_id": labels["subject_id"].to_numpy(np.int64),
            "prediction_time": labels["prediction_time"].to_numpy("datetime64[us]"),
        }
        if self.head == "binary":
            cols["predicted_boolean_probability"] = pred[:, 0]
            cols["predicted_boolean_value"] = pred[:, 0] >= self.threshold
        elif self.head == "regression":
            cols["predicted_float_value"] = pred[:, 0]
        else:
            for j, name in enumerate(self.label_names):
                cols[f"predicted_{name}_probability"] = pred[:, j]
        cols["artifact_id"] = np.full(n, self.artifact_id, dtype=object)
        cols["artifact_sha256"] = np.full(n, self.artifact_sha256, dtype=object)
        return pa.table([pa.array(cols[f.name], type=f.type) for f in self.schema], schema=self.schema)


def prediction_schema(head: str, label_names: list[str] | None = None) -> pa.Schema:
    """The Arrow schema of the prediction shards for a task (see data_schemas/predictions.schema.json)."""
    fields = [pa.field("subject_id", pa.int64(), nullable=False),
              pa.field("prediction_time", pa.timestamp("us"), nullable=False)]
    if head == "binary":
        fields += [pa.field("predicted_boolean_probability", pa.float64()),
                   pa.field("predicted_boolean_value", pa.bool_())]
    elif head == "regression":
        fields += [pa.field("predicted_float_value", pa.float64())]
    else:
        fields += [pa.field(f"predicted_{n}_probability", pa.float64()) for n in label_names or []]
    fields += [pa.field("artifact_id", pa.string(), nullable=False),
               pa.field("artifact_sha256", pa.string(), nullable=False)]
    return pa.schema(fields)


def decision_threshold(art: Artifact) -> float:
    """The stored decision threshold (``thresholds.json`` or config ``decision_threshold``), else 0.5."""
    t: Any = art.extras.get("thresholds", art.config.get("decision_threshold"))
    if isinstance(t, Mapping):
        t = next((t[k] for k in ("boolean", "threshold", "decision_threshold") if k in t), None)
    if isinstance(t, list) and len(t) == 1:
        t = t[0]
    return float(t) if isinstance(t, int | float) and not isinstance(t, bool) else 0.5
