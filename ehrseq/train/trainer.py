"""One explicit training loop for every torch model in ehrseq.

Seeds the model init and the shuffling, early-stops on the tuning loss, keeps the best weights in memory (on
the CPU), shows a progress bar with loss and ETA, and places the model and every batch on ``train.device``
(a GPU when one is present, with ``auto``). Losses are summed on the device and read back once per progress
refresh. A non-finite loss stops training with a clear error instead of silently writing NaN weights.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ehrseq.data.dataset import collate
from ehrseq.errors import ConfigError, EhrseqError
from ehrseq.train.schedule import lr_factor  # noqa: F401  (re-exported: the trainer's schedule)

log = logging.getLogger(__name__)
SCHEDULES = ("constant", "linear", "cosine")
MONITORS = ("loss", "auroc")  # what early stopping follows on the tuning split (auroc: binary tasks)
HEARTBEAT_SECONDS = 30.0  # without progress bars: one INFO line at least this often (and one per epoch)
REFRESH_SECONDS = 1.0  # on an accelerator, the summed loss is read back (a host sync) at most this often
DEVICES = re.compile(r"auto|cpu|cuda(:\d+)?")  # the values train.device takes
PRECISIONS = ("fp32", "bf16")  # train.precision: fp32, or bfloat16 autocast of forward passes (fp32 weights)


@dataclass(frozen=True)
class TrainConfig:
    """The shared trainer's hyper-parameters: the ``train`` section of a run config (and its CLI flags)."""

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
    min_delta: float = 1e-5  # a tuning loss lower by less than this is not an improvement
    # early stopping and the kept weights follow the tuning loss ("loss"), or a tuning score the recipe computes
    # (``tuning_score`` of train(); "auroc": binary tasks, where a handful of tuning positives makes the loss
    # favour predicting the base rate)
    monitor: str = "loss"
    # where the model trains: "auto" (the GPU when torch sees one, else the CPU), "cpu", "cuda" or "cuda:N"
    device: str = "auto"
    # "bf16": forward passes (training, tuning loss) under bfloat16 autocast; weights, optimizer and loss stay
    # fp32. Falls back to fp32, with a warning, where the device has no bf16 support (see autocast_for)
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"train.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.monitor not in MONITORS:
            raise ValueError(f"train.monitor must be one of {MONITORS}, got {self.monitor!r}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"train.warmup must be in [0, 1), got {self.warmup}")
        if not isinstance(self.device, str) or not DEVICES.fullmatch(self.device):
            raise ValueError(f"train.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {PRECISIONS}, got {self.precision!r}")


def resolve_device(name: str) -> torch.device:
    """The torch device ``train.device`` names; ``auto`` is the GPU when torch sees one, else the CPU.

    A device this machine does not have is a :class:`ConfigError` naming the knob."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not DEVICES.fullmatch(name):
        raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {name!r}")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device: {name} is not available (this torch build or machine has no CUDA GPU); "
                              "set train.device (--device) to cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"train.device: {name} is not available ({torch.cuda.device_count()} CUDA device(s) "
                              "seen); set train.device (--device) to an index below that, cuda, or auto")
    return dev


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 matrix products natively (CPU: oneDNN's bf16 kernels, e.g. AVX512-BF16
    or AMX; CUDA: compute capability 8 or later)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without the check
        return False


_warned_precision: set[str] = set()


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The context a forward pass runs in for ``train.precision`` on ``device``: bfloat16 autocast for "bf16"
    (fp32 where the device lacks bf16 support, with one logged warning per device type), else nothing."""
    if precision not in PRECISIONS:
        raise ConfigError(f"train.precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if not bf16_supported(device):
        if device.type not in _warned_precision:
            _warned_precision.add(device.type)
            log.warning("train.precision: bf16 is not supported natively on this %s; running in fp32", device.type)
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def make_adamw(params: Any, *, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    """The trainer's AdamW: torch's fused kernel where it runs (CPU and CUDA float parameters; measured 1.7x
    faster than ``foreach`` per BEHRT-small step on the CPU), else ``foreach``."""
    ps = [p for p in params if p.requires_grad]
    if device.type in ("cpu", "cuda") and all(p.is_floating_point() and p.device.type == device.type for p in ps):
        return torch.optim.AdamW(ps, lr=lr, weight_decay=weight_decay, fused=True)
    return torch.optim.AdamW(ps, lr=lr, weight_decay=weight_decay, foreach=True)


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` on ``device``: a tensor, an object with ``.to`` (a :class:`~ehrseq.data.batch.Batch`), or a
    dict of tensors (the text classifier's); other values pass unchanged."""
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch.to(device) if hasattr(batch, "to") else batch


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def cpu_state(model: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """A copy of the model's state dict on the CPU (the trainer's kept best weights)."""
    state = model.state_dict()
    out = OrderedDict((k, v.detach().to("cpu", copy=True)) for k, v in state.items())
    out._metadata = getattr(state, "_metadata", None)  # type: ignore[attr-defined]  (module versions)
    return out


@dataclass
class TrainResult:
    """What :func:`train` reports: the kept epoch (1-based), its monitored value, one history row per epoch."""

    best_epoch: int
    best_tuning_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    sequences_per_second: float = 0.0


def make_loader(ds: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0, collate_fn: Callable = collate) -> DataLoader:
    """A DataLoader over ``ds``; shuffled with its own generator seeded by ``seed`` (global RNG untouched)."""
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
    loss_fn: Callable[[nn.Module, Any], torch.Tensor | None] | None = None,
    batches: Callable[[int], Iterable[Any]] | None = None,
    tuning_loss: Callable[[nn.Module], float] | None = None,
    keep_best: bool = True,
    tuning_score: Callable[[nn.Module], float] | None = None,
    reseed: bool = True,
) -> TrainResult:
    """Train ``model`` in place (it ends holding the best weights on the tuning split).

    The loop every family shares: seeds, AdamW with the configured schedule, gradient clipping, a clean error
    on a non-finite loss, early stopping on the tuning loss with the best weights kept, progress bars or
    heartbeat lines. What differs per family is passed in:

    - ``loss_fn(model, batch)``: the step's loss (default ``model(batch).loss``); None skips the batch;
    - ``batches(epoch)``: the epoch's training batches (default: ``train_ds`` shuffled with the seed), e.g.
      DeepSurv's event-stratified batches; each batch needs ``len()``;
    - ``tuning_loss(model)``: the tuning loss (default: ``loss_fn`` averaged over ``tuning_ds``), e.g. the
      Cox partial likelihood over the whole tuning set rather than per batch;
    - ``keep_best``: without any tuning loss, False keeps the last weights (True: the lowest train loss);
    - ``tuning_score(model)``: a score on tuning, higher is better (e.g. AUROC), recorded as
      ``tuning_<cfg.monitor>``; when given, early stopping and the kept weights follow it (ties: the earlier
      epoch) and the tuning loss is only recorded. ``TrainResult.best_tuning_loss`` is then minus the score;
    - ``reseed``: False leaves torch's global RNG (dropout) where the caller's seeding left it, e.g. the text
      classifier, which seeds each ensemble member before building its encoder and continues that stream.

    The model trains on ``cfg.device`` and goes back to the device it came on; hooks that build tensors
    themselves put them on the model's device (:func:`model_device`).
    """
    if len(train_ds) == 0:
        raise EhrseqError("the training split has no labelled rows; check the split and the target")
    if tuning_score is not None and cfg.monitor == "loss":
        raise ValueError("a tuning_score hook needs train.monitor naming the score, not 'loss'")
    if tuning_score is None and cfg.monitor != "loss":
        raise ConfigError(f"train.monitor: {cfg.monitor} is computed for binary tasks of the rnn and behrt models "
                          "only; this training (pretraining, DeepSurv, text) early-stops on the loss: remove "
                          "train.monitor or set it to loss")
    dev = resolve_device(cfg.device)
    home = model_device(model)
    if reseed:
        torch.manual_seed(cfg.seed)
    model.to(dev)
    opt = make_adamw(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, device=dev)
    total_steps = cfg.epochs * math.ceil(len(train_ds) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: lr_factor(k, total_steps, cfg.schedule, cfg.warmup)
    )
    step = loss_fn or (lambda m, b: m(b).loss)
    eager = dev.type == "cpu"  # reading a loss back costs nothing here: check and show every step
    best, best_loss, best_epoch, bad = None, math.inf, -1, 0
    history: list[dict[str, float]] = []
    t0, n_seen = time.perf_counter(), 0
    bars = cfg.progress and sys.stderr.isatty()  # what tqdm's disable=None decides; else heartbeat lines
    beat = _Heartbeat(cfg, total_steps, t0)
    try:
        for epoch in range(cfg.epochs):
            model.train()
            loader = batches(epoch) if batches is not None else make_loader(
                train_ds, cfg.batch_size, shuffle=True, seed=cfg.seed + epoch, collate_fn=collate_fn)
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=None if cfg.progress else True, leave=False)  # None: off when not a terminal
            total, n, shown = torch.zeros((), dtype=torch.float64, device=dev), 0, time.perf_counter()
            for batch in bar:
                with autocast_for(cfg.precision, dev):
                    loss = step(model, to_device(batch, dev))
                if loss is None:
                    continue
                if eager:
                    _check_finite(loss.item(), epoch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
                total += loss.detach().double() * len(batch)
                n += len(batch)
                beat.done += 1
                now = time.perf_counter()
                if eager or now - shown >= REFRESH_SECONDS:  # one host sync per refresh
                    shown, mean = now, _check_finite(total.item() / n, epoch)
                    bar.set_postfix(loss=f"{mean:.4f}")
                    if not bars:
                        beat.step(epoch, mean)
            n_seen += n
            row = {"epoch": epoch + 1, "train_loss": _check_finite(total.item() / max(n, 1), epoch)}
            if tuning_loss is not None:
                model.eval()
                with torch.no_grad():
                    row["tuning_loss"] = float(tuning_loss(model))
            elif tuning_ds is not None and len(tuning_ds):
                row["tuning_loss"] = evaluate_loss(model, tuning_ds, cfg.batch_size, collate_fn=collate_fn,
                                                   loss_fn=step, precision=cfg.precision)
            monitored = row.get("tuning_loss", row["train_loss"])
            if tuning_score is not None:
                model.eval()
                with torch.no_grad():
                    row[f"tuning_{cfg.monitor}"] = float(tuning_score(model))
                monitored = -row[f"tuning_{cfg.monitor}"]
            history.append(row)
            if bars:
                tqdm.write(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            else:
                beat.epoch_end(row)
            if "tuning_loss" not in row and not keep_best:
                best_epoch = epoch + 1  # no tuning loss: the last weights stand
            elif monitored < best_loss - cfg.min_delta:
                best, best_loss, best_epoch, bad = cpu_state(model), monitored, epoch + 1, 0
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
            if cfg.max_train_seconds and time.perf_counter() - t0 > cfg.max_train_seconds:
                log.info("stopping: max_train_seconds reached")
                break
        if best is not None:
            model.load_state_dict(best)
    finally:
        model.to(home)  # the model goes back to where it came from (inference paths read it on the CPU)
    secs = time.perf_counter() - t0
    return TrainResult(best_epoch, best_loss, history, secs, n_seen / secs if secs else 0.0)


def _check_finite(loss: float, epoch: int) -> float:
    if not math.isfinite(loss):
        raise EhrseqError(f"training loss became {loss} at epoch {epoch + 1}; lower the learning rate or check "
                          "the inputs for extreme values")
    return loss


class _Heartbeat:
    """INFO lines with epoch, step, loss and ETA when no progress bar is shown (batch jobs, logs)."""

    def __init__(self, cfg: TrainConfig, total_steps: int, t0: float) -> None:
        self.cfg, self.total, self.t0, self.last, self.done = cfg, max(total_steps, 1), t0, t0, 0
        self.per_epoch = math.ceil(self.total / max(cfg.epochs, 1))

    def _eta(self, now: float) -> str:
        left = (now - self.t0) / max(self.done, 1) * (self.total - self.done)
        if self.cfg.max_train_seconds:
            left = min(left, max(self.cfg.max_train_seconds - (now - self.t0), 0.0))
        return f"elapsed {_clock(now - self.t0)}, ETA {_clock(left)} if all {self.cfg.epochs} epochs run"

    def step(self, epoch: int, loss: float) -> None:
        """Log a progress line when the last one is ``HEARTBEAT_SECONDS`` old (``done`` counts the steps)."""
        now = time.perf_counter()
        if now - self.last >= HEARTBEAT_SECONDS:
            self.last = now
            log.info("epoch %d/%d step %d/%d loss %.4f, %s", epoch + 1, self.cfg.epochs,
                     self.done - epoch * self.per_epoch, self.per_epoch, loss, self._eta(now))

    def epoch_end(self, row: dict[str, float]) -> None:
        """One line with the epoch's figures and the ETA."""
        now = self.last = time.perf_counter()
        figs = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch")
        if log.isEnabledFor(logging.INFO):
            log.info("epoch %d/%d done: %s, %s", row["epoch"], self.cfg.epochs, figs, self._eta(now))
        elif self.cfg.progress:  # no logging set up (a notebook, a script): the epoch line as with bars
            tqdm.write(f"epoch {row['epoch']}/{self.cfg.epochs}: {figs}")


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


@torch.no_grad()
def evaluate_loss(model: nn.Module, ds: Dataset, batch_size: int, *, collate_fn: Callable = collate,
                  loss_fn: Callable | None = None, precision: str = "fp32") -> float:
    """The mean per-row loss of ``model`` over ``ds`` in eval mode, on the model's device (one host sync);
    forward passes under :func:`autocast_for` ``precision``."""
    model.eval()
    step = loss_fn or (lambda m, b: m(b).loss)
    dev = model_device(model)
    total, n = torch.zeros((), dtype=torch.float64, device=dev), 0
    for batch in make_loader(ds, batch_size, shuffle=False, collate_fn=collate_fn):
        with autocast_for(precision, dev):
            loss = step(model, to_device(batch, dev))
        total += loss.double() * len(batch)
        n += len(batch)
    return total.item() / max(n, 1)


@torch.no_grad()
def predict_logits(model: nn.Module, ds: Dataset, batch_size: int = 256, *, collate_fn: Callable = collate,
                   with_embeddings: bool = False, precision: str = "fp32"
                   ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """(N, K) logits in dataset order (and (N, H) embeddings when asked), run on the model's device, forward
    passes under :func:`autocast_for` ``precision``."""
    model.eval()
    dev = model_device(model)
    out, emb = [], []
    for batch in make_loader(ds, batch_size, shuffle=False, collate_fn=collate_fn):
        with autocast_for(precision, dev):
            o = model(to_device(batch, dev))
        out.append(o.logits.float().cpu().numpy())
        if with_embeddings:
            emb.append(o.embeddings.float().cpu().numpy())
    logits = np.concatenate(out) if out else np.zeros((0, 1), np.float32)
    if with_embeddings:
        return logits, (np.concatenate(emb) if emb else np.zeros((0, 0), np.float32))
    return logits
