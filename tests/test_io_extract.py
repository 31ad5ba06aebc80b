"""EHR-extract tables: schemas, example files, conversion to canonical events, and the inverse writer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest

from ehrseq import codes, schemas
from ehrseq.errors import DataValidationError
from ehrseq.io import TABLES, ValidationPolicy, load_schema, read_extract, validate_events, write_extract

EXAMPLES = Path(__file__).resolve().parents[1] / "data_schemas" / "examples"


def copy_examples(tmp_path: Path, *tables: str) -> Path:
    out = tmp_path / "extract"
    out.mkdir()
    for t in tables or TABLES:
        shutil.copy(EXAMPLES / f"{t}.csv", out / f"{t}.csv")
    return out


def edit(path: Path, row: int, column: str, value: str) -> None:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[row, column] = value
    df.to_csv(path, index=False)


def test_schema_files_are_valid_draft_2020_12():
    assert set(TABLES) < set(schemas.SCHEMA_NAMES)
    for table in schemas.SCHEMA_NAMES:
        schema = json.loads(schemas.schema_file(table).read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"].endswith("2020-12/schema") and "subject_id" in schema["required"]
        assert all("description" in p for p in schema["properties"].values())


def test_example_files_pass_jsonschema_row_by_row():
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    for table in TABLES:
        schema = load_schema(table)
        validator = jsonschema.Draft202012Validator(schema, format_checker=checker)
        rows = pd.read_csv(EXAMPLES / f"{table}.csv", dtype=str, keep_default_na=False).to_dict("records")
        assert 3 <= len(rows) <= 6
        for row in rows:
            typed = {}
            for col, cell in row.items():
                types = schema["properties"].get(col, {}).get("type", "string")
                types = types if isinstance(types, list) else [types]
                typed[col] = (None if cell == "" else int(cell) if "integer" in types
                              else float(cell) if "number" in types else cell)
            validator.validate(typed)


def test_schemas_have_one_source_of_truth_in_the_package():
    # data_schemas/ is for people (README, examples); a second copy of a schema there would drift.
    assert not list(EXAMPLES.parent.glob("*.json"))
    assert all(schemas.schema_file(name).is_file() for name in schemas.SCHEMA_NAMES)


def custom_schema_dir(tmp_path: Path, table: str, column: str, **spec: object) -> Path:
    """A schema_dir holding the shipped schema of ``table`` with ``spec`` merged into one column."""
    out = tmp_path / f"schemas_{column}"
    out.mkdir()
    schema = json.loads(schemas.schema_file(table).read_text())
    schema["properties"][column].update(spec)
    (out / f"{table}.schema.json").write_text(json.dumps(schema))
    return out


def test_a_custom_schema_with_a_keyword_the_loader_would_skip_is_refused(tmp_path):
    extract = copy_examples(tmp_path, "patients")
    custom = custom_schema_dir(tmp_path, "patients", "site", maxLength=0)  # every example site breaks it
    with pytest.raises(DataValidationError, match=r"patients.schema.json, column 'site'.*maxLength"):
        read_extract(extract, schema_dir=custom)
    custom = custom_schema_dir(tmp_path, "patients", "death_date", format="date-time")
    with pytest.raises(DataValidationError, match=r"column 'death_date'.*format other than 'date'"):
        read_extract(extract, schema_dir=custom)


def test_an_invalid_custom_schema_names_the_file_and_key(tmp_path):
    extract = copy_examples(tmp_path, "patients")
    custom = custom_schema_dir(tmp_path, "patients", "sex", type="text")
    with pytest.raises(DataValidationError, match=r"patients.schema.json.*draft 2020-12.*properties/sex/type"):
        read_extract(extract, schema_dir=custom)
    with pytest.raises(DataValidationError, match=r"visits.schema.json: schema file does not exist"):
        load_schema("visits", str(custom))


def test_example_files_pass_the_loader_with_the_documented_codes():
    res = read_extract(EXAMPLES)
    ev = res.events
    assert set(ev["subject_id"]) == {1001, 1002, 1003}
    got = set(ev["code"])
    for code in ["MEDS_BIRTH", "MEDS_DEATH", "SEX//F", "SITE//A", "VISIT//OUTPATIENT", "VISIT//TELEPHONE",
                 "ICD10//M05.79", codes.ESR, codes.ANTI_CCP, "RX//METHOTREXATE", codes.CDAI,
                 codes.BIOPSY_REPORT, codes.FLARE, codes.BIOLOGIC_FAILURE]:
        assert code in got
    static = ev[ev["code"].str.startswith(("SEX//", "SITE//"))]
    assert static["time"].isna().all()
    crp = ev[ev["code"] == codes.CRP]
    assert crp["numeric_value"].tolist() == [np.float32(12.5)] and crp["time"].iloc[0] == pd.Timestamp("2019-02-01")
    assert np.isnan(ev.loc[ev["code"] == codes.RF, "numeric_value"].iloc[0])
    notes = ev[ev["code"] == codes.BIOPSY_REPORT]
    assert notes["text_value"].str.startswith("FAKE REPORT").all()
    labels = res.report_labels
    assert list(labels.columns) == ["subject_id", "time", "report_id", *codes.BIOPSY_LABELS]
    assert labels["gca"].tolist()[1:] == [1, 0] and pd.isna(labels["gca"].iloc[0])
    pd.testing.assert_frame_equal(ev, validate_events(ev)[0])  # already canonical


def test_only_patients_is_required(tmp_path):
    d = copy_examples(tmp_path, "patients")
    res = read_extract(d)
    assert len(res.events) == 3 * 3 + 1 and res.report_labels is None
    (d / "patients.csv").unlink()
    with pytest.raises(DataValidationError, match="patients table is missing"):
        read_extract(d)


def test_subject_missing_from_patients_names_table_and_ids(tmp_path):
    d = copy_examples(tmp_path, "patients", "labs")
    edit(d / "labs.csv", 2, "subject_id", "4242")
    with pytest.raises(DataValidationError) as e:
        read_extract(d)
    assert "labs.csv" in str(e.value) and e.value.subject_ids == [4242] and "patients" in str(e.value)


def test_enum_violation_names_column_and_subject_not_value(tmp_path):
    d = copy_examples(tmp_path, "patients")
    edit(d / "patients.csv", 1, "sex", "SECRET")
    with pytest.raises(DataValidationError) as e:
        read_extract(d)
    msg = str(e.value)
    assert "patients.csv" in msg and "'sex'" in msg and "1002" in msg and "SECRET" not in msg
    assert "F, M, U" in msg


def test_missing_required_column_names_file_and_similar_column(tmp_path):
    d = copy_examples(tmp_path, "patients", "labs")
    df = pd.read_csv(d / "labs.csv", dtype=str).rename(columns={"test": "test_name"})
    df.to_csv(d / "labs.csv", index=False)
    with pytest.raises(DataValidationError) as e:
        read_extract(d)
    assert "labs.csv" in str(e.value) and "'test'" in str(e.value) and "test_name" in str(e.value)


def test_bad_number_and_bad_date_are_errors_without_values(tmp_path):
    d = copy_examples(tmp_path, "patients", "disease_activity")
    edit(d / "disease_activity.csv", 2, "cdai", "SECRET")
    with pytest.raises(DataValidationError) as e:
        read_extract(d)
    assert "'cdai'" in str(e.value) and "1002" in str(e.value) and "SECRET" not in str(e.value)
    edit(d / "disease_activity.csv", 2, "cdai", "99")
    with pytest.raises(DataValidationError, match="between 0 and 76"):
        read_extract(d)
    edit(d / "disease_activity.csv", 2, "cdai", "9")
    edit(d / "disease_activity.csv", 0, "date", "2019-31-31")
    with pytest.raises(DataValidationError) as e:
        read_extract(d)
    assert "'date'" in str(e.value) and "1001" in str(e.value) and "2019-31-31" not in str(e.value)


def test_duplicate_patient_is_error(tmp_path):
    d = copy_examples(tmp_path, "patients")
    edit(d / "patients.csv", 2, "subject_id", "1001")
    with pytest.raises(DataValidationError) as e:
        read_extract(d)
    assert e.value.subject_ids == [1001] and "patients.csv" in str(e.value)


def test_ambiguous_dates_need_dayfirst(tmp_path):
    d = copy_examples(tmp_path, "patients")
    df = pd.read_csv(d / "patients.csv", dtype=str, keep_default_na=False)
    df["birth_date"] = ["01/02/1950", "03/04/1961", "05/06/1972"]
    df.to_csv(d / "patients.csv", index=False)
    with pytest.raises(DataValidationError, match="dayfirst") as e:
        read_extract(d)
    assert "01/02/1950" not in str(e.value)
    ev = read_extract(d, policy=ValidationPolicy(dayfirst=True)).events
    assert ev.loc[ev["code"] == codes.BIRTH, "time"].iloc[0] == pd.Timestamp("1950-02-01")


def test_parquet_tables_are_read_too(tmp_path):
    d = copy_examples(tmp_path, "patients")
    pats = pd.read_csv(d / "patients.csv", parse_dates=["birth_date", "death_date"])
    (d / "patients.csv").unlink()
    pats.to_parquet(d / "patients.parquet")
    ev = read_extract(d).events
    assert (ev["code"] == codes.DEATH).sum() == 1


def test_events_extract_events_round_trip(tmp_path):
    first = read_extract(EXAMPLES)
    extra = pd.DataFrame({"subject_id": [1002], "time": [pd.Timestamp("2020-07-01 13:45:10")],
                          "code": ["LAB//ESR"], "numeric_value": [np.float32(0.1)], "text_value": [None]})
    events = validate_events(pd.concat([first.events, extra], ignore_index=True))[0]
    written = write_extract(events, tmp_path / "copy", report_labels=first.report_labels)
    assert set(written) == set(TABLES)
    again = read_extract(tmp_path / "copy")
    pd.testing.assert_frame_equal(again.events, events)
    pd.testing.assert_frame_equal(again.report_labels, first.report_labels)


def test_write_extract_rejects_codes_it_cannot_hold(tmp_path):
    events = read_extract(EXAMPLES).events
    odd = pd.DataFrame({"subject_id": [1003], "time": [pd.Timestamp("2021-01-01")], "code": ["PROC//SECRET"],
                        "numeric_value": [np.nan], "text_value": [None]})
    with pytest.raises(DataValidationError) as e:
        write_extract(pd.concat([events, odd], ignore_index=True), tmp_path / "x")
    assert e.value.subject_ids == [1003] and "SECRET" not in str(e.value)
    no_sex = events[events["code"] != "SEX//U"]
    with pytest.raises(DataValidationError, match="SEX//") as e:
        write_extract(no_sex, tmp_path / "y")
    assert e.value.subject_ids == [1003]
