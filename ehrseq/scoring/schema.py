"""What a prediction file looks like and what an artifact says about it: the Arrow schema of prediction files,
the task an artifact was trained for, its decision threshold, and the artifact recorded in a file's metadata."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from ehrseq.artifacts import Artifact
from ehrseq.tasks.spec import TaskSpec

ARTIFACT_META_KEY = b"ehrseq.artifact"


def _days(h: float) -> str:
    return f"{h:g}".replace(".", "_")



def prediction_schema(head: str, label_names: list[str] | None = None, truth_columns: Sequence[str] = (),
                      horizons: Sequence[float] = ()) -> pa.Schema:
    """The Arrow schema of prediction files for a task (see data_schemas/README.md, "Prediction files")."""
    types = {"boolean_value": pa.bool_(), "integer_value": pa.int64(), "float_value": pa.float64(),
             "categorical_value": pa.string()}
    fields = [pa.field("subject_id", pa.int64(), nullable=False),
              pa.field("prediction_time", pa.timestamp("us"), nullable=False)]
    fields += [pa.field(c, types[c]) for c in truth_columns]
    if head == "binary":
        fields += [pa.field("predicted_boolean_value", pa.bool_()),
                   pa.field("predicted_boolean_probability", pa.float32())]
    elif head == "regression":
        fields += [pa.field("predicted_float_value", pa.float64())]
    elif head == "multiclass":
        fields += [pa.field("predicted_integer_value", pa.int64()), pa.field("predicted_categorical_value", pa.string())]
        fields += [pa.field(f"predicted_{n}_probability", pa.float64()) for n in label_names or []]
    elif head == "survival":
        fields += [pa.field("predicted_risk", pa.float64())]
        fields += [pa.field(f"predicted_survival_{_days(h)}d", pa.float64()) for h in horizons]
    else:
        fields += [pa.field(f"predicted_{n}_probability", pa.float64()) for n in label_names or []]
    return pa.schema(fields)


def artifact_task(art: Artifact) -> TaskSpec:
    """The task an artifact was trained for (artifacts from before tasks were recorded: their built-in target)."""
    if art.config.get("task_spec"):
        return TaskSpec.from_dict(art.config["task_spec"])
    target = art.config.get("target", "")
    kind = {"binary": "binary", "regression": "regression", "multilabel": "multilabel",
            "survival": "survival"}.get(art.config.get("task", ""), "binary")
    return TaskSpec(name=target, kind=kind, source=f"builtin:{target}")


def decision_threshold(art: Artifact) -> float:
    """The stored decision threshold (``thresholds.json`` or config ``decision_threshold``), else 0.5."""
    t: Any = art.extras.get("thresholds", art.config.get("decision_threshold"))
    if isinstance(t, Mapping):
        t = next((t[k] for k in ("boolean", "threshold", "decision_threshold") if k in t), None)
    if isinstance(t, list) and len(t) == 1:
        t = t[0]
    return float(t) if isinstance(t, int | float) and not isinstance(t, bool) else 0.5


def artifact_of(table_or_path: pa.Table | str | Path) -> dict[str, str]:
    """The artifact id and manifest hash recorded in a prediction file's (or table's) metadata."""
    import pyarrow.parquet as pq

    schema = table_or_path.schema if isinstance(table_or_path, pa.Table) else pq.read_schema(table_or_path)
    raw = (schema.metadata or {}).get(ARTIFACT_META_KEY)
    return json.loads(raw) if raw else {}
