"""The array paths of validation (ehrseq.io.rowkeys, validate._blank, plausibility.count_birth_death) give what
the pandas / Python definitions give: DataFrame.duplicated, str.strip() == "", a per-subject birth / death."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehrseq.errors import DataValidationError
from ehrseq.io import rowkeys
from ehrseq.io.plausibility import count_birth_death
from ehrseq.io.validate import ValidationPolicy, ValidationReport, _blank, coerce_events, tidy_events


def _frame(n: int, seed: int) -> pd.DataFrame:
    """Events with many exact repeats, NaN / -0.0 values, None / NaN text and an extra column, unsorted."""
    rng = np.random.default_rng(seed)
    t = np.where(rng.random(n) < 0.1, np.datetime64("NaT"),
                 np.datetime64("2020-01-01", "us") + rng.integers(0, 4, n) * np.timedelta64(1, "D"))
    v = rng.choice(np.array([np.nan, 0.0, -0.0, 1.5, 2.0], np.float32), n)
    text = rng.choice(np.array([None, np.nan, "a", "b"], dtype=object), n)
    return pd.DataFrame({
        "subject_id": rng.integers(1, 6, n).astype(np.int64),
        "time": pd.Series(t, dtype="datetime64[us]"),
        "code": pd.Series(rng.choice(["A", "B", "MEDS_BIRTH", "MEDS_DEATH"], n), dtype="str"),
        "numeric_value": v,
        "text_value": text,
        "table": rng.choice(["lab", "dx"], n),
    })


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_duplicated_rows_matches_pandas(seed: int) -> None:
    df = _frame(600, seed)
    for frame in (df, df.iloc[np.lexsort((df["time"].to_numpy().view(np.int64), df["subject_id"]))]
                  .reset_index(drop=True)):
        sid, t = rowkeys.time_keys(frame)
        order = rowkeys.event_order(sid, t)
        got = rowkeys.duplicated_rows(frame, sid, t, order)
        assert got.any()
        np.testing.assert_array_equal(got, frame.duplicated(keep="first").to_numpy())


def test_tidy_counts_match_the_pandas_definitions() -> None:
    df = _frame(800, 3)
    df = pd.concat([df, pd.DataFrame({"subject_id": [77], "time": pd.Series([pd.NaT], dtype="datetime64[us]"),
                                      "code": pd.Series(["SEX//F"], dtype="str"), "numeric_value": [np.nan],
                                      "text_value": [None], "table": ["x"]})], ignore_index=True)
    df["numeric_value"] = df["numeric_value"].astype("float32")
    out, rep = tidy_events(df, file="f", policy=ValidationPolicy())
    dedup = df.loc[~df.duplicated(keep="first")].reset_index(drop=True)
    timed = dedup["time"].notna().groupby(dedup["subject_id"]).transform("any")
    kept = dedup.loc[timed.to_numpy()].reset_index(drop=True)
    order = np.lexsort((kept["time"].to_numpy().view(np.int64), kept["subject_id"].to_numpy()))
    expected = kept.iloc[order].reset_index(drop=True)
    pd.testing.assert_frame_equal(out, expected)
    assert rep.duplicates_dropped == int(df.duplicated().sum())
    assert rep.empty_subjects_skipped == 1 and rep.rows_of_empty_subjects_dropped == 1
    assert rep.rows_moved_by_sort == int((order != np.arange(len(order))).sum())
    assert rep.subjects_out == expected["subject_id"].nunique()


def test_duplicates_error_names_the_first_subjects_in_file_order() -> None:
    df = pd.DataFrame({"subject_id": [9, 9, 3, 3], "time": pd.to_datetime(["2020-01-02", "2020-01-02", "2020-01-01",
                                                                          "2020-01-01"]).astype("datetime64[us]"),
                       "code": pd.Series(["A"] * 4, dtype="str"), "numeric_value": np.float32(1.0),
                       "text_value": [None] * 4})
    with pytest.raises(DataValidationError, match=r"has duplicate rows \(2 rows\); first subject_id\(s\): 9, 3"):
        tidy_events(df, file="f", policy=ValidationPolicy(duplicates="error"))


def test_blank_codes_on_arrow_strings_follow_python_whitespace() -> None:
    chars = [chr(c) for c in range(0x3100) if not 0xD800 <= c <= 0xDFFF]  # every whitespace code point is below
    codes = chars + ["", "  ", "\u2003\x1c", "a ", None]
    expected = np.array([v is None or v.strip() == "" for v in codes])
    np.testing.assert_array_equal(_blank(pd.Series(codes, dtype="str")), expected)
    np.testing.assert_array_equal(_blank(pd.Series(codes, dtype=object)), expected)


@pytest.mark.parametrize("blank", ["\u2003", "\x1c", "\u3000 "])
def test_unicode_whitespace_code_is_an_empty_code(blank: str) -> None:
    df = pd.DataFrame({"subject_id": [1, 2], "time": pd.to_datetime(["2020-01-01"] * 2).astype("datetime64[us]"),
                       "code": pd.Series(["A", blank], dtype="str"), "numeric_value": [1.0, 2.0]})
    with pytest.raises(DataValidationError, match=r"has empty codes \(1 row\); first subject_id\(s\): 2"):
        coerce_events(df, file="f")


def test_birth_death_counts_do_not_depend_on_row_order() -> None:
    df = pd.DataFrame({
        "subject_id": [1, 1, 1, 1, 2, 2, 2, 3],
        "time": pd.to_datetime(["2000-01-01", "1999-01-01", "2010-01-01", "2010-01-03", "1990-01-01", "1980-01-01",
                                "1990-01-01", "2000-01-01"]).astype("datetime64[us]"),
        "code": pd.Series(["MEDS_BIRTH", "A", "MEDS_DEATH", "B", "MEDS_BIRTH", "C", "MEDS_DEATH", "D"], dtype="str"),
    })
    for frame in (df, df.iloc[::-1].reset_index(drop=True)):
        rep = ValidationReport()
        count_birth_death(frame, rep)
        assert (rep.events_before_birth, rep.events_after_death) == (2, 1)
