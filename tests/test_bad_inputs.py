"""Bad input, faults and tampering (issue 14): each case a small inline fixture and its exact outcome.

The table in data_schemas/README.md ("Bad input: what ehrseq does") lists the same cases. One tiny RNN (1 epoch,
60 synthetic patients) is trained per module; every other case fails before training, by design.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ehrseq import api
from ehrseq.artifacts import _manifest_digest, load_artifact, sha256_file
from ehrseq.cli import build_parser, main
from ehrseq.errors import ArtifactError, ConfigError, DataValidationError, TargetError
from ehrseq.io import DATA_SCHEMA, ValidationPolicy, read_extract, read_meds, write_meds
from ehrseq.io.guards import OutputExistsError, OutputLock, OutputLockedError
from ehrseq.scoring import score

MARKER = "LOCAL//ZQXMARKER7731"  # a code seen once in training: must never reach an artifact
T_PRED = "2100-01-01"  # after every synthetic event: predict from whole histories


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 60-patient synthetic MEDS root with MARKER planted in one train subject's record, and a tiny RNN
    trained on it (1 epoch)."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    api.synthesize(60, out=tmp / "c", extract=False, seed=0)
    meds = tmp / "c" / "meds"
    ev = read_meds(meds).events
    splits = pq.read_table(meds / "metadata" / "subject_splits.parquet").to_pandas()
    sid = int(splits.loc[splits["split"] == "train", "subject_id"].iloc[0])
    t = ev.loc[(ev["subject_id"] == sid) & ev["time"].notna(), "time"].iloc[-1]
    planted = pd.DataFrame({"subject_id": [sid], "time": [t], "code": [MARKER], "numeric_value": [np.float32(3.0)],
                            "text_value": [None]})
    write_meds(pd.concat([ev, planted], ignore_index=True), meds, overwrite=True)
    api.finetune(meds, target="cdai", out=tmp / "art", preset="tiny", train={"epochs": 1, "progress": False},
                 n_bootstrap=0)
    return {"tmp": tmp, "meds": meds, "art": tmp / "art", "marker_subject": sid}


def _events(world: dict[str, Any], n_subjects: int = 6) -> pd.DataFrame:
    ev = pq.read_table(world["meds"] / "data" / "0.parquet").to_pandas()
    keep = ev["subject_id"].unique()[:n_subjects]
    return ev.loc[ev["subject_id"].isin(keep)].reset_index(drop=True)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def _one_clean_line(err: str) -> None:
    assert "Traceback" not in err
    lines = [x for x in err.strip().splitlines() if not x.startswith(("WARNING", "INFO", "usage:"))]
    assert len(lines) == 1, err


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _readable(path: Path) -> dict[str, bytes]:
    """Every file of an artifact as bytes; of the weights only the JSON header (the tensors are floats, where
    any two bytes occur by chance)."""
    out = _tree(path)
    w = out.get("model.safetensors")
    if w is not None:
        out["model.safetensors"] = w[8:8 + int.from_bytes(w[:8], "little")]
    return out


# ---------------------------------------------------------------------------------- 1. subject ids, never merged
@pytest.mark.parametrize("values, problem", [
    (np.array([1e20, 1e20 + 2**40, 3.0]), "floating point at or above 2**53"),
    (np.array([2.0**53 + 2, 5.0, 6.0]), "floating point at or above 2**53"),
    (np.array([2**63 + 5, 2**63 + 6, 7], dtype=np.uint64), "outside the int64 range"),
    (np.array([1.5, 2.0, 3.0]), "not whole numbers"),
])
def test_subject_ids_that_cannot_be_int64_are_refused_naming_file_column_rows(tmp_path, capsys, values, problem):
    f = tmp_path / "events.parquet"
    n = len(values)
    pq.write_table(pa.table({"subject_id": values, "time": pd.to_datetime(["2020-01-01"] * n).astype("datetime64[us]"),
                             "code": ["X"] * n, "numeric_value": np.ones(n, np.float32)}), f)
    with pytest.raises(DataValidationError, match=re.escape(problem)) as e:
        read_meds(f)
    assert e.value.file == str(f) and e.value.column == "subject_id" and e.value.n_rows >= 1
    code, err = _cli(capsys, "validate", "--data", str(f))
    assert code == 2 and str(f) in err and "subject_id" in err
    _one_clean_line(err)


def test_text_subject_id_beyond_int64_in_an_extract_names_the_csv(tmp_path):
    d = tmp_path / "x"
    d.mkdir()
    (d / "patients.csv").write_text("subject_id,birth_date,sex,site\n18446744073709551621,1950-01-01,F,A\n"
                                    "2,1950-01-01,M,A\n")
    with pytest.raises(DataValidationError, match="outside the int64 range") as e:
        read_extract(d)
    assert e.value.file == str(d / "patients.csv") and e.value.column == "subject_id" and e.value.n_rows == 1


def test_scoring_keeps_large_int64_ids_apart_and_quarantines_uint64_overflow(world, tmp_path):
    ev = _events(world, 4)
    big = {s: 2**60 + i for i, s in enumerate(ev["subject_id"].unique())}  # float64 would make these one id
    f = tmp_path / "in" / "0.parquet"
    f.parent.mkdir()
    pq.write_table(pa.Table.from_pandas(ev.assign(subject_id=ev["subject_id"].map(big)), preserve_index=False), f)
    s = score(world["art"], f.parent, tmp_path / "o", prediction_time=T_PRED)
    got = pd.read_parquet(tmp_path / "o")
    assert sorted(got["subject_id"]) == sorted(big.values()) and s.rows_quarantined == 0
    u = ev.assign(subject_id=ev["subject_id"].map({s: i for i, s in enumerate(big)}).astype(np.uint64))
    u.loc[u["subject_id"] == 3, "subject_id"] = np.uint64(2**63 + 5)
    f2 = tmp_path / "u" / "0.parquet"
    f2.parent.mkdir()
    pq.write_table(pa.Table.from_pandas(u, preserve_index=False), f2)
    s2 = score(world["art"], f2.parent, tmp_path / "o2", prediction_time=T_PRED, max_quarantine_fraction=1.0)
    q = pd.read_parquet(tmp_path / "o2" / "_quarantine.parquet")
    assert s2.quarantine_reasons == {"BAD_SUBJECT_ID": int((u["subject_id"] > 2**62).sum())}
    assert q["subject_id"].isna().all()  # unreadable ids are null, never a wrapped value
    assert set(pd.read_parquet(tmp_path / "o2")["subject_id"]) == {0, 1, 2}


# ------------------------------------------------------------------------- 2. scoring identity, quarantine, lock
def _plain(df: pd.DataFrame, path: Path) -> None:
    """Uncompressed, plain-encoded, no statistics: changing one float keeps the file's size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, compression="none", use_dictionary=False,
                   write_statistics=False)


