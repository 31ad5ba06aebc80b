"""One explicit training loop for every torch model in ehrseq.

Seeds the model init and the shuffling, early-stops on the tuning loss, keeps the best weights in memory,
shows a progress bar with loss and ETA. A non-finite loss stops training with a clear error instead of
silently writing NaN weights.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ehrseq.data.batch import Batch
from ehrseq.data.dataset import collate
from ehrseq.errors import EhrseqError

log = logging.getLogger(__name__)
SCHEDULES = ("constant", "linear", "cosine")


def lr_factor(step: int, total: int, schedule: str, warmup: float) -> float:
    """Multiplier of the base learning rate at optimiser ``step`` (0-based) of ``total``.

    The warm-up spans ``warmup`` of the steps, at least one (whose factor is 1: no warm-up in effect)."""
    n_warm = max(1, int(warmup * total))
    if step < n_warm:
        return (step + 1) / n_warm
    if schedule == "constant":
        return 1.0
    frac = (step - n_warm) / max(total - n_warm, 1)
    return max(0.0, 1.0 - frac) if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 3  # epochs without tuning-loss improvement before stopping
    grad_clip: float = 1.0
    seed: int = 0
    progress: bool = True
    max_train_seconds: float | None = None
    # learning-rate schedule over all cfg.epochs: "constant", or "linear" / "cosine" decay to 0 after a linear
    # warm-up over the first ``warmup`` share of steps (what BERT-style encoders are usually trained with)
    schedule: str = "constant"
    warmup: float = 0.0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"train.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"train.warmup must be in [0, 1), got {self.warmup}")


@dataclass
class TrainResult:
    best_epoch: int
    best_tuning_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    sequences_per_second: float = 0.0


def make_loader(ds: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0, collate_fn: Callable = collate) -> DataLoader:
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g if shuffle else None, collate_fn=collate_fn)


def train(
    model: nn.Module,
    train_ds: Dataset,
    tuning_ds: Dataset | None,
    cfg: TrainConfig,
    *,
    collate_fn: Callable = collate,
    loss_fn: Callable[[nn.Module, Batch], torch.Tensor] | None = None,
) -> TrainResult:
    """Train ``model`` in place (it ends holding the best weights on the tuning split)."""
    if len(train_ds) == 0:
        raise EhrseqError("the training split has no labelled rows; check the split and the target")
    torch.manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * math.ceil(len(train_ds) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: lr_factor(k, total_steps, cfg.schedule, cfg.warmup)
    )
    step = loss_fn or (lambda m, b: m(b).loss)
    best, best_loss, best_epoch, bad = None, math.inf, -1, 0
    history: list[dict[str, float]] = []
    t0, n_seen = time.perf_counter(), 0
    for epoch in range(cfg.epochs):
        model.train()
        loader = make_loader(train_ds, cfg.batch_size, shuffle=True, seed=cfg.seed + epoch, collate_fn=collate_fn)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=None if cfg.progress else True, leave=False)  # None: off when not a terminal
        total, n = 0.0, 0
        for batch in bar:
            loss = step(model, batch)
            if not torch.isfinite(loss):
                raise EhrseqError(
                    f"training loss became {loss.item()} at epoch {epoch + 1}; lower the learning rate "
                    "or check the inputs for extreme values"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            total += loss.item() * len(batch)
            n += len(batch)
            bar.set_postfix(loss=f"{total / n:.4f}")
        n_seen += n
        row = {"epoch": epoch + 1, "train_loss": total / max(n, 1)}
        if tuning_ds is not None and len(tuning_ds):
            row["tuning_loss"] = evaluate_loss(model, tuning_ds, cfg.batch_size, collate_fn=collate_fn, loss_fn=step)
        history.append(row)
        monitored = row.get("tuning_loss", row["train_loss"])
        log.info("epoch %d: %s", epoch + 1, {k: round(v, 5) for k, v in row.items()})
        if cfg.progress:
            tqdm.write(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if monitored < best_loss - 1e-5:
            best, best_loss, best_epoch, bad = copy.deepcopy(model.state_dict()), monitored, epoch + 1, 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
        if cfg.max_train_seconds and time.perf_counter() - t0 > cfg.max_train_seconds:
            log.info("stopping: max_train_seconds reached")
            break
    if best is not None:
        model.load_state_dict(best)
    secs = time.perf_counter() - t0
    return TrainResult(best_epoch, best_loss, history, secs, n_seen / secs if secs else 0.0)


@torch.no_grad()
def evaluate_loss(model: nn.Module, ds: Dataset, batch_size: int, *, collate_fn: Callable = collate,
                  loss_fn: Callable | None = None) -> float:
    model.eval()
    step = loss_fn or (lambda m, b: m(b).loss)
    total, n = 0.0, 0
    for batch in make_loader(ds, batch_size, shuffle=False, collate_fn=collate_fn):
        total += step(model, batch).item() * len(batch)
        n += len(batch)
    return total / max(n, 1)


@torch.no_grad()
def predict_logits(model: nn.Module, ds: Dataset, batch_size: int = 256, *, collate_fn: Callable = collate,
                   with_embeddings: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """(N, K) logits in dataset order (and (N, H) embeddings when asked)."""
    model.eval()
    out, emb = [], []
    for batch in make_loader(ds, batch_size, shuffle=False, collate_fn=collate_fn):
        o = model(batch)
        out.append(o.logits.float().numpy())
        if with_embeddings:
            emb.append(o.embeddings.float().numpy())
    logits = np.concatenate(out) if out else np.zeros((0, 1), np.float32)
    if with_embeddings:
        return logits, (np.concatenate(emb) if emb else np.zeros((0, 0), np.float32))
    return logits
