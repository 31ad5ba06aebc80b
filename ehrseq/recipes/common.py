"""What every recipe shares: the patient split of a run, its restriction to sites or a share of train patients,
and the result a fine-tuning run returns."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ehrseq.config import FinetuneConfig
from ehrseq.data.loading import LoadedData
from ehrseq.errors import DataValidationError
from ehrseq.featurize.featurizer import Featurizer
from ehrseq.split import PatientSplitter, assert_disjoint, ids_in, subjects_table

log = logging.getLogger("ehrseq.api")


@dataclass
class FinetuneResult:
    """What a fine-tuning recipe returns: the artifact path, metrics, predictions per split, model, featurizer."""

    artifact: Path | None
    metrics: dict[str, Any]
    predictions: dict[str, pd.DataFrame]
    model: Any = None
    featurizer: Featurizer | None = None


def resolve_splits(data: LoadedData, cfg: FinetuneConfig) -> pd.DataFrame:
    """The patient split of a run: the data's own subject_splits, or one drawn by ``cfg.split``."""
    s = cfg.split
    if s.strategy == "data":
        if data.splits is not None:
            splits = data.splits
        else:
            log.warning("the data has no subject_splits; making a random patient split (seed %d)", s.seed)
            splits = PatientSplitter(fractions=s.fractions, seed=s.seed).split(subjects_table(data.events))
    else:
        splits = PatientSplitter(
            strategy=s.strategy, fractions=s.fractions, held_out_sites=s.held_out_sites, cutoff=s.cutoff, seed=s.seed
        ).split(subjects_table(data.events))
    assert_disjoint(splits)
    return splits


def split_record(splits: pd.DataFrame) -> dict[str, list[int]]:
    """The patient split of a run as stored in its artifact (``split.json``): subject ids per split, so that
    evaluate and explain can score the same held-out patients on data that has no subject_splits."""
    return {name: sorted(int(i) for i in ids_in(splits, name)) for name in ("train", "tuning", "held_out")}


def restrict(events: pd.DataFrame, splits: pd.DataFrame, cfg: FinetuneConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep only the configured sites, and a seeded share of the train patients."""
    if cfg.sites:
        subj = subjects_table(events)
        keep = subj.loc[subj["site"].isin(cfg.sites), "subject_id"]
        if keep.empty:
            raise DataValidationError(f"no subjects at site(s) {list(cfg.sites)}", column="SITE//")
        splits = splits.loc[splits["subject_id"].isin(keep)]
    if cfg.train_fraction < 1.0:
        if not 0 < cfg.train_fraction <= 1:
            raise ValueError("train_fraction must be in (0, 1]")
        tr = np.sort(ids_in(splits, "train"))
        rng = np.random.default_rng(cfg.seed)
        n = max(1, int(round(cfg.train_fraction * len(tr))))
        drop = np.setdiff1d(tr, rng.choice(tr, size=n, replace=False))
        splits = splits.loc[~splits["subject_id"].isin(drop)]
    events = events.loc[events["subject_id"].isin(splits["subject_id"])]
    return events, splits.reset_index(drop=True)


def subsample_rows(labels: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    """At most ``k`` label rows per subject, drawn with a seed, kept in their original order."""
    key = np.random.default_rng(seed).random(len(labels))
    rank = pd.Series(key).groupby(labels["subject_id"].to_numpy()).rank(method="first").to_numpy()
    return labels.loc[rank <= k].reset_index(drop=True)


@dataclass
class Run:
    """A fine-tuning run set up: the events of its subjects, its patient split, its task's labels and how they
    matched the data, and the ``--init`` artifact with what its provenance check found."""

    events: pd.DataFrame
    splits: pd.DataFrame
    task: Any  # TaskLabels
    label_match: dict[str, int]
    init: Any = None  # Artifact | None
    init_path: str | None = None
    init_overlap: dict[str, Any] | None = None


def prepare(data: LoadedData, cfg: FinetuneConfig, labels: Any = None, init: str | Path | None = None) -> Run:
    """Split by patient, keep the configured sites / train share, build the task's labels, and check that no
    subject who trained ``init`` is now in tuning or held_out (unless ``cfg.allow_init_overlap``)."""
    from ehrseq.artifacts import load_artifact
    from ehrseq.config import config_to_dict
    from ehrseq.provenance import check_init_overlap
    from ehrseq.tasks.resolve import builtin_params, resolve_task

    splits = resolve_splits(data, cfg)
    events, splits = restrict(data.events, splits, cfg)
    tl, match = resolve_task(events, labels=labels if labels is not None else cfg.labels, task=cfg.task,
                             predicates=cfg.predicates, label_kind=cfg.label_kind, target=cfg.target,
                             params=builtin_params(cfg.target, config_to_dict(cfg)),
                             max_unmatched_fraction=cfg.max_unmatched_label_fraction)
    init_art = load_artifact(init) if init else None
    overlap = check_init_overlap(init_art, splits, allow=cfg.allow_init_overlap) if init_art is not None else None
    return Run(events, splits, tl, match, init_art, str(init) if init else None, overlap)