def test_input_edited_in_place_at_the_same_size_is_another_job(world, tmp_path, capsys):
    ev = _events(world)
    f = tmp_path / "in" / "0.parquet"
    _plain(ev, f)
    out = tmp_path / "o"
    score(world["art"], f.parent, out, prediction_time=T_PRED)
    size = f.stat().st_size
    edited = ev.copy()
    row = int(np.flatnonzero(edited["numeric_value"].notna())[0])
    edited.loc[row, "numeric_value"] = edited.loc[row, "numeric_value"] + 1
    _plain(edited, f)
    assert f.stat().st_size == size
    before = _tree(out)
    code, err = _cli(capsys, "score", "--artifact", str(world["art"]), "--data", str(f.parent), "--out", str(out),
                     "--prediction-time", T_PRED)
    assert code == 2 and "different scoring job (differs in: data)" in err and "--overwrite" in err
    assert _tree(out) == before  # the old output is untouched
    s = score(world["art"], f.parent, out, prediction_time=T_PRED, overwrite=True)
    assert s.shards_skipped == 0 and json.loads((out / "_SUCCESS.json").read_text())["rows_read"] == len(ev)


def _dmy_events(bad_row: bool = True) -> pd.DataFrame:
    """Day/month/year text times: only the last subject has a day > 12, which settles the order for the file."""
    rows = []
    for s in range(1, 9):
        for v in range(3):
            day = 25 if s == 8 else (s + v) % 12 + 1
            rows.append((s, f"{day:02d}/{v + 3:02d}/2020 10:00:00", "SCORE//CDAI", float(10 + s + v)))
    if bad_row:
        rows.append((4, "not a date", "SCORE//CDAI", 12.0))
    df = pd.DataFrame(rows, columns=["subject_id", "time", "code", "numeric_value"])
    return df.sort_values("subject_id", kind="stable").reset_index(drop=True)


