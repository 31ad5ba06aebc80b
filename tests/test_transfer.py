"""Transfer to a second site: code maps read, applied and counted as events are read (load_data, the API), and
``ehrseq validate``'s site comparison on a small cohort with the realistic site shift."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
from conftest import MIMIC_COLUMN_MAP

from ehrseq import api, codes
from ehrseq.data.loading import load_data
from ehrseq.datacheck import format_summary, summarize_dataset
from ehrseq.errors import DataValidationError, EhrseqError
from ehrseq.io.code_map import apply_code_map, read_code_map, resolve_code_map, write_code_map
from ehrseq.synth.shift import LOCAL_LAB_CODES, code_map_to_a, resolve_shift


@pytest.fixture(scope="module")
def shifted(tmp_path_factory) -> dict:
    """A 160-patient realistic-shift cohort on disk (MEDS root + the generator's code map B -> A)."""
    out = tmp_path_factory.mktemp("shifted")
    api.synthesize(160, out=out, seed=4, extract=False, biopsy_rate=0.0, shift="realistic")
    root = out / "meds"
    return {"root": root, "map": root / "truth" / "code_map_b_to_a.csv"}


def test_read_code_map_csv_and_yaml_forms(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("\ufeffsource_code,target_code,description\nLAB//B-1,LAB//CRP,crp\n\nICD9//714.0, ICD10//M06.9 ,ra\n")
    assert read_code_map(csv) == {"LAB//B-1": "LAB//CRP", "ICD9//714.0": "ICD10//M06.9"}
    short = tmp_path / "s.csv"
    short.write_text("source,target\nA,B\nA,B\n")  # a repeated identical row is fine
    assert read_code_map(short) == {"A": "B"}
    for name, text in (("top.yaml", "A: B\nC: D\n"), ("nested.yml", "code_map:\n  A: B\n  C: D\n")):
        (tmp_path / name).write_text(text)
        assert read_code_map(tmp_path / name) == {"A": "B", "C": "D"}


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("cols.csv", "from,to\nLAB//SECRET-1,LAB//CRP\n", "no source_code and target_code columns"),
        ("empty.csv", "source_code,target_code\nLAB//SECRET-1,\n", "empty or non-text.*rows 2"),
        ("clash.csv", "source_code,target_code\nLAB//SECRET-1,LAB//CRP\nLAB//SECRET-1,LAB//ESR\n", "second.*rows 3"),
        ("none.csv", "source_code,target_code\n", "holds no entries"),
        ("list.yaml", "- LAB//SECRET-1\n", "not a YAML mapping"),
        ("num.yaml", "LAB//SECRET-1: 5\n", "non-text"),
        ("map.txt", "LAB//SECRET-1 LAB//CRP\n", "a .csv, .yaml or .yml file"),
    ],
)
def test_bad_code_map_files_fail_clearly_without_naming_codes(tmp_path, name, text, match):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(DataValidationError, match=match) as e:
        read_code_map(p)
    assert isinstance(e.value, EhrseqError) and name in str(e.value)
    assert "SECRET" not in str(e.value)


def test_missing_code_map_file_names_it(tmp_path):
    with pytest.raises(DataValidationError, match="code map file does not exist"):
        read_code_map(tmp_path / "nope.csv")


def test_apply_code_map_renames_and_counts_and_keeps_the_rest(make_events, caplog):
    ev = make_events([(1, None, "SITE//B", None), (1, "2020-01-01", "LAB//B-2210", 0.4),
                      (1, "2020-01-01", "LAB//B-2210", 0.5), (2, "2020-02-01", "LAB//CRP", 3.0),
                      (2, "2020-02-01", "ICD9//714.0", None)])
    before = ev.copy()
    mapping = {"LAB//B-2210": "LAB//CRP", "ICD9//714.0": "ICD10//M06.9", "ICD9//999": "ICD10//X"}
    with caplog.at_level(logging.INFO, logger="ehrseq.io.code_map"):
        out, counts = apply_code_map(ev, mapping)
    assert out["code"].tolist() == ["SITE//B", "LAB//CRP", "LAB//CRP", "LAB//CRP", "ICD10//M06.9"]
    assert counts == {"rows_remapped": 3, "codes_remapped": 2, "entries": 3, "entries_not_in_data": 1,
                      "per_code": {"LAB//B-2210": 2, "ICD9//714.0": 1}}
    assert "3 rows of 2 source codes renamed" in caplog.text
    pd.testing.assert_frame_equal(ev, before)  # the input is not changed
    pd.testing.assert_frame_equal(out.drop(columns="code"), ev.drop(columns="code"))
    assert out["code"].dtype == ev["code"].dtype


