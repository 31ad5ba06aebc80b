"""Task labels built from events. Every label row carries ``prediction_time``: the inclusive end of the data a
model may use for that row (MEDS convention). Features are computed from events at or before it only.

Built-in targets (see :data:`TARGETS`):

- ``cdai``: controlled (CDAI <= threshold) at the next CDAI measurement, predicted at each measurement.
- ``cdai_value``: the next CDAI value (regression).
- ``next_visit_dx``: the set of diagnosis codes recorded at the next visit (multi-label).
- ``survival``: days from a landmark visit to the first ``event_code`` after it, censored at the last event.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from ehrseq import codes
from ehrseq.errors import TargetError


def cdai_labels(
    events: pd.DataFrame,
    *,
    threshold: float = codes.CDAI_CONTROLLED_MAX,
    cdai_code: str = codes.CDAI,
    min_history: int = 1,
    max_gap_days: float | None = 730.0,
) -> pd.DataFrame:
    """One row per CDAI measurement that has a later one: ``boolean_value`` = next CDAI <= threshold.

    min_history:  CDAI measurements a subject must have up to and including prediction_time.
    max_gap_days: drop pairs further apart than this (a "next visit" two years later is another question).
    """
    pairs = _next_value_pairs(events, cdai_code, min_history=min_history, max_gap_days=max_gap_days)
    return pd.DataFrame(
        {
            "subject_id": pairs["subject_id"],
            "prediction_time": pairs["prediction_time"],
            "boolean_value": pairs["next_value"] <= threshold,
        }
    )


def cdai_value_labels(
    events: pd.DataFrame, *, cdai_code: str = codes.CDAI, min_history: int = 1, max_gap_days: float | None = 730.0
) -> pd.DataFrame:
    """Regression labels: each visit's next CDAI value (within ``max_gap_days``)."""
    pairs = _next_value_pairs(events, cdai_code, min_history=min_history, max_gap_days=max_gap_days)
    return pd.DataFrame(
        {
            "subject_id": pairs["subject_id"],
            "prediction_time": pairs["prediction_time"],
            "float_value": pairs["next_value"].astype("float32"),
        }
    )


def _next_value_pairs(
    events: pd.DataFrame, code: str, *, min_history: int, max_gap_days: float | None
) -> pd.DataFrame:
    m = events.loc[(events["code"] == code) & events["time"].notna() & events["numeric_value"].notna()]
    if m.empty:
        raise TargetError(
            f"no '{code}' events with a numeric value: this target needs disease-activity scores "
            "(the disease_activity table of an EHR extract, or pass the code your data uses)"
        )
    m = m[["subject_id", "time", "numeric_value"]].drop_duplicates(["subject_id", "time"], keep="last")
    m = m.sort_values(["subject_id", "time"], kind="stable")
    g = m.groupby("subject_id", sort=False)
    out = pd.DataFrame(
        {
            "subject_id": m["subject_id"].to_numpy(),
            "prediction_time": m["time"].to_numpy(),
            "next_time": g["time"].shift(-1).to_numpy(),
            "next_value": g["numeric_value"].shift(-1).to_numpy(),
            "history": g.cumcount().to_numpy() + 1,
        }
    )
    keep = out["next_time"].notna() & (out["history"] >= min_history)
    if max_gap_days is not None:
        keep &= (out["next_time"] - out["prediction_time"]) <= pd.Timedelta(days=max_gap_days)
    out = out.loc[keep].reset_index(drop=True)
    if out.empty:
        raise TargetError(f"no subject has two '{code}' measurements within the allowed gap; nothing to predict")
    return out