def test_quarantine_and_predictions_do_not_depend_on_batch_rows(world, tmp_path):
    f = tmp_path / "in" / "0.parquet"
    f.parent.mkdir()
    pq.write_table(pa.Table.from_pandas(_dmy_events(), preserve_index=False), f)
    runs = {}
    for b in (5, 7, 100_000):
        out = tmp_path / f"o{b}"
        s = score(world["art"], f.parent, out, prediction_time=T_PRED, batch_rows=b, max_quarantine_fraction=0.5)
        runs[b] = (s.quarantine_reasons, pd.read_parquet(out), pd.read_parquet(out / "_quarantine.parquet"))
    for b in (5, 7):
        assert runs[b][0] == runs[100_000][0] == {"BAD_TIME": 1}
        pd.testing.assert_frame_equal(runs[b][1], runs[100_000][1])
        pd.testing.assert_frame_equal(runs[b][2], runs[100_000][2])
    assert len(runs[5][1]) == 8


def test_mixed_time_zones_are_judged_per_file_and_refused_before_any_output(world, tmp_path, capsys):
    df = _dmy_events(bad_row=False).assign(time=lambda d: [f"2020-03-{i % 28 + 1:02d}T10:00:00+01:00"
                                                           for i in range(len(d))])
    df.loc[len(df) - 1, "time"] = "2020-03-05T10:00:00+02:00"  # one row in another zone, in the last batch
    f = tmp_path / "in" / "0.parquet"
    f.parent.mkdir()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), f)
    for b in ("5", "100000"):
        out = tmp_path / f"o{b}"
        code, err = _cli(capsys, "score", "--artifact", str(world["art"]), "--data", str(f.parent), "--out",
                         str(out), "--prediction-time", T_PRED, "--batch-rows", b)
        assert code == 2 and "0.parquet" in err and "column 'time'" in err and "mixes time zones" in err
        assert not out.exists()


def test_a_second_scorer_on_the_same_out_is_refused_and_a_dead_ones_lock_taken_over(world, tmp_path, capsys,
                                                                                   caplog):
    f = tmp_path / "in" / "0.parquet"
    f.parent.mkdir()
    pq.write_table(pa.Table.from_pandas(_events(world), preserve_index=False), f)
    out = tmp_path / "o"
    args = ("score", "--artifact", str(world["art"]), "--data", str(f.parent), "--out", str(out),
            "--prediction-time", T_PRED)
    with OutputLock(out.parent / "o_lock_probe"):  # the lock class itself: O_EXCL, refused while held
        with pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"):
            OutputLock(out.parent / "o_lock_probe").acquire()
    out.mkdir()
    (out / "_lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "started": "now"}))
    code, err = _cli(capsys, *args)
    assert code == 2 and "being written by another ehrseq process" in err and str(os.getpid()) in err
    assert sorted(p.name for p in out.iterdir()) == ["_lock"]  # nothing written
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / "_lock").write_text(json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename, "started": "x"}))
    with caplog.at_level(logging.WARNING, logger="ehrseq.io"):
        code, err = _cli(capsys, *args)
    assert code == 0 and "taking over the stale lock" in caplog.text
    assert not (out / "_lock").exists() and (out / "_SUCCESS.json").exists()


def test_zero_row_input_to_score_is_an_error_and_no_predictions_is_said(world, tmp_path, capsys):
    f = tmp_path / "empty" / "0.parquet"
    f.parent.mkdir()
    pq.write_table(DATA_SCHEMA.empty_table(), f)
    out = tmp_path / "o"
    code, err = _cli(capsys, "score", "--artifact", str(world["art"]), "--data", str(f.parent), "--out", str(out),
                     "--prediction-time", T_PRED)
    assert code == 2 and "has no rows: there is nothing to score" in err and not out.exists()
    ev = _events(world, 3)
    lab = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"subject_id": pa.array([10**9], pa.int64()),
                             "prediction_time": pa.array([pd.Timestamp(T_PRED)], pa.timestamp("us"))}), lab)
    g = tmp_path / "in" / "0.parquet"
    g.parent.mkdir()
    pq.write_table(pa.Table.from_pandas(ev, preserve_index=False), g)
    s = score(world["art"], g.parent, tmp_path / "o2", labels=lab)
    done = json.loads((tmp_path / "o2" / "_SUCCESS.json").read_text())
    assert s.predictions_written == 0 and done["warnings"] and "no prediction rows" in done["warnings"][0]


