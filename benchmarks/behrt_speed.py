"""BEHRT throughput, old path against new in the same run: pretraining, fine-tuning, inference; held-out AUROC.

    python -m benchmarks.behrt_speed [--patients 1200] [--epochs 6] [--pretrain-epochs 3] [--paths ...]  # ~9 min, 7 paths

The CDAI task of benchmarks/sequence_models.py (site A of the synthetic cohort, held-out patients), with the
settings of configs/cdai_behrt.yaml (small preset, max_len 96, batch 32, lr 2e-3, cosine with 5% warm-up): masked-
code pretraining, then fine-tuning from the pretrained encoder, then predicting tuning and held-out rows.

Both paths run the same orchestration below (the one trainer, the same featurizer, seeds and settings); what
differs is exactly the levers of issue #15:

- old: ``benchmarks/behrt_baseline.py`` (ehrseq/models/behrt.py as it was at commit c76146d, frozen: transformers'
  BertEncoder, input checks with host syncs in every forward, MLM head on every position), token views rebuilt
  in every ``__getitem__`` (``cache_tokens=False``), shuffled batches padded to their longest row;
- new: ``ehrseq.models.behrt`` (fused Q/K/V and SDPA, cheaper CPU dropout, no checks in forward, MLM head on the
  masked positions only), token views built and range-checked once per dataset, length-bucketed training
  batches, tuning and inference in length order (what ``ehrseq finetune`` and ``ehrseq pretrain`` now do);
- options on the new code, each its own row (``--paths``): ``train.precision: bf16`` (bfloat16 autocast of every
  forward pass, training and inference; fp32 weights, optimizer and loss), and recipe changes that alter the
  training itself: attention-probability dropout 0 (``attention_probs_dropout_prob``; hidden dropout kept), which
  lets training use SDPA's fused attention, and batch 64. Their held-out AUROC is reported beside the others'.
  old and new keep attention dropout 0.1 (the recipe of the old path), so that they differ in code only;
  configs/cdai_behrt.yaml now sets 0, the recipe of the new_attn0 rows.

The trainer (its optimizer included: torch's fused AdamW, ``train.trainer.make_adamw``) is the same for every path, so
its speed-ups raise the old path's throughput as much as the new one's and do not show in the ratios.

Throughput is sequences per CPU-second of this process (threads fixed with --threads), which busy neighbours on
a shared machine disturb far less than wall time; wall-clock figures are given too. Training throughput counts
the epochs' training sequences over the whole of ``train()`` (tuning evaluation included), as the trainer does,
plus building the datasets it reads; inference builds its datasets inside the timing (as ``ehrseq score`` does).
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmarks import behrt_baseline as old_behrt
from benchmarks.common import write_result
from benchmarks.sequence_models import held_rows, oracle, site_split
from ehrseq import api
from ehrseq.data.batch import Batch
from ehrseq.data.dataset import LengthOrdered, SequenceDataset, bucketed_batches
from ehrseq.evaluate.summary import fmt, summarize
from ehrseq.featurize.featurizer import Featurizer, FeaturizerConfig
from ehrseq.models.behrt import BehrtConfig, BehrtModel
from ehrseq.models.masking import fixed_mask_codes, mask_codes
from ehrseq.recipes.pretrain import whole_history_labels
from ehrseq.recipes.sequence import predict_sequence_logits
from ehrseq.registry import behrt_id_limits, build_model, saved_behrt_config
from ehrseq.split import ids_in
from ehrseq.train.trainer import TrainConfig, autocast_for, predict_logits, train

# path -> (code, train.precision, attention_probs_dropout_prob, batch_size). "old" and "new" differ in code only;
# the others change the precision or the training recipe on the new code, each its own row (issue #15).
STAGES = ("pretrain", "finetune", "inference")
PATHS: dict[str, tuple[str, str, float, int]] = {
    "old": ("old", "fp32", 0.1, 32),
    "new": ("new", "fp32", 0.1, 32),
    "new_bf16": ("new", "bf16", 0.1, 32),
    "new_attn0": ("new", "fp32", 0.0, 32),
    "new_attn0_bf16": ("new", "bf16", 0.0, 32),
    "new_attn0_b64": ("new", "fp32", 0.0, 64),
    "new_attn0_b64_bf16": ("new", "bf16", 0.0, 64),
}
DEFAULT_PATHS = ",".join(PATHS)
WHAT = {  # what each path changes against "new" (the rows of the options table)
    "new_bf16": "`train.precision: bf16`",
    "new_attn0": "attention dropout 0 (recipe)",
    "new_attn0_bf16": "attention dropout 0 (recipe), bf16",
    "new_attn0_b64": "attention dropout 0, batch 64 (recipe)",
    "new_attn0_b64_bf16": "attention dropout 0, batch 64 (recipe), bf16",
}


class Clock:
    """CPU and wall seconds of a block."""

    def __enter__(self) -> Clock:
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu, self.wall = time.process_time() - self.cpu0, time.perf_counter() - self.wall0


def dataset(path: str, fs: Any, targets: np.ndarray | None, fz: Featurizer) -> SequenceDataset:
    c = fz.config
    kw = dict(max_len=c.max_len, max_visits=c.max_visits, max_steps=c.max_visits, tokens=True, steps=False,
              positions=c.positions)
    if path == "old":
        return SequenceDataset(fs, targets, cache_tokens=False, **kw)
    return SequenceDataset(fs, targets, id_limits=behrt_id_limits(fz), **kw)


def model_for(path: str, config: BehrtConfig, head: str, body: dict[str, torch.Tensor] | None) -> torch.nn.Module:
    """A fresh model of the path's class (same seed: same initial weights), the pretrained body loaded."""
    kw = {**saved_behrt_config(config.to_dict()), "head": head, "num_labels": 1,
          "attention_probs_dropout_prob": PATHS[path][2]}
    torch.manual_seed(0)
    m = BehrtModel(BehrtConfig(**kw)) if path != "old" else old_behrt.BehrtModel(old_behrt.BehrtConfig(**kw))
    if body is not None:
        m.load_state_dict(body, strict=False)
    return m


