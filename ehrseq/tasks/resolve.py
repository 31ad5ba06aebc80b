"""One place that turns "which task?" into labels: a label file, an ACES task file or a built-in target.

Used by fine-tuning (from the run config) and by prediction, evaluation, explanation and scoring (from what an
artifact recorded, so a task file's labels are rebuilt on new data without the user repeating it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ehrseq.errors import TargetError
from ehrseq.tasks.builtin import KIND_OF_TARGET, builtin_labels
from ehrseq.tasks.label_files import TaskLabels, labels_from_frame, match_labels, read_task_labels
from ehrseq.tasks.spec import TaskSpec


def builtin_params(target: str, finetune: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a built-in target, read from a (fine-tuning) config dict."""
    if target == "cdai":
        return {"threshold": finetune.get("cdai_threshold", 10.0)}
    if target == "survival":
        return {k: finetune[f] for k, f in (("event_code", "event_code"), ("landmark_visit", "landmark_visit"))
                if f in finetune}
    return {}


def resolve_task(events: pd.DataFrame, *, labels: str | Path | pd.DataFrame | TaskLabels | None = None,
                 task: str | Path | None = None, predicates: str | Path | None = None,
                 label_kind: str | None = None, target: str = "cdai", params: dict[str, Any] | None = None,
                 max_unmatched_fraction: float = 0.05) -> tuple[TaskLabels, dict[str, int]]:
    """The task's labels for ``events`` and how many label rows matched the data.

    Precedence: ``labels`` (a MEDS label file/directory or TaskLabels), then ``task`` (an ACES task file),
    then the built-in ``target``. Label rows the data cannot support are dropped and counted
    (:func:`ehrseq.tasks.label_files.match_labels`), and refused above ``max_unmatched_fraction``.
    """
    if labels is not None and task is not None:
        raise TargetError("pass either a label file (--labels) or a task file (--task), not both")
    if labels is not None:
        if isinstance(labels, TaskLabels):
            tl, where = labels, labels.spec.name
        elif isinstance(labels, pd.DataFrame):
            tl, where = labels_from_frame(labels, kind=label_kind, name="labels", file="labels frame"), "labels frame"
        else:
            tl, where = read_task_labels(labels, kind=label_kind), str(labels)
        return match_labels(tl, events, max_unmatched_fraction=max_unmatched_fraction, file=where)
    if task is not None:
        from ehrseq.tasks.aces import extract_labels

        tl = extract_labels(task, events, predicates_path=predicates)
        return match_labels(tl, events, max_unmatched_fraction=max_unmatched_fraction, file=str(task))
    tl = builtin_labels(target, events, **(params or {}))
    return tl, {"rows": len(tl), "kept": len(tl), "unknown_subject": 0, "no_history": 0}


def rebuild_labels(spec: TaskSpec, events: pd.DataFrame, finetune: dict[str, Any]) -> TaskLabels | None:
    """Labels of an artifact's task on other data, when the task can be rebuilt: a built-in target or an
    ACES task file (its recorded text). None for a task that came from a label file: pass labels then."""
    source = spec.source or ""
    if source.startswith("builtin:"):
        target = source.split(":", 1)[1]
        if target in KIND_OF_TARGET:
            return builtin_labels(target, events, **builtin_params(target, finetune))
    if source.startswith("task:") and spec.task_file:
        from ehrseq.tasks.aces import labels_from_recorded

        return labels_from_recorded(spec, events)
    return None
