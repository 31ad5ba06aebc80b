"""``ehrseq evaluate``: an artifact plus a dataset -> report.json, report.md, report.html.

Predictions are made on one split of the data (held_out by default, chosen by patient), joined with sex,
age at prediction_time and site, and passed to :func:`ehrseq.evaluate.report.build_report`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from ehrseq import codes
from ehrseq.artifacts import Artifact, load_artifact
from ehrseq.errors import EhrseqError
from ehrseq.io.guards import replace_directory

TARGET_DEFINITIONS = {
    "cdai": "Controlled rheumatoid arthritis (CDAI <= threshold) at the next CDAI measurement, predicted at each "
            "measurement from data up to and including it.",
    "cdai_value": "The next CDAI value, predicted at each measurement.",
    "next_visit_dx": "ICD-10 codes recorded at the next visit, predicted at each visit.",
    "survival": "Time from the landmark visit to the event code, censored at the last recorded event.",
    "biopsy": "Temporal artery biopsy report: adventitial inflammation, giant cells, intimal hyperplasia and the "
              "overall conclusion (giant cell arteritis), one probability each.",
}


def demographics(events: pd.DataFrame, preds: pd.DataFrame) -> pd.DataFrame:
    """Add sex ("F"/"M"/other, from SEX// or GENDER// static rows), site and age (years at prediction_time,
    from MEDS_BIRTH) to a predictions frame; "unknown" where the data has none (see ehrseq.io.conventions)."""
    from ehrseq.io.conventions import detect, sex_of, site_of

    conv = detect(events)
    birth_code = conv.birth_code or codes.BIRTH
    birth = events.loc[events["code"] == birth_code].groupby("subject_id")["time"].min()
    out = preds.copy()
    out["sex"] = out["subject_id"].map(sex_of(events, conv)).astype(object).fillna("unknown")
    out["site"] = out["subject_id"].map(site_of(events, conv)).astype(object).fillna("unknown")
    if "prediction_time" in out:
        b = pd.Series(birth.reindex(out["subject_id"]).to_numpy(), index=out.index)  # map fails on empty datetimes
        out["age"] = (out["prediction_time"] - b).dt.total_seconds() / (365.25 * 86400)
    return out


def predict_for_report(art: Artifact, data, labels=None) -> tuple[pd.DataFrame, Any]:
    """(evaluation frame, MEDS prediction frame) on ``data`` at the rows of ``labels`` or of the artifact's
    task rebuilt on ``data``: y_true / y_prob (or duration / event / risk for DeepSurv) for the report, and
    the same predictions in the MEDS prediction schema (None for the text classifier)."""
    from ehrseq.scoring.prediction import predict_rows

    kind = art.config["model_type"]
    if kind in ("rnn", "behrt", "deepsurv", "logistic_hazard", "pmf", "deephit"):
        p = predict_rows(art, data, labels)
        if not p.has_truth:
            raise EhrseqError("evaluate needs the truth: pass a label file with the task's value column(s)")
        return p.eval_frame(), p.meds_table()
    if kind == "text_classifier":
        from ehrseq.data.loading import biopsy_frame
        from ehrseq.models.text_models import load_text_model

        df = biopsy_frame(data)
        model = load_text_model(art)
        prob = model.predict_proba(df)
        out = df[["subject_id"]].assign(prediction_time=df["time"])
        for j, name in enumerate(model.config.labels):
            out[f"y_true_{name}"] = df[name].astype(float).to_numpy()
            out[f"y_prob_{name}"] = prob[:, j]
        return out, None
    raise EhrseqError(f"evaluate does not support model_type '{kind}'")


def _provenance_note(art: Artifact, preds: pd.DataFrame) -> str:
    """What the report must say about who trained the model: an --init overlap that was accepted, and
    evaluated patients whose data trained it (their figures are optimistic)."""
    notes = []
    ov = (art.metrics or {}).get("init_overlap") or {}
    if ov.get("allowed"):
        counts = ", ".join(f"{n} {s}" for s, n in (ov.get("overlap") or {}).items() if n)
        notes.append(f" Trained from an --init artifact whose train subjects include {counts or 'some'} subjects of "
                     "this model's own evaluation splits (accepted with --allow-init-overlap): its tuning and "
                     "held-out figures are optimistic.")
    if art.train_subjects is not None and len(preds):
        seen = preds["subject_id"].isin(art.train_subjects)
        if seen.any():
            notes.append(f" {int(preds.loc[seen, 'subject_id'].nunique())} of the {int(preds['subject_id'].nunique())} "
                         "evaluated patients trained this model: their figures are optimistic (evaluate the "
                         "held-out split, --split held_out, for an honest estimate).")
    return "".join(notes)


def _task_info(art: Artifact, spec) -> dict[str, Any]:
    """The task as the report describes it (TaskSpec fields; the text classifier's built-in biopsy task)."""
    if spec is None:
        return {"name": "biopsy", "kind": "multilabel", "source": "builtin:biopsy",
                "definition": TARGET_DEFINITIONS["biopsy"]}
    return {k: v for k, v in spec.to_dict().items() if k != "task_file"}


def _stored_threshold(art: Artifact, task: str) -> Any:
    """The decision threshold(s) stored with the artifact, or None (the report then says it used 0.5)."""
    stored = art.extras.get("thresholds", art.config.get("decision_threshold"))
    if stored is None:
        return None
    if task == "multilabel":
        return dict(stored) if isinstance(stored, dict) else None
    from ehrseq.scoring.predict import decision_threshold

    return decision_threshold(art)


def _survival_curves(art: Artifact, d, preds: pd.DataFrame) -> tuple[pd.DataFrame | None, tuple[float, ...]]:
    """Survival probabilities of every evaluated row (index: days, columns: rows in order) on a grid of at
    most 200 follow-up times plus the model's horizons, and those horizons; (None, ()) where the rows are
    empty or the re-scored risks do not match (never a curve for the wrong row)."""
    import numpy as np

    from ehrseq.scoring.predict import Scorer

    if not len(preds):
        return None, ()
    horizons = Scorer(art).horizons
    t = preds["duration"].to_numpy(float)
    grid = np.unique(np.quantile(t[t > 0], np.linspace(0, 1, min(200, int((t > 0).sum()))))) if (t > 0).any() \
        else np.array([])
    sc = Scorer(art, horizons=sorted({*grid.tolist(), *horizons}))
    values = sc.predict_values(d.events, preds[["subject_id", "prediction_time"]])
    if not np.allclose(values["risk"], preds["risk"].to_numpy(float), rtol=1e-5, atol=1e-6):
        return None, horizons
    return pd.DataFrame(values["survival"].T, index=pd.Index(sc.horizons, name="time")), horizons


def report_task(art: Artifact) -> tuple[str, Any]:
    """(the evaluation layer's task kind, the artifact's TaskSpec) of an artifact: a multiclass head is scored
    one class against the rest ("multilabel"); the text classifier is the built-in multi-label biopsy task
    (its spec None)."""
    if art.config["model_type"] == "text_classifier":
        return "multilabel", None
    from ehrseq.scoring.predict import artifact_task

    task = art.config.get("task")
    return ("multilabel" if task == "multiclass" else task), artifact_task(art)


def evaluate_artifact(artifact: str | Path, data: str | Path, out: str | Path, *, split: str = "held_out",
                      external: str | Path | None = None, group_by: list[str] | tuple[str, ...] = (),
                      min_group_size: int = 30, n_boot: int = 1000, plots: bool = True, seed: int = 0,
                      labels=None, column_map=None, code_map=None, min_per_class: int | None = None
                      ) -> dict[str, Path]:
    """Write report.json, report.md, report.html (and predictions.parquet) for ``artifact`` on one split of
    ``data``, at the rows of ``labels`` (a MEDS label file) or of the artifact's task rebuilt on the data.
    ``code_map`` (a code map file or mapping) renames the codes of ``data`` and ``external`` as they are read.
    ``min_per_class``: below it a discrimination metric is flagged as resting on too few rows (None: the
    report's default, :data:`ehrseq.evaluate.sample_size.MIN_PER_CLASS`)."""
    from ehrseq.data.loading import load_data, subset_split
    from ehrseq.evaluate.conformal import SplitConformalClassifier, SplitConformalRegressor
    from ehrseq.evaluate.plain import intended_use
    from ehrseq.evaluate.report import build_report, write_report

    art = load_artifact(artifact)
    task, spec = report_task(art)
    d = subset_split(load_data(data, column_map=column_map, code_map=code_map), split, art.extras.get("split"))
    ev_frame, meds = predict_for_report(art, d, labels)
    preds = demographics(d.events, ev_frame)
    ext, ext_curves = None, None
    if external:
        de = load_data(external, column_map=column_map, code_map=code_map)
        ext_frame = predict_for_report(art, de, labels)[0]
        ext = demographics(de.events, ext_frame)
        if task == "survival":  # the external site gets its own C-td, calibration and Kaplan-Meier section
            ext_curves = _survival_curves(art, de, ext_frame)[0]
    conformal: Any = None
    if "conformal" in art.extras:
        cls = SplitConformalRegressor if task == "regression" else SplitConformalClassifier
        conformal = cls.from_dict(art.extras["conformal"])
    m, info = art.manifest, _task_info(art, spec)
    card = {
        "name": f"{art.config['model_type']} for {art.config.get('target')}",
        "artifact_id": art.artifact_id, "data_hash": m.get("data_hash"), "split_hash": m.get("split_hash"),
        "ehrseq_version": m.get("ehrseq_version"), "created": m.get("created"),
        "target_definition": (spec.definition if spec is not None and spec.definition
                              else TARGET_DEFINITIONS.get(art.config.get("target"), art.config.get("target"))),
        "evaluated_on": f"{data} (split: {split})" + (f"; external: {external}" if external else ""),
        "intended_use": intended_use(info),
        "limitations": "Trained on the data named by data_hash; performance at other sites, periods or coding "
                       "practices must be checked (see the external and subgroup sections)."
                       + (" Synthetic-cohort results do not transfer to patients."
                          if str(info.get("source", "")).startswith("builtin:") else "")
                       + _provenance_note(art, preds),
    }
    curves, horizons = _survival_curves(art, d, ev_frame) if task == "survival" else (None, ())
    report = build_report(preds, task, card, subgroup_columns=["sex", "age_band", "site", *group_by], external=ext,
                          conformal=conformal, min_group_size=min_group_size, n_boot=n_boot, seed=seed,
                          task_info=info, decision_threshold=_stored_threshold(art, task),
                          survival_curves=curves, horizons=horizons, external_survival_curves=ext_curves,
                          **({} if min_per_class is None else {"min_per_class": min_per_class}))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))  # written whole, then moved in
    try:
        paths = write_report(report, tmp, plots=plots)
        if meds is not None:  # the predictions behind the report, readable by MEDS tools (meds-evaluation)
            paths["predictions"] = _write_predictions(meds, tmp / "predictions.parquet")
        replace_directory(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return {k: out / p.relative_to(tmp) for k, p in paths.items()}


def _write_predictions(table: Any, path: Path) -> Path:
    import pyarrow.parquet as pq

    pq.write_table(table, path)
    return path