def test_a_missing_value_column_hint_names_the_files_own_column(world, tmp_path, capsys):
    ev = _events(world, 3).rename(columns={"numeric_value": "value"}).assign(text_value="x")
    f = tmp_path / "in" / "0.parquet"
    f.parent.mkdir()
    pq.write_table(pa.Table.from_pandas(ev, preserve_index=False), f)
    for argv in (["validate", "--data", str(f.parent)],
                 ["score", "--artifact", str(world["art"]), "--data", str(f.parent), "--out", str(tmp_path / "o"),
                  "--prediction-time", T_PRED]):
        code, err = _cli(capsys, *argv)
        assert code == 2 and "0.parquet" in err and "--column-map value=numeric_value" in err, err
        assert "text_value=numeric_value" not in err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------- 3. overwrite and writability
def test_an_existing_artifact_is_never_replaced_without_overwrite(world, tmp_path, capsys):
    art = tmp_path / "art"
    shutil.copytree(world["art"], art)
    before = _tree(art)
    code, err = _cli(capsys, "finetune", "--data", str(tmp_path / "no_such_data"), "--out", str(art),
                     "--target", "cdai", "--preset", "tiny")
    assert code == 2 and str(art) in err and "--overwrite" in err and "no_such_data" not in err  # before any read
    assert _tree(art) == before
    with pytest.raises(OutputExistsError):
        api.finetune(tmp_path / "no_such_data", out=art)
    other = tmp_path / "home"
    other.mkdir()
    (other / "thesis.tex").write_text("x")
    with pytest.raises(OutputExistsError, match="does not hold an ehrseq artifact"):
        api.finetune(tmp_path / "no_such_data", out=other, overwrite=True)  # --out ~ never deletes a home
    assert (other / "thesis.tex").read_text() == "x"


@pytest.fixture
def read_only_dir(tmp_path: Path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    immutable = False
    if os.geteuid() == 0 and shutil.which("chattr"):  # root ignores permission bits
        immutable = subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode == 0
    probe = d / ".probe"
    try:
        probe.mkdir()
        probe.rmdir()
        writable = True
    except OSError:
        writable = False
    try:
        if writable:
            pytest.skip("cannot make a read-only directory here")
        yield d
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(d)], check=False)
        d.chmod(0o755)


def test_a_read_only_out_fails_in_one_line_before_any_data_is_read(read_only_dir, tmp_path, capsys):
    out = read_only_dir / "art"
    code, err = _cli(capsys, "finetune", "--data", str(tmp_path / "no_such_data"), "--out", str(out),
                     "--target", "cdai")
    assert code == 2 and "is not writable" in err and str(read_only_dir) in err and "no_such_data" not in err
    _one_clean_line(err)
    code, err = _cli(capsys, "pretrain", "--data", str(tmp_path / "no_such_data"), "--out", str(out))
    assert code == 2 and "is not writable" in err


@pytest.mark.parametrize("command", ["evaluate", "explain", "labels"])
def test_reports_tables_and_labels_are_not_replaced_without_overwrite(world, tmp_path, capsys, command):
    missing = str(tmp_path / "no_such_data")
    if command == "evaluate":
        out = tmp_path / "report"
        out.mkdir()
        (out / "report.json").write_text("{}")
        argv = ["evaluate", "--artifact", str(world["art"]), "--data", missing, "--out", str(out)]
    elif command == "explain":
        out = tmp_path / "imp.csv"
        out.write_text("group,drop\n")
        argv = ["explain", "--artifact", str(world["art"]), "--data", missing, "--out", str(out)]
    else:
        out = tmp_path / "labels"
        out.mkdir()
        (out / "labels.parquet").write_text("old")
        argv = ["labels", "--task", "mimic/long_los", "--predicates", "mimic/predicates", "--data", missing,
                "--out", str(out)]
    before = out.read_bytes() if out.is_file() else _tree(out)
    code, err = _cli(capsys, *argv)
    assert code == 2 and "--overwrite" in err and "no_such_data" not in err
    assert (out.read_bytes() if out.is_file() else _tree(out)) == before


