"""Single-module timings behind issue #15's notes, old against new in one run, one torch thread.

    python -m benchmarks.kernels [--calls 100] [--threads 1]     # about 1 min

- BEHRT's input embedding at an inference batch (256 rows of 88 tokens, hidden 64): the frozen old module
  (``benchmarks/behrt_baseline.py``: out-of-place sums, the value channel through ``nn.Linear(1, H)``) against
  ``ehrseq.models.behrt.BehrtEmbeddings`` (in-place sums, a broadcast product), with the same weights; forward
  in fp32 and under bfloat16 autocast, and forward + backward in training mode (dropout 0, so both compute the
  same thing; the largest difference between their outputs is printed).
- The text classifier's small-preset encoder (transformers' DistilBERT, dim 64, 2 layers, 4 heads, attention
  dropout 0) on 32 windows of 160 tokens: fp32 against bfloat16 autocast, a training step (forward + backward)
  and inference.

Each figure is the median of ``--calls`` calls (milliseconds) after warm-up calls. Writes
``benchmarks/results/kernels.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable

import torch

from benchmarks import behrt_baseline as old_behrt
from benchmarks.common import write_result
from ehrseq.models.behrt import BehrtConfig, BehrtEmbeddings


def median_ms(f: Callable[[], object], calls: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        f()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def autocast(on: bool) -> contextlib.AbstractContextManager[object]:
    return torch.autocast("cpu", dtype=torch.bfloat16) if on else contextlib.nullcontext()


def embedding_rows(calls: int) -> list[str]:
    kw = dict(vocab_size=600, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
              max_visits=40, time_vocab_size=16, value_vocab_size=12, hidden_dropout_prob=0.0)
    torch.manual_seed(0)
    new = BehrtEmbeddings(BehrtConfig(**kw))
    old = old_behrt.BehrtEmbeddings(old_behrt.BehrtConfig(**kw))
    old.load_state_dict(new.state_dict())
    B, L, g = 256, 88, torch.Generator().manual_seed(0)
    ids = [torch.randint(1, n, (B, L), generator=g) for n in (600, 121, 3, 40, 16, 12)]
    num = torch.randn(B, L, generator=g)
    rows = []
    for label, bf16 in (("forward, fp32", False), ("forward, bf16 autocast", True)):
        with torch.no_grad(), autocast(bf16):
            diff = (old.eval()(*ids, num) - new.eval()(*ids, num)).abs().max().item()
            t_old = median_ms(lambda: old(*ids, num), calls)
            t_new = median_ms(lambda: new(*ids, num), calls)
        rows.append(f"| BEHRT input embedding, {label} | {t_old:.2f} | {t_new:.2f} | {t_old / t_new:.2f}x | "
                    f"{diff:.1e} |")

    def step(m: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            m.zero_grad(set_to_none=True)
            m(*ids, num).pow(2).mean().backward()
        return run

    old.train(), new.train()
    t_old, t_new = median_ms(step(old), calls), median_ms(step(new), calls)
    rows.append(f"| BEHRT input embedding, forward + backward, fp32 | {t_old:.2f} | {t_new:.2f} | "
                f"{t_old / t_new:.2f}x | |")
    return rows


def text_rows(calls: int) -> list[str]:
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    m = DistilBertModel(DistilBertConfig(vocab_size=2000, dim=64, n_layers=2, n_heads=4, hidden_dim=256,
                                         max_position_embeddings=256, dropout=0.1, attention_dropout=0.0))
    B, L = 32, 160
    ids = torch.randint(5, 2000, (B, L), generator=torch.Generator().manual_seed(0))
    att = torch.ones(B, L, dtype=torch.long)

    def train_step(bf16: bool) -> Callable[[], None]:
        def run() -> None:
            m.zero_grad(set_to_none=True)
            with autocast(bf16):
                h = m(input_ids=ids, attention_mask=att).last_hidden_state
            h.float().pow(2).mean().backward()
        return run

    def infer(bf16: bool) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad(), autocast(bf16):
                m(input_ids=ids, attention_mask=att)
        return run

    rows = []
    for label, mode, fn in (("training step", m.train, train_step), ("inference", m.eval, infer)):
        mode()
        t32, t16 = median_ms(fn(False), max(calls // 5, 5), 3), median_ms(fn(True), max(calls // 5, 5), 3)
        rows.append(f"| text encoder (small preset), {label}: fp32 (old) vs bf16 autocast (new) | {t32:.2f} | "
                    f"{t16:.2f} | {t32 / t16:.2f}x | |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=100, help="timed calls per figure (the text encoder: a fifth)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    torch.set_num_threads(a.threads)
    bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    lines = ["| what | old ms | new ms | old / new | max abs difference |", "|---|---|---|---|---|",
             *embedding_rows(a.calls), *text_rows(a.calls)]
    text = (f"Median milliseconds per call, torch threads {a.threads}; native bf16 matmuls on this CPU: {bf16}.\n\n"
            + "\n".join(lines))
    print(text)
    print(f"wrote {write_result('Single-module timings (issue #15)', text)}")


if __name__ == "__main__":
    main()
