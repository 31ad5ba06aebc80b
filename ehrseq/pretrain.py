"""Masked-code pretraining of BEHRT on every training-split sequence (``ehrseq pretrain``).

Each train subject contributes one sequence: its whole history (prediction_time = its last event). 15% of
eligible codes are selected, 80/10/10 masked / random / kept (see :mod:`ehrseq.models.masking`).
The artifact holds the MLM model and the featurizer; ``finetune --model behrt --init`` loads its encoder.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ehrseq.artifacts import save_artifact
from ehrseq.config import FinetuneConfig, config_to_dict, load_config
from ehrseq.data.batch import Batch
from ehrseq.featurize.featurizer import Featurizer
from ehrseq.split import ids_in
from ehrseq.utils import frame_hash, seed_everything

PRETRAIN_TARGET = "masked_codes"


def whole_history_labels(events: pd.DataFrame, subject_ids) -> pd.DataFrame:
    ev = events.loc[events["subject_id"].isin(subject_ids) & events["time"].notna()]
    last = ev.groupby("subject_id")["time"].max()
    return pd.DataFrame({"subject_id": last.index.to_numpy(), "prediction_time": last.to_numpy()})


def pretrain(data: Any, *, out: str | Path | None = None, config: FinetuneConfig | str | Path | None = None,
             mask_prob: float = 0.15, **overrides: Any) -> dict[str, Any]:
    from ehrseq.api import build_model, load_data, make_dataset, model_config_dict, resolve_splits
    from ehrseq.models.masking import mask_codes
    from ehrseq.train.trainer import train

    cfg = config if isinstance(config, FinetuneConfig) else load_config(config, **{"model": "behrt", **overrides})
    seed_everything(cfg.seed)
    d = data if hasattr(data, "events") else load_data(data)
    splits = resolve_splits(d, cfg)
    fz = Featurizer(cfg.featurizer).fit(d.events, splits)
    parts = {}
    for name in ("train", "tuning"):
        lab = whole_history_labels(d.events, ids_in(splits, name))
        parts[name] = make_dataset(fz.transform(d.events, lab), None, fz, "behrt")
    model = build_model("behrt", "mlm", 1, fz, cfg.preset, dict(cfg.model_overrides), None)
    vocab = len(fz.vocab_)
    gen = torch.Generator().manual_seed(cfg.seed)

    def mlm_step(m: torch.nn.Module, b: Batch) -> torch.Tensor:
        masked, labels = mask_codes(b.code_ids, b.attention_mask, vocab, gen, prob=mask_prob)
        return m(replace(b, code_ids=masked, labels=None), labels=labels).loss

    result = train(model, parts["train"], parts["tuning"], replace(cfg.train, seed=cfg.seed), loss_fn=mlm_step)
    metrics = {"train": {"best_epoch": result.best_epoch, "history": result.history,
                         "best_tuning_mlm_loss": result.best_tuning_loss,
                         "sequences_per_second": result.sequences_per_second}}
    if out is not None:
        save_artifact(
            out, state_dict=model.state_dict(),
            config={"model_type": "behrt", "target": PRETRAIN_TARGET, "task": "mlm", "label_names": None,
                    "model": model_config_dict(model), "finetune": config_to_dict(cfg), "mask_prob": mask_prob},
            featurizer=fz.to_dict(), metrics=metrics,
            data_hash=frame_hash(d.events, ["subject_id", "time", "code", "numeric_value"]),
            split_hash=frame_hash(splits.sort_values("subject_id")),
        )
    return metrics
