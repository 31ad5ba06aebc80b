"""Errors that tell a user what is wrong with their data and what to do about it.

Messages never contain cell values: only file names, column names, counts and subject ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class EhrseqError(Exception):
    """Base class for every error ehrseq raises on purpose."""


class DataValidationError(EhrseqError, ValueError):
    """Input data does not satisfy its schema.

    Attributes keep the structured facts so callers (and the quarantine writer) can use them
    without parsing the message.
    """

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        column: str | None = None,
        n_rows: int | None = None,
        subject_ids: Sequence[object] | None = None,
        hint: str | None = None,
    ) -> None:
        self.problem = problem
        self.file = file
        self.column = column
        self.n_rows = n_rows
        self.subject_ids = list(subject_ids or [])[:5]
        self.hint = hint
        super().__init__(self._format())

    def _format(self) -> str:
        parts = []
        if self.file:
            parts.append(f"{self.file}")
        if self.column:
            parts.append(f"column '{self.column}'")
        where = ": ".join([", ".join(parts)]) if parts else "input"
        msg = f"{where}: {self.problem}"
        if self.n_rows is not None:
            msg += f" ({self.n_rows} row{'s' if self.n_rows != 1 else ''})"
        if self.subject_ids:
            msg += f"; first subject_id(s): {', '.join(str(s) for s in self.subject_ids)}"
        if self.hint:
            msg += f". {self.hint}"
        return msg


class TargetError(EhrseqError, ValueError):
    """The data cannot support the requested target (e.g. no CDAI events)."""


class ArtifactError(EhrseqError, ValueError):
    """An artifact directory is missing, tampered with, or does not match what was asked."""


class LeakageError(EhrseqError, AssertionError):
    """A split or a feature would leak information across patients or past prediction_time."""


def first_ids(ids: Iterable[object], n: int = 5) -> list[object]:
    """The first ``n`` distinct ids of ``ids``, in order (for error messages)."""
    out: list[object] = []
    for i in ids:
        if i not in out:
            out.append(i)
        if len(out) >= n:
            break
    return out


class ConfigError(EhrseqError, ValueError):
    """A run configuration (YAML file or overrides) is malformed: wrong type, unknown key, duplicate key."""


class UndefinedMetricError(DataValidationError):
    """A metric is not defined on these rows (e.g. no comparable pairs for a concordance index).

    Not a data error: the bootstrap counts a resample that raises it as skipped, and a point estimate that raises
    it is reported as undefined with this message as the reason.
    """


class TaskFileError(EhrseqError, ValueError):
    """A task file (ACES YAML, with ehrseq's ``time_to_event`` block) is missing, malformed or inconsistent.

    ``file`` is the task (or predicates) file, ``key`` the dotted key at fault when known (``windows.target.end``,
    ``time_to_event.horizon``), ``problem`` what is wrong and ``hint`` what to write instead.
    """

    def __init__(self, file: str, key: str | None, problem: str, hint: str | None = None) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        self.hint = hint
        where = f"{file}: key '{key}'" if key else file
        super().__init__(f"{where}: {problem}" + (f". {hint}" if hint else ""))
