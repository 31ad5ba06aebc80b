"""ehrseq.scoring: streaming, quarantine, atomic resumable shards, schema, engines."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ehrseq import api, schemas
from ehrseq.artifacts import load_artifact, save_artifact
from ehrseq.errors import ArtifactError
from ehrseq.scoring import QuarantineLimitError, ScoringError, add_score_args, run_score, score

SCHEMA = schemas.schema_file("predictions")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("scoring")
    api.synthesize(160, out=tmp, extract=False)
    api.finetune(tmp / "meds", target="cdai", out=tmp / "art", preset="tiny",
                 train={"epochs": 1, "progress": False}, n_bootstrap=0)
    return {"meds": tmp / "meds", "art": tmp / "art", "tmp": tmp}


@pytest.fixture(scope="module")
def reference(cohort: dict[str, Path]) -> tuple[Path, pd.DataFrame]:
    """One uninterrupted run that other tests compare against."""
    out = cohort["tmp"] / "ref"
    score(cohort["art"], cohort["meds"], out, shard_rows=5000, batch_rows=3000)
    return out, pd.read_parquet(out)


def _events(cohort: dict[str, Path]) -> pd.DataFrame:
    return pq.read_table(cohort["meds"] / "data" / "0.parquet").to_pandas()


def test_predictions_equal_api_predict_and_match_the_schema(cohort, reference):
    import jsonschema

    from ehrseq.labels import prediction_times

    out, got = reference
    data = api.load_data(cohort["meds"])
    times = prediction_times("cdai", data.events)  # every CDAI measurement, the latest included
    want = api.predict(cohort["art"], data, labels=times)
    assert list(want.columns) == list(got.columns)  # one set of names: api.predict is what score writes
    m = got.merge(want, on=["subject_id", "prediction_time"], how="outer", indicator=True, suffixes=("", "_api"))
    assert (m["_merge"] == "both").all() and len(got) == len(want)
    np.testing.assert_allclose(m["predicted_boolean_probability"], m["predicted_boolean_probability_api"], atol=1e-6)
    assert (got["predicted_boolean_value"] == (got["predicted_boolean_probability"] >= 0.5)).all()
    art = load_artifact(cohort["art"])
    import hashlib

    from ehrseq.scoring.predict import artifact_of

    for part in sorted(out.glob("part-*.parquet")):  # provenance in each file's metadata, not in columns
        assert artifact_of(part) == {"artifact_id": art.artifact_id, "artifact_sha256": hashlib.sha256(
            (cohort["art"] / "manifest.json").read_bytes()).hexdigest()}
    assert "artifact_id" not in got
    t = pq.read_table(sorted(out.glob("part-*.parquet"))[0])
    assert t.schema.field("subject_id").type == pa.int64()
    assert t.schema.field("prediction_time").type == pa.timestamp("us")
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()),
                                                format_checker=jsonschema.FormatChecker())
    for row in got.assign(prediction_time=got["prediction_time"].map(lambda t: t.isoformat())).to_dict("records"):
        validator.validate({k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()})
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({**row, "predicted_boolean_probability": 1.5})
    done = json.loads((out / "_SUCCESS.json").read_text())
    assert done["rows_read"] == done["rows_accepted"] + done["rows_quarantined"] == len(_events(cohort))
    assert done["predictions_written"] == len(got) and done["shards"] == len(list(out.glob("part-*.parquet"))) > 1
    assert done["artifact_id"] == art.artifact_id


def test_output_order_follows_input_subjects_and_ignores_batch_rows(cohort, reference, tmp_path):
    _, ref = reference
    score(cohort["art"], cohort["meds"], tmp_path / "o", shard_rows=5000, batch_rows=777)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "o"), ref)
    sid = ref["subject_id"].to_numpy()
    assert (np.diff(sid) >= 0).all()  # the synthetic input is sorted by subject


def test_prefetching_shards_on_a_thread_changes_no_output(cohort, reference, tmp_path):
    ref_out, ref = reference  # prefetch=1, the default
    for k in (0, 3):
        s = score(cohort["art"], cohort["meds"], tmp_path / f"p{k}", shard_rows=5000, batch_rows=3000, prefetch=k)
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / f"p{k}"), ref)
        assert s.shards == len(list(ref_out.glob("part-*.parquet"))) > 2
        assert {"labels", "featurize", "views", "forward", "write"} <= set(s.timings)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="prefetch must be a whole number >= 0"):
            score(cohort["art"], cohort["meds"], tmp_path / "bad", prefetch=bad)


def test_killed_run_resumes_to_the_same_output(cohort, reference, tmp_path):
    out = tmp_path / "o"
    script = (
        "import os, sys\n"
        "from ehrseq.scoring import score\n"
        "def stop(i, p):\n"
        "    if i == 1: os._exit(3)\n"
        "score(sys.argv[1], sys.argv[2], sys.argv[3], shard_rows=5000, batch_rows=3000, after_shard=stop)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", script, str(cohort["art"]), str(cohort["meds"]), str(out)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stderr[-2000:]
    assert sorted(p.name for p in out.glob("part-*.parquet")) == ["part-00000.parquet", "part-00001.parquet"]
    assert not (out / "_SUCCESS.json").exists()
    s = score(cohort["art"], cohort["meds"], out, shard_rows=5000, batch_rows=5000)  # batch_rows is not identity
    assert s.shards_skipped == 2 and s.shards > 2
    ref_out, ref = reference
    pd.testing.assert_frame_equal(pd.read_parquet(out), ref)
    assert json.loads((out / "_SUCCESS.json").read_text())["predictions_written"] == len(ref)


def _corrupt(events: pd.DataFrame) -> tuple[pd.DataFrame, dict[int, str]]:
    """Text-typed subject_id/time columns with one bad row of each kind, and one subject split in two."""
    df = events.copy()
    df["subject_id"] = df["subject_id"].astype(str).astype(object)
    df["time"] = df["time"].dt.strftime("%Y-%m-%dT%H:%M:%S").astype(object).where(df["time"].notna(), None)
    bad = {100: "BAD_SUBJECT_ID", 200: "BAD_TIME", 300: "NULL_CODE", 400: "NONFINITE_VALUE"}
    df.loc[100, "subject_id"] = "not-an-id"
    df.loc[200, "time"] = "yesterday"
    df.loc[300, "code"] = None
    df.loc[400, "numeric_value"] = np.inf
    # The last 3 rows of the first subject move to the end: a reappearing subject.
    first = df["subject_id"] == df.loc[0, "subject_id"]
    moved = df.loc[first].tail(3)
    df = pd.concat([df.drop(moved.index), moved])
    pos = {old: new for new, old in enumerate(df.index)}
    bad = {pos[k]: v for k, v in bad.items()} | {pos[k]: "DUPLICATE_SUBJECT" for k in moved.index}
    df = df.reset_index(drop=True)
    return df, bad


def test_corrupt_rows_are_quarantined_counted_and_the_rest_scored(cohort, reference, tmp_path):
    df, bad = _corrupt(_events(cohort))
    data = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), data)
    s = score(cohort["art"], data, tmp_path / "o", shard_rows=5000, batch_rows=3000)
    q = pd.read_parquet(tmp_path / "o" / "_quarantine.parquet")
    assert list(q.columns) == ["subject_id", "reason_code", "source_file", "source_row"]  # never cell values
    assert dict(zip(q["source_row"], q["reason_code"])) == bad
    assert q.loc[q["reason_code"] == "BAD_SUBJECT_ID", "subject_id"].isna().all()
    assert q.loc[q["reason_code"] != "BAD_SUBJECT_ID", "subject_id"].notna().all()
    assert set(q["source_file"]) == {"bad.parquet"}
    assert s.rows_quarantined == len(bad) and s.rows_read == len(df) == s.rows_accepted + s.rows_quarantined
    assert s.quarantine_reasons["DUPLICATE_SUBJECT"] == 3
    got = pd.read_parquet(tmp_path / "o")
    _, ref = reference
    assert len(got) > 0.95 * len(ref) and got["predicted_boolean_probability"].notna().all()


def test_reappearing_subject_over_the_limit_names_the_id(cohort, tmp_path):
    df = _events(cohort)
    sid = int(df.loc[0, "subject_id"])
    moved = df.loc[df["subject_id"] == sid].tail(2)
    data = tmp_path / "dup.parquet"
    pq.write_table(pa.Table.from_pandas(pd.concat([df.drop(moved.index), moved]), preserve_index=False), data)
    with pytest.raises(QuarantineLimitError, match=rf"DUPLICATE_SUBJECT\): \[{sid}\]"):
        score(cohort["art"], data, tmp_path / "o", max_quarantine_fraction=0.0)


def test_quarantine_over_the_limit_aborts_and_keeps_finished_shards(cohort, tmp_path):
    df = _events(cohort)
    df.loc[df.index[-600:], "code"] = None  # 3% of the rows, all at the end
    data = tmp_path / "late.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), data)
    out = tmp_path / "o"
    with pytest.raises(QuarantineLimitError, match="max_quarantine_fraction=0.01.*kept") as err:
        score(cohort["art"], data, out, shard_rows=3000, batch_rows=1000)  # the next shard is read on a thread
    kept = sorted(out.glob("part-*.parquet"))
    assert len(kept) >= 2 and not (out / "_SUCCESS.json").exists()
    assert f"stopped after {len(kept)} shard(s)" in str(err.value)  # counted when the error reached the job
    assert (pd.read_parquet(out / "_quarantine.parquet")["reason_code"] == "NULL_CODE").all()
    s = score(cohort["art"], data, out, shard_rows=3000, batch_rows=1000, max_quarantine_fraction=0.05)
    assert s.shards_skipped == len(kept) and s.rows_quarantined == 600 and (out / "_SUCCESS.json").exists()


def test_tampered_or_foreign_format_artifact_is_refused(cohort, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(cohort["art"], art)
    cfg = json.loads((art / "config.json").read_text())
    cfg["task"] = "regression"
    (art / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="tampered"):
        score(art, cohort["meds"], tmp_path / "o1")
    a = load_artifact(cohort["art"])
    save_artifact(tmp_path / "old", state_dict=a.state_dict, config=a.config,
                  featurizer={**a.featurizer, "format": "ehrseq.featurizer/0"})
    with pytest.raises(ArtifactError, match="featurizer.json has format 'ehrseq.featurizer/0'"):
        score(tmp_path / "old", cohort["meds"], tmp_path / "o2")


def test_prediction_time_and_label_file_modes_and_foreign_out_refused(cohort, tmp_path):
    out = tmp_path / "o"
    s = score(cohort["art"], cohort["meds"], out, prediction_time="2020-01-01")
    got = pd.read_parquet(out)
    assert s.predictions_written == s.subjects_read == len(got) == got["subject_id"].nunique()
    assert (got["prediction_time"] == pd.Timestamp("2020-01-01")).all()
    with pytest.raises(ScoringError, match="different scoring job.*prediction_time"):
        score(cohort["art"], cohort["meds"], out, prediction_time="2021-01-01")
    ids = got["subject_id"].iloc[:3].tolist()
    lab = pd.DataFrame({"subject_id": [ids[2], ids[0], ids[0], 999_999_999],
                        "prediction_time": pd.to_datetime(["2019-06-01", "2019-01-01", "2020-01-01", "2020-01-01"])})
    lab.to_parquet(tmp_path / "labels.parquet")
    s = score(cohort["art"], cohort["meds"], tmp_path / "o2", labels=tmp_path / "labels.parquet")
    got2 = pd.read_parquet(tmp_path / "o2")
    assert got2["subject_id"].tolist() == [ids[0], ids[0], ids[2]] and s.label_rows_without_events == 1
    want = api.predict(cohort["art"], cohort["meds"], labels=lab.iloc[:3].sort_values(["subject_id", "prediction_time"]))
    m = got2.merge(want, on=["subject_id", "prediction_time"], suffixes=("", "_api"))
    np.testing.assert_allclose(m["predicted_boolean_probability"], m["predicted_boolean_probability_api"], atol=1e-6)
    assert got2.loc[got2["prediction_time"] == pd.Timestamp("2020-01-01"), "predicted_boolean_probability"].iloc[0] \
        == pytest.approx(got.loc[got["subject_id"] == ids[0], "predicted_boolean_probability"].iloc[0])


def test_cli_functions_parse_and_run(cohort, tmp_path, capsys):
    p = add_score_args(argparse.ArgumentParser())
    args = p.parse_args(["--artifact", str(cohort["art"]), "--data", str(cohort["meds"]), "--out",
                         str(tmp_path / "o"), "--prediction-time", "2020-01-01", "--shard-rows", "20000"])
    assert run_score(args) == 0
    assert json.loads(capsys.readouterr().out)["predictions_written"] > 0
    with pytest.raises(SystemExit):
        p.parse_args(["--artifact", "a", "--data", "d", "--out", "o", "--prediction-time", "x", "--labels", "l"])


def test_ray_engine_matches_local(cohort, reference, tmp_path):
    pytest.importorskip("ray", reason="the ray engine needs pip install 'ehrseq[ray]'")
    s = score(cohort["art"], cohort["meds"], tmp_path / "o", shard_rows=5000, batch_rows=3000, engine="ray")
    _, ref = reference
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "o"), ref)
    assert s.engine == "ray" and not (tmp_path / "o" / "_staging").exists()


def test_predict_meds_is_a_deprecated_alias_of_predict(cohort, reference):
    with pytest.warns(FutureWarning, match="api.predict"):
        old = api.predict_meds(cohort["art"], cohort["meds"])
    pd.testing.assert_frame_equal(old, api.predict(cohort["art"], cohort["meds"]))
