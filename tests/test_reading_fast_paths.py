"""The Arrow / numpy shortcuts of the scoring reader give exactly what the general paths give: the row checks of
``check_rows`` on canonical dtypes, ``rowkeys._codes`` on Arrow strings, ``to_text`` on a string column and
``tidy_events(birth_death=False)``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehrseq.io import rowkeys
from ehrseq.io.validate import ValidationPolicy, ValidationReport, coerce_events, tidy_events, to_text
from ehrseq.scoring.reading import check_rows

_CODES = np.array(["LAB//A", "", " ", "\u3000", "DX//B", None, "MEDS_BIRTH", "é", "\t\n"], dtype=object)


def _raw(n: int, seed: int) -> pd.DataFrame:
    """Raw MEDS rows as Parquet gives them to pandas: int64 ids, timestamps (some implausible, some NaT), Arrow
    string codes (blank, null, unicode space), float32 values (inf) and float64 overflowing float32."""
    rng = np.random.default_rng(seed)
    t = np.datetime64("2020-01-01", "us") + rng.integers(0, 1000, n) * np.timedelta64(1, "D")
    t[rng.random(n) < 0.1] = np.datetime64("NaT")
    t[rng.random(n) < 0.05] = np.datetime64("0001-01-01", "us")
    v = rng.choice(np.array([np.nan, 1.5, np.inf, -np.inf, 1e39, 2.0]), n)
    return pd.DataFrame({
        "subject_id": np.sort(rng.integers(1, 40, n)).astype(np.int64),
        "time": pd.Series(t, dtype="datetime64[us]"),
        "code": pd.Series(rng.choice(_CODES, n), dtype="str"),
        "numeric_value": v,
        "text_value": pd.Series(rng.choice(np.array([None, "x", " ", "note"], dtype=object), n), dtype="str"),
    })


@pytest.mark.parametrize("seed", [0, 1])
def test_check_rows_fast_paths_match_the_general_ones(seed: int) -> None:
    raw = _raw(2000, seed)
    fast_reason, fast_ids = check_rows(raw, ValidationPolicy())
    general = raw.assign(subject_id=raw["subject_id"].astype("Int64"), code=raw["code"].astype(object))
    reason, ids = check_rows(general, ValidationPolicy())
    assert set(reason[reason != None]) >= {"NULL_CODE", "IMPLAUSIBLE_TIME", "NONFINITE_VALUE", "BAD_VALUE"}  # noqa: E711
    np.testing.assert_array_equal(fast_reason, reason)
    np.testing.assert_array_equal(fast_ids, ids)


def test_arrow_string_codes_partition_rows_as_factorize_does() -> None:
    s = pd.Series(np.random.default_rng(0).choice(_CODES, 500), dtype="str")
    chunked = pd.concat([s.iloc[:200], s.iloc[200:]], ignore_index=True)  # two Arrow chunks
    want = pd.factorize(s)[0]
    for col in (s, chunked):
        got = rowkeys._codes(col)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got == -1, want == -1)
        np.testing.assert_array_equal(got[:, None] == got[None, :], want[:, None] == want[None, :])


@pytest.mark.parametrize("blank_is_null", [False, True])
def test_to_text_of_a_string_column_matches_the_object_path(blank_is_null: bool) -> None:
    values = np.random.default_rng(1).choice(np.array([None, "a", " ", "", " b ", "\u3000"], dtype=object), 300)
    for dtype in ("str", pd.StringDtype("python")):
        got = to_text(pd.Series(values, dtype=dtype), blank_is_null=blank_is_null)
        want = to_text(pd.Series(values, dtype=object), blank_is_null=blank_is_null)
        assert got.dtype == object and got.tolist() == want.tolist()
    assert to_text(pd.Series([None, None], dtype="str")).tolist() == [None, None]


def test_tidy_events_without_birth_death_counts_gives_the_same_rows() -> None:
    raw = _raw(1500, 2)
    ok, _ = check_rows(raw, ValidationPolicy())
    frame, _ = coerce_events(raw.loc[ok == None].reset_index(drop=True))  # noqa: E711
    frame = pd.concat([frame, frame.iloc[:50]], ignore_index=True)  # duplicate rows to drop
    a, ra = tidy_events(frame, report=ValidationReport())
    b, rb = tidy_events(frame, report=ValidationReport(), birth_death=False)
    pd.testing.assert_frame_equal(a, b)
    assert ra.events_before_birth > 0 and rb.events_before_birth == 0
    assert ra.duplicates_dropped == rb.duplicates_dropped > 0