# --------------------------------------------------------------------------- 4. no rare code or word in artifacts
def test_a_code_seen_once_in_training_is_in_no_file_of_the_artifact(world):
    ev = read_meds(world["meds"]).events
    assert int((ev["code"] == MARKER).sum()) == 1  # it was in the training data
    splits = pq.read_table(world["meds"] / "metadata" / "subject_splits.parquet").to_pandas()
    assert world["marker_subject"] in set(splits.loc[splits["split"] == "train", "subject_id"])
    for name, data in _readable(world["art"]).items():
        assert b"ZQXMARKER" not in data.upper(), name
    fz = load_artifact(world["art"]).featurizer
    assert set(fz["code_counts"]) <= set(fz["vocab"])  # counts only for vocabulary codes


def test_a_word_seen_once_in_the_reports_is_in_no_file_of_the_text_artifact(tmp_path):
    from ehrseq.models.text_classifier import TextClassifier, TextClassifierConfig
    from ehrseq.synth.reports import generate_reports

    train = generate_reports(40, seed=1, site="A")
    train.loc[0, "text"] = train.loc[0, "text"] + " Patient Qzxv\u02acmarker seen."
    cfg = TextClassifierConfig.from_preset("tiny", epochs=1, mlm_epochs=0, self_train_rounds=0)
    TextClassifier(cfg).fit(train, generate_reports(12, seed=2, site="A")).save(tmp_path / "art")
    for name, data in _readable(tmp_path / "art").items():
        low = data.lower()
        assert b"qzxv" not in low and "\u02ac".encode() not in data and b"\\u02ac" not in low, name


# ---------------------------------------------------------------------------------------- 5. tampered artifacts
def _rewrite_manifest(art: Path, extra: dict[str, str] | None = None) -> None:
    """What an attacker can do: rehash every file and recompute the artifact id (it holds no secret)."""
    m = json.loads((art / "manifest.json").read_text())
    m["files"] = {p.relative_to(art).as_posix(): sha256_file(p) for p in sorted(art.rglob("*"))
                  if p.is_file() and p.name != "manifest.json"}
    m["files"].update(extra or {})
    m["artifact_id"] = _manifest_digest(m)
    (art / "manifest.json").write_text(json.dumps(m))


def _tamper(kind: str, art: Path) -> None:
    outside = art.parent / "outside.json"
    outside.write_text("{}")
    if kind == "dotdot":
        _rewrite_manifest(art, {"../outside.json": sha256_file(outside)})
    elif kind == "absolute":
        _rewrite_manifest(art, {str(outside): sha256_file(outside)})
    elif kind == "symlinked_weights":
        shutil.copy(art / "model.safetensors", art.parent / "w.safetensors")
        (art / "model.safetensors").unlink()
        (art / "model.safetensors").symlink_to(art.parent / "w.safetensors")
    elif kind == "symlinked_json":
        shutil.copy(art / "config.json", art.parent / "c.json")
        (art / "config.json").unlink()
        (art / "config.json").symlink_to(art.parent / "c.json")
    elif kind == "symlinked_tokenizer":
        tok = art.parent / "tok"
        tok.mkdir()
        (tok / "vocab.txt").write_text("[PAD]\n")
        _rewrite_manifest(art)
        (art / "tokenizer").symlink_to(tok, target_is_directory=True)
    elif kind == "unlisted_tokenizer_file":
        (art / "tokenizer").mkdir()
        (art / "tokenizer" / "vocab.txt").write_text("[PAD]\n")
        _rewrite_manifest(art)
        (art / "tokenizer" / "added_tokens.json").write_text("{}")
    elif kind == "pickle_as_weights":
        (art / "model.safetensors").write_bytes(pickle.dumps({"weight": [1.0, 2.0]}))
        _rewrite_manifest(art)
    elif kind == "absurd_header":
        (art / "model.safetensors").write_bytes((2**40).to_bytes(8, "little") + b"{}")
        _rewrite_manifest(art)
    elif kind == "corrupt_config":
        (art / "config.json").write_text("{not json")
        _rewrite_manifest(art)
    elif kind == "edited_metrics":
        m = json.loads((art / "metrics.json").read_text())
        m["held_out"] = {"auroc": {"value": 0.99}}
        (art / "metrics.json").write_text(json.dumps(m))
        _rewrite_manifest(art)


