"""``ehrseq evaluate``: an artifact plus a dataset -> report.json, report.md, report.html.

Predictions are made on one split of the data (held_out by default, chosen by patient), joined with sex,
age at prediction_time and site, and passed to :func:`ehrseq.evaluate.report.build_report`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ehrseq import codes
from ehrseq.artifacts import Artifact, load_artifact
from ehrseq.errors import EhrseqError

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
    """Add sex, site and age (years at prediction_time) to a predictions frame."""
    static = events.loc[events["time"].isna(), ["subject_id", "code"]].astype({"code": str})
    def first(prefix: str) -> pd.Series:
        m = static.loc[static["code"].str.startswith(prefix)].drop_duplicates("subject_id")
        return m.set_index("subject_id")["code"].str.slice(len(prefix))
    birth = events.loc[events["code"] == codes.BIRTH].groupby("subject_id")["time"].min()
    out = preds.copy()
    out["sex"] = out["subject_id"].map(first(codes.SEX_PREFIX)).fillna("unknown")
    out["site"] = out["subject_id"].map(first(codes.SITE_PREFIX)).fillna("unknown")
    if "prediction_time" in out:
        b = pd.Series(birth.reindex(out["subject_id"]).to_numpy(), index=out.index)  # map fails on empty datetimes
        out["age"] = (out["prediction_time"] - b).dt.total_seconds() / (365.25 * 86400)
    return out


def _subset(data, split: str):
    from ehrseq.api import LoadedData

    if split == "all":
        return data
    if data.splits is None:
        raise EhrseqError(f"--split {split}: the data has no subject_splits; pass --split all")
    ids = data.splits.loc[data.splits["split"] == split, "subject_id"]
    if ids.empty:
        raise EhrseqError(f"the data's subject_splits has no '{split}' subjects")
    ev = data.events.loc[data.events["subject_id"].isin(ids)]
    return LoadedData(ev, data.splits, data.report_labels, data.source)


def predict_for_report(art: Artifact, data) -> pd.DataFrame:
    from ehrseq.api import predict

    if art.config["model_type"] == "deepsurv":
        from ehrseq.featurize.featurizer import Featurizer
        from ehrseq.labels import survival_labels
        from ehrseq.models.deepsurv import DeepSurv
        from ehrseq.survival_task import tabular_view

        lab = survival_labels(data.events, event_code=art.config["event_code"], landmark_visit=art.config["landmark_visit"])
        fz = Featurizer.from_dict(art.featurizer)
        x = tabular_view(fz.transform(data.events, lab))
        if art.config.get("embeddings_from"):
            from ehrseq.survival_task import sequence_embeddings

            x = np.concatenate([x, sequence_embeddings(art.config["embeddings_from"], data.events, lab)], axis=1)
        return lab.assign(risk=DeepSurv.load(art.path).predict_risk(x))
    if art.config["model_type"] in ("rnn", "behrt"):
        return predict(art, data)
    if art.config["model_type"] == "text_classifier":
        from ehrseq.api import biopsy_frame
        from ehrseq.models.text_classifier import TextClassifier

        df = biopsy_frame(data)
        model = TextClassifier.load(art.path)
        prob = model.predict_proba(df)
        out = df[["subject_id"]].assign(prediction_time=df["time"])
        for j, name in enumerate(model.config.labels):
            out[f"y_true_{name}"] = df[name].astype(float).to_numpy()
            out[f"y_prob_{name}"] = prob[:, j]
        return out
    raise EhrseqError(f"evaluate does not support model_type '{art.config['model_type']}'")


def evaluate_artifact(artifact: str | Path, data: str | Path, out: str | Path, *, split: str = "held_out",
                      external: str | Path | None = None, group_by: list[str] | tuple[str, ...] = (),
                      min_group_size: int = 30, n_boot: int = 1000, plots: bool = True, seed: int = 0) -> dict[str, Path]:
    from ehrseq.api import load_data
    from ehrseq.evaluate.conformal import SplitConformalClassifier, SplitConformalRegressor
    from ehrseq.evaluate.report import build_report, write_report

    art = load_artifact(artifact)
    task = "multilabel" if art.config["model_type"] == "text_classifier" else art.config.get("task")
    d = _subset(load_data(data), split)
    preds = demographics(d.events, predict_for_report(art, d))
    ext = None
    if external:
        de = load_data(external)
        ext = demographics(de.events, predict_for_report(art, de))
    conformal: Any = None
    if "conformal" in art.extras:
        cls = SplitConformalRegressor if task == "regression" else SplitConformalClassifier
        conformal = cls.from_dict(art.extras["conformal"])
    m = art.manifest
    card = {
        "name": f"{art.config['model_type']} for {art.config.get('target')}",
        "artifact_id": art.artifact_id, "data_hash": m.get("data_hash"), "split_hash": m.get("split_hash"),
        "ehrseq_version": m.get("ehrseq_version"), "created": m.get("created"),
        "target_definition": TARGET_DEFINITIONS.get(art.config.get("target"), art.config.get("target")),
        "evaluated_on": f"{data} (split: {split})" + (f"; external: {external}" if external else ""),
        "intended_use": "Research on retrospective data: studying disease-activity forecasting and model behaviour "
                        "across sites. Not for clinical decisions.",
        "limitations": "Trained on the data named by data_hash; performance at other sites, periods or coding "
                       "practices must be checked (see the external and subgroup sections). Synthetic-cohort "
                       "results do not transfer to patients.",
    }
    report = build_report(preds, task, card, subgroup_columns=["sex", "age_band", "site", *group_by], external=ext,
                          conformal=conformal, min_group_size=min_group_size, n_boot=n_boot, seed=seed)
    return write_report(report, out, plots=plots)
