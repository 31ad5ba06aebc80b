"""Permutation importance per input group for the RNN forecaster (the explanation method of Norgeot et al.).

An input group is a set of columns of the step vectors (a lab with its missing flag, all drugs, all diagnoses,
the visit gap) or of the static vector (age, sex, each baseline lab). Its importance is the drop in a metric
(AUROC by default) when the group's columns are shuffled across patients, averaged over repeats. Shuffling
keeps each column's distribution and breaks its link to the outcome; a drop near zero means the model does
not use the group (not that the group is unrelated to the outcome).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from ehrseq.data.batch import Batch
from ehrseq.data.dataset import SequenceDataset, collate
from ehrseq.evaluate.metrics import auroc
from ehrseq.featurize.featurizer import Featurizer


def input_groups(fz: Featurizer) -> dict[str, tuple[str, list[int]]]:
    """Group name -> ("step" | "static", column indices)."""
    nn = len(fz.numeric_codes_)
    groups: dict[str, tuple[str, list[int]]] = {}
    for i, c in enumerate(fz.numeric_codes_):
        groups[c] = ("step", [i, nn + i])
    by_prefix: dict[str, list[int]] = {}
    for j, c in enumerate(fz.step_codes_):
        prefix = c.split("//", 1)[0] + "//*" if "//" in c else c
        by_prefix.setdefault(prefix, []).append(2 * nn + j)
    for p, cols in sorted(by_prefix.items()):
        groups[p] = ("step", cols)
    groups["days since previous step"] = ("step", [fz.n_step_features - 1])
    groups["age"] = ("static", [0])
    groups["sex"] = ("static", [1, 2])
    for i, c in enumerate(fz.static_numeric_codes_):
        groups[f"baseline {c}"] = ("static", [3 + 2 * i, 4 + 2 * i])
    return groups


@torch.no_grad()
def _scores(model: torch.nn.Module, batches: list[Batch]) -> np.ndarray:
    model.eval()
    return torch.cat([torch.sigmoid(model(b).logits[:, 0]) for b in batches]).numpy()


def permutation_importance(
    model: torch.nn.Module,
    ds: SequenceDataset,
    fz: Featurizer,
    *,
    metric: Callable = auroc,
    n_repeats: int = 3,
    seed: int = 0,
    batch_size: int = 512,
) -> pd.DataFrame:
    """Drop in ``metric`` per input group, as a frame sorted by importance (mean and sd over repeats)."""
    if ds.targets is None:
        raise ValueError("permutation importance needs a dataset with targets")
    y = ds.targets[:, 0]
    batches = [collate([ds[i] for i in range(a, min(a + batch_size, len(ds)))]) for a in range(0, len(ds), batch_size)]
    padded = _pad_steps(batches)
    x_all = torch.cat([b.visit_x for b in padded])  # (N, V, F)
    s_all = torch.cat([b.static_x for b in batches])  # (N, S)
    base = float(metric(y, _scores(model, batches)))
    rng = np.random.default_rng(seed)
    rows = []
    for name, (kind, cols) in input_groups(fz).items():
        drops = []
        for _ in range(n_repeats):
            perm = torch.from_numpy(rng.permutation(len(y)))
            shuffled = []
            for a, b in zip(range(0, len(y), batch_size), padded):
                idx = perm[a:a + len(b)]
                if kind == "step":
                    vx = b.visit_x.clone()
                    vx[:, :, cols] = x_all[idx][:, : vx.shape[1]][:, :, cols] * b.visit_mask[..., None]
                    shuffled.append(Batch(**{**b.__dict__, "visit_x": vx}))
                else:
                    sx = b.static_x.clone()
                    sx[:, cols] = s_all[idx][:, cols]
                    shuffled.append(Batch(**{**b.__dict__, "static_x": sx}))
            drops.append(base - float(metric(y, _scores(model, shuffled))))
        rows.append({"group": name, "kind": kind, "n_columns": len(cols), "importance": float(np.mean(drops)),
                     "sd": float(np.std(drops))})
    out = pd.DataFrame(rows).sort_values("importance", ascending=False, ignore_index=True)
    out.attrs["baseline"] = base
    return out


def _pad_steps(batches: list[Batch]) -> list[Batch]:
    """Pad every batch's steps to the longest history over all batches (so steps can move between batches)."""
    v = max(b.visit_x.shape[1] for b in batches)
    out = []
    for b in batches:
        extra = v - b.visit_x.shape[1]
        if extra:
            b = Batch(**{**b.__dict__,
                         "visit_x": torch.nn.functional.pad(b.visit_x, (0, 0, 0, extra)),
                         "visit_mask": torch.nn.functional.pad(b.visit_mask, (0, extra))})
        out.append(b)
    return out


def explain_artifact(artifact, data, *, split: str = "held_out", n_repeats: int = 3, seed: int = 0) -> pd.DataFrame:
    """Permutation importance of an RNN ``cdai`` artifact on one split of ``data`` (MEDS root or LoadedData)."""
    from ehrseq.api import LoadedData, load_data, make_dataset, model_from_artifact, target_arrays
    from ehrseq.artifacts import load_artifact
    from ehrseq.config import load_config
    from ehrseq.errors import EhrseqError
    from ehrseq.labels import make_labels

    art = load_artifact(artifact)
    if art.config["model_type"] != "rnn" or art.config.get("task") != "binary":
        raise EhrseqError("permutation importance by input group is implemented for binary RNN artifacts")
    d = data if isinstance(data, LoadedData) else load_data(data)
    events = d.events
    if split != "all":
        if d.splits is None:
            raise EhrseqError(f"--split {split}: the data has no subject_splits; pass --split all")
        events = events.loc[events["subject_id"].isin(d.splits.loc[d.splits["split"] == split, "subject_id"])]
    fz = Featurizer.from_dict(art.featurizer)
    cfg = load_config(None, cdai_threshold=art.config["finetune"]["cdai_threshold"])
    labels = make_labels(art.config["target"], events, threshold=cfg.cdai_threshold)
    fs = fz.transform(events, labels)
    ds = make_dataset(fs, target_arrays(art.config["target"], fs.labels, None), fz, "rnn")
    return permutation_importance(model_from_artifact(art), ds, fz, n_repeats=n_repeats, seed=seed)
