"""How the readers validate (:class:`ValidationPolicy`) and what they repaired or dropped
(:class:`ValidationReport`), with the helpers every reader's error messages share."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Literal

import numpy as np
import pandas as pd

from ehrseq.errors import first_ids

logger = logging.getLogger("ehrseq.io")

_REPAIRS = ("duplicates_dropped", "nonfinite_nulled", "nonfinite_dropped", "empty_subjects_skipped",
            "timezone_converted", "subject_id_from_float", "dayfirst_inferred", "implausible_times_dropped",
            "events_before_birth", "events_after_death")
_DMY = r"^(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})(.*)$"
_TZ_SUFFIX = r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(Z|[+-]\d{2}:?\d{2})$"


@dataclass(frozen=True)
class ValidationPolicy:
    """What to do with data problems that have a safe repair.

    duplicates: identical rows: ``"drop"`` (keep the first, counted), ``"keep"`` or ``"error"``.
    nonfinite: +/-inf in ``numeric_value``: ``"null"`` (set to NaN, counted), ``"drop"`` the row, or ``"error"``.
        NaN itself means "no number" and is always allowed.
    empty_subjects: subjects with only static rows (no timed event): ``"skip"`` them (one aggregated
        count) or ``"keep"`` them.
    dayfirst: how to read ``01/02/2020``-style dates. ``None`` infers it when a column has a part > 12 and
        raises when the column is ambiguous; ``True`` reads day/month/year, ``False`` month/day/year.
    utc: allow a time column that mixes time zones (or mixes zoned and naive values); all values are
        converted to UTC (naive values are taken as UTC).
    min_year, max_year, max_implausible_fraction: timed rows before ``min_year``-01-01 or after the end of
        ``max_year`` (sentinels such as 0001-01-01, 9999-12-31) are dropped and counted; more than this share of
        the rows read is an error (:mod:`ehrseq.io.plausibility`).
    Unsorted rows are always sorted stably and counted.
    """

    duplicates: Literal["drop", "keep", "error"] = "drop"
    nonfinite: Literal["drop", "null", "error"] = "null"
    empty_subjects: Literal["skip", "keep"] = "skip"
    dayfirst: bool | None = None
    utc: bool = False
    min_year: int = 1800
    max_year: int = 2500
    max_implausible_fraction: float = 0.01

    def __post_init__(self) -> None:
        allowed = {"duplicates": ("drop", "keep", "error"), "nonfinite": ("drop", "null", "error"),
                   "empty_subjects": ("skip", "keep")}
        for name, options in allowed.items():
            if getattr(self, name) not in options:
                raise ValueError(f"ValidationPolicy.{name} must be one of {options}")
        if not 1 <= self.min_year <= self.max_year <= 9999:
            raise ValueError("ValidationPolicy needs 1 <= min_year <= max_year <= 9999")
        if not 0 <= self.max_implausible_fraction <= 1:
            raise ValueError("ValidationPolicy.max_implausible_fraction must be in [0, 1]")


@dataclass
class ValidationReport:
    """Counts of what validation read, repaired and dropped. Holds no cell values."""

    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_out: int = 0
    subjects_out: int = 0
    duplicates_dropped: int = 0
    duplicates_kept: int = 0
    rows_moved_by_sort: int = 0
    nonfinite_nulled: int = 0
    nonfinite_dropped: int = 0
    empty_subjects_skipped: int = 0
    rows_of_empty_subjects_dropped: int = 0
    timezone_converted: int = 0
    subject_id_from_float: int = 0
    times_parsed_from_text: int = 0
    dayfirst_inferred: int = 0
    implausible_times_dropped: int = 0  # outside [min_year, max_year]: dropped (ehrseq.io.plausibility)
    events_before_birth: int = 0  # counted, kept
    events_after_death: int = 0  # more than a day after MEDS_DEATH: counted, kept

    def merge(self, other: ValidationReport) -> ValidationReport:
        """Add ``other``'s counts into this report (``rows_out``/``subjects_out`` are set by tidy)."""
        for f in fields(self):
            if f.name == "files":
                self.files.extend(x for x in other.files if x not in self.files)
            elif f.name not in ("rows_out", "subjects_out"):
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def counts(self) -> dict[str, int]:
        """Every count, by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "files"}

    def log(self, log: logging.Logger = logger) -> None:
        """Log the counts (never values): one info line, plus a warning line for each repair made."""
        c = self.counts()
        log.info("read %d rows from %d file(s) -> %d rows, %d subjects", c["rows_read"], len(self.files),
                 c["rows_out"], c["subjects_out"])
        for name, value in c.items():
            if value and name in _REPAIRS:
                log.warning("validation: %s = %d", name, value)
            elif value and name not in ("rows_read", "rows_out", "subjects_out"):
                log.info("validation: %s = %d", name, value)


def _where(file: str | None) -> str:
    return file or "<frame>"


def _ids(subject_ids: pd.Series | None, mask: np.ndarray | pd.Series) -> list[object]:
    if subject_ids is None:
        return []
    m = np.asarray(mask, dtype=bool)
    vals = subject_ids.to_numpy()[m]
    return [int(v) if isinstance(v, (int, np.integer)) else v for v in first_ids(v for v in vals if pd.notna(v))]


def _rows(mask: np.ndarray | pd.Series, n: int = 5) -> str:
    pos = np.flatnonzero(np.asarray(mask, dtype=bool))[:n]
    return ", ".join(str(p + 1) for p in pos)