TAMPER = {"dotdot": "leaves the artifact directory", "absolute": "leaves the artifact directory",
          "symlinked_weights": "symlink", "symlinked_json": "symlink", "symlinked_tokenizer": "symlink",
          "unlisted_tokenizer_file": "not listed in manifest.json", "pickle_as_weights": "not a safetensors file",
          "absurd_header": "not a safetensors file", "corrupt_config": "config.json is not readable JSON",
          "edited_metrics": "metrics_identity"}


@pytest.mark.parametrize("kind", list(TAMPER))
def test_a_tampered_artifact_is_one_clean_artifact_error(world, tmp_path, capsys, kind):
    art = tmp_path / "a" / "art"
    shutil.copytree(world["art"], art)
    _tamper(kind, art)
    with pytest.raises(ArtifactError, match=TAMPER[kind]):
        load_artifact(art)
    code, err = _cli(capsys, "score", "--artifact", str(art), "--data", str(world["meds"]), "--out",
                     str(tmp_path / "o"), "--prediction-time", T_PRED)
    assert code == 2 and TAMPER[kind].split()[0] in err
    _one_clean_line(err)
    if kind.startswith("symlinked"):
        with pytest.raises(ArtifactError, match="symlink"):
            load_artifact(art, verify=False)  # never followed, even unverified


# -------------------------------------------------------------------------------------------- 6. artifact_id
def test_artifact_id_is_what_was_trained_not_when(world, tmp_path):
    again = api.finetune(world["meds"], target="cdai", out=tmp_path / "again", preset="tiny",
                         train={"epochs": 1, "progress": False}, n_bootstrap=0)
    a, b = load_artifact(world["art"]), load_artifact(again.artifact)
    assert sha256_file(a.path / "model.safetensors") == sha256_file(b.path / "model.safetensors")
    assert a.manifest["files"]["metrics.json"] != b.manifest["files"]["metrics.json"]  # timings differ
    assert a.metrics["train"]["sequences_per_second"] != b.metrics["train"]["sequences_per_second"]
    assert a.artifact_id == b.artifact_id


