"""Patient splits: every strategy is by patient, seeded, respects its fractions, and refuses bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehrseq import codes
from ehrseq.errors import LeakageError
from ehrseq.split import SPLITS, PatientSplitter, assert_disjoint, ids_in, subjects_table

CUTOFF = "2016-01-01"


def _splitter(strategy: str, **kw) -> PatientSplitter:
    extra = {"site": {"held_out_sites": ("B",)}, "temporal": {"cutoff": CUTOFF}, "stratified": {"stratify": "site"}}
    return PatientSplitter(strategy="random" if strategy == "stratified" else strategy, **extra.get(strategy, {}), **kw)


def _first_clinical_time(events: pd.DataFrame) -> pd.Series:
    timed = events.dropna(subset=["time"])
    return timed.loc[timed["code"] != codes.BIRTH].groupby("subject_id")["time"].min()


def _subjects_with_clinical_first_time(cohort) -> pd.DataFrame:
    """subjects_table with first_time = first non-birth event (what the temporal strategy is meant to see)."""
    subj = subjects_table(cohort.events)
    return subj.assign(first_time=subj["subject_id"].map(_first_clinical_time(cohort.events)))


@pytest.mark.parametrize("strategy", ["random", "stratified", "site", "temporal"])
def test_every_strategy_puts_each_subject_in_exactly_one_split(cohort, strategy):
    subj = _subjects_with_clinical_first_time(cohort)
    out = _splitter(strategy, seed=1).split(subj)
    assert len(out) == len(subj)
    assert not out["subject_id"].duplicated().any()
    assert set(out["subject_id"]) == set(subj["subject_id"])
    assert set(out["split"]) <= set(SPLITS)
    assert_disjoint(out)


@pytest.mark.parametrize("strategy", ["random", "stratified", "site", "temporal"])
def test_same_seed_same_split_other_seed_other_split(cohort, strategy):
    subj = _subjects_with_clinical_first_time(cohort)
    a = _splitter(strategy, seed=5).split(subj)
    b = _splitter(strategy, seed=5).split(subj.sample(frac=1.0, random_state=0))  # row order must not matter
    c = _splitter(strategy, seed=6).split(subj)
    pd.testing.assert_frame_equal(a, b)
    assert not a["split"].equals(c["split"])


def test_random_split_respects_fractions(subjects):
    out = PatientSplitter(fractions=(0.6, 0.1, 0.3), seed=2).split(subjects)
    share = out["split"].value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.6, abs=0.01)
    assert share["tuning"] == pytest.approx(0.1, abs=0.01)
    assert share["held_out"] == pytest.approx(0.3, abs=0.01)


def test_stratified_split_respects_fractions_within_each_stratum(subjects):
    out = PatientSplitter(fractions=(0.5, 0.25, 0.25), stratify="site", seed=2).split(subjects)
    site = out["subject_id"].map(subjects.set_index("subject_id")["site"])
    share = pd.crosstab(site, out["split"], normalize="index")
    np.testing.assert_allclose(share["train"], 0.5, atol=0.02)
    np.testing.assert_allclose(share["held_out"], 0.25, atol=0.02)


def test_site_strategy_holds_out_exactly_the_held_out_site(subjects):
    out = PatientSplitter(strategy="site", held_out_sites=["B"], fractions=(0.8, 0.2, 0.0), seed=0).split(subjects)
    site_b = set(subjects.loc[subjects["site"] == "B", "subject_id"])
    assert set(ids_in(out, "held_out")) == site_b
    rest = out.loc[out["split"] != "held_out"]
    assert not set(rest["subject_id"]) & site_b
    # the other subjects are divided train : tuning as 0.8 : 0.2
    assert (rest["split"] == "train").mean() == pytest.approx(0.8, abs=0.02)


def test_temporal_strategy_holds_out_subjects_first_seen_on_or_after_cutoff():
    subj = pd.DataFrame(
        {
            "subject_id": [1, 2, 3, 4, 5, 6],
            "first_time": pd.to_datetime(
                ["2014-05-01 00:00:00", "2015-12-31 23:59:59", "2016-01-01 00:00:00", "2016-01-01 00:00:01", "2019-03-03 00:00:00", "2013-01-01 00:00:00"]
            ),
        }
    )
    out = PatientSplitter(strategy="temporal", cutoff=CUTOFF, seed=0).split(subj)
    assert sorted(ids_in(out, "held_out")) == [3, 4, 5]


def test_temporal_split_from_subjects_table_holds_out_subjects_first_seen_after_cutoff(cohort):
    out = PatientSplitter(strategy="temporal", cutoff=CUTOFF, seed=0).split(subjects_table(cohort.events))
    first = _first_clinical_time(cohort.events)
    expected = set(first.index[first >= pd.Timestamp(CUTOFF)])
    assert len(expected) > 50  # the cohort enrols 2012-2020, so a 2016 cutoff holds out about half
    assert set(ids_in(out, "held_out")) == expected


def test_assert_disjoint_names_a_subject_in_two_splits():
    splits = pd.DataFrame({"subject_id": [1, 2, 777, 777], "split": ["train", "tuning", "train", "held_out"]})
    with pytest.raises(LeakageError, match="777"):
        assert_disjoint(splits)


def test_assert_disjoint_accepts_a_mapping_and_catches_overlap():
    assert_disjoint({"train": [1, 2], "tuning": [3], "held_out": [4]})
    with pytest.raises(LeakageError, match="3"):
        assert_disjoint({"train": [1, 3], "tuning": [3], "held_out": [4]})


def test_ids_in_refuses_a_leaky_split():
    splits = pd.DataFrame({"subject_id": [9, 9], "split": ["train", "held_out"]})
    with pytest.raises(LeakageError):
        ids_in(splits, "train")


def test_unknown_strategy_is_a_value_error(subjects):
    with pytest.raises(ValueError, match="unknown split strategy 'by_moon'"):
        PatientSplitter(strategy="by_moon").split(subjects)


@pytest.mark.parametrize("fractions", [(0.5, 0.5, 0.5), (0.7, 0.3), (1.2, -0.1, -0.1)])
def test_bad_fractions_are_a_value_error(subjects, fractions):
    with pytest.raises(ValueError, match="fractions must be three non-negative numbers summing to 1"):
        PatientSplitter(fractions=fractions).split(subjects)


def test_unknown_held_out_site_is_a_value_error(subjects):
    with pytest.raises(ValueError, match=r"held_out_sites \['Z'\] do not occur"):
        PatientSplitter(strategy="site", held_out_sites=["Z"]).split(subjects)


def test_temporal_without_cutoff_is_a_value_error(subjects):
    with pytest.raises(ValueError, match="cutoff"):
        PatientSplitter(strategy="temporal").split(subjects)


def test_duplicated_subject_rows_are_refused():
    subj = pd.DataFrame({"subject_id": [1, 2, 2, 3], "site": ["A", "A", "B", "B"]})
    with pytest.raises(ValueError, match="repeats subject_id"):
        PatientSplitter().split(subj)


def test_subjects_table_has_one_row_per_subject_with_its_site(cohort, subjects):
    assert len(subjects) == cohort.events["subject_id"].nunique() == len(cohort.patients)
    site = cohort.patients.set_index("subject_id")["site"]
    assert (subjects["site"].to_numpy() == subjects["subject_id"].map(site).to_numpy()).all()
