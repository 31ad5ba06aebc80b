"""ACES task files -> labels: hand-computed rows on tiny event frames, every shipped task file on real MIMIC
data, agreement with the built-in RA targets, and the errors a mistyped task file gets."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ehrseq.errors import TaskFileError
from ehrseq.io import read_meds
from ehrseq.labels import cdai_labels, survival_labels
from ehrseq.tasks.aces import extract_labels, labels_from_recorded, load_task_file
from ehrseq.tasks.label_files import read_task_labels, write_task_labels

MIMIC_COLUMN_MAP = {"value": "numeric_value"}  # as tests/conftest.py: the export calls numeric_value "value"
ROOT = Path(__file__).resolve().parents[1]
MIMIC_TASKS = ROOT / "configs" / "tasks" / "mimic"
MIMIC_PREDICATES = MIMIC_TASKS / "predicates.yaml"
RA_TASKS = ROOT / "configs" / "tasks" / "ra"
ADM = "HOSPITAL_ADMISSION//EW EMER.//EMERGENCY ROOM"
HOME, DIED = "HOSPITAL_DISCHARGE//HOME", "HOSPITAL_DISCHARGE//DIED"

VISIT_TTE = """
predicates:
  visit: {code: VISIT}
  flare: {code: FLARE}
trigger: visit
windows:
  input: {start: null, end: trigger, start_inclusive: true, end_inclusive: true, index_timestamp: end}
time_to_event:
  event: flare
  horizon: 30d