def next_visit_dx_labels(
    events: pd.DataFrame, *, dx_prefix: str = codes.DX_PREFIX, visit_code: str = codes.VISIT
) -> pd.DataFrame:
    """At each visit with a later visit: ``codes`` = sorted list of ``dx_prefix`` codes at the next visit."""
    visits = events.loc[(events["code"] == visit_code) & events["time"].notna(), ["subject_id", "time"]]
    visits = visits.drop_duplicates().sort_values(["subject_id", "time"], kind="stable")
    if visits.empty:
        raise TargetError(f"no '{visit_code}' events: next-visit diagnoses need visits")
    visits["next_time"] = visits.groupby("subject_id")["time"].shift(-1)
    visits = visits.dropna(subset=["next_time"])
    dx = events.loc[events["code"].str.startswith(dx_prefix) & events["time"].notna(), ["subject_id", "time", "code"]]
    if dx.empty:
        raise TargetError(f"no diagnosis codes starting with '{dx_prefix}'")
    dx = dx.assign(code=dx["code"].astype(object))  # plain str cells, so each group aggregates to a list
    nxt = dx.groupby(["subject_id", "time"])["code"].agg(lambda c: sorted(set(c))).rename("codes").reset_index()
    out = visits.merge(nxt, left_on=["subject_id", "next_time"], right_on=["subject_id", "time"], how="left",
                       suffixes=("", "_dx"))
    out["codes"] = out["codes"].apply(lambda c: c if isinstance(c, list) else [])
    return out.rename(columns={"time": "prediction_time"})[["subject_id", "prediction_time", "codes"]].reset_index(
        drop=True
    )


def survival_labels(
    events: pd.DataFrame,
    *,
    event_code: str = codes.FLARE,
    landmark_visit: int = 1,
    visit_code: str = codes.VISIT,
) -> pd.DataFrame:
    """One row per subject with at least ``landmark_visit + 1`` visits.

    prediction_time = time of visit number ``landmark_visit`` (0-based); duration = days to the first
    ``event_code`` strictly after it (event = 1), else to the subject's last event (event = 0).
    """
    visits = events.loc[(events["code"] == visit_code) & events["time"].notna(), ["subject_id", "time"]]
    visits = visits.drop_duplicates().sort_values(["subject_id", "time"], kind="stable")
    visits["k"] = visits.groupby("subject_id").cumcount()
    lm = visits.loc[visits["k"] == landmark_visit, ["subject_id", "time"]].rename(columns={"time": "prediction_time"})
    if lm.empty:
        raise TargetError(f"no subject has {landmark_visit + 1} '{visit_code}' events to set the landmark")
    if not (events["code"] == event_code).any():
        raise TargetError(f"no '{event_code}' events: pass --event with a code your data contains")
    ev = events.loc[(events["code"] == event_code) & events["time"].notna(), ["subject_id", "time"]].merge(lm, on="subject_id")
    first = ev.loc[ev["time"] > ev["prediction_time"]].groupby("subject_id")["time"].min()
    last = events.loc[events["time"].notna()].groupby("subject_id")["time"].max()
    out = lm.copy()
    out["event_time"] = out["subject_id"].map(first)
    out["event"] = out["event_time"].notna().astype(np.int64)
    end = out["event_time"].fillna(out["subject_id"].map(last))
    out["duration"] = (end - out["prediction_time"]).dt.total_seconds() / 86400.0
    out = out.loc[out["duration"] > 0].drop(columns="event_time").reset_index(drop=True)
    return out[["subject_id", "prediction_time", "duration", "event"]]


def prediction_times(target: str, events: pd.DataFrame) -> pd.DataFrame:
    """Where a deployed model predicts when no label file is given: every CDAI measurement (cdai targets, the
    most recent one included, which has no label yet) or every visit (next_visit_dx). subject_id, prediction_time."""
    code = {"cdai": codes.CDAI, "cdai_value": codes.CDAI, "next_visit_dx": codes.VISIT}.get(target)
    if code is None:
        raise TargetError(f"target '{target}' has no default prediction times; pass a label file or a time")
    rows = events.loc[(events["code"] == code) & events["time"].notna(), ["subject_id", "time"]]
    if rows.empty:
        raise TargetError(f"no '{code}' events to predict at")
    rows = rows.drop_duplicates().sort_values(["subject_id", "time"], kind="stable")
    return rows.rename(columns={"time": "prediction_time"}).reset_index(drop=True)


TARGETS: dict[str, Callable[..., pd.DataFrame]] = {
    "cdai": cdai_labels,
    "cdai_value": cdai_value_labels,
    "next_visit_dx": next_visit_dx_labels,
    "survival": survival_labels,
}
TASK_OF_TARGET = {"cdai": "binary", "cdai_value": "regression", "next_visit_dx": "multilabel", "survival": "survival"}


def make_labels(target: str, events: pd.DataFrame, **kwargs) -> pd.DataFrame:
    """The label rows of a built-in ``target`` on ``events``."""
    if target not in TARGETS:
        raise TargetError(f"unknown target '{target}'; built-in targets: {', '.join(TARGETS)} (and 'biopsy')")
    return TARGETS[target](events, **kwargs)
