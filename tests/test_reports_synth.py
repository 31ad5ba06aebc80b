"""The synthetic biopsy reports: deterministic, labelled by meaning, two distinct site styles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehrseq.codes import BIOPSY_LABELS
from ehrseq.synth.reports import REPORT_LABELS, generate_report, generate_reports


@pytest.fixture(scope="module")
def reports() -> pd.DataFrame:
    return pd.concat([generate_reports(1500, seed=3, site="A"), generate_reports(1500, seed=3, site="B")])


def test_same_seed_gives_the_same_reports() -> None:
    pd.testing.assert_frame_equal(generate_reports(50, seed=7, site="B"), generate_reports(50, seed=7, site="B"))
    assert not generate_reports(50, seed=7, site="B").text.equals(generate_reports(50, seed=8, site="B").text)


def test_columns_and_label_values(reports: pd.DataFrame) -> None:
    assert REPORT_LABELS == tuple(BIOPSY_LABELS)
    assert list(reports.columns[:7]) == ["report_id", "site", "text", *REPORT_LABELS]
    assert reports[list(REPORT_LABELS)].isin([0, 1]).all().all()
    assert reports.report_id.is_unique


def test_prevalences_are_plausible(reports: pd.DataFrame) -> None:
    assert 0.22 < reports.gca.mean() < 0.33
    assert 0.5 < reports.loc[reports.gca == 1, "giant_cells"].mean() < 0.7
    assert reports.loc[reports.gca == 1, "adventitial_inflammation"].mean() > 0.6
    # isolated adventitial inflammation exists and is not called GCA
    assert ((reports.adventitial_inflammation == 1) & (reports.gca == 0)).mean() > 0.02


def test_labels_follow_meaning_not_surface_words(reports: pd.DataFrame) -> None:
    low = reports.text.str.lower()
    healed = low.str.contains("healed")
    assert healed.any() and (reports.gca[healed] == 1).all() and (reports.giant_cells[healed] == 0).all()
    vein = low.str.contains("vein")
    assert vein.any() and (reports.loc[vein, list(REPORT_LABELS)] == 0).all().all()
    revised = low.str.contains("addendum")
    assert revised.any()
    addenda = low.str.split("addendum").str[-1]
    neg_revision = addenda.str.contains("intact|no arteritis|negative")  # robust to a typo or two
    assert (reports.gca[revised & neg_revision] == 0).all() and (reports.gca[revised & ~neg_revision] == 1).all()
    # every report mentions giant cell arteritis in some form, whatever its label
    assert low.str.contains("gca|giant cell").mean() > 0.95


def test_sites_write_in_different_styles(reports: pd.DataFrame) -> None:
    a, b = reports[reports.site == "A"].text, reports[reports.site == "B"].text
    assert a.str.contains("SPECIMEN:").mean() > 0.9 and b.str.contains("SPECIMEN:").mean() == 0
    assert b.str.contains(r"\bTA\b|\bIEL\b|\bGCs?\b").mean() > a.str.contains(r"\bTA\b|\bIEL\b").mean()
    assert b.str.len().median() < a.str.len().median()
    assert (b == b.str.upper()).mean() > 0.05


def test_truth_passed_in_is_respected() -> None:
    rng = np.random.default_rng(0)
    for truth in ({"gca": True}, {"gca": False}, {"gca": True, "giant_cells": False}):
        for _ in range(30):
            text, labels, p_text = generate_report(rng, site="SITE//B", truth=truth)
            assert text.strip()
            assert all(labels[k] == int(v) for k, v in truth.items())
            assert set(p_text) == set(REPORT_LABELS)


def test_bad_site_and_truth_are_rejected() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown site"):
        generate_report(rng, site="C")
    with pytest.raises(ValueError, match="unknown truth"):
        generate_report(rng, site="A", truth={"vasculitis": True})
