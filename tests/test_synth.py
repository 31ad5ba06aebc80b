"""The synthetic cohort: determinism, MEDS order, site differences, plausible values, and labels that follow
the truth the generator recorded."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from ehrseq import codes
from ehrseq.synth.cohort import END_DATE, generate_cohort

RA_CODES = ("ICD10//M06.9", "ICD10//M05.79", "ICD10//M06.09")


def _site_of(cohort, subject_ids: pd.Series) -> pd.Series:
    return subject_ids.map(cohort.patients.set_index("subject_id")["site"])


def test_same_seed_gives_identical_events():
    a = generate_cohort(40, seed=11, biopsy_rate=0.0)
    b = generate_cohort(40, seed=11, biopsy_rate=0.0)
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.truth_cdai, b.truth_cdai)


def test_different_seed_gives_different_events():
    a = generate_cohort(40, seed=11, biopsy_rate=0.0)
    b = generate_cohort(40, seed=12, biopsy_rate=0.0)
    assert not a.events.equals(b.events)


def test_events_are_in_meds_order_static_first_then_time(cohort):
    e = cohort.events
    assert e["subject_id"].is_monotonic_increasing
    for _, g in e.groupby("subject_id", sort=False):
        static = g["time"].isna().to_numpy()
        assert static.any(), "every subject has static facts (sex, site)"
        # all NaT rows come before any timed row
        assert not (np.diff(static.astype(int)) > 0).any()
        assert g.loc[~static.astype(bool), "time"].is_monotonic_increasing


def test_site_b_visits_less_often(cohort):
    v = cohort.events.loc[cohort.events["code"] == codes.VISIT].sort_values(["subject_id", "time"])
    gap_days = v.groupby("subject_id")["time"].diff().dt.total_seconds() / 86400
    median = gap_days.groupby(_site_of(cohort, v["subject_id"])).median()
    assert median["B"] > 1.3 * median["A"]


def test_site_b_prescribes_a_smaller_share_of_biologics(cohort):
    rx = cohort.events.loc[cohort.events["code"].str.startswith(codes.RX_PREFIX)]
    share = rx["code"].isin(codes.BIOLOGICS).groupby(_site_of(cohort, rx["subject_id"])).mean()
    assert share["B"] < share["A"]


def test_site_b_codes_ra_as_unspecified_m06_9_more_often(cohort):
    ra = cohort.events.loc[cohort.events["code"].isin(RA_CODES)]
    share = (ra["code"] == "ICD10//M06.9").groupby(_site_of(cohort, ra["subject_id"])).mean()
    assert share["B"] > 0.5 > 0.2 > share["A"]


def test_cdai_values_lie_in_the_index_range(cohort):
    v = cohort.events.loc[cohort.events["code"] == codes.CDAI, "numeric_value"]
    assert len(v) > 0 and v.notna().all()
    assert v.between(0, 76).all()


def test_truth_cdai_has_one_row_per_visit_with_probabilities(cohort):
    t = cohort.truth_cdai
    visits = cohort.events.loc[cohort.events["code"] == codes.VISIT, ["subject_id", "time"]]
    assert len(t) == len(visits)
    assert not t.duplicated(["subject_id", "prediction_time"]).any()
    got = set(zip(t["subject_id"], t["prediction_time"], strict=True))
    assert got == set(zip(visits["subject_id"], visits["time"], strict=True))
    assert t["true_prob_controlled"].between(0, 1).all()


def test_cdai_labels_follow_the_recorded_truth(cohort, labels):
    j = labels.merge(cohort.truth_cdai, on=["subject_id", "prediction_time"], how="inner")
    assert len(j) == len(labels)
    assert roc_auc_score(j["boolean_value"], j["true_prob_controlled"]) > 0.75


def test_patients_with_higher_severity_flare_more(cohort):
    p = cohort.patients.set_index("subject_id")
    flares = cohort.events.loc[cohort.events["code"] == codes.FLARE].groupby("subject_id").size()
    assert flares.sum() > 0
    timed = cohort.events.dropna(subset=["time"])
    timed = timed.loc[timed["code"] != codes.BIRTH]
    years = timed.groupby("subject_id")["time"].agg(lambda t: (t.max() - t.min()).total_seconds() / (365.25 * 86400))
    high = p["severity"] > p["severity"].median()
    per_subject = flares.reindex(p.index, fill_value=0)
    rate_high = per_subject[high].sum() / years.reindex(p.index)[high].sum()
    rate_low = per_subject[~high].sum() / years.reindex(p.index)[~high].sum()
    assert rate_high > 1.5 * rate_low


def test_no_events_more_than_a_year_after_the_end_date(cohort):
    assert cohort.events["time"].max() < END_DATE + np.timedelta64(365, "D")


def test_no_events_more_than_a_year_after_the_end_date_in_a_larger_cohort():
    e = generate_cohort(1000, seed=1, biopsy_rate=0.0).events
    assert e["time"].max() < END_DATE + np.timedelta64(365, "D")
