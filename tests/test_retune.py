"""`ehrseq retune` / `api.retune_thresholds`: a biopsy text artifact with thresholds re-chosen on a handful of
labelled reports of a new site; every weight kept, the source untouched, bad report files refused by name."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from ehrseq import api  # noqa: E402
from ehrseq.artifacts import load_artifact  # noqa: E402
from ehrseq.cli import main  # noqa: E402
from ehrseq.errors import DataValidationError  # noqa: E402
from ehrseq.io.guards import OutputExistsError  # noqa: E402
from ehrseq.models.text_classifier import TextClassifier, TextClassifierConfig  # noqa: E402
from ehrseq.models.text_features import TfidfScope, TfidfScopeConfig  # noqa: E402
from ehrseq.models.text_models import load_text_model, save_tfidf_scope  # noqa: E402
from ehrseq.synth.reports import REPORT_LABELS, generate_reports  # noqa: E402

LABELS = list(REPORT_LABELS)


@pytest.fixture(scope="module")
def tfidf_art(tmp_path_factory: pytest.TempPathFactory) -> Path:
    train, tuning = generate_reports(80, seed=1, site="A"), generate_reports(40, seed=2, site="A")
    model = TfidfScope(config=TfidfScopeConfig(char_ngram=(3, 4), max_iter=300)).fit(train, tuning)
    return save_tfidf_scope(model, tmp_path_factory.mktemp("rt") / "art", metrics={"macro": {"auroc": 0.9}})


@pytest.fixture(scope="module")
def site_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("rb") / "site_b.csv"
    generate_reports(40, seed=7, site="B")[["text", *LABELS]].to_csv(p, index=False)
    return p


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}


def test_retune_keeps_weights_changes_only_thresholds_and_leaves_the_source(tfidf_art: Path, site_b: Path,
                                                                             tmp_path: Path) -> None:
    before = _files(tfidf_art)
    out = tmp_path / "b"
    m = api.retune_thresholds(tfidf_art, site_b, out)
    assert _files(tfidf_art) == before  # the source artifact is untouched
    src, new = load_text_model(tfidf_art), load_text_model(out)
    reports = pd.read_csv(site_b)
    np.testing.assert_array_equal(src.predict_proba(reports), new.predict_proba(reports))  # same weights
    r = m["retuned"]
    assert r["reports"] == 40 and r["from_artifact_id"] == load_artifact(tfidf_art).artifact_id
    assert np.allclose(new.thresholds_, [r["thresholds_after"][k] for k in LABELS])
    assert np.allclose(src.thresholds_, [r["thresholds_before"][k] for k in LABELS])
    # chosen to maximise F1 on these reports: never worse there than the old thresholds
    for lab in LABELS:
        assert m["after"][lab]["f1"] >= m["before"][lab]["f1"] - 1e-12
    assert "optimistic" in r["note"]
    assert json.loads((out / "metrics.json").read_text())["retuned"]["reports"] == 40


def test_a_label_with_one_class_keeps_its_threshold(tfidf_art: Path, site_b: Path, tmp_path: Path) -> None:
    few = pd.read_csv(site_b).assign(giant_cells=0)
    m = api.retune_thresholds(tfidf_art, few, tmp_path / "one")
    assert m["retuned"]["kept_one_class"] == ["giant_cells"]
    assert m["retuned"]["thresholds_after"]["giant_cells"] == m["retuned"]["thresholds_before"]["giant_cells"]


def test_the_cli_prints_the_change_and_refuses_bad_files(tfidf_art: Path, site_b: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["retune", "--artifact", str(tfidf_art), "--reports", str(site_b), "--out", str(out),
                 "--metric", "youden"]) == 0
    text = capsys.readouterr().out
    assert "on 40 labelled reports" in text and "gca:" in text and "optimistic" in text
    assert load_artifact(out).metrics["retuned"]["metric"] == "youden"
    # an existing --out is refused without --overwrite; the source itself is never a target
    assert main(["retune", "--artifact", str(tfidf_art), "--reports", str(site_b), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["retune", "--artifact", str(tfidf_art), "--reports", str(site_b), "--out", str(tfidf_art),
                 "--overwrite"]) == 2
    assert "source artifact" in capsys.readouterr().err
    bad = pd.read_csv(site_b)
    bad.loc[5, "gca"] = 2
    bad.to_csv(tmp_path / "bad.csv", index=False)
    assert main(["retune", "--artifact", str(tfidf_art), "--reports", str(tmp_path / "bad.csv"),
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "'gca'" in err and "line 7" in err and not (tmp_path / "x").exists()
    pd.read_csv(site_b).drop(columns="intimal_hyperplasia").to_csv(tmp_path / "miss.csv", index=False)
    assert main(["retune", "--artifact", str(tfidf_art), "--reports", str(tmp_path / "miss.csv"),
                 "--out", str(tmp_path / "y")]) == 2
    assert "intimal_hyperplasia" in capsys.readouterr().err


def test_a_report_with_no_text_is_named(tfidf_art: Path, site_b: Path, tmp_path: Path) -> None:
    df = pd.read_csv(site_b)
    df.loc[3, "text"] = "  "
    with pytest.raises(DataValidationError, match=r"n.parquet, column 'text': empty or not text in 1 row\(s\), first at row 3"):
        api.retune_thresholds(tfidf_art, _write(df, tmp_path / "n.parquet"), tmp_path / "z")
    with pytest.raises(DataValidationError, match=r"^reports frame, column 'gca': must be 0 or 1; 1 row\(s\).*row 2"):
        api.retune_thresholds(tfidf_art, pd.read_csv(site_b).assign(gca=lambda d: d.gca.where(d.index != 2, 5)),
                              tmp_path / "frame")
    assert not (tmp_path / "frame").exists()
    with pytest.raises(OutputExistsError):
        tmp = tmp_path / "full"
        tmp.mkdir()
        (tmp / "keep.txt").write_text("mine")
        api.retune_thresholds(tfidf_art, site_b, tmp, overwrite=True)  # not an artifact: never replaced
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def _write(df: pd.DataFrame, p: Path) -> Path:
    df.to_parquet(p)
    return p


def test_a_distilbert_artifact_is_retuned_too(tmp_path: Path, site_b: Path) -> None:
    cfg = TextClassifierConfig.from_preset("tiny", epochs=1, mlm_epochs=0)
    model = TextClassifier(cfg).fit(generate_reports(40, seed=1, site="A"), generate_reports(20, seed=2, site="A"))
    src = model.save(tmp_path / "bert")
    m = api.retune_thresholds(src, site_b, tmp_path / "bert_b")
    new = TextClassifier.load(tmp_path / "bert_b")
    assert np.allclose(new.thresholds_, [m["retuned"]["thresholds_after"][k] for k in LABELS])
    reports = pd.read_csv(site_b)
    np.testing.assert_allclose(TextClassifier.load(src).predict_proba(reports), new.predict_proba(reports), atol=1e-6)
