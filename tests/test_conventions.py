"""Dataset conventions are read from the data: MIMIC's GENDER// rows give sex, the synthetic SEX// rows still
do, and reports, splits and subgroups use them (no "unknown" everywhere on real data)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehrseq.evaluate.report import build_report
from ehrseq.io import read_meds
from ehrseq.io.conventions import DatasetConventions, detect, normalise_sex, sex_of, site_of
from ehrseq.recipes.evaluate import demographics
from ehrseq.split import subjects_table

MIMIC_COLUMN_MAP = {"value": "numeric_value"}  # as tests/conftest.py: the export calls numeric_value "value"


@pytest.fixture(scope="module")
def mimic(mimic_slice) -> pd.DataFrame:
    return read_meds(mimic_slice, column_map=MIMIC_COLUMN_MAP).events


def _gender_rows(ev: pd.DataFrame) -> pd.Series:
    """subject_id -> 'F'/'M' straight from the raw GENDER// codes, the expectation for sex_of."""
    g = ev.loc[ev["code"].astype(str).str.startswith("GENDER//")].drop_duplicates("subject_id")
    return g.set_index("subject_id")["code"].astype(str).str.removeprefix("GENDER//")


def test_detect_finds_the_mimic_conventions(mimic):
    conv = detect(mimic)
    assert conv == DatasetConventions(birth_code="MEDS_BIRTH", death_code="MEDS_DEATH",
                                      sex_prefixes=("GENDER//",), site_prefix=None)


def test_detect_finds_the_synthetic_conventions(cohort):
    conv = detect(cohort.events)
    assert conv.sex_prefixes == ("SEX//",) and conv.site_prefix == "SITE//"
    assert conv.birth_code == "MEDS_BIRTH"


def test_detect_reports_absent_codes_as_none(make_events):
    ev = make_events([(1, "2020-01-01", "LAB//X", 1.0), (1, None, "SITE//A", None)])
    conv = detect(ev)
    assert conv.birth_code is None and conv.death_code is None and conv.sex_prefixes == ()
    assert conv.site_prefix == "SITE//"


def test_sex_of_reads_gender_codes_on_mimic(mimic):
    sex = sex_of(mimic)
    expected = _gender_rows(mimic)
    assert len(sex) == mimic["subject_id"].nunique() == 34
    pd.testing.assert_series_equal(sex.sort_index(), expected.sort_index(), check_names=False, check_dtype=False)
    assert set(sex) == {"F", "M"}


def test_sex_of_matches_the_synthetic_patients_table(cohort):
    sex = sex_of(cohort.events)
    truth = cohort.patients.set_index("subject_id")["sex"].astype(str)
    assert set(sex) == {"F", "M"} and len(sex) == len(cohort.patients)
    assert (sex.reindex(truth.index) == truth).all()


def test_sex_of_normalises_and_prefers_sex_over_gender_and_ignores_timed_rows(make_events):
    ev = make_events([
        (1, None, "GENDER//male", None), (1, None, "SEX//Female", None),  # SEX// wins for subject 1
        (2, None, "GENDER//f", None),
        (3, None, "GENDER//X", None),
        (4, "2020-01-01", "SEX//F", None),  # a timed row is not a static sex row
    ])
    sex = sex_of(ev)
    assert sex.to_dict() == {1: "F", 2: "F", 3: "X"}
    assert [normalise_sex(v) for v in ("M", " man ", "WOMAN", "")] == ["M", "M", "F", "unknown"]


def test_site_of_is_empty_without_site_codes_and_reads_synthetic_sites(mimic, cohort):
    assert site_of(mimic).empty
    site = site_of(cohort.events)
    assert len(site) == len(cohort.patients) and set(site) == {"A", "B"}


def test_subjects_table_on_mimic_has_unknown_site_and_a_first_time(mimic):
    subj = subjects_table(mimic)
    assert len(subj) == 34 and (subj["site"] == "unknown").all()
    assert subj["first_time"].notna().all()


def test_demographics_on_mimic_give_sex_and_age(mimic):
    rng = np.random.default_rng(0)
    last = mimic.dropna(subset=["time"]).groupby("subject_id")["time"].max()
    preds = pd.DataFrame({"subject_id": last.index.to_numpy(), "prediction_time": last.to_numpy()})
    preds = preds.assign(y_true=rng.integers(0, 2, len(preds)), y_prob=rng.random(len(preds)))
    out = demographics(mimic, preds)
    expected = _gender_rows(mimic)
    assert (out["sex"].to_numpy() == expected.reindex(out["subject_id"]).to_numpy()).all()
    assert (out["site"] == "unknown").all()
    assert out["age"].between(18, 110).all()
    report = build_report(out, "binary", {"name": "mimic"}, subgroup_columns=["sex"], min_group_size=5, n_boot=5)
    groups = {r["group"] for r in report["subgroups"]["rows"] if r["column"] == "sex"}
    assert groups == {"F", "M"}
    assert not any(r["group"] == "unknown" for r in report["subgroups"]["rows"])