def test_apply_code_map_is_applied_once_not_chained(make_events):
    ev = make_events([(1, "2020-01-01", "X", None), (1, "2020-01-02", "Y", None)])
    out, counts = apply_code_map(ev, {"X": "Y", "Y": "X"})
    assert out["code"].tolist() == ["Y", "X"] and counts["rows_remapped"] == 2


def test_resolve_code_map_checks_a_mapping_like_a_file():
    assert resolve_code_map(None) is None
    assert resolve_code_map({"A": "B"}) == {"A": "B"}
    with pytest.raises(DataValidationError, match="empty or non-text"):
        resolve_code_map({"A": ""})


def test_write_code_map_round_trips(tmp_path):
    m = code_map_to_a(resolve_shift("realistic"))
    assert read_code_map(write_code_map(m, tmp_path / "m.csv")) == m


def test_load_data_applies_a_code_map_file_as_events_are_read(shifted):
    raw = load_data(shifted["root"])
    mapped = load_data(shifted["root"], code_map=shifted["map"])
    assert raw.events["code"].isin(LOCAL_LAB_CODES.values()).any()
    assert not mapped.events["code"].isin(LOCAL_LAB_CODES.values()).any()
    assert not mapped.events["code"].str.startswith("ICD9//").any()
    assert (mapped.events["code"] == codes.CRP).sum() > (raw.events["code"] == codes.CRP).sum()
    pd.testing.assert_frame_equal(mapped.splits, raw.splits)
    assert len(mapped.events) == len(raw.events)


@pytest.fixture(scope="module")
def rnn_a(shifted, tmp_path_factory):
    """A tiny RNN trained at site A of the shifted cohort (1 epoch)."""
    out = tmp_path_factory.mktemp("rnn") / "a"
    api.finetune(shifted["root"], out=out, target="cdai", model="rnn", preset="tiny", sites=["A"],
                 train={"epochs": 1, "progress": False}, n_bootstrap=0)
    return out


def test_predict_passes_the_code_map_through(shifted, rnn_a):
    b = load_data(shifted["root"])
    site_b = b.events["subject_id"].isin(b.events.loc[b.events["code"] == "SITE//B", "subject_id"])
    data_b = api.LoadedData(b.events.loc[site_b], b.splits, None, "B")
    plain = api.predict(rnn_a, data_b)
    by_arg = api.predict(rnn_a, data_b, code_map=shifted["map"])
    by_path = api.predict(rnn_a, shifted["root"], code_map=shifted["map"])
    premapped = api.predict(rnn_a, load_data(shifted["root"], code_map=shifted["map"]))
    pd.testing.assert_frame_equal(by_path, premapped)
    assert len(by_arg) == len(plain)
    assert not (by_arg["predicted_boolean_probability"].to_numpy() == plain["predicted_boolean_probability"].to_numpy()).all()  # B's labs now reach the model
    assert set(by_arg["subject_id"]) <= set(by_path["subject_id"])


def test_finetune_reads_through_the_code_map(shifted, rnn_a):
    res = api.finetune(shifted["root"], init=rnn_a, code_map=shifted["map"], target="cdai", model="rnn",
                       sites=["B"], train={"epochs": 1, "progress": False}, n_bootstrap=0)
    assert res.metrics["held_out"]["auroc"]["value"] is not None


