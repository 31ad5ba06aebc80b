"""Errors and the job summary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ehrseq.errors import EhrseqError


class ScoringError(EhrseqError, RuntimeError):
    """The scoring job cannot start or must stop (output directory of another job, ray missing, ...)."""


class QuarantineLimitError(ScoringError):
    """More rows failed validation than ``max_quarantine_fraction`` allows; finished shards are kept."""


@dataclass
class ScoreSummary:
    """Counts of one scoring job (also written to ``out/_SUCCESS.json``). Times are in seconds."""

    out: str
    artifact_id: str
    artifact_sha256: str
    engine: str
    rows_read: int = 0
    rows_accepted: int = 0  # passed validation (rows_read = rows_accepted + rows_quarantined)
    rows_quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    subjects_read: int = 0
    subjects_scored: int = 0  # subjects with at least one prediction row
    predictions_written: int = 0
    shards: int = 0
    shards_skipped: int = 0  # already present from an earlier, interrupted run
    label_rows_without_events: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # io, labels, featurize, forward, write
    warnings: list[str] = field(default_factory=list)  # e.g. no prediction rows at all (also logged)

    def to_dict(self) -> dict[str, Any]:
        """The summary as a plain dict."""
        return asdict(self)
