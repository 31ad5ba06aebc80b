"""The one predictor: artifact -> frozen featurizer -> model -> MEDS prediction columns.

:class:`Scorer` serves every model family (RNN, BEHRT, DeepSurv, the biopsy-report classifier); ``ehrseq score`` calls
:meth:`Scorer.score_events` per shard, and :func:`ehrseq.api.predict` calls :meth:`Scorer.predict_frame`.

Output columns (``data_schemas/README.md``, "Prediction files"), after ``subject_id`` and ``prediction_time``:

- binary: ``predicted_boolean_probability`` (float32), ``predicted_boolean_value`` (at the stored threshold);
  with the truth, ``boolean_value``: exactly the meds-evaluation ``PredictionSchema``;
- regression: ``predicted_float_value`` (truth: ``float_value``);
- multiclass: ``predicted_integer_value`` (the most probable class index), ``predicted_categorical_value`` (its
  name) and ``predicted_<class>_probability`` per class (truth: ``integer_value``);
- multilabel: ``predicted_<label>_probability`` per label;
- survival (DeepSurv, LogisticHazard, PMF, DeepHit): ``predicted_risk`` (higher: earlier events; DeepSurv's is the
  log relative hazard, the discrete-time heads' the mean cumulative incidence up to their last cut point) and
  ``predicted_survival_<h>d`` per horizon (truth: ``float_value`` = days to event or censoring, ``boolean_value``
  = event).

The artifact's id and manifest hash are in each file's Parquet metadata (key ``ehrseq.artifact``), not in
columns, so the files stay readable by MEDS tools that refuse extra columns.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
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
from ehrseq.names import SURVIVAL_MODELS
from ehrseq.scoring.constants import _PRED_BATCH
from ehrseq.scoring.schema import (  # noqa: F401  (re-exported: their home before schema.py)
    ARTIFACT_META_KEY,
    _days,
    artifact_of,
    artifact_task,
    decision_threshold,
    prediction_schema,
)
from ehrseq.tasks.spec import TaskSpec

TEXT_MODEL = "text_classifier"
TRUTH_COLUMNS = {"binary": ("boolean_value",), "regression": ("float_value",), "multiclass": ("integer_value",),
                 "survival": ("float_value", "boolean_value"), "multilabel": ()}


# ============================================================================ where predictions are made
@dataclass(frozen=True)
class LabelSource:
    """Where a shard's prediction rows come from: a MEDS label file, one fixed time, or the task's own rows.

    ``truth_columns``: MEDS label value columns carried from the label files into the output.
    """

    mode: Literal["labels", "time", "default"]
    prediction_time: str | None = None
    labels_files: tuple[str, ...] = ()
    truth_columns: tuple[str, ...] = ()

    def rows(self, events: pd.DataFrame, scorer: Scorer) -> pd.DataFrame:
        """Label rows (subject_id, prediction_time, and the truth columns) for the subjects of ``events``."""
        subjects = pd.unique(events["subject_id"])
        if self.mode == "time":
            t = _parse_prediction_time(self.prediction_time)
            return pd.DataFrame({"subject_id": subjects.astype(np.int64),
                                 "prediction_time": pd.Series([t] * len(subjects), dtype="datetime64[us]")})
        if self.mode == "labels":
            from ehrseq.io.meds import validate_labels

            table = pads.dataset(list(self.labels_files), format="parquet").to_table(
                columns=["subject_id", "prediction_time", *self.truth_columns],
                filter=pc.field("subject_id").isin(pa.array(subjects.astype(np.int64))))
            if table.num_rows == 0:
                return _empty_labels(self.truth_columns)
            df = validate_labels(table.to_pandas(), file=self.labels_files[0])
            return df[["subject_id", "prediction_time", *self.truth_columns]]
        return scorer.default_rows(events)


def _empty_labels(extra: Sequence[str] = ()) -> pd.DataFrame:
    out = pd.DataFrame({"subject_id": pd.Series([], dtype="int64"),
                        "prediction_time": pd.Series([], dtype="datetime64[us]")})
    for c in extra:
        out[c] = pd.Series([], dtype="float64" if c == "float_value" else "object")
    return out


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


@dataclass(frozen=True)
class PreparedShard:
    """One shard made ready for the model by :meth:`Scorer.prepare`: its events, label rows (output order),
    features (None for the text model or when there are no rows), seconds so far, truth columns."""

    events: pd.DataFrame
    labels: pd.DataFrame
    features: Any
    timings: Counter[str]
    truth_columns: tuple[str, ...]


# ============================================================================================ the predictor
class Scorer:
    """A loaded artifact ready to predict: frozen featurizer, model in eval mode, output schema.

    ``horizons``: days at which time-to-event artifacts report survival (default: the task's horizon, else the
    quartiles of the training event times).
    """

    def __init__(self, art: Artifact, *, horizons: Sequence[float] | None = None) -> None:
        from ehrseq.featurize.featurizer import FORMAT, Featurizer
        from ehrseq.registry import SEQUENCE_MODELS, model_from_artifact, survival_model_class

        kind = art.config.get("model_type")
        self.art, self.model_type = art, kind
        self.timings: Counter[str] = Counter()  # seconds per step of predict_values (featurize, views, forward)
        self.artifact_id = art.artifact_id
        self.artifact_sha256 = sha256_file(art.path / "manifest.json")
        if kind == TEXT_MODEL:
            self._init_text(art, horizons)
            return
        if kind not in (*SEQUENCE_MODELS, *SURVIVAL_MODELS):
            raise ArtifactError(f"{art.path}: `ehrseq score` scores {', '.join((*SEQUENCE_MODELS, *SURVIVAL_MODELS))} "
                                f"and {TEXT_MODEL} artifacts; this one holds a '{kind}' model")
        if art.featurizer is None:
            raise ArtifactError(f"{art.path}: no featurizer.json; a '{kind}' artifact needs its featurizer")
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
        if self.head not in ("binary", "regression", "multilabel", "multiclass", "survival"):
            raise ArtifactError(f"{art.path}: task '{self.head}' cannot be scored by `ehrseq score`")
        self.art = art
        self.model_type = kind
        self.spec = artifact_task(art)
        self.finetune_cfg = dict(art.config.get("finetune") or {})
        self.label_names = list(art.config.get("label_names") or [])
        self.threshold = decision_threshold(art)
        if kind in SURVIVAL_MODELS:
            self.model: Any = survival_model_class(kind).load(art.path)
            event_times = self.model.baseline_times_ if kind == "deepsurv" else self.model.event_times_
            self.horizons = _horizons(horizons, self.spec, event_times)
        else:
            if horizons:
                raise TargetError("--horizons applies to time-to-event artifacts only")
            self.model = model_from_artifact(art).eval()
            self.horizons = ()

    def _init_text(self, art: Artifact, horizons: Sequence[float] | None) -> None:
        """The biopsy-report classifier: one probability per label for the latest report at or before each
        prediction_time (by default, at every report)."""
        from ehrseq.models.text_models import load_text_model

        if horizons:
            raise TargetError("--horizons applies to time-to-event artifacts only")
        self.model = load_text_model(art)  # DistilBERT or TF-IDF (config.json text_model)
        self.head, self.horizons, self.threshold, self.finetune_cfg = "multilabel", (), 0.5, {}
        self.label_names = list(self.model.config.labels)
        self.spec = TaskSpec(name="biopsy", kind="multilabel", source="builtin:biopsy",
                             definition="Temporal artery biopsy report findings and the overall GCA conclusion.")

    @classmethod
    def load(cls, path: str | Path, *, horizons: Sequence[float] | None = None) -> Scorer:
        """A scorer for the artifact at ``path`` (every file hash is verified)."""
        return cls(load_artifact(path), horizons=horizons)  # verifies every file hash; raises when tampered

    # ------------------------------------------------------------------------------------------ rows
    def can_default(self) -> bool:
        """Whether the artifact knows where to predict without a label file or a time."""
        src = self.spec.source or ""
        return src.startswith("builtin:") or (src.startswith("task:") and bool(self.spec.task_file))

    def _reports(self, events: pd.DataFrame) -> pd.DataFrame:
        from ehrseq.codes import BIOPSY_REPORT

        rep = events.loc[(events["code"] == BIOPSY_REPORT) & events["time"].notna() & events["text_value"].notna(),
                         ["subject_id", "time", "text_value"]]
        return rep.assign(time=rep["time"].astype("datetime64[us]")).sort_values("time", kind="stable")

    def default_rows(self, events: pd.DataFrame) -> pd.DataFrame:
        """The task's own prediction times on ``events``: built-in RA targets predict at every CDAI
        measurement (the latest included) or visit; task files are rebuilt on the data (ACES triggers)."""
        from ehrseq.labels import prediction_times
        from ehrseq.tasks.resolve import rebuild_labels

        src = self.spec.source or ""
        if self.model_type == TEXT_MODEL:
            rep = self._reports(events)[["subject_id", "time"]].drop_duplicates()
            return rep.rename(columns={"time": "prediction_time"}).reset_index(drop=True)
        if not self.can_default():
            raise TargetError(f"{self.art.path}: its task '{self.spec.name}' came from a label file; pass --labels "
                              "(or --prediction-time) to say where to predict")
        try:
            if src.startswith("builtin:") and self.spec.name in ("cdai", "cdai_value", "next_visit_dx"):
                return prediction_times(self.spec.name, events)
            tl = rebuild_labels(self.spec, events, self.finetune_cfg)
        except TargetError:  # e.g. no subject of this shard has a CDAI measurement or a trigger
            return _empty_labels()
        return tl.frame[["subject_id", "prediction_time"]] if tl is not None else _empty_labels()

    # ------------------------------------------------------------------------------------- predicting
    @torch.inference_mode()
    def predict_values(self, events: pd.DataFrame, rows: pd.DataFrame) -> dict[str, np.ndarray]:
        """Model outputs for ``rows`` (subject_id, prediction_time) from ``events`` (whole subjects):
        {"pred": (N, K)} for sequence heads, {"risk": (N,), "survival": (N, H)} for time-to-event models.
        Seconds per step accumulate in ``self.timings`` (featurize, views, forward)."""
        return self.values(self.features(events, rows), events, rows)

    def features(self, events: pd.DataFrame, rows: pd.DataFrame, timings: Counter[str] | None = None) -> Any:
        """The frozen featurizer's FeatureSet for ``rows`` (None for the text model, which reads the reports
        in :meth:`values`); its seconds go to ``timings["featurize"]`` (default ``self.timings``). It touches
        neither the model nor ``self.timings`` when ``timings`` is given, so a scoring job may featurize the
        next shard on another thread while :meth:`values` runs the model on this one."""
        if self.model_type == TEXT_MODEL:
            return None
        t0 = time.perf_counter()
        fs = self.featurizer.transform(events, rows.reset_index(drop=True))
        (self.timings if timings is None else timings)["featurize"] += time.perf_counter() - t0
        return fs

    @torch.inference_mode()
    def values(self, fs: Any, events: pd.DataFrame, rows: pd.DataFrame) -> dict[str, np.ndarray]:
        """:meth:`predict_values` from the FeatureSet :meth:`features` made for the same ``rows``."""
        from ehrseq.models.heads import to_prediction

        if self.model_type == TEXT_MODEL:
            return {"pred": self._text_values(events, rows.reset_index(drop=True))}
        if self.model_type in SURVIVAL_MODELS:
            from ehrseq.featurize.tabular import tabular_view

            t0 = time.perf_counter()
            x = tabular_view(fs)
            if self.art.config.get("embeddings_from"):
                x = np.concatenate([x, sequence_embeddings(self.art.config["embeddings_from"], events, fs.labels)], 1)
            t1 = time.perf_counter()
            self.timings["views"] += t1 - t0
            risk = self.model.predict_risk(x)
            surv = self.model.predict_survival(x, times=list(self.horizons)).to_numpy().T if len(x) else \
                np.zeros((0, len(self.horizons)))
            self.timings["forward"] += time.perf_counter() - t1
            return {"risk": risk, "survival": surv}
        logits, _ = self._forward(fs)
        return {"pred": to_prediction(self.head, logits).numpy().astype(np.float64)}

    def _forward(self, fs: Any, embeddings: bool = False) -> tuple[torch.Tensor, np.ndarray | None]:
        """Logits (N, K) of a sequence model over a FeatureSet (and the pooled embeddings), in the rows' order.
        Batches hold rows of similar length (BEHRT: tokens, RNN: steps), so they pad little; both models mask or
        pack the padding, so a row's output does not depend on its batch."""
        from ehrseq.registry import make_dataset

        t0 = time.perf_counter()
        ds = make_dataset(fs, None, self.featurizer, self.model_type)
        lengths = np.minimum(np.asarray(fs.step_cut) - np.asarray(fs.step_start), ds.max_steps) \
            if self.model_type == "rnn" else ds.lengths
        order = np.argsort(lengths, kind="stable")
        self.model.eval()
        out, emb = [], []
        t_model = 0.0
        for a in range(0, len(ds), _PRED_BATCH):
            batch = ds.batch(order[a:a + _PRED_BATCH])  # padded in array operations, no per-row items
            t1 = time.perf_counter()
            o = self.model(batch)
            t_model += time.perf_counter() - t1
            out.append(o.logits.float())
            if embeddings:
                emb.append(o.embeddings.float().numpy())
        inverse = torch.from_numpy(np.argsort(order, kind="stable"))
        logits = torch.cat(out)[inverse] if out else torch.zeros((0, max(1, len(self.label_names))))
        emb_out = np.concatenate(emb)[inverse.numpy()] if emb else None
        self.timings["forward"] += t_model
        self.timings["views"] += time.perf_counter() - t0 - t_model
        return logits, emb_out if embeddings else None

    @torch.inference_mode()
    def embeddings(self, events: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
        """(N, H) patient representations a sequence model's head reads, for ``rows`` (DeepSurv joins them)."""
        if self.model_type not in ("rnn", "behrt"):
            raise ArtifactError(f"{self.art.path}: only RNN and BEHRT artifacts export sequence embeddings")
        _, emb = self._forward(self.featurizer.transform(events, rows.reset_index(drop=True)), embeddings=True)
        return emb if emb is not None else np.zeros((0, 0), np.float32)

    def _text_values(self, events: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
        """(N, K) label probabilities of each row's latest report at or before its prediction_time (NaN when
        the subject has no report by then)."""
        left = rows[["subject_id", "prediction_time"]].assign(
            _row=np.arange(len(rows)), prediction_time=rows["prediction_time"].astype("datetime64[us]"))
        left = left.sort_values("prediction_time", kind="stable")
        m = pd.merge_asof(left, self._reports(events), left_on="prediction_time", right_on="time", by="subject_id",
                          direction="backward")
        out = np.full((len(rows), len(self.label_names)), np.nan)
        has = m["text_value"].notna().to_numpy()
        if has.any():
            texts, t0 = m.loc[has, "text_value"].astype(str).tolist(), time.perf_counter()
            out[m["_row"].to_numpy()[has]] = self.model.predict_proba(texts)  # tokenisation included
            self.timings["forward"] += time.perf_counter() - t0
        return out

    def predict_frame(self, events: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
        """Predictions for ``rows`` as a frame in the output schema (truth columns of ``rows`` carried)."""
        return self._table(rows.reset_index(drop=True), self.predict_values(events, rows)).to_pandas()

    def score_events(self, events: pd.DataFrame, source: LabelSource) -> tuple[pa.Table, dict[str, float]]:
        """Predict every label row of ``source`` for the subjects of ``events`` (canonical, whole subjects).

        Rows come out ordered by the subjects' order in ``events``, then prediction_time.
        Returns the table (``self.schema(source.truth_columns)``) and seconds spent per stage.
        """
        return self.finish(self.prepare(events, source))

    def prepare(self, events: pd.DataFrame, source: LabelSource) -> PreparedShard:
        """The model-free half of :meth:`score_events`: the shard's label rows, in output order, and their
        features. Safe to run on another thread than :meth:`finish` (it reads only the frozen featurizer)."""
        tm: Counter[str] = Counter({"labels": 0.0, "featurize": 0.0, "views": 0.0, "forward": 0.0, "write": 0.0})
        t0 = time.perf_counter()
        if len(events) == 0:
            return PreparedShard(events, _empty_labels(source.truth_columns), None, tm, source.truth_columns)
        labels = source.rows(events, self)
        order = pd.Index(pd.unique(events["subject_id"].to_numpy(np.int64)))  # subject -> its rank in events
        labels = labels.assign(prediction_time=labels["prediction_time"].astype("datetime64[us]"))
        rank = order.get_indexer(labels["subject_id"].to_numpy(np.int64))
        labels, rank = labels.loc[rank >= 0], rank[rank >= 0]
        t_us = labels["prediction_time"].to_numpy().view("int64")
        labels = labels.iloc[np.lexsort((t_us, rank))].reset_index(drop=True)
        tm["labels"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        fs = self.features(events, labels, Counter()) if len(labels) else None
        tm["featurize"] = time.perf_counter() - t0
        return PreparedShard(events, labels, fs, tm, source.truth_columns)

    def finish(self, p: PreparedShard) -> tuple[pa.Table, dict[str, float]]:
        """The model half of :meth:`score_events`: outputs for :meth:`prepare`'s rows, as the output table."""
        tm = dict(p.timings)
        schema = self.schema(p.truth_columns)
        if len(p.labels) == 0:
            return schema.empty_table(), tm
        t0 = time.perf_counter()
        before = Counter(self.timings)
        values = self.values(p.features, p.events, p.labels)
        step, t0 = time.perf_counter() - t0, time.perf_counter()
        spent = {k: v - before.get(k, 0.0) for k, v in self.timings.items()}
        for k, v in spent.items():
            tm[k] = tm.get(k, 0.0) + v
        tm["featurize"] += step - sum(spent.values())  # whatever else the step did (text: the reports merge)
        table = self._table(p.labels, values, p.truth_columns)
        tm["write"] = time.perf_counter() - t0  # building the output table; shards.py adds the file write
        return table, tm

    # ----------------------------------------------------------------------------------------- output
    def schema(self, truth_columns: Sequence[str] | None = None) -> pa.Schema:
        """The Arrow schema of this artifact's prediction files (truth columns first, as MEDS labels)."""
        truth = list(truth_columns if truth_columns is not None else ())
        return prediction_schema(self.head, self.label_names, truth, self.horizons).with_metadata(
            {ARTIFACT_META_KEY: json.dumps({"artifact_id": self.artifact_id,
                                            "artifact_sha256": self.artifact_sha256}).encode()})

    def _table(self, labels: pd.DataFrame, values: dict[str, np.ndarray],
               truth_columns: Sequence[str] | None = None) -> pa.Table:
        truth = [c for c in (truth_columns if truth_columns is not None else TRUTH_COLUMNS[self.head])
                 if c in labels]
        schema = self.schema(truth)
        cols: dict[str, Any] = {
            "subject_id": labels["subject_id"].to_numpy(np.int64),
            "prediction_time": labels["prediction_time"].to_numpy("datetime64[us]"),
        }
        for c in truth:
            cols[c] = labels[c].to_numpy(dtype=object) if c in ("boolean_value", "integer_value") else labels[c]
        if self.head == "survival":
            cols["predicted_risk"] = values["risk"]
            for j, h in enumerate(self.horizons):
                cols[f"predicted_survival_{_days(h)}d"] = values["survival"][:, j]
        else:
            pred = values["pred"]
            if self.head == "binary":
                cols["predicted_boolean_probability"] = pred[:, 0]
                cols["predicted_boolean_value"] = pred[:, 0] >= self.threshold
            elif self.head == "regression":
                cols["predicted_float_value"] = pred[:, 0]
            elif self.head == "multiclass":
                best = pred.argmax(1) if len(pred) else np.zeros(0, np.int64)
                cols["predicted_integer_value"] = best
                cols["predicted_categorical_value"] = np.array([self.label_names[i] for i in best], dtype=object)
                for j, name in enumerate(self.label_names):
                    cols[f"predicted_{name}_probability"] = pred[:, j]
            else:
                for j, name in enumerate(self.label_names):
                    cols[f"predicted_{name}_probability"] = pred[:, j]
        return pa.table([pa.array(cols[f.name], type=f.type, from_pandas=True) for f in schema], schema=schema)


def sequence_embeddings(artifact: str | Path, events: pd.DataFrame, labels: pd.DataFrame) -> np.ndarray:
    """(N, H) embeddings of a trained RNN/BEHRT artifact for the label rows (its featurizer, frozen)."""
    return Scorer.load(artifact).embeddings(events, labels[["subject_id", "prediction_time"]])


def _horizons(asked: Sequence[float] | None, spec: TaskSpec, event_times: np.ndarray) -> tuple[float, ...]:
    if asked:
        bad = [h for h in asked if not (np.isfinite(h) and h > 0)]
        if bad:
            raise TargetError("--horizons are days after prediction_time and must be positive numbers")
        return tuple(sorted({float(h) for h in asked}))
    if spec.horizon_days:
        return (float(spec.horizon_days),)
    if len(event_times) == 0:
        return ()
    return tuple(sorted({float(round(q)) or 1.0 for q in np.quantile(event_times, [0.25, 0.5, 0.75])}))
