"""One biopsy-classifier configuration, trained at site A: within- and cross-site macro AUROC as a JSON line.

    python -m benchmarks.text_ablation --name masking-only --seed 1 --set input_mask=0.25 --set input_drop=0
    python -m benchmarks.text_ablation --name unlabelled-b --unlabelled-b 2000
    python -m benchmarks.text_ablation --name ensemble --set ensemble=3        # about 1-3 min per member
    python -m benchmarks.text_ablation --name self-train --adapt-b 2000        # self-training on site B

Same reports as ``benchmarks.text_biopsy`` (by default 2000 site-A train, 500 tuning; 600 test per site; seeds 11/12/13),
the ``small`` preset with ``--set key=value`` overrides. The ablation figures in
``benchmarks/results/text_biopsy.md`` ("Against the target") come from these commands.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from ehrseq.models.text_classifier import TextClassifier, TextClassifierConfig  # noqa: E402
from ehrseq.synth.reports import REPORT_LABELS, generate_reports  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="TextClassifierConfig override (value read as JSON), e.g. input_drop=0.1")
    ap.add_argument("--unlabelled-b", type=int, default=0,
                    help="add this many unlabelled site-B train reports to the vocabulary and masked-LM")
    ap.add_argument("--n-train", type=int, default=2000, help="labelled site-A training reports")
    ap.add_argument("--n-tuning", type=int, default=500, help="labelled site-A tuning reports")
    ap.add_argument("--adapt-b", type=int, default=0,
                    help="self-train on this many unlabelled site-B train reports (fit(..., adapt_to=...))")
    a = ap.parse_args()
    torch.set_num_threads(1)
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in a.set)}
    labels = list(REPORT_LABELS)
    train, tuning = generate_reports(a.n_train, seed=11, site="A"), generate_reports(a.n_tuning, seed=12, site="A")
    tests = {"within": generate_reports(600, seed=13, site="A"), "cross": generate_reports(600, seed=13, site="B")}
    unlabelled = generate_reports(a.unlabelled_b, seed=11, site="B").text.tolist() if a.unlabelled_b else None
    adapt = generate_reports(a.adapt_b, seed=11, site="B").text.tolist() if a.adapt_b else None
    t0 = time.time()
    model = TextClassifier(TextClassifierConfig.from_preset("small", seed=a.seed, **overrides))
    model.fit(train, tuning, unlabeled=unlabelled, adapt_to=adapt)
    out: dict[str, object] = {"name": a.name, "seconds": round(time.time() - t0)}
    for scenario, test in tests.items():
        p = model.predict_proba(test.text.tolist())
        per_label = [roc_auc_score(test[lab], p[:, k]) for k, lab in enumerate(labels)]
        out[scenario] = round(float(np.mean(per_label)), 4)
        out[f"{scenario}_per_label"] = dict(zip(labels, (round(v, 3) for v in per_label), strict=True))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
