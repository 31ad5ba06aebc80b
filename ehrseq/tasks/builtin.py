"""The built-in targets of the synthetic RA cohort, as tasks (:class:`TaskLabels`).

Task files (``configs/tasks/``) express most of these in ACES's language; the built-ins stay for what ACES
cannot express (``next_visit_dx`` is multi-label) and as the reference the task files are tested against.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ehrseq import codes
from ehrseq.errors import TargetError
from ehrseq.labels import TARGETS, make_labels
from ehrseq.tasks.label_files import TaskLabels
from ehrseq.tasks.spec import TaskSpec

KIND_OF_TARGET = {"cdai": "binary", "cdai_value": "regression", "next_visit_dx": "multilabel", "survival": "survival"}


def definition(target: str, params: dict[str, Any]) -> str:
    """One sentence that defines a built-in target with its parameters."""
    if target == "cdai":
        return (f"Controlled rheumatoid arthritis (CDAI <= {params.get('threshold', codes.CDAI_CONTROLLED_MAX):g}) "
                "at the next CDAI measurement, predicted at each measurement from data up to and including it.")
    if target == "cdai_value":
        return "The next CDAI value, predicted at each CDAI measurement."
    if target == "next_visit_dx":
        return "Diagnosis codes recorded at the next visit, predicted at each visit."
    if target == "survival":
        return (f"Days from visit number {params.get('landmark_visit', 1) + 1} to the first "
                f"'{params.get('event_code', codes.FLARE)}' event, censored at the last recorded event.")
    raise TargetError(f"unknown target '{target}'; built-in targets: {', '.join(TARGETS)} (and 'biopsy')")


def builtin_labels(target: str, events: pd.DataFrame, **params: Any) -> TaskLabels:
    """Labels of a built-in target (``cdai``, ``cdai_value``, ``next_visit_dx``, ``survival``) as a task."""
    if target not in KIND_OF_TARGET:
        raise TargetError(f"unknown target '{target}'; built-in targets: {', '.join(TARGETS)} (and 'biopsy'), "
                          "or pass a label file (--labels) or a task file (--task)")
    frame = make_labels(target, events, **params)
    frame = frame.assign(prediction_time=frame["prediction_time"].astype("datetime64[us]"))
    spec = TaskSpec(name=target, kind=KIND_OF_TARGET[target], definition=definition(target, params),
                    source=f"builtin:{target}", event=params.get("event_code") if target == "survival" else None)
    return TaskLabels(frame.reset_index(drop=True), spec)
