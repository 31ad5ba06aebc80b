"""The biopsy-report models as ehrseq artifacts: DistilBERT (:class:`TextClassifier`, the default) and the
scope-marked TF-IDF model (:class:`TfidfScope`), one ``model_type`` (``text_classifier``) told apart by the
``text_model`` key of ``config.json``.

A ``tfidf_scope`` artifact holds, besides the manifest and metrics:

    model.safetensors   float64 arrays: ``idf.<kind>`` (one per feature kind, ``word`` / ``char``), ``coef``
                        (labels x features, word columns first) and ``intercept`` (labels)
    config.json         model_type, target, text_model, ``model``: the :class:`TfidfScopeConfig` with the full
                        resolved cue lists (so the saved model keeps the cues it was fitted with)
    vocabulary.json     per feature kind, the terms in column order
    thresholds.json     label -> decision threshold

Nothing is pickled; loading refuses an artifact whose arrays and vocabulary do not fit together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ehrseq.artifacts import Artifact, check_model_type, load_artifact, save_artifact
from ehrseq.errors import ArtifactError
from ehrseq.models.negation_cues import CUE_KINDS
from ehrseq.models.text_classifier import TextClassifier, choose_thresholds
from ehrseq.models.text_features import TfidfScope, TfidfScopeConfig

MODEL_TYPE = "text_classifier"
DISTILBERT, TFIDF_SCOPE = "distilbert", "tfidf_scope"
TEXT_MODELS: tuple[str, ...] = (DISTILBERT, TFIDF_SCOPE)


def save_tfidf_scope(model: TfidfScope, out_dir: str | Path, metrics: dict[str, Any] | None = None,
                     **artifact_kw: Any) -> Path:
    """Write a fitted :class:`TfidfScope` as an artifact (see the module docstring); returns its path."""
    model._check_fitted()
    settings = model.config.to_dict()
    settings["cues"] = {k: [" ".join(c) for c in lst] for k, lst in model.cues_.items()}
    config = {"model_type": MODEL_TYPE, "target": "biopsy", "text_model": TFIDF_SCOPE, "model": settings}
    state = {f"idf.{k}": torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)) for k, v in model.idf_.items()}
    state["coef"] = torch.from_numpy(np.ascontiguousarray(model.coef_, dtype=np.float64))
    state["intercept"] = torch.from_numpy(np.ascontiguousarray(model.intercept_, dtype=np.float64))
    extras = {"vocabulary": model.vocabularies_,
              "thresholds": dict(zip(model.labels, [float(t) for t in model.thresholds_]))}
    return save_artifact(out_dir, state_dict=state, config=config, metrics=metrics, extras=extras, **artifact_kw)


def _tfidf_from_artifact(art: Artifact) -> TfidfScope:
    where = art.path
    vocab, thr = art.extras.get("vocabulary"), art.extras.get("thresholds")
    if not isinstance(vocab, dict) or not isinstance(thr, dict):
        raise ArtifactError(f"{where}: a tfidf_scope artifact needs vocabulary.json and thresholds.json; "
                            "retrain it with `ehrseq finetune --target biopsy`")
    try:
        settings = dict(art.config["model"])
        if isinstance(settings.get("cues"), dict):  # saved before a cue kind existed: it stays off, as fitted
            settings["cues"] = {**{k: [] for k in CUE_KINDS if k not in settings["cues"]}, **settings["cues"]}
        cfg = TfidfScopeConfig(**settings)
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{where}: config.json 'model' is not a valid TfidfScopeConfig ({e})") from None
    model = TfidfScope(config=cfg)
    missing = [lab for lab in model.labels if lab not in thr]
    need = [f"idf.{k}" for k in model.kinds] + ["coef", "intercept"]
    absent = [n for n in need if n not in art.state_dict]
    if missing or absent:
        raise ArtifactError(f"{where}: thresholds.json lacks label(s) {missing} or model.safetensors lacks "
                            f"array(s) {absent}; the artifact is incomplete")
    bad = [n for n in need if art.state_dict[n].dtype != torch.float64]
    if bad:
        raise ArtifactError(f"{where}: array(s) {bad} in model.safetensors are not float64")
    arr = {n: art.state_dict[n].numpy() for n in need}
    try:
        return model.set_state({k: vocab.get(k, []) for k in model.kinds}, {k: arr[f"idf.{k}"] for k in model.kinds},
                               arr["coef"], arr["intercept"], np.array([thr[lab] for lab in model.labels], float))
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"{where}: the stored arrays do not fit together ({e}); the artifact is corrupt") from None


def text_model_name(art: Artifact) -> str:
    """Which text model an artifact holds (``distilbert`` for artifacts written before the key existed)."""
    name = art.config.get("text_model", DISTILBERT)
    if name not in TEXT_MODELS:
        raise ArtifactError(f"{art.path}: config.json text_model '{name}' is not one of {', '.join(TEXT_MODELS)}; "
                            "it was written by another ehrseq version")
    return name


def load_text_model(artifact: str | Path | Artifact) -> TextClassifier | TfidfScope:
    """The biopsy-report model of an artifact directory (every file hash verified) or of an artifact already
    loaded: a :class:`TextClassifier` or a :class:`TfidfScope`. Both have ``config.labels``,
    ``predict_proba(texts or frame)`` and ``thresholds_``."""
    if isinstance(artifact, Artifact):
        art = artifact
        check_model_type(art.path, art.config, MODEL_TYPE)
    else:
        art = load_artifact(artifact, expect_model_type=MODEL_TYPE)
    if text_model_name(art) == TFIDF_SCOPE:
        return _tfidf_from_artifact(art)
    return TextClassifier.from_artifact(art)


def retune_thresholds(model: TextClassifier | TfidfScope, labelled: pd.DataFrame,
                      metric: str | None = None) -> np.ndarray:
    """(K,) thresholds re-chosen on a handful of labelled reports of a new site (``text`` + label columns).

    A label with only one class among them keeps the model's stored threshold. ``metric``: ``f1`` or
    ``youden`` (default: the model's ``threshold_metric``).
    """
    from ehrseq.errors import DataValidationError

    labels = list(model.config.labels)
    missing = [c for c in ("text", *labels) if c not in labelled.columns]
    if missing:
        raise DataValidationError(f"column(s) {missing} missing from the labelled reports", column=missing[0])
    if len(labelled) == 0:
        raise DataValidationError("no labelled reports (0 rows) to re-tune thresholds on")
    y = labelled[labels].to_numpy()
    new = choose_thresholds(y, model.predict_proba(labelled), metric or model.config.threshold_metric)
    one_class = (y.min(axis=0) == y.max(axis=0))
    return np.where(one_class, np.asarray(model.thresholds_, float), new)
