"""Task labels from hand-built event frames: what each row says, where prediction_time falls, and refusals."""

from __future__ import annotations

import pandas as pd
import pytest

from ehrseq import codes
from ehrseq.errors import TargetError
from ehrseq.labels import (
    cdai_labels,
    cdai_value_labels,
    make_labels,
    next_visit_dx_labels,
    survival_labels,
)

T1, T2, T3 = "2020-01-10 09:00:00", "2020-04-10 10:30:00", "2020-07-10 11:00:00"
V, C = codes.VISIT, codes.CDAI


@pytest.fixture
def three_cdai(make_events):
    """One subject, CDAI 25 -> 8 -> 12 at three visits (plus a lab that is not a CDAI)."""
    return make_events(
        [
            (1, None, "SEX//F", None),
            (1, T1, V, None), (1, T1, C, 25.0), (1, T1, codes.ESR, 40.0),
            (1, T2, V, None), (1, T2, C, 8.0),
            (1, T3, V, None), (1, T3, C, 12.0),
        ]
    )


def test_cdai_label_is_next_cdai_at_or_below_threshold(three_cdai):
    out = cdai_labels(three_cdai)
    assert list(out.columns) == ["subject_id", "prediction_time", "boolean_value"]
    assert out["subject_id"].tolist() == [1, 1]
    assert out["prediction_time"].tolist() == [pd.Timestamp(T1), pd.Timestamp(T2)]
    assert out["boolean_value"].tolist() == [True, False]  # next CDAI 8 <= 10; next CDAI 12 > 10


def test_cdai_threshold_is_configurable_and_inclusive(three_cdai):
    assert cdai_labels(three_cdai, threshold=12.0)["boolean_value"].tolist() == [True, True]
    assert cdai_labels(three_cdai, threshold=7.9)["boolean_value"].tolist() == [False, False]


def test_cdai_max_gap_days_drops_pairs_too_far_apart(make_events):
    ev = make_events([(1, "2020-01-01 00:00:00", C, 20.0), (1, "2020-03-01 00:00:00", C, 5.0),
                      (1, "2023-03-01 00:00:00", C, 30.0)])
    assert len(cdai_labels(ev)) == 1  # default 730 days: the three-year gap is dropped
    assert len(cdai_labels(ev, max_gap_days=None)) == 2
    with pytest.raises(TargetError, match="within the allowed gap"):
        cdai_labels(ev, max_gap_days=30)


def test_cdai_labels_keep_subjects_apart(make_events):
    ev = make_events([(1, T1, C, 25.0), (2, T2, C, 3.0), (2, T3, C, 30.0)])
    out = cdai_labels(ev)
    assert out["subject_id"].tolist() == [2]  # subject 1 has no later CDAI; subject 2's score is never subject 1's
    assert out["boolean_value"].tolist() == [False]


def test_no_cdai_events_is_a_target_error_naming_the_code(make_events):
    ev = make_events([(1, T1, V, None), (1, T2, V, None)])
    with pytest.raises(TargetError, match="SCORE//CDAI"):
        cdai_labels(ev)
    with pytest.raises(TargetError, match="SCORE//DAS28"):
        cdai_labels(ev, cdai_code="SCORE//DAS28")


def test_cdai_value_is_the_next_cdai(three_cdai):
    out = cdai_value_labels(three_cdai)
    assert out["prediction_time"].tolist() == [pd.Timestamp(T1), pd.Timestamp(T2)]
    assert out["float_value"].tolist() == [8.0, 12.0]


@pytest.mark.parametrize(
    "code_dtype",
    ["object", "string"],
)
def test_next_visit_dx_lists_the_next_visits_diagnoses(make_events, code_dtype):
    ev = make_events(
        [
            (1, T1, V, None), (1, T1, "ICD10//M06.9", None),
            (1, T2, V, None), (1, T2, "ICD10//I10", None), (1, T2, "ICD10//E11.9", None),
            (1, T2, "ICD10//I10", None), (1, T2, codes.CRP, 3.0),
            (1, T3, V, None),  # a visit with no diagnosis
            (2, T1, V, None), (2, T1, "ICD10//J06.9", None),
        ]
    )
    ev["code"] = ev["code"].astype(code_dtype)
    out = next_visit_dx_labels(ev)
    assert out["subject_id"].tolist() == [1, 1]  # subject 2 has no next visit
    assert out["prediction_time"].tolist() == [pd.Timestamp(T1), pd.Timestamp(T2)]
    assert out["codes"].tolist() == [["ICD10//E11.9", "ICD10//I10"], []]


