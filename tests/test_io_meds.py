"""MEDS reading/writing and boundary validation: each data problem gives a clear error or a counted repair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ehrseq.errors import DataValidationError
from ehrseq.io import (
    DATA_SCHEMA,
    ValidationPolicy,
    iter_meds_batches,
    read_codes,
    read_dataset_metadata,
    read_labels,
    read_meds,
    read_subject_splits,
    validate_events,
    write_labels,
    write_meds,
    write_subject_splits,
)


def raw_events() -> pd.DataFrame:
    """Three subjects, static rows and timed rows, already in canonical order."""
    return pd.DataFrame({
        "subject_id": [1, 1, 1, 2, 2, 3, 3, 3],
        "time": pd.to_datetime([None, "2020-01-01", "2020-02-01", None, "2021-05-05", None, "2019-01-01",
                                "2019-01-01"]),
        "code": ["SEX//F", "MEDS_BIRTH", "LAB//CRP", "SEX//M", "MEDS_BIRTH", "SEX//F", "MEDS_BIRTH", "NOTE//X"],
        "numeric_value": [np.nan, np.nan, 5.5, np.nan, np.nan, np.nan, np.nan, np.nan],
        "text_value": [None, None, None, None, None, None, None, "a note"],
    })


def write(df: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    return path


def assert_clean_error(err: DataValidationError, *, file: str | None, column: str | None, subject: object | None,
                       secret: str | None) -> None:
    msg = str(err)
    if file:
        assert file in msg
    if column:
        assert f"'{column}'" in msg
    if subject is not None:
        assert str(subject) in msg and subject in err.subject_ids
    if secret:
        assert secret not in msg


def check(df: pd.DataFrame, policy: ValidationPolicy | None = None) -> tuple[pd.DataFrame, object]:
    return validate_events(df, file="events.parquet", policy=policy)


# ------------------------------------------------------------------------------------- canonical frame


def test_canonical_dtypes_and_order():
    df, report = check(raw_events().iloc[::-1])
    assert list(df.columns) == ["subject_id", "time", "code", "numeric_value", "text_value"]
    assert df["subject_id"].dtype == np.int64
    assert df["time"].dtype == "datetime64[us]"
    assert df["numeric_value"].dtype == np.float32
    assert df["text_value"].dtype == object and df["text_value"].iloc[0] is None
    assert df.groupby("subject_id")["time"].apply(lambda t: pd.isna(t.iloc[0])).all()  # static first
    assert report.rows_moved_by_sort > 0


def test_unsorted_rows_are_sorted_stably_and_counted():
    raw = raw_events()
    order = [5, 6, 7, 0, 1, 2, 3, 4]  # subject 3 first; its two 2019-01-01 rows must keep their order
    df, report = check(raw.iloc[order])
    assert df["code"].tolist() == raw["code"].tolist()
    assert report.rows_moved_by_sort == 8


def test_missing_column_names_similar_columns_and_column_map():
    raw = raw_events().rename(columns={"numeric_value": "value"})
    with pytest.raises(DataValidationError) as e:
        check(raw)
    msg = str(e.value)
    assert "events.parquet" in msg and "'numeric_value'" in msg and "value" in msg
    assert "column_map={'value': 'numeric_value'}" in msg and "--column-map value=numeric_value" in msg


def test_column_map_value_and_extra_table_column(tmp_path):
    raw = raw_events().rename(columns={"numeric_value": "value", "subject_id": "patient_id"})
    raw["table"] = "labs"
    path = write(raw, tmp_path / "events.parquet")
    with pytest.raises(DataValidationError, match="patient_id"):
        read_meds(path)
    res = read_meds(path, column_map={"value": "numeric_value", "patient_id": "subject_id"})
    assert "table" not in res.events.columns
    assert res.events["numeric_value"].iloc[2] == np.float32(5.5)
    kept = read_meds(path, column_map={"value": "numeric_value", "patient_id": "subject_id"}, columns=["table"])
    assert kept.events["table"].tolist() == ["labs"] * 8


def test_float_subject_id_integral_converted_and_counted():
    raw = raw_events()
    raw["subject_id"] = raw["subject_id"].astype(float)
    df, report = check(raw)
    assert df["subject_id"].dtype == np.int64 and report.subject_id_from_float == 8


def test_float_subject_id_not_integral_is_error():
    raw = raw_events()
    raw["subject_id"] = raw["subject_id"].astype(float)
    raw.loc[2, "subject_id"] = 1.25
    with pytest.raises(DataValidationError) as e:
        check(raw)
    assert_clean_error(e.value, file="events.parquet", column="subject_id", subject=None, secret="1.25")
    assert "whole numbers" in str(e.value)


def test_null_subject_id_is_error():
    raw = raw_events()
    raw["subject_id"] = raw["subject_id"].astype("Int64")
    raw.loc[4, "subject_id"] = pd.NA
    with pytest.raises(DataValidationError) as e:
        check(raw)
    assert_clean_error(e.value, file="events.parquet", column="subject_id", subject=None, secret=None)
    assert e.value.n_rows == 1 and "5" in str(e.value)  # row number, 1-based


def test_null_code_is_error_naming_subject():
    raw = raw_events()
    raw.loc[4, "code"] = None
    with pytest.raises(DataValidationError) as e:
        check(raw)
    assert_clean_error(e.value, file="events.parquet", column="code", subject=2, secret=None)


def test_unparseable_timestamp_is_error_without_value():
    raw = raw_events()
    raw["time"] = raw["time"].dt.strftime("%Y-%m-%d").astype(object)
    raw.loc[4, "time"] = "SECRET-2021"
    with pytest.raises(DataValidationError) as e:
        check(raw)
    assert_clean_error(e.value, file="events.parquet", column="time", subject=2, secret="SECRET")
    assert e.value.n_rows == 1


def test_mixed_timezones_error_unless_utc():
    raw = raw_events()
    raw["time"] = [None, "2020-01-01T10:00:00+01:00", "2020-02-01T10:00:00+02:00", None,
                   "2021-05-05T08:00:00+01:00", None, "2019-01-01T00:00:00Z", "2019-01-01T00:00:00Z"]
    with pytest.raises(DataValidationError) as e:
        check(raw)
    assert_clean_error(e.value, file="events.parquet", column="time", subject=1, secret="+02:00")
    assert "utc=True" in str(e.value)
    df, report = check(raw, ValidationPolicy(utc=True))
    assert df["time"].iloc[1] == pd.Timestamp("2020-01-01T09:00:00") and report.timezone_converted == 5


def test_tz_aware_column_converted_to_naive_utc(tmp_path):
    raw = raw_events()
    raw["time"] = raw["time"].dt.tz_localize("Europe/Paris")
    res = read_meds(write(raw, tmp_path / "tz.parquet"))
    assert res.events["time"].dt.tz is None
    assert res.events["time"].iloc[1] == pd.Timestamp("2019-12-31T23:00:00")
    assert res.report.timezone_converted == 5


def test_ambiguous_day_month_is_error_until_dayfirst_set():
    raw = raw_events()
    raw["time"] = [None, "03/04/2020", "05/06/2020", None, "01/02/2021", None, "07/08/2019", "07/08/2019"]
    with pytest.raises(DataValidationError) as e:
        check(raw)
    assert_clean_error(e.value, file="events.parquet", column="time", subject=1, secret="03/04/2020")
    assert "dayfirst" in str(e.value)
    df, _ = check(raw, ValidationPolicy(dayfirst=True))
    assert df["time"].iloc[1] == pd.Timestamp("2020-04-03")
    df, _ = check(raw, ValidationPolicy(dayfirst=False))
    assert df["time"].iloc[1] == pd.Timestamp("2020-03-04")
    raw.loc[2, "time"] = "25/06/2020"  # a day > 12 settles the order
    df, report = check(raw)
    assert df["time"].iloc[1] == pd.Timestamp("2020-04-03") and report.dayfirst_inferred == 1


def test_duplicates_dropped_by_default_or_error_or_kept():
    raw = pd.concat([raw_events(), raw_events().iloc[[2]]], ignore_index=True)
    df, report = check(raw)
    assert len(df) == 8 and report.duplicates_dropped == 1
    with pytest.raises(DataValidationError) as e:
        check(raw, ValidationPolicy(duplicates="error"))
    assert_clean_error(e.value, file="events.parquet", column=None, subject=1, secret="LAB//CRP")
    df, report = check(raw, ValidationPolicy(duplicates="keep"))
    assert len(df) == 9 and report.duplicates_kept == 1


def test_empty_table_is_error(tmp_path):
    path = write(raw_events().iloc[:0], tmp_path / "empty.parquet")
    with pytest.raises(DataValidationError, match="no rows") as e:
        read_meds(path)
    assert "empty.parquet" in str(e.value)


def test_nonfinite_numbers_nulled_dropped_or_error():
    raw = raw_events()
    raw.loc[2, "numeric_value"] = np.inf
    raw.loc[4, "numeric_value"] = -np.inf
    df, report = check(raw)
    assert len(df) == 8 and df["numeric_value"].isna().all() and report.nonfinite_nulled == 2
    df, report = check(raw, ValidationPolicy(nonfinite="drop"))
    # subject 2 is left with only a static row, so it is skipped as well
    assert len(df) == 5 and report.nonfinite_dropped == 2 and report.empty_subjects_skipped == 1
    with pytest.raises(DataValidationError) as e:
        check(raw, ValidationPolicy(nonfinite="error"))
    assert_clean_error(e.value, file="events.parquet", column="numeric_value", subject=1, secret=None)


def test_numeric_text_that_is_not_a_number_is_error():
    raw = raw_events()
    raw["numeric_value"] = raw["numeric_value"].astype(object)
    raw.loc[2, "numeric_value"] = "SECRET"
    with pytest.raises(DataValidationError) as e:
        check(raw)
    assert_clean_error(e.value, file="events.parquet", column="numeric_value", subject=1, secret="SECRET")


def test_subjects_with_only_static_rows_skipped_with_one_count():
    raw = pd.concat([raw_events(), pd.DataFrame({"subject_id": [9, 9, 8], "time": pd.NaT,
                                                 "code": ["SEX//F", "SITE//A", "SEX//M"],
                                                 "numeric_value": np.nan, "text_value": None})],
                    ignore_index=True)
    df, report = check(raw)
    assert set(df["subject_id"]) == {1, 2, 3} and report.empty_subjects_skipped == 2
    df, _ = check(raw, ValidationPolicy(empty_subjects="keep"))
    assert set(df["subject_id"]) == {1, 2, 3, 8, 9}


# ------------------------------------------------------------------------------------------ layouts


def test_directory_of_shards_and_meds_root(tmp_path):
    raw = raw_events()
    write(raw.iloc[5:], tmp_path / "shards" / "b" / "1.parquet")  # recursive, sorted by path
    write(raw.iloc[:5], tmp_path / "shards" / "a" / "0.parquet")
    expected = check(raw)[0]
    pd.testing.assert_frame_equal(read_meds(tmp_path / "shards").events, expected)
    root = tmp_path / "root"
    write(raw.iloc[:5], root / "data" / "train" / "0.parquet")
    write(raw.iloc[5:], root / "data" / "held_out" / "0.parquet")
    (root / "metadata").mkdir()
    res = read_meds(root)
    pd.testing.assert_frame_equal(res.events, expected)
    assert len(res.report.files) == 2 and res.report.rows_read == 8


def test_write_meds_read_meds_round_trip(tmp_path):
    events = check(raw_events())[0]
    root = write_meds(events, tmp_path / "meds", shard_size=2, dataset_name="toy")
    shards = sorted((root / "data").glob("*.parquet"))
    assert [s.name for s in shards] == ["0.parquet", "1.parquet"]
    per_shard = [set(pq.read_table(s).column("subject_id").to_pylist()) for s in shards]
    assert per_shard == [{1, 2}, {3}]
    assert pq.read_schema(shards[0]).remove_metadata() == DATA_SCHEMA
    pd.testing.assert_frame_equal(read_meds(root).events, events)
    meta = read_dataset_metadata(root)
    assert meta["meds_version"] == "0.4" and meta["etl_name"] == "ehrseq" and meta["dataset_name"] == "toy"
    codes = read_codes(root)
    assert sorted(codes["code"]) == sorted(events["code"].unique()) and codes["description"].isna().all()
    with pytest.raises(FileExistsError):
        write_meds(events, root)
    write_meds(events, root, shard_size=10, overwrite=True)
    assert len(list((root / "data").glob("*.parquet"))) == 1


def test_subject_splits_round_trip_and_errors(tmp_path):
    splits = pd.DataFrame({"subject_id": [3, 1, 2], "split": ["held_out", "train", "tuning"]})
    write_subject_splits(splits, tmp_path)
    back = read_subject_splits(tmp_path)
    assert back["subject_id"].tolist() == [1, 2, 3] and back["split"].tolist() == ["train", "tuning", "held_out"]
    assert back["subject_id"].dtype == np.int64
    with pytest.raises(DataValidationError) as e:
        write_subject_splits(pd.DataFrame({"subject_id": [1, 2], "split": ["train", "SECRET"]}), tmp_path)
    assert_clean_error(e.value, file="subject_splits.parquet", column="split", subject=2, secret="SECRET")
    with pytest.raises(DataValidationError) as e:
        write_subject_splits(pd.DataFrame({"subject_id": [1, 7, 7], "split": ["train", "train", "tuning"]}),
                             tmp_path)
    assert_clean_error(e.value, file="subject_splits.parquet", column="subject_id", subject=7, secret=None)


def test_labels_round_trip(tmp_path):
    labels = pd.DataFrame({
        "subject_id": [2, 1, 1],
        "prediction_time": pd.to_datetime(["2021-01-01", "2020-06-01", "2020-01-01"]),
        "boolean_value": [True, None, False],
    })
    path = write_labels(labels, tmp_path / "labels" / "flare.parquet")
    back = read_labels(tmp_path / "labels")
    assert back["subject_id"].tolist() == [1, 1, 2]
    assert back["prediction_time"].dtype == "datetime64[us]"
    assert back["boolean_value"].tolist()[0] is False and pd.isna(back["boolean_value"].iloc[1])
    assert back["integer_value"].isna().all() and back["categorical_value"].tolist() == [None] * 3
    assert pq.read_schema(path).field("float_value").type == pa.float64()
    bad = labels.assign(prediction_time=[pd.NaT, *labels["prediction_time"][1:]])
    with pytest.raises(DataValidationError) as e:
        write_labels(bad, tmp_path / "bad.parquet")
    assert_clean_error(e.value, file="bad.parquet", column="prediction_time", subject=2, secret=None)


# ---------------------------------------------------------------------------------------- streaming


def big_events(n_subjects: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 9, n_subjects)
    sid = np.repeat(np.arange(n_subjects) * 3 + 5, sizes)
    return pd.DataFrame({
        "subject_id": sid,
        "time": pd.Timestamp("2020-01-01") + pd.to_timedelta(np.arange(len(sid)), unit="D"),
        "code": "LAB//ESR",
        "numeric_value": rng.normal(size=len(sid)).astype("float32"),
        "text_value": None,
    })


def test_streaming_batches_yield_whole_subjects_and_concatenate_to_full_read(tmp_path):
    events = check(big_events())[0]
    root = write_meds(events, tmp_path / "meds", shard_size=7)
    frames = list(iter_meds_batches(root, batch_rows=5))
    assert len(frames) > 5
    seen: set[int] = set()
    for f in frames:
        ids = set(f["subject_id"])
        assert not ids & seen
        seen |= ids
    full = read_meds(root).events
    pd.testing.assert_frame_equal(pd.concat(frames, ignore_index=True), full)
    for f in frames:  # every yielded subject is complete
        for sid, rows in f.groupby("subject_id"):
            assert len(rows) == int((full["subject_id"] == sid).sum())


def test_streaming_raises_when_a_subject_reappears(tmp_path):
    raw = raw_events()
    write(raw.iloc[[0, 1, 3, 4, 2]], tmp_path / "unsorted.parquet")  # subject 1 again after subject 2
    with pytest.raises(DataValidationError, match="reappears") as e:
        list(iter_meds_batches(tmp_path / "unsorted.parquet", batch_rows=2))
    assert 1 in e.value.subject_ids
