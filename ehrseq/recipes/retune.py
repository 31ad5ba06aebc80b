"""Re-tune a biopsy text model's decision thresholds on a handful of labelled reports of a new site.

A model trained on one centre's reports ranks another centre's reports well long before its thresholds fit
them: the cut-offs chosen on the training centre's tuning split are often too high or too low elsewhere.
:func:`retune_artifact` keeps every weight and writes a new artifact whose only change is ``thresholds.json``,
chosen on the labelled reports given (``ehrseq retune``; ``ehrseq.api.retune_thresholds``).

The reports file is CSV or Parquet with a ``text`` column and one 0/1 column per label of the model. A label
with a single class among the reports keeps its old threshold. The metrics stored with the new artifact are
measured on the same reports the thresholds were chosen on, so they are optimistic; the artifact says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ehrseq.errors import DataValidationError

METRICS = ("f1", "youden")


def _where(p: Path | None, i: int) -> str:
    """Row ``i`` (0-based) as a user finds it: a CSV's line number, else (Parquet, a frame) the row index."""
    return f"line {i + 2}" if p is not None and p.suffix.lower() not in (".parquet", ".pq") else f"row {i}"


def read_labelled_reports(path: str | Path, labels: list[str]) -> pd.DataFrame:
    """``path`` (CSV or Parquet) as a frame of ``text`` and 0/1 ``labels`` columns, checked row by row."""
    p = Path(path)
    if not p.is_file():
        raise DataValidationError("no such file; --reports takes a CSV or Parquet file of labelled reports",
                                  file=str(p))
    try:
        df = pd.read_parquet(p) if p.suffix.lower() in (".parquet", ".pq") else pd.read_csv(p)
    except Exception as e:  # noqa: BLE001  (any reader failure is the file's fault; say which file)
        raise DataValidationError(f"could not be read as {'Parquet' if p.suffix == '.parquet' else 'CSV'} "
                                  f"({type(e).__name__})", file=str(p)) from None
    return check_labelled_reports(df, labels, p)


def check_labelled_reports(df: pd.DataFrame, labels: list[str], path: Path | None = None) -> pd.DataFrame:
    """``df`` with its ``labels`` columns as int 0/1, after checking every row (``path``: the file it was read
    from, named in the errors; None for a frame passed in Python)."""
    src = str(path) if path is not None else "reports frame"
    missing = [c for c in ("text", *labels) if c not in df.columns]
    if missing:
        raise DataValidationError(f"column(s) {missing} missing; labelled reports need 'text' and one 0/1 "
                                  f"column per label of the model: {', '.join(labels)}", file=src)
    if df.empty:
        raise DataValidationError("no rows; label a handful of reports (25 or more) of the new site", file=src)
    bad_text = np.flatnonzero(~df["text"].map(lambda t: isinstance(t, str) and bool(t.strip())).to_numpy())
    if len(bad_text):
        raise DataValidationError(f"empty or not text in {len(bad_text)} row(s), first at "
                                  f"{_where(path, int(bad_text[0]))}", file=src, column="text")
    df = df.reset_index(drop=True)
    for lab in labels:
        v = pd.to_numeric(df[lab], errors="coerce")
        bad = np.flatnonzero(~v.isin([0, 1]).to_numpy())
        if len(bad):
            raise DataValidationError(f"must be 0 or 1; {len(bad)} row(s) are not (first at "
                                      f"{_where(path, int(bad[0]))})", file=src, column=lab)
        df[lab] = v.astype(np.int64)
    return df


def retune_artifact(artifact: str | Path, reports: str | Path | pd.DataFrame, out: str | Path, *,
                    metric: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Write ``out``: the text artifact ``artifact`` with thresholds re-chosen on ``reports`` (a labelled
    reports file or frame). Returns the metrics written with it (``retuned``: what changed, on how many
    reports; ``after`` / ``before``: F1 etc. at the new and the old thresholds on those same reports)."""
    from ehrseq.artifacts import check_artifact_out, load_artifact
    from ehrseq.models.text_models import (
        TFIDF_SCOPE,
        load_text_model,
        retune_thresholds,
        save_tfidf_scope,
        text_model_name,
    )
    from ehrseq.recipes.text import multilabel_metrics

    if metric is not None and metric not in METRICS:
        raise DataValidationError(f"metric '{metric}' is not one of {', '.join(METRICS)}")
    if Path(out).resolve() == Path(artifact).resolve():
        raise DataValidationError(f"--out {out} is the source artifact; write the re-tuned model to a new "
                                  "directory so the original stays as it was")
    check_artifact_out(out, overwrite=overwrite)  # before the model is loaded
    art = load_artifact(artifact, expect_model_type="text_classifier")
    model = load_text_model(art)
    labels = list(model.config.labels)
    frame = check_labelled_reports(reports.copy(), labels) if isinstance(reports, pd.DataFrame) else \
        read_labelled_reports(reports, labels)
    old = np.asarray(model.thresholds_, float).copy()
    y, p = frame[labels].to_numpy(), model.predict_proba(frame)
    new = retune_thresholds(model, frame, metric)
    kept = [lab for lab, k in zip(labels, (y.min(axis=0) == y.max(axis=0))) if k]
    model.thresholds_ = new
    metrics = {
        "retuned": {
            "from_artifact": str(artifact), "from_artifact_id": art.artifact_id,
            "reports": len(frame), "positives": dict(zip(labels, y.sum(axis=0).astype(int).tolist())),
            "metric": metric or model.config.threshold_metric,
            "thresholds_before": dict(zip(labels, old.tolist())),
            "thresholds_after": dict(zip(labels, new.tolist())),
            "kept_one_class": kept,
            "note": "after/before are measured on the reports the thresholds were chosen on: optimistic",
        },
        "after": multilabel_metrics(y, p, new, labels),
        "before": multilabel_metrics(y, p, old, labels),
        "source_held_out_macro": (art.metrics or {}).get("macro"),
    }
    if text_model_name(art) == TFIDF_SCOPE:
        path = save_tfidf_scope(model, out, metrics=metrics)
    else:
        path = model.save(out, metrics=metrics)
    metrics["artifact_path"] = str(path)
    return metrics