# ------------------------------------------------------------------------------------ 7. malformed files named
def _good_events(n: int = 20) -> pa.Table:
    return pa.table({"subject_id": pa.array(np.repeat(np.arange(1, n // 2 + 1), 2), pa.int64()),
                     "time": pa.array(pd.date_range("2020-01-01", periods=n, freq="D").astype("datetime64[us]")),
                     "code": ["X"] * n, "numeric_value": pa.array(np.ones(n), pa.float32())})


@pytest.mark.parametrize("damage", ["zero_bytes", "truncated", "corrupt_page", "bad_checksum"])
def test_a_broken_parquet_file_is_named_even_inside_a_shard_directory(tmp_path, capsys, damage):
    d = tmp_path / "data"
    d.mkdir()
    pq.write_table(_good_events(), d / "0.parquet")
    bad = d / "1.parquet"
    pq.write_table(_good_events(), bad, compression="none", write_page_checksum=damage == "bad_checksum")
    raw = bytearray(bad.read_bytes())
    if damage == "zero_bytes":
        raw = bytearray()
    elif damage == "truncated":
        raw = raw[: len(raw) // 2]
    elif damage == "corrupt_page":
        raw[4:40] = b"\xff" * 36  # the first page header, after the magic bytes
    else:
        raw[60] ^= 0xFF  # a data byte: only the page checksum catches it
    bad.write_bytes(bytes(raw))
    with pytest.raises(DataValidationError, match="Parquet file|0 bytes") as e:
        read_meds(d)
    assert e.value.file == str(bad)
    code, err = _cli(capsys, "validate", "--data", str(d))
    assert code == 2 and str(bad) in err
    _one_clean_line(err)


PATIENTS = "subject_id,birth_date,sex,site\n1,1950-01-01,F,A\n2,1960-05-05,M,B\n"


@pytest.mark.parametrize("case, content, problem", [
    ("zero_bytes", b"", "is empty (0 bytes)"),
    ("latin1", "subject_id,birth_date,sex,site\n1,1950-01-01,F,Montr\u00e9al\n".encode("latin-1"), "is not UTF-8"),
    ("ragged_long", (PATIENTS + "3,1970-01-01,F,A,extra\n").encode(), "line 4 has 5 field(s) but the header has 4"),
    ("ragged_short", (PATIENTS + "3,1970-01-01\n").encode(), "line 4 has 2 field(s)"),
    ("semicolon", PATIENTS.replace(",", ";").encode(), "semicolon-delimited"),
])
def test_a_malformed_extract_csv_is_named_with_what_to_do(tmp_path, capsys, case, content, problem):
    d = tmp_path / "x"
    d.mkdir()
    (d / "patients.csv").write_bytes(content)
    with pytest.raises(DataValidationError, match=re.escape(problem)) as e:
        read_extract(d)
    assert e.value.file == str(d / "patients.csv") and e.value.hint
    code, err = _cli(capsys, "validate", "--data", str(d))
    assert code == 2 and "patients.csv" in err
    _one_clean_line(err)


def test_a_bom_from_excel_is_accepted(tmp_path):
    d = tmp_path / "x"
    d.mkdir()
    (d / "patients.csv").write_bytes(b"\xef\xbb\xbf" + PATIENTS.encode())
    assert sorted(read_extract(d).events["subject_id"].unique()) == [1, 2]


def _with_times(times: list[str]) -> pa.Table:
    n = len(times)
    return pa.table({"subject_id": pa.array(np.arange(n) // 5, pa.int64()),
                     "time": pa.array([np.datetime64(t, "us") for t in times], pa.timestamp("us")),
                     "code": ["X"] * n, "numeric_value": pa.array(np.ones(n), pa.float32())})


def test_years_0001_and_9999_are_dropped_and_counted_or_refused_above_a_fraction(world, tmp_path):
    times = [f"2020-01-{i % 28 + 1:02d}" for i in range(300)]
    times[7], times[123] = "0001-01-01", "9999-12-31"
    f = tmp_path / "ev.parquet"
    pq.write_table(_with_times(times), f)
    res = read_meds(f)
    assert res.report.implausible_times_dropped == 2 and len(res.events) == 298
    assert res.events["time"].min().year == 2020 and res.events["time"].max().year == 2020
    assert read_meds(f, policy=ValidationPolicy(min_year=1, max_year=9999)).report.implausible_times_dropped == 0
    many = ["0001-01-01"] * 10 + times[200:290]
    pq.write_table(_with_times(many), f)
    with pytest.raises(DataValidationError, match=r"times before 1800 or after 2500 in more than "
                                                  r"max_implausible_fraction=0.01 of the 100 rows read") as e:
        read_meds(f)
    assert e.value.column == "time" and e.value.file == str(f) and e.value.n_rows == 10
    ev = _events(world, 4)
    ev.loc[[3, 10], "time"] = [pd.Timestamp("0001-01-01"), pd.Timestamp("9999-12-31")]
    g = tmp_path / "in" / "0.parquet"
    g.parent.mkdir()
    pq.write_table(pa.Table.from_pandas(ev.astype({"time": "datetime64[us]"}), preserve_index=False), g)
    s = score(world["art"], g.parent, tmp_path / "o", prediction_time=T_PRED, max_quarantine_fraction=0.5)
    assert s.quarantine_reasons == {"IMPLAUSIBLE_TIME": 2}


def test_events_before_birth_and_after_death_are_counted_not_dropped(tmp_path):
    f = tmp_path / "ev.parquet"
    rows = [(1, "2000-01-01", "MEDS_BIRTH"), (1, "1999-06-01", "X"), (1, "2010-01-01", "X"),
            (1, "2020-01-01", "MEDS_DEATH"), (1, "2020-01-01T12:00", "X"), (1, "2020-03-01", "X")]
    pq.write_table(pa.table({"subject_id": pa.array([r[0] for r in rows], pa.int64()),
                             "time": pa.array([np.datetime64(r[1], "us") for r in rows], pa.timestamp("us")),
                             "code": [r[2] for r in rows], "numeric_value": pa.array([None] * 6, pa.float32())}), f)
    res = read_meds(f)
    assert (res.report.events_before_birth, res.report.events_after_death) == (1, 1) and len(res.events) == 6


# ------------------------------------------------------------------------------- 8. a minimum cohort to train
def _label_file(world: dict[str, Any], tmp_path: Path, **values: object) -> Path:
    ev = read_meds(world["meds"]).events
    last = ev.loc[ev["time"].notna()].groupby("subject_id")["time"].max() - pd.Timedelta(days=1)
    lab = pd.DataFrame({"subject_id": last.index.astype("int64"), "prediction_time": last.to_numpy()})
    for k, v in values.items():
        lab[k] = v(len(lab)) if callable(v) else v
    f = tmp_path / "labels.parquet"
    lab.to_parquet(f, index=False)
    return f


@pytest.mark.parametrize("case, values, problem", [
    ("one_class_binary", {"boolean_value": True}, "too few label rows per class ({'true'"),
    ("rare_second_class", {"integer_value": lambda n: (np.arange(n) < 2).astype(int)},
     "too few label rows per class ({'0'"),
    ("all_censored_survival", {"float_value": 30.0, "boolean_value": False}, "{'events': 0}"),
])
def test_degenerate_labels_are_refused_before_training_and_the_artifact_is_kept(world, tmp_path, capsys, case,
                                                                                values, problem):
    art = tmp_path / "art"
    shutil.copytree(world["art"], art)
    before = _tree(art)
    argv = ["finetune", "--data", str(world["meds"]), "--labels", str(_label_file(world, tmp_path, **values)),
            "--out", str(art), "--overwrite", "--preset", "tiny", "--epochs", "1"]
    if case == "all_censored_survival":
        argv += ["--label-kind", "survival"]
    code, err = _cli(capsys, *argv)
    assert code == 2 and problem in err and "min_class_count" in err
    _one_clean_line(err)
    assert _tree(art) == before


def test_a_four_patient_cohort_is_refused_with_the_minimum(world, tmp_path, capsys):
    ev = read_meds(world["meds"]).events
    small = ev.loc[ev["subject_id"].isin(ev["subject_id"].unique()[:4])]
    root = write_meds(small, tmp_path / "small")
    out = tmp_path / "art"
    code, err = _cli(capsys, "finetune", "--data", str(root), "--out", str(out), "--split", "random",
                     "--preset", "tiny")
    assert code == 2 and "fewer than min_train_subjects=10" in err and not out.exists()
    with pytest.raises(TargetError, match="min_train_subjects"):
        api.finetune(root, split={"strategy": "random"}, min_train_subjects=10)


# ------------------------------------------------------------------ configs (config.py): one line, before data
@pytest.mark.parametrize("text, problem", [
    ("target: cdai\nepochz: 3\n", "unknown key(s) ['epochz']"),
    ("train:\n  epochs: three\n", "train.epochs must be a whole number"),
    ("min_class_count: five\n", "min_class_count must be a whole number"),
    ("seed: 1\nseed: 2\n", "duplicate key 'seed'"),
    ("a: &a [1, 2]\nb: &b [*a, *a]\nc: [*b, *b]\n", "anchor"),
])
def test_a_bad_config_is_one_line_before_any_data_is_read(tmp_path, capsys, text, problem):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(text)
    t0 = time.perf_counter()
    code, err = _cli(capsys, "finetune", "--config", str(cfg), "--data", str(tmp_path / "no_such_data"),
                     "--out", str(tmp_path / "art"))
    assert code == 2 and str(cfg) in err and problem in err and "no_such_data" not in err
    assert time.perf_counter() - t0 < 5  # an alias bomb is refused where the anchor is declared
    _one_clean_line(err)
    from ehrseq.config import load_config

    with pytest.raises(ConfigError):
        load_config(cfg)


def test_a_config_file_target_is_not_overridden_by_the_cli_default(tmp_path):
    from ehrseq.config import load_config

    cfg = tmp_path / "run.yaml"
    cfg.write_text("target: next_visit_dx\n")
    a = build_parser().parse_args(["finetune", "--data", "d", "--out", "o", "--config", str(cfg)])
    assert a.target is None and load_config(a.config, target=a.target).target == "next_visit_dx"
    b = build_parser().parse_args(["finetune", "--data", "d", "--out", "o", "--config", str(cfg), "--target", "cdai"])
    assert load_config(b.config, target=b.target).target == "cdai"  # an explicit flag wins
