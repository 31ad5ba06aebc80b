"""One BEHRT configuration on site A of the 3,000-patient synthetic cohort: held-out and tuning AUROC as a JSON line.

    python -m benchmarks.behrt_ablation --name paper --positions first --pooling cls --no-pin \
        --hidden 128 --layers 4 --rows 4 --epochs 5 --lr 1e-3          # about 5 min on one core

The ablation table in ``benchmarks/results/sequence_models.md`` ("Against the targets") lists one command per
row. Same cohort (seed 0), split and held-out rows as ``benchmarks.sequence_models``; the cohort is written
once to ``--cache`` and reused.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from sklearn.metrics import roc_auc_score

from benchmarks.sequence_models import site_split
from ehrseq import api


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="run")
    ap.add_argument("--positions", default="last", choices=["first", "last"])
    ap.add_argument("--pooling", default="last", choices=["cls", "last", "mean"])
    ap.add_argument("--no-pin", action="store_true", help="do not pin baseline RF / anti-CCP in the header")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--rows", type=int, default=0, help="train label rows per patient (0: all)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--schedule", default="constant", choices=["constant", "linear", "cosine"])
    ap.add_argument("--warmup", type=float, default=0.0)
    ap.add_argument("--max-len", type=int, default=96)
    ap.add_argument("--pretrain", default="", choices=["", "A", "AB"],
                    help="MLM-pretrain first on site A's (or both sites') train patients")
    ap.add_argument("--prefixes", type=int, default=1, help="pretraining sequences per patient")
    ap.add_argument("--pretrain-epochs", type=int, default=10)
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "ehrseq-behrt-ablation"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(a.cache)
    if not (root / "meds").exists():
        api.synthesize(3000, out=root, seed=0, extract=False)
    data = api.load_data(root / "meds")
    ev, sp = site_split(data, "A")
    site_a = api.LoadedData(ev, sp, None, "A")
    heads = a.hidden // 32  # 2 heads at hidden 64, 4 at 128
    model = {"pooling": a.pooling, "hidden_size": a.hidden, "num_hidden_layers": a.layers,
             "num_attention_heads": heads, "intermediate_size": 2 * a.hidden}
    featurizer = {"max_len": a.max_len, "positions": a.positions, "pin_static_numeric": not a.no_pin}
    t0 = time.time()
    init = None
    if a.pretrain:
        from ehrseq.recipes.pretrain import pretrain

        init = root / f"pretrained-{a.name}"
        pretrain(data if a.pretrain == "AB" else site_a, out=init, model="behrt", seed=0, overwrite=True,
                 prefixes_per_subject=a.prefixes, featurizer=featurizer, model_overrides=model,
                 train={"epochs": a.pretrain_epochs, "progress": False, "lr": a.lr, "batch_size": 32, "patience": 2})
    r = api.finetune(site_a, init=init, target="cdai", model="behrt", seed=0, n_bootstrap=0,
                     train={"epochs": a.epochs, "progress": False, "patience": a.patience, "lr": a.lr,
                            "batch_size": 32, "schedule": a.schedule, "warmup": a.warmup},
                     featurizer=featurizer, model_overrides=model, max_train_rows_per_subject=a.rows or None)
    held, tune = r.predictions["held_out"], r.predictions["tuning"]
    print(json.dumps({
        "name": a.name, "held_out_auroc": round(roc_auc_score(held.y_true, held.y_prob), 4),
        "tuning_auroc": round(roc_auc_score(tune.y_true, tune.y_prob), 4),
        "sequences_per_second": round(r.metrics["train"]["sequences_per_second"], 1),
        "best_epoch": r.metrics["train"]["best_epoch"], "seconds": round(time.time() - t0),
    }), flush=True)


if __name__ == "__main__":
    main()
