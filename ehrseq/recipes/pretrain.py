"""Masked-code pretraining of BEHRT on every training-split sequence (``ehrseq pretrain``).

Each train subject contributes its whole history (prediction_time = its last event) and, with
``prefixes_per_subject`` k > 1, up to k - 1 more sequences cut at earlier visit days drawn with the seed: the
featurizer keeps the most recent ``max_len`` tokens, so a long history is otherwise seen only by its end.
15% of eligible codes are selected, 80/10/10 masked / random / kept (see :mod:`ehrseq.models.masking`).
Training draws fresh masks every step; the tuning loss that early stopping monitors is computed on masks fixed
per tuning subject (:func:`~ehrseq.models.masking.fixed_mask_codes`), so epochs are compared on the same task.
The artifact holds the MLM model, the featurizer and its train subjects (``train_subjects.json``);
``finetune --model behrt --init`` loads its encoder.

A MEDS root with ``metadata/subject_splits.parquet`` (and the data's own split) is streamed in batches of whole
subjects into an on-disk store (:mod:`ehrseq.data.sharded`), so memory holds one batch, not the extract; the
featurizer, datasets and metrics are those of the in-memory path, which frames, other inputs and
``EHRSEQ_STREAM=0`` take.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ehrseq.artifacts import save_artifact
from ehrseq.config import FinetuneConfig, config_to_dict, load_config
from ehrseq.data.batch import Batch
from ehrseq.errors import ConfigError
from ehrseq.featurize.featurizer import Featurizer
from ehrseq.registry import PRETRAIN_TARGET  # noqa: F401  (what pretraining artifacts record as their target)
from ehrseq.split import ids_in
from ehrseq.utils import EVENT_HASH_COLUMNS, fix_mmap_threshold, frame_hash, seed_everything


def whole_history_labels(events: pd.DataFrame, subject_ids, prefixes_per_subject: int = 1,
                         seed: int = 0) -> pd.DataFrame:
    """Pretraining rows: each subject's last event time, plus up to k - 1 earlier visit-day ends drawn with
    ``seed`` (the last event of each drawn day, so a cut never splits a visit)."""
    if prefixes_per_subject < 1:
        raise ValueError(f"prefixes_per_subject must be >= 1, got {prefixes_per_subject}")
    return history_rows(visit_day_ends(events, subject_ids), prefixes_per_subject, seed)


def visit_day_ends(events: pd.DataFrame, subject_ids) -> pd.DataFrame:
    """subject_id, prediction_time: the last event time of each visit day of these subjects, by subject and
    day (per subject: batches of whole subjects, concatenated in subject order, give the whole frame's)."""
    ev = events.loc[events["subject_id"].isin(subject_ids) & events["time"].notna(), ["subject_id", "time"]]
    day_end = ev.groupby([ev["subject_id"], ev["time"].dt.floor("D")])["time"].max().reset_index(level=1, drop=True)
    return day_end.reset_index().rename(columns={"time": "prediction_time"})


def history_rows(ends: pd.DataFrame, prefixes_per_subject: int, seed: int) -> pd.DataFrame:
    """:func:`whole_history_labels` from :func:`visit_day_ends`' rows: each subject's last day end plus up to
    k - 1 others drawn with ``seed``."""
    last = (ends.groupby("subject_id")["prediction_time"].transform("max") == ends["prediction_time"]).to_numpy()
    key = np.where(last, -1.0, np.random.default_rng(seed).random(len(ends)))  # the last day ranks first
    rank = pd.Series(key).groupby(ends["subject_id"].to_numpy()).rank(method="first").to_numpy()
    keep = rank <= prefixes_per_subject
    return ends.loc[keep].sort_values(["subject_id", "prediction_time"]).reset_index(drop=True)


def check_pretrain_args(mask_prob: float, prefixes_per_subject: int) -> None:
    """ConfigError unless 0 < mask_prob <= 1 and prefixes_per_subject >= 1 (checked before data is read)."""
    if isinstance(mask_prob, bool) or not isinstance(mask_prob, int | float) or not 0.0 < mask_prob <= 1.0:
        raise ConfigError(f"mask_prob must be a number in (0, 1], got {mask_prob!r}")
    if isinstance(prefixes_per_subject, bool) or not isinstance(prefixes_per_subject, int) or prefixes_per_subject < 1:
        raise ConfigError(f"prefixes_per_subject must be a whole number >= 1, got {prefixes_per_subject!r}")


def pretrain(data: Any, *, out: str | Path | None = None, config: FinetuneConfig | str | Path | None = None,
             mask_prob: float = 0.15, prefixes_per_subject: int = 1, overwrite: bool = False,
             **overrides: Any) -> dict[str, Any]:
    """Masked-code pretraining of BEHRT on the train split; early stopping on the fixed-mask tuning MLM loss.

    ``config`` and ``overrides`` are checked before ``data`` (a path) is read. Returns the metrics; with
    ``out`` also writes the artifact (train subjects recorded for ``--init``'s overlap check); an existing
    ``out`` is replaced only with ``overwrite=True`` (checked, with its writability, before anything is read).
    """
    from ehrseq.data.dataset import LengthOrdered, bucketed_batches
    from ehrseq.data.loading import load_data
    from ehrseq.models.masking import fixed_mask_codes, mask_codes
    from ehrseq.recipes.common import resolve_splits
    from ehrseq.registry import build_model, make_dataset, model_config_dict
    from ehrseq.train.trainer import train

    if out is not None:
        from ehrseq.artifacts import check_artifact_out

        check_artifact_out(out, overwrite=overwrite)
    cfg = load_config(config, **{"model": "behrt", **overrides})
    check_pretrain_args(mask_prob, prefixes_per_subject)
    seed_everything(cfg.seed)
    streamed = None if hasattr(data, "events") else _streamed(data, cfg, prefixes_per_subject)
    if streamed is not None:  # a MEDS root with splits: read in batches into an on-disk store (same arrays)
        fz, parts, data_hash, splits = streamed
        fix_mmap_threshold()  # bounded memory is the point of streaming: keep the heap from growing in training
    else:
        d = data if hasattr(data, "events") else load_data(data)
        splits = resolve_splits(d, cfg)
        fz = Featurizer(cfg.featurizer).fit(d.events, splits)
        parts = {}
        for name in ("train", "tuning"):
            k = prefixes_per_subject if name == "train" else 1  # tuning loss: one whole history per subject
            lab = whole_history_labels(d.events, ids_in(splits, name), k, cfg.seed)
            parts[name] = make_dataset(fz.transform(d.events, lab), None, fz, "behrt")
        data_hash = frame_hash(d.events, EVENT_HASH_COLUMNS)
    model = build_model("behrt", "mlm", 1, fz, cfg.preset, dict(cfg.model_overrides), None)
    vocab = len(fz.vocab_)
    gen = torch.Generator().manual_seed(cfg.seed)

    def mlm_step(m: torch.nn.Module, b: Batch) -> torch.Tensor:
        if m.training:  # a training step: fresh masks
            masked, labels = mask_codes(b.code_ids, b.attention_mask, vocab, gen, prob=mask_prob)
        else:  # the tuning loss (the trainer evaluates in eval mode): the same masks every epoch
            masked, labels = fixed_mask_codes(b.code_ids, b.attention_mask, vocab, b.subject_id, seed=cfg.seed,
                                              prob=mask_prob)
        return m(replace(b, code_ids=masked, labels=None), labels=labels, masked_only=True).loss

    # batches of similar length (shuffled per epoch under the seed); the tuning loss read in length order
    result = train(model, parts["train"], LengthOrdered(parts["tuning"]), replace(cfg.train, seed=cfg.seed),
                   loss_fn=mlm_step, batches=bucketed_batches(parts["train"], cfg.train.batch_size, cfg.seed))
    metrics = {"train": {"best_epoch": result.best_epoch, "history": result.history,
                         "best_tuning_mlm_loss": result.best_tuning_loss,
                         "tuning_masks": f"fixed per subject (seed {cfg.seed})",
                         "sequences_per_second": result.sequences_per_second}}
    if out is not None:
        save_artifact(
            out, state_dict=model.state_dict(),
            config={"model_type": "behrt", "target": PRETRAIN_TARGET, "task": "mlm", "label_names": None,
                    "model": model_config_dict(model), "finetune": config_to_dict(cfg), "mask_prob": mask_prob,
                    "prefixes_per_subject": prefixes_per_subject},
            featurizer=fz.to_dict(), metrics=metrics,
            data_hash=data_hash,
            split_hash=frame_hash(splits.sort_values("subject_id")),
            train_subjects=ids_in(splits, "train"),  # the weights and the vocabulary come from these
        )
    return metrics


def _streamed(data: Any, cfg: FinetuneConfig, k: int) -> tuple[Featurizer, dict[str, Any], str, pd.DataFrame] | None:
    """Pretraining's featurizer, datasets, data hash and splits from a MEDS root read in batches of whole
    subjects (:mod:`ehrseq.data.sharded`): one pass fits the featurizer, hashes the events and collects the
    visit-day ends, a second featurizes train and tuning into on-disk stores. None when ``data`` is not such a
    root, the config draws its own split, or the shards are not in subject order: then it is read whole."""
    from ehrseq.data.loading import LoadedData
    from ehrseq.data.sharded import OutOfOrder, RowHasher, batches, sharded_root, stream_datasets
    from ehrseq.featurize.sharded import FitAccumulator
    from ehrseq.io import read_subject_splits
    from ehrseq.recipes.common import resolve_splits
    from ehrseq.registry import behrt_id_limits

    root = sharded_root(data)
    if root is None or cfg.split.strategy != "data":
        return None
    splits = resolve_splits(LoadedData(pd.DataFrame({"subject_id": []}), read_subject_splits(root), None, "meds"),
                            cfg)
    acc, hasher = FitAccumulator(cfg.featurizer, ids_in(splits, "train")), RowHasher()
    ids = {name: ids_in(splits, name) for name in ("train", "tuning")}
    ends: dict[str, list[pd.DataFrame]] = {name: [] for name in ids}
    try:
        for b in batches(root):
            acc.add(b)
            hasher.add(b)
            for name, sub in ids.items():
                ends[name].append(visit_day_ends(b, sub))
    except OutOfOrder:
        logging.getLogger("ehrseq.api").warning("%s: the shards' subjects are not in ascending order; reading "
                                                "the data whole", root)
        return None
    fz = acc.finish()  # refuses a split without train events, so some batch was read
    rows = {name: (history_rows(pd.concat(e, ignore_index=True), k if name == "train" else 1, cfg.seed), None)
            for name, e in ends.items()}
    parts = stream_datasets(root, None, None, fz, "behrt", rows, id_limits=behrt_id_limits(fz))
    return fz, parts, hasher.hexdigest(), splits
