"""Shared fixtures: one small synthetic cohort per test session, its random patient split and CDAI labels.

Session-scoped fixtures are shared by many tests: treat them as read-only (copy before changing a frame).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from ehrseq.labels import cdai_labels
from ehrseq.split import PatientSplitter, subjects_table
from ehrseq.synth.cohort import SynthCohort, generate_cohort

# Test models are tiny: extra threads only add synchronisation, and on a busy 2-core machine they can make a
# small GRU step 30x slower while waiting for a descheduled worker.
torch.set_num_threads(1)


def _make_events(rows: list[tuple]) -> pd.DataFrame:
    """A MEDS events frame from ``(subject_id, time | None, code, numeric_value | None)`` tuples, with the dtypes
    the synthetic generator and the readers produce (time: datetime64[us], code: string, value: float32)."""
    df = pd.DataFrame(rows, columns=["subject_id", "time", "code", "numeric_value"])
    return pd.DataFrame(
        {
            "subject_id": df["subject_id"].astype("int64"),
            "time": pd.to_datetime(df["time"], format="ISO8601").astype("datetime64[us]"),
            "code": df["code"].astype("string"),
            "numeric_value": df["numeric_value"].astype("float32"),
            "text_value": pd.array([None] * len(df), dtype="string"),
        }
    )


@pytest.fixture(scope="session")
def make_events():
    """Build a hand-written events frame: ``make_events([(1, "2020-01-01", "SCORE//CDAI", 25.0), ...])``."""
    return _make_events


@pytest.fixture(scope="session")
def cohort() -> SynthCohort:
    return generate_cohort(300, seed=3, biopsy_rate=0.0)


@pytest.fixture(scope="session")
def subjects(cohort: SynthCohort) -> pd.DataFrame:
    return subjects_table(cohort.events)


@pytest.fixture(scope="session")
def splits(subjects: pd.DataFrame) -> pd.DataFrame:
    return PatientSplitter(strategy="random", seed=0).split(subjects)


@pytest.fixture(scope="session")
def labels(cohort: SynthCohort) -> pd.DataFrame:
    return cdai_labels(cohort.events)


MIMIC_SLICE = Path(__file__).parent / "fixtures" / "mimic_demo_slice" / "events.parquet"
MIMIC_COLUMN_MAP = {"value": "numeric_value"}


@pytest.fixture(scope="session")
def mimic_slice() -> Path:
    """34 real patients of the MIMIC-IV demo in MEDS, as exported (``value`` column, duplicates, a ``table``
    column, static GENDER rows): read it with ``column_map=MIMIC_COLUMN_MAP``. See the fixture's README."""
    return MIMIC_SLICE