@pytest.fixture
def flare_events(make_events):
    """Subject 1 flares before and after its landmark (visit 1); subject 2 never flares after it."""
    return make_events(
        [
            (1, "2020-01-01 00:00:00", V, None),
            (1, "2020-01-20 00:00:00", codes.FLARE, None),  # before the landmark: ignored
            (1, "2020-02-01 00:00:00", V, None),  # landmark
            (1, "2020-03-02 00:00:00", codes.FLARE, None),  # 30 days after
            (1, "2020-04-01 00:00:00", codes.FLARE, None),
            (1, "2020-06-01 00:00:00", V, None),
            (2, "2021-01-01 00:00:00", V, None),
            (2, "2021-03-01 00:00:00", V, None),  # landmark
            (2, "2021-06-09 00:00:00", codes.ESR, 20.0),  # last event: 100 days after
            (3, "2021-01-01 00:00:00", V, None),  # only one visit: no landmark
        ]
    )


def test_survival_duration_runs_to_first_event_after_landmark_or_last_event(flare_events):
    out = survival_labels(flare_events).set_index("subject_id")
    assert sorted(out.index) == [1, 2]
    assert out.loc[1, "prediction_time"] == pd.Timestamp("2020-02-01")
    assert out.loc[1, "duration"] == pytest.approx(30.0)
    assert out.loc[1, "event"] == 1
    assert out.loc[2, "duration"] == pytest.approx(100.0)
    assert out.loc[2, "event"] == 0


def test_survival_without_the_event_code_is_a_target_error(flare_events):
    with pytest.raises(TargetError, match="EVENT//NOPE"):
        survival_labels(flare_events, event_code="EVENT//NOPE")


def test_make_labels_dispatches_and_refuses_unknown_targets(three_cdai):
    pd.testing.assert_frame_equal(make_labels("cdai", three_cdai), cdai_labels(three_cdai))
    with pytest.raises(TargetError, match="unknown target 'das28'"):
        make_labels("das28", three_cdai)


def test_next_visit_dx_on_the_synthetic_cohort_has_diagnoses(cohort):
    out = next_visit_dx_labels(cohort.events)
    # RA is coded at every synthetic visit, so every next visit has at least one diagnosis
    assert (out["codes"].map(len) > 0).all()


def test_pretraining_prefixes_end_at_visit_days_and_always_include_the_whole_history(make_events):
    from ehrseq.recipes.pretrain import whole_history_labels

    days = [f"2020-0{m}-01" for m in range(1, 8)]
    rows = [(1, f"{d} 09:00:00", "LAB//CRP", 3.0) for d in days] + [(1, f"{d} 11:00:00", "DX//X", None) for d in days]
    rows += [(2, "2021-05-05 10:00:00", "DX//Y", None), (3, None, "SEX//F", None)]
    ev = make_events(rows)
    one = whole_history_labels(ev, [1, 2, 3])
    assert one["subject_id"].tolist() == [1, 2]  # no timed event, no sequence
    assert one["prediction_time"].tolist() == [pd.Timestamp("2020-07-01 11:00"), pd.Timestamp("2021-05-05 10:00")]
    four = whole_history_labels(ev, [1, 2], prefixes_per_subject=4, seed=0)
    s1 = four.loc[four["subject_id"] == 1, "prediction_time"]
    assert len(s1) == 4 and s1.max() == pd.Timestamp("2020-07-01 11:00")  # the whole history is always kept
    assert set(s1.dt.hour) == {11}  # a cut never splits a visit day
    assert (four["subject_id"] == 2).sum() == 1  # one visit day: one sequence
    pd.testing.assert_frame_equal(four, whole_history_labels(ev, [1, 2], prefixes_per_subject=4, seed=0))
    assert not four.equals(whole_history_labels(ev, [1, 2], prefixes_per_subject=4, seed=5))
    with pytest.raises(ValueError, match="prefixes_per_subject"):
        whole_history_labels(ev, [1], prefixes_per_subject=0)
