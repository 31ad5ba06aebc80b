"""The text recipe: the biopsy-report classifier on the reports of a dataset (``finetune --target biopsy``).

Set up (reports joined with their labels, split by patient, optionally a second site's unlabelled reports to
self-train towards), train (:meth:`TextClassifier.fit`), evaluate (per-label and macro AUROC, AUPRC, F1 at the
thresholds chosen on tuning) and save.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ehrseq.artifacts import load_artifact
from ehrseq.config import FinetuneConfig
from ehrseq.data.loading import LoadedData, biopsy_frame
from ehrseq.errors import TargetError
from ehrseq.recipes.common import FinetuneResult, resolve_splits
from ehrseq.split import ids_in

if TYPE_CHECKING:  # the text models import transformers (seconds): only a text run pays for it
    from ehrseq.models.text_classifier import TextClassifier, TextClassifierConfig, TextInput
    from ehrseq.models.text_features import TfidfScope, TfidfScopeConfig

# Presets of text_model tfidf_scope (TfidfScopeConfig keywords): tiny for tests, small the benchmarked default
# (3 paraphrases per training report: benchmarks/results/text_out_of_style.md).
TFIDF_PRESETS: dict[str, dict[str, Any]] = {"tiny": {"char_ngram": (3, 4), "max_iter": 500},
                                            "small": {"augment": 3}}


def text_config(cfg: FinetuneConfig) -> TextClassifierConfig | TfidfScopeConfig:
    """The model's config from a run config: its preset, then model_overrides, then the train keys set
    (``text_model`` picks DistilBERT's :class:`TextClassifierConfig` or :class:`TfidfScopeConfig`)."""
    from ehrseq.models.text_net import PRESETS, TextClassifierConfig
    from ehrseq.registry import family_config

    if cfg.text_model == "tfidf_scope":
        return family_config("tfidf_scope", cfg, TFIDF_PRESETS, lambda kw: _tfidf_config({"seed": cfg.seed, **kw}))
    return family_config("text", cfg, PRESETS, lambda kw: TextClassifierConfig(seed=cfg.seed, **kw))


def _tfidf_config(kw: dict[str, Any]) -> TfidfScopeConfig:
    from ehrseq.errors import ConfigError
    from ehrseq.models.text_features import TfidfScopeConfig

    try:
        return TfidfScopeConfig(**kw)
    except ValueError as e:
        raise ConfigError(f"model_overrides (text_model tfidf_scope): {e}") from None


def finetune_text(d: LoadedData, cfg: FinetuneConfig, out: str | Path | None) -> FinetuneResult:
    """The text recipe: biopsy reports split by patient, fit, evaluate on held_out (and adapt sites), save."""
    every = biopsy_frame(d)
    splits = resolve_splits(d, cfg)
    df = every.loc[every["site"].isin(cfg.sites)] if cfg.sites else every
    part = {n: df.loc[df["subject_id"].isin(ids_in(splits, n))].reset_index(drop=True) for n in ("train", "tuning", "held_out")}
    for name, p in part.items():
        if p.empty:
            raise TargetError(f"no labelled biopsy reports in the {name} split; the biopsy target needs reports in "
                              "train, tuning and held_out")
    adapt, also = None, {}
    if cfg.adapt_sites and cfg.text_model != "distilbert":
        raise TargetError(f"adapt_sites (self-training) applies to text_model distilbert only, not "
                          f"'{cfg.text_model}': remove adapt_sites (--adapt-sites) or set text_model: distilbert")
    if cfg.adapt_sites:
        overlap = set(cfg.adapt_sites) & set(cfg.sites)
        if overlap or not cfg.sites:
            raise TargetError(f"adapt_sites {list(cfg.adapt_sites)} must be other sites than the labelled ones: "
                              "set sites (e.g. --sites A --adapt-sites B)")
        new = every.loc[every["site"].isin(cfg.adapt_sites)]
        adapt = new.loc[new["subject_id"].isin(ids_in(splits, "train")), "text"]  # labels are never read
        new_held_out = new.loc[new["subject_id"].isin(ids_in(splits, "held_out"))].reset_index(drop=True)
        if not new_held_out.empty:  # the new site's labelled held-out reports, scored next to held_out
            also["held_out_adapt_sites"] = new_held_out
        if adapt.empty:
            raise TargetError(f"no reports of site(s) {list(cfg.adapt_sites)} in the train split to adapt to")
    tcfg = text_config(cfg)
    metrics = finetune_biopsy(part["train"], part["tuning"], part["held_out"], out, tcfg, adapt_to=adapt,
                              also_evaluate=also)
    extra = {name: metrics.pop(name) for name in also}
    return FinetuneResult(Path(out) if out else None, {"held_out": metrics, **extra}, {})


def finetune_biopsy(
    train_df: pd.DataFrame,
    tuning_df: pd.DataFrame,
    held_out_df: pd.DataFrame,
    out_dir: str | Path,
    config: TextClassifierConfig | TfidfScopeConfig | None = None,
    adapt_to: TextInput | None = None,
    also_evaluate: dict[str, pd.DataFrame] | None = None,
) -> dict[str, Any]:
    """Fit on train, choose thresholds on tuning, evaluate on held_out, save the artifact; return metrics.

    Used by ``ehrseq finetune --target biopsy``. The metrics dict is also written as the artifact's
    ``metrics.json`` and carries ``artifact_id`` and ``artifact_path``. ``adapt_to``: unlabelled reports of a
    new site (self-training, see :meth:`TextClassifier.fit`); ``also_evaluate``: more labelled frames, each
    scored under its name (e.g. the new site's held-out reports). A :class:`TfidfScopeConfig` trains the
    scope-marked TF-IDF model instead of DistilBERT (no ``adapt_to``).
    """
    from ehrseq.models.text_classifier import TextClassifier
    from ehrseq.models.text_features import TfidfScope, TfidfScopeConfig
    from ehrseq.models.text_models import save_tfidf_scope

    if isinstance(config, TfidfScopeConfig):
        if adapt_to is not None:
            raise TargetError("adapt_to (self-training) applies to the DistilBERT text model only")
        model: TextClassifier | TfidfScope = TfidfScope(config=config).fit(train_df, tuning_df)
    else:
        model = TextClassifier(config).fit(train_df, tuning_df, adapt_to=adapt_to)
    labels = model.config.labels

    def score(frame: pd.DataFrame) -> dict[str, Any]:
        return multilabel_metrics(frame[list(labels)].to_numpy(), model.predict_proba(frame), model.thresholds_,
                                  labels)

    metrics = score(held_out_df)
    metrics["split_sizes"] = {"train": len(train_df), "tuning": len(tuning_df), "held_out": len(held_out_df)}
    if adapt_to is not None:
        metrics["split_sizes"]["adapt_to"] = len(adapt_to)  # fit has checked every one of them
    for name, frame in (also_evaluate or {}).items():
        metrics[name] = {**score(frame), "n": len(frame)}
    path = save_tfidf_scope(model, out_dir, metrics=metrics) if isinstance(model, TfidfScope) else \
        model.save(out_dir, metrics=metrics)
    metrics["artifact_path"] = str(path)
    metrics["artifact_id"] = load_artifact(path).artifact_id
    return metrics


def multilabel_metrics(
    y: np.ndarray, p: np.ndarray, thresholds: np.ndarray, labels: tuple[str, ...] | list[str]
) -> dict[str, Any]:
    """Per-label and macro AUROC, AUPRC and F1 at ``thresholds``; None where a label has one class."""
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    out: dict[str, Any] = {}
    for k, lab in enumerate(labels):
        yk = y[:, k].astype(int)
        one_class = yk.min() == yk.max()
        out[lab] = {
            "auroc": None if one_class else float(roc_auc_score(yk, p[:, k])),
            "auprc": None if one_class else float(average_precision_score(yk, p[:, k])),
            "f1": float(f1_score(yk, (p[:, k] >= thresholds[k]).astype(int), zero_division=0)),
            "threshold": float(thresholds[k]),
            "n": int(len(yk)),
            "n_positive": int(yk.sum()),
        }
    macro = {}
    for m in ("auroc", "auprc", "f1"):
        vals = [out[lab][m] for lab in labels if out[lab][m] is not None]
        macro[m] = float(np.mean(vals)) if vals else None
    out["macro"] = macro
    return out
