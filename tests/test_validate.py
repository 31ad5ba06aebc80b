"""`ehrseq validate`: the dataset summary on real MIMIC data, a synthetic MEDS root and extract, and labels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ehrseq import api
from ehrseq.cli import main
from ehrseq.datacheck import format_summary, summarize_dataset
from ehrseq.errors import DataValidationError
from ehrseq.io import read_labels, read_meds, write_labels, write_meds
from ehrseq.labels import cdai_labels

MAP = ["--column-map", "value=numeric_value"]
PLANTED = ("NOTE//JANE DOE 1962-03-04", "MRN 998877 JANE DOE", "SEX//JANE DOE")


def run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["validate", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return api.synthesize(60, out=tmp_path_factory.mktemp("synth"), seed=2, extract=True)


# ------------------------------------------------------------------------------------------ MIMIC


def test_mimic_slice_counts_match_pandas(mimic_slice, capsys):
    raw = pd.read_parquet(mimic_slice)
    dups = int(raw[["subject_id", "time", "code", "value"]].duplicated().sum())
    assert dups > 0  # the export has exact duplicates; the summary must count them

    rc, out, _ = run(capsys, "--data", str(mimic_slice), *MAP, "--json")
    assert rc == 0
    s = json.loads(out)
    assert s["subjects"] == raw["subject_id"].nunique() == 34
    assert s["rows_read"] == len(raw)
    assert s["duplicates_dropped"] == dups
    assert s["events"] == len(raw) - dups
    assert s["distinct_codes"] == raw["code"].nunique()
    assert s["static"]["rows"] == int(raw["time"].isna().sum())
    assert s["nulls"]["time"] == int(raw["time"].isna().sum())
    dedup = raw.drop_duplicates(["subject_id", "time", "code", "value"])
    assert s["numeric"]["events_with_value"] == int(dedup["value"].notna().sum())
    per = dedup.groupby("subject_id").size()
    assert s["events_per_subject"] == {"min": per.min(), "median": float(per.median()), "max": per.max()}
    assert s["time_range"]["last"] == str(raw["time"].max().date())
    sex = s["conventions"]["sex"]
    assert sex["prefix"] == "GENDER//" and sex["subjects"] == 34
    assert s["conventions"]["death"]["subjects"] == raw.loc[raw["code"] == "MEDS_DEATH", "subject_id"].nunique()
    assert not any("GENDER//" in w for w in s["warnings"])  # GENDER// is read as sex (ehrseq.io.conventions)
    assert s["code_metadata"] == {"present": False} and s["subject_splits"] == {"present": False}

    rc, text, _ = run(capsys, "--data", str(mimic_slice), *MAP)
    assert rc == 0
    assert f"{dups:,} exact duplicates dropped" in text
    assert "no code metadata" in text and "GENDER//" in text
    top = raw["code"].str.split("//").str[0].value_counts().index[0]
    assert text.splitlines()[text.splitlines().index("code prefixes (before the first //):") + 1].split()[0] == top


def test_mimic_without_column_map_is_one_line_error(mimic_slice, capsys):
    rc, out, err = run(capsys, "--data", str(mimic_slice))
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert "'numeric_value'" in lines[0] and "--column-map value=numeric_value" in lines[0]
    assert "ehrseq validate" in lines[0]


# -------------------------------------------------------------------------------------- synthetic


def test_synthetic_meds_root_splits_metadata_and_conventions(synth, capsys):
    root = synth / "meds"
    events = read_meds(root).events
    splits = pd.read_parquet(root / "metadata" / "subject_splits.parquet")
    rc, out, _ = run(capsys, "--data", str(root), "--json")
    assert rc == 0
    s = json.loads(out)
    assert s["source"]["kind"] == "meds_root"
    assert s["dataset"]["dataset_name"] == "ehrseq-synthetic-ra"
    assert s["subjects"] == 60 and s["distinct_codes"] == events["code"].nunique()
    assert s["subject_splits"]["present"]
    assert s["subject_splits"]["sizes"] == splits["split"].value_counts().to_dict()
    assert s["subject_splits"]["subjects_without_split"] == 0
    assert s["code_metadata"]["present"] and s["code_metadata"]["codes_without_metadata"] == 0
    conv = s["conventions"]
    assert conv["birth"]["subjects"] == conv["sex"]["subjects"] == conv["site"]["subjects"] == 60
    assert conv["sex"]["prefix"] == "SEX//"
    assert {r["code"] for r in conv["site"]["codes"]} == {"SITE//A", "SITE//B"}
    text = format_summary(s)
    assert "MEDS root" in text and "train " in text and "ehrseq-synthetic-ra" in text


def test_synthetic_extract_matches_meds(synth, capsys):
    rc, out, _ = run(capsys, "--data", str(synth / "extract"), "--json")
    assert rc == 0
    s = json.loads(out)
    meds = summarize_dataset(synth / "meds")
    assert s["source"]["kind"] == "extract"
    for key in ("subjects", "events", "distinct_codes", "time_range", "events_per_subject"):
        assert s[key] == meds[key], key
    assert s["subject_splits"] == {"present": False} and s["code_metadata"] == {"present": False}
    assert s["report_labels"]["rows"] == int((read_meds(synth / "meds").events["code"] == "NOTE//TA_BIOPSY").sum())
    rc, _, err = run(capsys, "--data", str(synth / "extract"), *MAP)  # an extract takes no column map
    assert rc == 2 and "--column-map" in err and len(err.strip().splitlines()) == 1


def test_rare_codes_are_counted_never_named(synth, tmp_path, capsys):
    root = synth / "meds"
    events = read_meds(root).events
    sid = int(events["subject_id"].iloc[0])
    t = events.loc[events["time"].notna(), "time"].iloc[-1]
    rows = [(sid, t if not c.startswith("SEX//") else pd.NaT, c) for c in PLANTED for _ in range(3)]
    planted = pd.DataFrame(rows, columns=["subject_id", "time", "code"])
    planted["numeric_value"] = 123456.0
    planted["text_value"] = "Jane Doe, 12 Any Street"
    planted["time"] = planted["time"].astype("datetime64[us]")
    planted["time"] = planted["time"] + pd.to_timedelta(range(len(planted)), unit="s")  # not duplicates
    planted.loc[planted["code"].str.startswith("SEX//"), "time"] = pd.NaT
    new = write_meds(pd.concat([events, planted], ignore_index=True), tmp_path / "meds")
    shutil.copy(root / "metadata" / "subject_splits.parquet", new / "metadata" / "subject_splits.parquet")
    codes = pq.read_table(new / "metadata" / "codes.parquet").to_pandas()
    keep = codes.loc[~codes["code"].isin([*PLANTED, "LAB//CRP"])]
    pq.write_table(pa.Table.from_pandas(keep, preserve_index=False), new / "metadata" / "codes.parquet")

    rc_text, text, _ = run(capsys, "--data", str(new))
    rc_json, js, _ = run(capsys, "--data", str(new), "--json")
    assert rc_text == rc_json == 0
    for out in (text, js):
        for secret in ("JANE", "998877", "ANY STREET", "123456"):
            assert secret not in out.upper()
    s = json.loads(js)
    cm = s["code_metadata"]
    assert cm["codes_without_metadata"] == 1 + len(PLANTED)
    assert [r["code"] for r in cm["examples"]] == ["LAB//CRP"] and cm["examples_not_shown"] == len(PLANTED)
    assert s["codes_not_shown"] >= len(PLANTED)
    assert s["conventions"]["sex"]["subjects_with_several"] == 1
    assert s["distinct_codes"] == events["code"].nunique() + len(PLANTED)


# ----------------------------------------------------------------------------------------- labels


def test_labels_summary_and_mismatch(synth, tmp_path, capsys):
    root = synth / "meds"
    lab = cdai_labels(read_meds(root).events)
    path = write_labels(lab, tmp_path / "cdai.parquet")
    rc, out, _ = run(capsys, "--data", str(root), "--labels", str(path), "--json")
    assert rc == 0
    s = json.loads(out)["labels"]
    assert s["kind"] == "binary" and s["rows"] == len(lab)
    assert s["positive_rate"] == pytest.approx(float(lab["boolean_value"].mean()))
    assert s["match"]["rows"] == len(lab) and s["match"]["unknown_subject"] == 0
    assert s["rows_per_subject"]["max"] == lab.groupby("subject_id").size().max()
    rc, text, _ = run(capsys, "--data", str(root), "--labels", str(path))
    assert rc == 0 and "positive rate" in text and "(binary)" in text

    other = lab.assign(subject_id=lab["subject_id"] + 10**6)  # labels of another dataset
    bad = write_labels(other, tmp_path / "other.parquet")
    rc, out, err = run(capsys, "--data", str(root), "--labels", str(bad))
    assert rc == 2 and out == ""
    assert str(bad) in err and "do not match the data" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------ data-layer hints


def test_tables_without_a_column_map_say_rename(synth, tmp_path):
    lab = pd.DataFrame({"subject_id": [1], "pred_time": [pd.Timestamp("2020-01-01")], "boolean_value": [True]})
    path = tmp_path / "labels.parquet"
    lab.to_parquet(path)
    with pytest.raises(DataValidationError) as e:
        read_labels(path)
    assert "prediction_time" in str(e.value) and "Rename" in str(e.value)
    assert "column_map" not in str(e.value) and "--column-map" not in str(e.value)

    ext = tmp_path / "extract"
    shutil.copytree(synth / "extract", ext)
    pats = pd.read_csv(ext / "patients.csv").rename(columns={"birth_date": "dob"})
    pats.to_csv(ext / "patients.csv", index=False)
    with pytest.raises(DataValidationError) as e:
        summarize_dataset(ext)
    assert "birth_date" in str(e.value) and "--column-map" not in str(e.value)