"""


def _write(tmp_path: Path, text: str, name: str = "task.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.fixture(scope="module")
def mimic(mimic_slice) -> pd.DataFrame:
    return read_meds(mimic_slice, column_map=MIMIC_COLUMN_MAP).events


@pytest.fixture(scope="module")
def stays(make_events) -> pd.DataFrame:
    """Hand-written MIMIC-coded stays (admissions at 08:00 on 2020-01-01 unless said otherwise)."""
    t0 = "2020-01-01 08:00"
    return make_events([
        (1, None, "GENDER//F", None),
        (1, t0, ADM, None), (1, "2020-01-02 06:00", "LAB//X", 1.0), (1, "2020-01-05 08:00", HOME, None),
        (2, t0, ADM, None), (2, "2020-01-04 10:00", DIED, None), (2, "2020-01-04 10:00", "MEDS_DEATH", None),
        (3, t0, ADM, None), (3, "2020-01-01 20:00", HOME, None),  # left within 24 h: no row
        (4, t0, ADM, None), (4, "2020-01-03 08:00", HOME, None), (4, "2020-02-01", "MEDS_DEATH", None),
        (5, t0, ADM, None), (5, "2020-01-03 08:00", "LAB//X", 2.0),  # no discharge recorded: no row
        (6, t0, ADM, None), (6, "2020-01-11 08:00", HOME, None),  # 10-day stay
    ])


def test_in_hospital_mortality_rows_and_labels_by_hand(stays):
    tl = extract_labels(MIMIC_TASKS / "in_hospital_mortality.yaml", stays, predicates_path=MIMIC_PREDICATES)
    f = tl.frame
    assert list(f.columns) == ["subject_id", "prediction_time", "boolean_value"]
    assert f["subject_id"].tolist() == [1, 2, 4, 6]  # 3 left within 24 h; 5's stay has no recorded end
    assert (f["prediction_time"] == pd.Timestamp("2020-01-02 08:00")).all()  # 24 h after admission
    assert f["boolean_value"].tolist() == [False, True, False, False]  # 4 died after discharge: not inpatient
    assert tl.spec.kind == "binary" and tl.spec.name == "in_hospital_mortality"


def test_long_los_rows_and_labels_by_hand(stays, make_events):
    extra = make_events([
        (7, "2020-01-01 08:00", ADM, None), (7, "2020-01-08 08:00", HOME, None),  # exactly 7 days: not > 7
        (8, "2020-01-01 08:00", ADM, None), (8, "2020-01-03 08:00", HOME, None),  # readmitted within 7 days:
        (8, "2020-01-05 08:00", ADM, None), (8, "2020-01-20 08:00", HOME, None),  # first stay left out
    ])
    ev = pd.concat([stays, extra], ignore_index=True)
    f = extract_labels(MIMIC_TASKS / "long_los.yaml", ev, predicates_path=MIMIC_PREDICATES).frame
    got = dict(zip(zip(f["subject_id"], f["prediction_time"]), f["boolean_value"], strict=True))
    day2 = pd.Timestamp("2020-01-02 08:00")
    assert got == {(1, day2): False, (2, day2): False, (4, day2): False, (6, day2): True, (7, day2): False,
                   (8, pd.Timestamp("2020-01-06 08:00")): True}


def test_time_to_event_durations_by_hand(tmp_path, make_events, caplog):
    ev = make_events([
        (1, "2020-01-01", "VISIT", None), (1, "2020-01-11", "FLARE", None),  # event inside horizon: 10 d
        (2, "2020-01-01", "VISIT", None), (2, "2020-03-01", "LAB", 1.0),  # no flare, record goes on: 30 d
        (3, "2020-01-01", "VISIT", None), (3, "2020-01-16 12:00", "LAB", 1.0),  # record ends first: 15.5 d
        (4, "2020-01-01", "VISIT", None),  # the visit is the last event: duration 0, dropped
        (5, "2020-01-01", "VISIT", None), (5, "2020-03-01", "FLARE", None),  # flare after the horizon: 30 d
        (6, "2020-01-01", "VISIT", None), (6, "2020-01-01", "FLARE", None), (6, "2020-01-03", "FLARE", None),
        (7, "2020-01-01", "VISIT", None), (7, "2020-01-31", "FLARE", None),  # flare exactly at the horizon
    ])
    with caplog.at_level(logging.INFO, logger="ehrseq.tasks.aces"):
        tl = extract_labels(_write(tmp_path, VISIT_TTE), ev)
    f = tl.frame
    assert list(f.columns) == ["subject_id", "prediction_time", "duration", "event"]
    assert f["duration"].dtype == np.float64 and f["event"].dtype == np.int64
    assert f["subject_id"].tolist() == [1, 2, 3, 5, 6, 7]
    np.testing.assert_allclose(f["duration"], [10.0, 30.0, 15.5, 30.0, 2.0, 30.0])
    assert f["event"].tolist() == [1, 0, 0, 0, 1, 1]  # 6: the flare at the visit itself is not after it
    assert tl.spec.kind == "survival" and tl.spec.horizon_days == 30.0 and tl.spec.event == "flare"
    assert "7 rows met the window constraints, 6 rows kept; dropped 1: duration <= 0" in caplog.text


@pytest.mark.parametrize("task,kind", [("in_hospital_mortality", "binary"), ("long_los", "binary"),
                                       ("readmission_30d", "binary"), ("time_to_death", "survival")])
def test_every_shipped_mimic_task_runs_on_the_real_slice(mimic, task, kind):
    tl = extract_labels(MIMIC_TASKS / f"{task}.yaml", mimic, predicates_path=MIMIC_PREDICATES)
    f, spec = tl.frame, tl.spec
    assert len(f) > 10 and spec.kind == kind and list(f.columns[2:]) == list(spec.value_columns)
    assert f["subject_id"].dtype == np.int64 and f["prediction_time"].dtype == "datetime64[us]"
    assert f.equals(f.sort_values(["subject_id", "prediction_time"]).reset_index(drop=True))
    assert not f.duplicated(["subject_id", "prediction_time"]).any()
    first = mimic.dropna(subset=["time"]).groupby("subject_id")["time"].min()
    assert (f["prediction_time"].to_numpy() >= first.reindex(f["subject_id"]).to_numpy()).all()
    if kind == "binary":
        assert 0 < f["boolean_value"].sum() < len(f)  # both classes on 34 real patients
    else:
        assert (f["duration"] > 0).all() and (f["duration"] <= 365.0).all() and f["event"].isin([0, 1]).all()
        assert 0 < f["event"].sum() < len(f) and spec.horizon_days == 365.0 and spec.event == "death"
    assert spec.source == f"task:{MIMIC_TASKS / f'{task}.yaml'}" and spec.definition
    assert spec.task_file["predicates"] == MIMIC_PREDICATES.read_text()


def test_recorded_task_text_rebuilds_the_labels_and_survives_a_label_file(mimic, tmp_path):
    tl = extract_labels(MIMIC_TASKS / "time_to_death.yaml", mimic, predicates_path=MIMIC_PREDICATES)
    again = labels_from_recorded(tl.spec, mimic)
    pd.testing.assert_frame_equal(again.frame, tl.frame)
    assert again.spec == tl.spec
    back = read_task_labels(write_task_labels(tl, tmp_path / "out"))
    pd.testing.assert_frame_equal(back.frame, tl.frame)
    assert back.spec.kind == "survival" and back.spec.task_file == tl.spec.task_file


def test_ra_cdai_task_file_equals_builtin_cdai_labels(cohort):
    """Same (subject_id, prediction_time) rows and the same boolean_value as cdai_labels with its defaults:
    threshold 10 inclusive, a next CDAI within 730 days, every measurement with a value a prediction time."""
    got = extract_labels(RA_TASKS / "cdai_controlled_next.yaml", cohort.events).frame
    want = cdai_labels(cohort.events).sort_values(["subject_id", "prediction_time"]).reset_index(drop=True)
    assert len(got) > 1000
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert 0.2 < got["boolean_value"].mean() < 0.9


def test_ra_flare_task_file_equals_builtin_survival_up_to_the_horizon(cohort):
    """Rows: the second visit of each subject, as survival_labels(landmark_visit=1). Where the built-in
    duration is within the 730-day horizon, duration and event agree; beyond it the task file censors at
    730 days."""
    got = extract_labels(RA_TASKS / "flare_time_to_event.yaml", cohort.events).frame
    keys = ["subject_id", "prediction_time"]
    want = survival_labels(cohort.events).sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[keys], want[keys], check_dtype=False)
    inside = (want["duration"] <= 730.0).to_numpy()
    np.testing.assert_allclose(got["duration"][inside], want["duration"][inside])
    assert (got["event"][inside].to_numpy() == want["event"][inside].to_numpy()).all()
    assert (got["duration"][~inside] == 730.0).all() and (got["event"][~inside] == 0).all()
    assert inside.sum() > 100 and (~inside).sum() > 10


def _error(path: Path, predicates: Path | None = None) -> TaskFileError:
    with pytest.raises(TaskFileError) as info:
        load_task_file(path, predicates)
    assert str(path) in str(info.value)
    return info.value


@pytest.mark.parametrize("block,key,says", [
    ("  event: relapse\n  horizon: 30d\n", "time_to_event.event", "names no predicate"),
    ("  event: flare\n  horizon: 1y\n", "time_to_event.horizon", "365d"),
    ("  event: flare\n  horizon: soon\n", "time_to_event.horizon", "is not a duration"),
    ("  event: flare\n  horizon: 30\n", "time_to_event.horizon", "without a unit"),
    ("  event: flare\n  horizon: 30d\n  horizn: 60d\n", "time_to_event.horizn", "takes only event, horizon"),
])
def test_time_to_event_block_errors_name_file_and_key(tmp_path, block, key, says):
    text = VISIT_TTE.split("time_to_event:")[0] + "time_to_event:\n" + block
    err = _error(_write(tmp_path, text))
    assert err.key == key and says in str(err)


EARLY = "flare: {code: FLARE}\n  early: {expr: 'or(visit, relapse)'}"  # 'relapse' is defined nowhere


@pytest.mark.parametrize("edits,key", [
    ([("trigger: visit", "trigger: visit\ntarget_window: x")], "target_window"),  # unknown top-level key
    ([("end: trigger,", "end: trigger + 24 hourz,")], "windows.input.end"),  # ACES cannot parse the offset
    ([("end: trigger,", "end: later.end,")], "windows.input"),  # a window that does not exist
    ([("end: trigger,", "ends: trigger,")], "windows.input.ends"),  # not a window key
    ([("flare: {code: FLARE}", EARLY), ("end: trigger,", "end: trigger, has: {early: '(None, 0)'},")],
     "predicates.early"),
])
def test_aces_config_errors_name_file_and_key(tmp_path, edits, key):
    text = VISIT_TTE
    for old, new in edits:
        text = text.replace(old, new, 1)
    err = _error(_write(tmp_path, text))
    assert err.key == key and err.hint


def test_missing_files_and_predicates_name_the_file(tmp_path):
    err = _error(tmp_path / "nope.yaml")
    assert "not found" in str(err)
    err = _error(MIMIC_TASKS / "long_los.yaml")  # its predicates live in predicates.yaml next to it
    assert err.key.startswith("predicates.") and str(MIMIC_PREDICATES) in err.hint
    with pytest.raises(TaskFileError, match="predicates file not found"):
        load_task_file(MIMIC_TASKS / "long_los.yaml", tmp_path / "missing.yaml")


def test_a_task_without_label_or_time_to_event_is_refused(tmp_path):
    err = _error(_write(tmp_path, VISIT_TTE.split("time_to_event:")[0]))
    assert err.key == "windows" and "label" in err.hint
