"""Event times that cannot be real: an explicit, counted policy.

Sentinel dates (``0001-01-01`` for "unknown", ``9999-12-31`` for "no end") are valid timestamps, so no parser
refuses them, yet one such row puts a patient's history millennia long and breaks every time-gap feature.
ehrseq's policy (``ValidationPolicy.min_year`` / ``max_year`` / ``max_implausible_fraction``):

- a timed row (static rows have no time) before ``min_year``-01-01 (default 1800) or after the end of
  ``max_year`` (default 2500; MIMIC-IV shifts its dates into 2100-2210) is **dropped and counted**
  (``ValidationReport.implausible_times_dropped``, a warning in the log and in ``ehrseq validate``);
- when the dropped rows exceed ``max_implausible_fraction`` (default 1%) of the rows read, reading fails with a
  :class:`~ehrseq.errors.DataValidationError` naming the file and the column: the dates are systematically
  wrong (e.g. a unit error), not the odd sentinel;
- ``ehrseq score`` quarantines such rows one by one (reason ``IMPLAUSIBLE_TIME``), inside its quarantine budget.

Events before the subject's ``MEDS_BIRTH`` or more than a day after its ``MEDS_DEATH`` (death is often recorded
as a date; the day's events are kept as they are) are **counted, not dropped** (``events_before_birth``,
``events_after_death``): post-mortem results and date-shifted births exist in real exports.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from ehrseq.errors import DataValidationError

logger = logging.getLogger("ehrseq.io")

BIRTH, DEATH = "MEDS_BIRTH", "MEDS_DEATH"
_DAY_US = 86_400 * 1_000_000
_NAT, _NEVER = np.iinfo(np.int64).min, np.iinfo(np.int64).max


def time_bounds(policy: Any) -> tuple[np.datetime64, np.datetime64 | None]:
    """``[lo, hi)`` of plausible event times for a ValidationPolicy (``hi`` None: no upper bound)."""
    lo = np.datetime64(f"{int(policy.min_year):04d}-01-01", "us")
    hi = None if int(policy.max_year) >= 9999 else np.datetime64(f"{int(policy.max_year) + 1:04d}-01-01", "us")
    return lo, hi


def implausible(times: np.ndarray, policy: Any) -> np.ndarray:
    """True for the non-null values of ``times`` (datetime64) outside the policy's bounds."""
    t = np.asarray(times).astype("datetime64[us]")
    present = ~np.isnat(t)
    lo, hi = time_bounds(policy)
    bad = present & (t < lo)
    if hi is not None:
        bad |= present & (t >= hi)
    return bad


def drop_implausible(df: pd.DataFrame, policy: Any, report: Any) -> pd.DataFrame:
    """Drop the rows of a canonical frame whose time is implausible; count them in ``report``."""
    bad = implausible(df["time"].to_numpy(), policy)
    if not bad.any():
        return df
    report.implausible_times_dropped += int(bad.sum())
    return df.loc[~bad].reset_index(drop=True)


def _is_code(code: pd.Series, value: str) -> np.ndarray:
    return code.eq(value).to_numpy(dtype=bool, na_value=False)


def count_birth_death(df: pd.DataFrame, report: Any) -> None:
    """Count (never drop) events before the subject's birth and more than a day after its death.

    Per subject, the earliest timed MEDS_BIRTH and the latest timed MEDS_DEATH; one pass over the rows when
    they are grouped by subject (as the validated frame is), a sort by subject otherwise.
    """
    code = df["code"]
    t = df["time"].to_numpy().astype("datetime64[us]", copy=False).view(np.int64)
    sid = df["subject_id"].to_numpy()
    birth, death = _is_code(code, BIRTH), _is_code(code, DEATH)
    if not (birth.any() or death.any()):
        return
    if len(sid) > 1 and not bool(np.all(sid[1:] >= sid[:-1])):
        order = np.argsort(sid, kind="stable")
        sid, t, birth, death = sid[order], t[order], birth[order], death[order]
    timed = t != _NAT
    clinical = timed & ~birth & ~death
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
    sizes = np.diff(np.r_[starts, len(sid)])
    for marker, attr, later in ((birth, "events_before_birth", False), (death, "events_after_death", True)):
        rows = marker & timed
        if not rows.any():
            continue
        if later:  # the subject's last death time, or int64 min when it has none
            ref = np.repeat(np.maximum.reduceat(np.where(rows, t, _NAT), starts), sizes)
            off = clinical & (ref != _NAT) & (t > ref + _DAY_US)
        else:  # the first birth time, or int64 max when it has none
            ref = np.repeat(np.minimum.reduceat(np.where(rows, t, _NEVER), starts), sizes)
            off = clinical & (ref != _NEVER) & (t < ref)
        setattr(report, attr, getattr(report, attr) + int(off.sum()))


def check_implausible_fraction(report: Any, policy: Any, file: str | None) -> None:
    """DataValidationError when more than ``policy.max_implausible_fraction`` of the rows read were dropped for
    an implausible time (a systematic problem, not the odd sentinel date)."""
    n = int(report.implausible_times_dropped)
    if n and n > float(policy.max_implausible_fraction) * max(int(report.rows_read), 1):
        raise DataValidationError(
            f"has times before {int(policy.min_year)} or after {int(policy.max_year)} in more than "
            f"max_implausible_fraction={policy.max_implausible_fraction} of the {report.rows_read} rows read",
            file=file or "<frame>",
            column="time", n_rows=n,
            hint="Fix the dates at the source (sentinels such as 0001-01-01 or 9999-12-31, or a unit error), or "
                 "from Python widen ValidationPolicy(min_year=..., max_year=..., max_implausible_fraction=...)",
        )


__all__ = ["check_implausible_fraction", "count_birth_death", "drop_implausible", "implausible", "time_bounds"]