def predict(path: str, model: torch.nn.Module, ds: SequenceDataset, precision: str) -> np.ndarray:
    if path == "old":
        return predict_logits(model, ds)
    with autocast_for(precision, torch.device("cpu")):  # what predict_logits(precision=...) does
        return predict_sequence_logits(model, ds)


def run_path(path: str, a: argparse.Namespace, ev: pd.DataFrame, sp: pd.DataFrame, fz: Featurizer,
             config: BehrtConfig) -> dict[str, Any]:
    _, precision, _, bs = PATHS[path]
    tcfg = TrainConfig(epochs=a.epochs, batch_size=bs, lr=2e-3, patience=3, schedule="cosine", warmup=0.05,
                       seed=a.seed, progress=False, precision=precision, device="cpu")
    out: dict[str, Any] = {}
    # ---- pretraining (building the datasets is timed: the new path's token cache is built there)
    parts, fs = {}, {}
    for name in ("train", "tuning"):
        lab = whole_history_labels(ev, ids_in(sp, name), a.prefixes if name == "train" else 1, a.seed)
        fs[name] = fz.transform(ev, lab)
    with Clock() as build:
        parts = {name: dataset(path, fs[name], None, fz) for name in fs}
    vocab, gen = len(fz.vocab_), torch.Generator().manual_seed(a.seed)

    def mlm_step(m: torch.nn.Module, b: Batch) -> torch.Tensor:
        if m.training:
            masked, labels = mask_codes(b.code_ids, b.attention_mask, vocab, gen)
        else:
            masked, labels = fixed_mask_codes(b.code_ids, b.attention_mask, vocab, b.subject_id, seed=a.seed)
        kw = {"masked_only": True} if path != "old" else {}
        return m(replace(b, code_ids=masked, labels=None), labels=labels, **kw).loss

    mlm = model_for(path, config, "mlm", None)
    pcfg = replace(tcfg, epochs=a.pretrain_epochs, patience=2)
    tuning: Any = LengthOrdered(parts["tuning"]) if path != "old" else parts["tuning"]
    hook = bucketed_batches(parts["train"], bs, a.seed) if path != "old" else None
    with Clock() as c:
        r = train(mlm, parts["train"], tuning, pcfg, loss_fn=mlm_step, batches=hook)
    out["pretrain"] = throughput(r.sequences_per_second * r.seconds, c, r.best_epoch, len(r.history), build)
    out["pretrain_loss"] = r.best_tuning_loss
    body = {k: v for k, v in mlm.state_dict().items() if k.startswith(("embeddings.", "encoder."))}
    # ---- fine-tuning from the pretrained encoder
    lab = {s: held_rows(ev, sp, s) for s in ("train", "tuning", "held_out")}
    fs = {s: fz.transform(ev, lab[s]) for s in lab}
    y = {s: lab[s]["boolean_value"].to_numpy(np.float32)[:, None] for s in lab}
    with Clock() as build:
        ds = {s: dataset(path, fs[s], y[s], fz) for s in ("train", "tuning")}
    clf = model_for(path, config, "binary", body)
    tuning = LengthOrdered(ds["tuning"]) if path != "old" else ds["tuning"]
    hook = bucketed_batches(ds["train"], bs, a.seed) if path != "old" else None
    with Clock() as c:
        r = train(clf, ds["train"], tuning, tcfg, batches=hook)
    out["finetune"] = throughput(r.sequences_per_second * r.seconds, c, r.best_epoch, len(r.history), build)
    # ---- inference: tuning and held-out rows, from featurized rows (datasets built inside the timing); a short
    # stage, so timed --repeats times and the median run reported
    runs = []
    for _ in range(a.repeats):
        with Clock() as c:
            logits = {s: predict(path, clf, dataset(path, fs[s], None, fz), precision) for s in ("tuning", "held_out")}
        runs.append(throughput(len(fs["tuning"]) + len(fs["held_out"]), c, None, None))
    out["inference"] = sorted(runs, key=lambda r: r["per_cpu_s"])[len(runs) // 2]
    ho = lab["held_out"]
    out["preds"] = ho[["subject_id", "prediction_time"]].assign(
        y_true=ho["boolean_value"].astype(float).to_numpy(), y_prob=1 / (1 + np.exp(-logits["held_out"][:, 0])))
    return out


def throughput(n: float, c: Clock, best: int | None, epochs: int | None, build: Clock | None = None
               ) -> dict[str, Any]:
    """Sequences per CPU and wall second of ``c`` (plus the dataset building ``build``, when given)."""
    cpu, wall = c.cpu + (build.cpu if build else 0.0), c.wall + (build.wall if build else 0.0)
    return {"n": int(round(n)), "cpu": cpu, "wall": wall, "per_cpu_s": n / cpu, "per_wall_s": n / wall,
            "best_epoch": best, "epochs": epochs}


def kept_notes() -> str:
    """The hand-written notes of the results file this run replaces (its sections from the first heading that
    says "hand-written"), so rerunning the benchmark keeps them."""
    path = Path(__file__).parent / "results" / "behrt_speed.md"
    old = path.read_text() if path.exists() else ""
    at = next((m.start() for m in re.finditer(r"^## .*hand-written.*$", old, re.M)), None)
    return "" if at is None else "\n\n" + old[at:].rstrip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=1200)
    ap.add_argument("--epochs", type=int, default=6, help="fine-tuning epochs at most (patience 3)")
    ap.add_argument("--pretrain-epochs", type=int, default=3, help="pretraining epochs at most (patience 2)")
    ap.add_argument("--prefixes", type=int, default=4, help="pretraining sequences per train patient")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5, help="inference timings per path (the median is reported)")
    ap.add_argument("--paths", default=DEFAULT_PATHS,
                    help=f"the paths to run, in this order (old and new always run); of {', '.join(PATHS)}")
    a = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="ehrseq-behrt-speed-"))
    api.synthesize(a.patients, out=tmp / "c", seed=a.seed, extract=False)
    data = api.load_data(tmp / "c" / "meds")
    truth = pd.read_parquet(tmp / "c" / "meds" / "truth" / "cdai_next.parquet")
    ev, sp = site_split(data, "A")
    fz = Featurizer(FeaturizerConfig(max_len=96)).fit(ev, sp)
    config = build_model("behrt", "mlm", 1, fz, "small", {}).config
    order = [p for p in a.paths.split(",") if p]
    if unknown := [p for p in order if p not in PATHS]:
        raise SystemExit(f"--paths: unknown {unknown}; choose from {', '.join(PATHS)}")
    order += [p for p in ("old", "new") if p not in order]
    res = {p: run_path(p, a, ev, sp, fz, config) for p in dict.fromkeys(order)}
    lines = ["| stage | old seq/s (CPU) | new seq/s (CPU) | ratio (CPU) | old seq/s (wall) | new seq/s (wall) | "
             "ratio (wall) | epochs old / new |", "|---|---|---|---|---|---|---|---|"]
    for stage in STAGES:
        o, n = res["old"][stage], res["new"][stage]
        ep = f"{o['epochs']} / {n['epochs']}" if o["epochs"] else ""
        lines.append(f"| {stage} | {o['per_cpu_s']:.0f} | {n['per_cpu_s']:.0f} | **{n['per_cpu_s'] / o['per_cpu_s']:.2f}x**"
                     f" | {o['per_wall_s']:.0f} | {n['per_wall_s']:.0f} | {n['per_wall_s'] / o['per_wall_s']:.2f}x | {ep} |")
    if options := [p for p in res if p not in ("old", "new")]:
        lines += ["", "### Precision and recipe options on the new code (same run)\n",
                  "Each cell: sequences per CPU-second, then the ratio to old and to new (fp32, same recipe as old). "
                  "Recipe rows change the training itself; their AUROC is in the next table.\n",
                  "| path | changes against new | " + " | ".join(STAGES) + " | epochs pretrain / finetune |",
                  "|---|---|" + "---|" * len(STAGES) + "---|"]
        for p in options:
            cells = []
            for stage in STAGES:
                r, o, n = res[p][stage], res["old"][stage], res["new"][stage]
                cells.append(f"{r['per_cpu_s']:.0f} (**{r['per_cpu_s'] / o['per_cpu_s']:.2f}x** / "
                             f"{r['per_cpu_s'] / n['per_cpu_s']:.2f}x)")
            lines.append(f"| {p} | {WHAT.get(p, '')} | " + " | ".join(cells) +
                         f" | {res[p]['pretrain']['epochs']} / {res[p]['finetune']['epochs']} |")
    scores = {p: summarize(res[p]["preds"], "binary", n_bootstrap=a.n_boot, seed=a.seed) for p in res}
    orc = summarize(oracle(res["old"]["preds"][["subject_id", "prediction_time", "y_true"]], truth), "binary",
                    n_bootstrap=a.n_boot, seed=a.seed)
    n_ho = len(res["old"]["preds"])
    body = [
        f"Synthetic cohort: {a.patients} patients, site A ({int(sp['subject_id'].nunique())} patients), seed {a.seed}; "
        f"BEHRT small (hidden 64, 2 layers), max_len 96, batch 32 (64 where the path says so), lr 2e-3 cosine (5% warm-up). Pretraining: "
        f"{a.prefixes} sequences per train patient, {a.pretrain_epochs} epochs at most (patience 2); fine-tuning "
        f"from the pretrained encoder: {a.epochs} epochs at most (patience 3); inference: tuning + held-out rows "
        f"(median of {a.repeats} timings). "
        f"torch threads {a.threads}; paths run in the order {','.join(res)}. Total {time.perf_counter() - t0:.0f}s.\n",
        "## Throughput (sequences per second; ratio = new / old)\n", *lines, "",
        f"## Held-out AUROC ({n_ho} label rows, patient-bootstrap 95% CI)\n",
        "| path | AUROC | AUPRC | Brier | best tuning MLM loss |", "|---|---|---|---|---|",
        *[f"| {p}{' (' + WHAT[p] + ')' if p in WHAT else ''} | {fmt(scores[p]['auroc'])} | {fmt(scores[p]['auprc'])} | {fmt(scores[p]['brier'])} | "
          f"{res[p]['pretrain_loss']:.3f} |" for p in res],
        f"| oracle (true probabilities) | {fmt(orc['auroc'])} | {fmt(orc['auprc'])} | {fmt(orc['brier'])} | |",
    ]
    text = "\n".join(body) + kept_notes()
    print(text)
    print(f"wrote {write_result('BEHRT speed: old path against new (issue #15)', text)}")


if __name__ == "__main__":
    main()
