"""What a task is, as data: its name, its kind and a sentence that defines it.

A task's labels are a frame of rows ``(subject_id, prediction_time, <value>)``; the kind says which value:

============  =======================================  ===========================================
kind          in memory (canonical label frame)        on disk (MEDS label Parquet)
============  =======================================  ===========================================
binary        ``boolean_value`` (bool)                 ``boolean_value``
regression    ``float_value`` (float64)                ``float_value``
multiclass    ``integer_value`` (int64 class index)    ``integer_value`` or ``categorical_value``
multilabel    ``codes`` (list of label names)          not stored (built-in ``next_visit_dx`` only)
survival      ``duration`` (days, float64), ``event``  ``float_value`` = duration in days,
              (int64 0/1)                              ``boolean_value`` = event, and the file's
                                                       ``ehrseq.task`` metadata says ``survival``
============  =======================================  ===========================================

See ``data_schemas/README.md`` ("Label files") for the time-to-event convention in full.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("binary", "regression", "multiclass", "multilabel", "survival")
METADATA_KEY = b"ehrseq.task"  # Parquet key-value metadata holding TaskSpec.to_dict() as JSON


@dataclass(frozen=True)
class TaskSpec:
    """A task: ``name`` (short, for file names and reports), ``kind`` (one of :data:`KINDS`), ``definition``
    (one plain sentence for the report), ``source`` (where it came from: ``builtin:cdai``,
    ``labels:PATH`` or ``task:PATH``), ``classes`` (multiclass: class names in index order),
    ``horizon_days`` and ``event`` (survival: follow-up cap and the event predicate), ``task_file`` (the
    text of an ACES task file, with its predicates, so the labels can be rebuilt on other data)."""

    name: str
    kind: str
    definition: str = ""
    source: str = ""
    classes: tuple[str, ...] | None = None
    horizon_days: float | None = None
    event: str | None = None
    task_file: dict[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def value_columns(self) -> tuple[str, ...]:
        """The columns of the canonical label frame that hold the truth for this kind."""
        return {"binary": ("boolean_value",), "regression": ("float_value",), "multiclass": ("integer_value",),
                "multilabel": ("codes",), "survival": ("duration", "event")}[self.kind]

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-serialisable dict."""
        d = asdict(self)
        d["classes"] = list(self.classes) if self.classes is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        """Rebuild a spec from :meth:`to_dict`'s output (keys of later versions are ignored)."""
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if known.get("classes") is not None:
            known["classes"] = tuple(known["classes"])
        return cls(**known)

    def to_json_bytes(self) -> bytes:
        """The spec as canonical JSON bytes (sorted keys)."""
        return json.dumps(self.to_dict(), sort_keys=True).encode()
