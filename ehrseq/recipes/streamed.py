"""Fine-tuning an RNN or BEHRT on a MEDS root without holding its events in memory (issue #15).

:func:`finetune_streamed` runs the sequence recipe (:func:`ehrseq.recipes.sequence.finetune_sequence`) on a
MEDS root read in batches of whole subjects (:mod:`ehrseq.data.sharded`), twice: the first pass builds the
built-in target's labels batch by batch (they depend on one subject's events only), fits the featurizer on the
train split (:class:`~ehrseq.featurize.sharded.FitAccumulator`: the same fitted state as ``fit``) and hashes the
events; the second featurizes every split into an on-disk store (:mod:`ehrseq.data.store`). Same seed, same
data: the same labels, featurized arrays, datasets and so the same metrics as the in-memory path; validation is
:func:`ehrseq.io.meds.iter_meds_batches`' (the same checks and errors as ``read_meds``, per file and row).

Chosen automatically by :func:`ehrseq.api.finetune` when ``data`` is a path to a MEDS root with
``metadata/subject_splits.parquet``, the task is a built-in target (no label file, no ACES task file), the split
comes from the data (``split.strategy: data``), no ``sites`` restriction and no code map. Everything else, a
frame or a :class:`~ehrseq.data.loading.LoadedData`, shards not in subject order, or ``EHRSEQ_STREAM=0``, reads
the data whole.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ehrseq.config import FinetuneConfig, config_to_dict
from ehrseq.data.dataset import SequenceDataset
from ehrseq.data.loading import LoadedData
from ehrseq.data.sharded import OutOfOrder, RowHasher, batches, sharded_root, stream_datasets
from ehrseq.featurize.featurizer import Featurizer
from ehrseq.featurize.sharded import FitAccumulator
from ehrseq.io import read_subject_splits
from ehrseq.io.guards import check_training_cohort
from ehrseq.recipes.common import FinetuneResult, Run, resolve_splits, restrict
from ehrseq.recipes.sequence import finetune_sequence
from ehrseq.registry import SEQUENCE_MODELS, behrt_id_limits
from ehrseq.split import ids_in
from ehrseq.tasks.builtin import KIND_OF_TARGET, builtin_labels
from ehrseq.tasks.label_files import TaskLabels
from ehrseq.tasks.resolve import builtin_params

log = logging.getLogger("ehrseq.api")
_NO_EVENTS = pd.DataFrame({"subject_id": pd.Series([], dtype="int64")})


def streamable(data: Any, cfg: FinetuneConfig) -> Path | None:
    """The MEDS root :func:`finetune_streamed` can stream ``data`` from under ``cfg``, or None (read whole).
    A label file or code map given to :func:`ehrseq.api.finetune` itself is its caller's to rule out."""
    if cfg.labels is not None or cfg.task is not None or cfg.sites:
        return None
    if cfg.split.strategy != "data" or cfg.model not in SEQUENCE_MODELS:
        return None
    if KIND_OF_TARGET.get(cfg.target) in (None, "survival"):
        return None
    return sharded_root(data)


def finetune_streamed(data: Any, cfg: FinetuneConfig, out: str | Path | None, *, init: str | Path | None = None,
                      column_map: Mapping[str, str] | None = None) -> FinetuneResult | None:
    """:func:`~ehrseq.recipes.sequence.finetune_sequence` on the MEDS root ``data`` streamed in batches; None
    when it cannot be streamed (see the module docstring; the caller then reads it whole)."""
    from ehrseq.artifacts import load_artifact
    from ehrseq.provenance import check_init_overlap

    root = streamable(data, cfg)
    if root is None:
        return None
    splits = resolve_splits(LoadedData(_NO_EVENTS, read_subject_splits(root), None, "meds"), cfg)
    _, splits = restrict(_NO_EVENTS, splits, cfg)  # the seeded train share, as prepare() keeps it
    init_art = load_artifact(init) if init else None
    overlap = check_init_overlap(init_art, splits, allow=cfg.allow_init_overlap) if init_art is not None else None
    acc = FitAccumulator(cfg.featurizer, ids_in(splits, "train")) if init_art is None else None
    hasher, frames, spec = RowHasher(), [], None
    params = builtin_params(cfg.target, config_to_dict(cfg))
    keep = splits["subject_id"].to_numpy(np.int64)
    try:
        for b in batches(root, column_map, keep):
            tl = builtin_labels(cfg.target, b, **params)
            frames.append(tl.frame)
            spec = tl.spec
            if acc is not None:
                acc.add(b)
            hasher.add(b)
    except OutOfOrder:
        log.warning("%s: the shards' subjects are not in ascending order; reading the data whole", root)
        return None
    if spec is None:  # no events of the split's subjects: the in-memory path gives the same errors
        return None
    tl = TaskLabels(pd.concat(frames, ignore_index=True), spec)
    match = {"rows": len(tl), "kept": len(tl), "unknown_subject": 0, "no_history": 0}
    check_training_cohort(tl.frame, spec.kind, ids_in(splits, "train"), task=spec.name,
                          min_train_subjects=cfg.min_train_subjects, min_class_count=cfg.min_class_count)
    fitted = acc.finish() if acc is not None else None
    run = Run(_NO_EVENTS, splits, tl, match, init_art, str(init) if init else None, overlap)

    def featurize(frozen: Featurizer | None, rows: dict[str, tuple[pd.DataFrame, np.ndarray | None]]
                  ) -> tuple[Featurizer, dict[str, SequenceDataset], str]:
        fz = frozen if frozen is not None else fitted
        assert fz is not None  # fitted above unless an --init artifact froze it
        limits = behrt_id_limits(fz) if cfg.model == "behrt" else None
        parts = stream_datasets(root, column_map, keep, fz, cfg.model, rows, id_limits=limits)
        return fz, parts, hasher.hexdigest()

    return finetune_sequence(run, cfg, out, featurize=featurize)


__all__ = ["finetune_streamed", "streamable"]
