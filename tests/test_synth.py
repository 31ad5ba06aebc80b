"""The synthetic cohort: determinism, MEDS order, site differences (the mild default and each SiteShift
switch), plausible values, and labels that follow the truth the generator recorded."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from ehrseq import codes
from ehrseq.labels import cdai_labels
from ehrseq.synth.cohort import END_DATE, generate_cohort
from ehrseq.synth.shift import (
    ICD10_TO_ICD9,
    LOCAL_LAB_CODES,
    MILD,
    REALISTIC,
    SiteShift,
    code_map_to_a,
    resolve_shift,
)

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


# ---------------------------------------------------------------------------------------------- site shifts
# Each SiteShift switch acts on site B only: recoding switches change B's codes and nothing else; process
# switches (with separate_sites, one random stream per site) change B's process and leave A bit for bit alone.

N_SHIFT = 400
BASE = SiteShift(separate_sites=True)


def _gen(shift: SiteShift | str | None, n: int = N_SHIFT, seed: int = 7):
    return generate_cohort(n, seed=seed, biopsy_rate=0.0, shift=shift)


@pytest.fixture(scope="module")
def mild():
    return _gen(None)


@pytest.fixture(scope="module")
def base():
    return _gen(BASE)


@pytest.fixture(scope="module")
def realistic():
    return _gen("realistic")


def _at(c, site: str) -> pd.DataFrame:
    ids = c.patients.loc[c.patients["site"] == site, "subject_id"]
    return c.events.loc[c.events["subject_id"].isin(ids)].reset_index(drop=True)


def _visits(c, site: str) -> pd.DataFrame:
    """One row per visit at ``site``: time, the CDAI recorded then (NaN if none), days to the next visit,
    whether CRP was measured, and the set of drugs prescribed."""
    e = _at(c, site)
    v = e.loc[e["code"] == codes.VISIT, ["subject_id", "time"]]
    cd = e.loc[e["code"] == codes.CDAI, ["subject_id", "time", "numeric_value"]].rename(columns={"numeric_value": "cdai"})
    crp = e.loc[e["code"].isin([codes.CRP, LOCAL_LAB_CODES[codes.CRP]]), ["subject_id", "time"]].assign(crp=True)
    rx = (e.loc[e["code"].str.startswith(codes.RX_PREFIX)].groupby(["subject_id", "time"])["code"]
          .agg(lambda s: "|".join(sorted(map(str, s)))).rename("rx").reset_index())
    v = v.merge(cd, how="left").merge(crp, how="left").merge(rx, how="left")
    v["crp"] = v["crp"].fillna(False).astype(bool)
    v = v.sort_values(["subject_id", "time"])
    v["gap"] = v.groupby("subject_id")["time"].shift(-1).sub(v["time"]).dt.total_seconds() / 86400
    return v.reset_index(drop=True)


def test_default_cohort_is_unchanged_by_the_shift_machinery():
    """The default (mild) cohort is the one every committed benchmark figure was made on: same events, same
    truth, bit for bit, as before site shifts existed (hash of generate_cohort(300, seed=3), pandas hashing)."""
    c = generate_cohort(300, seed=3, biopsy_rate=0.0)
    h = pd.util.hash_pandas_object(c.events, index=False).to_numpy()
    assert hashlib.sha256(h.tobytes()).hexdigest()[:16] == "199dac44a2099123"
    pd.testing.assert_frame_equal(c.events, generate_cohort(300, seed=3, biopsy_rate=0.0, shift="mild").events)


def test_realistic_shift_same_seed_same_cohort_other_seed_other_cohort(realistic):
    again = _gen("realistic")
    pd.testing.assert_frame_equal(realistic.events, again.events)
    pd.testing.assert_frame_equal(realistic.truth_cdai, again.truth_cdai)
    assert not _gen("realistic", seed=8).events.equals(realistic.events)


def test_shift_presets_and_errors():
    assert resolve_shift(None) == MILD == SiteShift() and resolve_shift("realistic") == REALISTIC
    assert resolve_shift("realistic", policy="same").policy == "same"
    with pytest.raises(ValueError, match="unknown site shift"):
        resolve_shift("extreme")
    with pytest.raises(ValueError, match="unknown SiteShift field"):
        resolve_shift("mild", colour="red")
    with pytest.raises(ValueError, match="cadence"):
        SiteShift(cadence="weekly")


def test_icd9_switch_recodes_site_b_diagnoses_only(mild):
    c = _gen(SiteShift(icd9=True))
    a, b = _at(c, "A"), _at(c, "B")
    pd.testing.assert_frame_equal(a, _at(mild, "A"))
    assert b["code"].str.startswith("ICD9//").any() and not b["code"].str.startswith("ICD10//").any()
    assert not a["code"].str.startswith("ICD9//").any()
    back = _at(mild, "B").assign(code=lambda d: d["code"].map(lambda x: ICD10_TO_ICD9.get(x, x)).astype("string"))
    pd.testing.assert_frame_equal(b, back)  # nothing but the diagnosis codes changed


def test_local_lab_codes_switch_recodes_site_b_labs_only(mild):
    c = _gen(SiteShift(local_lab_codes=True))
    a, b = _at(c, "A"), _at(c, "B")
    pd.testing.assert_frame_equal(a, _at(mild, "A"))
    assert not b["code"].isin(codes.LABS).any() and b["code"].isin(LOCAL_LAB_CODES.values()).any()
    back = _at(mild, "B").assign(code=lambda d: d["code"].map(lambda x: LOCAL_LAB_CODES.get(x, x)).astype("string"))
    pd.testing.assert_frame_equal(b, back)


def test_code_map_to_a_undoes_the_recoding(mild):
    sh = SiteShift(icd9=True, local_lab_codes=True)
    c = _gen(sh)
    m = code_map_to_a(sh)
    mapped = c.events["code"].map(lambda x: m.get(x, x))
    assert set(mapped) <= set(mild.events["code"])  # every B code now reads as one of A's
    assert mapped.str.startswith("ICD10//").sum() == mild.events["code"].str.startswith("ICD10//").sum()


def test_units_switch_off_reports_crp_at_b_in_mg_per_l(mild):
    c = _gen(SiteShift(units=False))
    med = {s: _at(x, s).loc[lambda d: d["code"] == codes.CRP, "numeric_value"].median()
           for x, s in ((c, "A"), (c, "B"))}
    mild_b = _at(mild, "B").loc[lambda d: d["code"] == codes.CRP, "numeric_value"].median()
    assert 0.6 < med["B"] / med["A"] < 1.8 and mild_b / med["A"] < 0.2
    other = ~mild.events["code"].isin([codes.CRP, codes.ESR])  # only B's lab values differ
    pd.testing.assert_frame_equal(c.events[other], mild.events[other])


def test_process_switches_leave_site_a_bit_for_bit_the_same(base, realistic):
    pd.testing.assert_frame_equal(_at(realistic, "A"), _at(base, "A"))
    ta = base.truth_cdai[base.truth_cdai["subject_id"].isin(base.patients.query("site == 'A'")["subject_id"])]
    tr = realistic.truth_cdai[realistic.truth_cdai["subject_id"].isin(ta["subject_id"])]
    pd.testing.assert_frame_equal(ta.reset_index(drop=True), tr.reset_index(drop=True))


def test_case_mix_moves_site_b_age_and_comorbidity(base):
    older = _gen(dataclasses.replace(BASE, case_mix=2.5))
    same = _gen(dataclasses.replace(BASE, case_mix=0.0))

    def age(c, s):
        p = c.patients.loc[c.patients["site"] == s]
        first = _at(c, s).loc[lambda d: d["code"] == codes.VISIT].groupby("subject_id")["time"].min()
        return ((first - p.set_index("subject_id")["birth_date"]).dt.days / 365.25).mean()

    assert age(older, "B") > age(base, "B") + 3 > age(same, "B") + 6
    assert abs(age(same, "B") - age(same, "A")) < 3
    ht = {k: _at(c, "B")["code"].eq("ICD10//I10").groupby(_at(c, "B")["subject_id"]).any().mean()
          for k, c in (("older", older), ("same", same))}
    assert ht["older"] > ht["same"] + 0.08


def test_state_cadence_sees_site_b_patients_above_target_sooner(base):
    c = _gen(dataclasses.replace(BASE, cadence="state"))
    for cohort, ratio in ((c, 0.6), (base, None)):
        v = _visits(cohort, "B").dropna(subset=["cdai", "gap"])
        hi, lo = v.loc[v["cdai"] > 10, "gap"].median(), v.loc[v["cdai"] <= 10, "gap"].median()
        if ratio:
            assert hi < ratio * lo
        else:
            assert 0.8 < hi / lo < 1.25


def test_state_lab_ordering_orders_crp_mostly_above_target(base):
    c = _gen(dataclasses.replace(BASE, lab_ordering="state"))
    v = _visits(c, "B").dropna(subset=["cdai"])
    assert v.loc[v["cdai"] > 10, "crp"].mean() > 0.85 > 0.5 > v.loc[v["cdai"] <= 10, "crp"].mean()
    va = _visits(c, "A").dropna(subset=["cdai"])
    assert abs(va.loc[va["cdai"] > 10, "crp"].mean() - va.loc[va["cdai"] <= 10, "crp"].mean()) < 0.05


def test_nurse_visits_record_no_cdai_and_hold_treatment(base):
    c = _gen(dataclasses.replace(BASE, cdai_documentation=0.4))
    v, v0 = _visits(c, "B"), _visits(base, "B")
    assert v["cdai"].isna().mean() > v0["cdai"].isna().mean() + 0.15
    prev_rx = v.groupby("subject_id")["rx"].shift(1)
    prev_had_cdai = v.groupby("subject_id")["cdai"].shift(1).notna()
    nurse = v["cdai"].isna() & prev_had_cdai & prev_rx.notna()
    assert nurse.sum() > 50
    assert (v.loc[nurse, "rx"] == prev_rx[nurse]).mean() > 0.97  # same prescriptions as the visit before
    # the truth for the next recorded CDAI is known across a nurse visit; across a random gap (base) it is not
    for cohort, visits, share in ((c, v, (0.75, 1.0)), (base, v0, (0.0, 0.0))):
        g = visits.groupby("subject_id")["cdai"]
        skip = visits.loc[visits["cdai"].notna() & g.shift(-1).isna() & g.shift(-2).notna(), ["subject_id", "time"]]
        t = cohort.truth_cdai.merge(skip, left_on=["subject_id", "prediction_time"], right_on=["subject_id", "time"])
        assert len(t) > 20
        assert share[0] <= t["true_prob_controlled_next_cdai"].notna().mean() <= share[1]


def test_tight_policy_is_a_concept_shift_without_new_codes(base):
    c = _gen(dataclasses.replace(BASE, policy="tight"))
    assert set(_at(c, "B")["code"]) <= set(_at(base, "B")["code"])  # the injection is not recorded

    def controlled_next_when_above(cohort):
        lab = cdai_labels(_at(cohort, "B"))
        cd = _at(cohort, "B").loc[lambda d: d["code"] == codes.CDAI, ["subject_id", "time", "numeric_value"]]
        j = lab.merge(cd, left_on=["subject_id", "prediction_time"], right_on=["subject_id", "time"])
        return j.loc[j["numeric_value"].between(10.5, 25), "boolean_value"].mean()

    assert controlled_next_when_above(c) > controlled_next_when_above(base) + 0.15


def test_truth_recorded_at_both_sites_and_calibrated_under_the_realistic_shift(realistic):
    t, p = realistic.truth_cdai, realistic.patients.set_index("subject_id")["site"]
    lab = cdai_labels(realistic.events)
    j = lab.merge(t, on=["subject_id", "prediction_time"], how="left")
    assert len(j) == len(lab) and j["true_prob_controlled"].notna().all()
    for site in ("A", "B"):
        js = j.loc[j["subject_id"].map(p) == site]
        known = js["true_prob_controlled_next_cdai"].notna()
        assert known.mean() > 0.85 and js.loc[known, "true_prob_controlled_next_cdai"].between(0, 1).all()
        assert abs(js.loc[known, "true_prob_controlled_next_cdai"].mean() - js.loc[known, "boolean_value"].mean()) < 0.05
        assert roc_auc_score(js.loc[known, "boolean_value"], js.loc[known, "true_prob_controlled_next_cdai"]) > 0.75


def test_next_cdai_truth_equals_next_visit_truth_when_the_next_visit_records_a_cdai(mild):
    for site in ("A", "B"):
        v = _visits(mild, site)
        v = v.assign(nxt=v.groupby("subject_id")["cdai"].shift(-1)).dropna(subset=["cdai"])
        t = mild.truth_cdai.merge(v[["subject_id", "time", "nxt"]], left_on=["subject_id", "prediction_time"],
                                  right_on=["subject_id", "time"])
        both = t.loc[t["nxt"].notna()]
        assert len(both) > 500
        np.testing.assert_allclose(both["true_prob_controlled_next_cdai"], both["true_prob_controlled"], rtol=1e-9)
        # a random gap in the documentation (a treatment decision on an unrecorded CDAI): no closed form
        assert t.loc[t["nxt"].isna() & t["true_prob_controlled_next_cdai"].notna()].empty or site == "A"