def test_validate_compares_the_sites(shifted):
    s = summarize_dataset(shifted["root"])
    sites = s["sites"]
    assert sites["sites"] == ["A", "B"]
    only_b = sites["codes_one_site"]["B"]
    assert only_b["codes"] >= 10 and only_b["share_of_events"] > 0.2
    assert {"LAB//B-2210", "ICD9//714.0"} <= {r["code"] for r in only_b["examples"]}
    assert all(r["events"] >= 5 and r["subjects"] >= 2 for r in only_b["examples"])  # only common codes named
    cad = {k: v["days_between_visits"]["median"] for k, v in sites["per_site"].items()}
    assert cad["B"] > cad["A"]
    assert any("occur at no other site" in w for w in s["warnings"])
    text = format_summary(s)
    assert "sites: A, B" in text and "only at B:" in text and "days between visits" in text


def test_validate_flags_a_unit_difference_after_mapping(shifted, tmp_path):
    from ehrseq.io import write_meds

    mapped = load_data(shifted["root"], code_map=shifted["map"])
    root = write_meds(mapped.events, tmp_path / "meds", dataset_name="mapped")
    s = summarize_dataset(root)
    crp = next(r for r in s["sites"]["numeric"] if r["code"] == codes.CRP)
    assert crp["by_site"]["B"]["median"] < 0.2 * crp["by_site"]["A"]["median"]  # mg/dL at B
    assert crp["median_ratio"] > 5 and any("LAB//CRP: site medians differ" in w for w in s["warnings"])
    assert {"q1", "median", "q3", "n"} <= set(crp["by_site"]["A"])


def test_validate_has_no_site_section_without_two_sites(mimic_slice):
    s = summarize_dataset(mimic_slice, column_map=MIMIC_COLUMN_MAP)
    assert s["sites"] is None and "sites:" not in format_summary(s)


def test_cli_synth_realistic_writes_the_code_map_and_validate_compares_sites(tmp_path, capsys):
    from ehrseq.cli import main

    out = tmp_path / "c"
    assert main(["synth", "--n-patients", "80", "--shift", "realistic", "--shift-option", "policy=same",
                 "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "realistic site shift" in said and "code_map_b_to_a.csv" in said
    assert (out / "meds" / "truth" / "code_map_b_to_a.csv").is_file()
    assert not (out / "extract").exists()  # the extract's diagnoses table holds ICD-10 only
    assert main(["validate", "--data", str(out / "meds")]) == 0
    text = capsys.readouterr().out
    assert "sites: A, B" in text and "only at B:" in text


def test_cli_synth_rejects_a_bad_shift_option(tmp_path, capsys):
    from ehrseq.cli import main

    assert main(["synth", "--n-patients", "20", "--shift-option", "icd9=maybe", "--out", str(tmp_path)]) == 2
    assert "icd9" in capsys.readouterr().err


def test_cli_score_and_evaluate_read_through_the_code_map(shifted, rnn_a, tmp_path, capsys):
    from ehrseq.cli import main
    from ehrseq.io import write_meds

    data = str(shifted["root"])
    premapped = write_meds(load_data(data, code_map=shifted["map"]).events, tmp_path / "meds_mapped", dataset_name="m")
    for name, src, extra in (("plain", data, []), ("mapped", data, ["--code-map", str(shifted["map"])]),
                             ("premapped", str(premapped), [])):
        assert main(["score", "--artifact", str(rnn_a), "--data", src, "--out", str(tmp_path / name), *extra]) == 0
    capsys.readouterr()
    got = {k: pd.read_parquet(tmp_path / k).sort_values(["subject_id", "prediction_time"], ignore_index=True)
           for k in ("plain", "mapped", "premapped")}
    prob = "predicted_boolean_probability"
    assert len(got["mapped"]) == len(got["plain"]) == len(got["premapped"])
    assert not (got["mapped"][prob].to_numpy() == got["plain"][prob].to_numpy()).all()
    pd.testing.assert_series_equal(got["mapped"][prob], got["premapped"][prob])
    assert main(["evaluate", "--artifact", str(rnn_a), "--data", data, "--out", str(tmp_path / "rep"),
                 "--code-map", str(shifted["map"]), "--n-boot", "20", "--no-plots"]) == 0
    assert (tmp_path / "rep" / "report.json").is_file()
