"""Biopsy-report classifier speed: the ``ehrseq`` of a git ref (old; by default 6ebcb1b, the text classifier before
issue #15's work) against the working tree (new), one run.

    /work/main/.venv/bin/python -m benchmarks.text_speed            # about 4 min of CPU at one thread
    /work/main/.venv/bin/python -m benchmarks.text_speed --all      # + attention_dropout 0 alone (12 min wall
                                                                    #   on the shared 2-core machine)
    /work/main/.venv/bin/python -m benchmarks.text_speed --quick    # a smoke run

Each (path, seed) fits the small preset (one ensemble member) on synthetic site-A reports, picks its epoch
and thresholds on site-A tuning reports, and scores site-B test reports (``ehrseq.synth.reports``), in a
fresh one-thread subprocess; old and new runs alternate so the machine's load falls on both. Reported per
phase, in process CPU time and wall time: masked-LM pre-training (windows/s), fine-tuning steps (reports/s;
the per-epoch tuning scoring excluded) and inference (reports/s, tokenisation included), the whole fit, and
held-out macro AUROC on site B (mean and range over seeds, row-bootstrap 95 % CI of the seed-pooled
probabilities). "new, same training" trains exactly as the old code does (its probabilities are compared with
the old ones); rows with other options change the training and are shown apart.
Writes ``benchmarks/results/text_speed.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

import numpy as np

from benchmarks.common import REPO, RESULTS, old_package, write_result

BASELINE_REF = "6ebcb1b"  # the parent of the first text-speed commit (f28d0b4): what issue #15 measured against
FINDINGS = "## Findings"  # the hand-written section of the results file starts here

# (row name, which package, config overrides); the old package knows none of the new options
VARIANTS: list[tuple[str, str, dict[str, Any]]] = [
    ("old", "old", {}),
    ("new, same training", "new", {"attention_dropout": None, "length_buckets": False}),
    ("new, attention_dropout 0 + length buckets (preset small now)", "new",
     {"attention_dropout": 0.0, "length_buckets": True}),
]
ONE_SEED = {"new, same training"}  # trains as old does (checked on seed 0): its AUROC is old's
EXTRA = [("new, attention_dropout 0", "new", {"attention_dropout": 0.0, "length_buckets": False})]  # --all


# ------------------------------------------------------------------------------- inside the subprocess
def _case(spec: dict[str, Any]) -> dict[str, Any]:
    """One fit + predict with phase timings; runs with the package on ``sys.path`` first (old or new)."""
    import time

    import torch

    torch.set_num_threads(1)
    from ehrseq.models import text_classifier as tc
    from ehrseq.synth.reports import generate_reports

    clock: dict[str, list[float]] = {k: [0.0, 0.0] for k in ("mlm", "finetune", "tuning", "other_proba")}
    state = {"in_finetune": False}

    def timed(name: str, fn: Any) -> Any:
        def wrap(*a: Any, **k: Any) -> Any:
            key = ("tuning" if state["in_finetune"] else "other_proba") if name == "proba" else name
            c0, w0 = time.process_time(), time.perf_counter()
            state["in_finetune"] |= name == "finetune"
            try:
                return fn(*a, **k)
            finally:
                state["in_finetune"] &= name != "finetune"
                clock[key][0] += time.process_time() - c0
                clock[key][1] += time.perf_counter() - w0
        return wrap

    cls = tc.TextClassifier
    cls._pretrain_mlm = timed("mlm", cls._pretrain_mlm)
    cls._finetune = timed("finetune", cls._finetune)
    cls._proba = timed("proba", cls._proba)
    train = generate_reports(spec["n_train"], seed=11, site="A")
    tuning = generate_reports(spec["n_tune"], seed=12, site="A")
    test = generate_reports(spec["n_test"], seed=13, site="B")
    cfg = tc.TextClassifierConfig.from_preset("small", ensemble=1, device="cpu", seed=spec["seed"],
                                              **spec["overrides"])
    model = cls(cfg)
    c0, w0 = time.process_time(), time.perf_counter()
    model.fit(train, tuning)
    fit = [time.process_time() - c0, time.perf_counter() - w0]
    texts = test.text.tolist()
    pred = []
    for _ in range(3):  # the fastest of three (the first also warms caches)
        c0, w0 = time.process_time(), time.perf_counter()
        p = model.predict_proba(texts)
        pred.append([time.process_time() - c0, time.perf_counter() - w0])
    return {"fit": fit, "predict": min(pred), "clock": clock, "proba": p.tolist(),
            "train_windows": int(len(model.windows(train.text.tolist()).ids)),
            "test_windows": int(len(model.windows(texts).ids)),
            "labels": list(cfg.labels), "y": test[list(cfg.labels)].to_numpy().tolist(),
            "epochs": cfg.epochs, "mlm_epochs": cfg.mlm_epochs}


# ------------------------------------------------------------------------------------ the driver side
def run_case(spec: dict[str, Any], package_dir: str | None) -> dict[str, Any]:
    """``_case(spec)`` in a fresh one-thread subprocess with ``package_dir``'s ehrseq (None: the tree's)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if package_dir:
        env["PYTHONPATH"] = package_dir
    code = ("import json, sys; sys.path.append(sys.argv[1]); from benchmarks.text_speed import _case; "
            "print(json.dumps(_case(json.loads(sys.argv[2]))))")
    r = subprocess.run([sys.executable, "-c", code, str(REPO), json.dumps(spec)], env=env, capture_output=True,
                       text=True, cwd=package_dir or str(REPO))
    if r.returncode != 0:
        raise RuntimeError(f"case {spec} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def macro_auroc(y: np.ndarray, p: np.ndarray) -> float:
    """Mean over labels of the AUROC (labels with one class in ``y`` left out)."""
    from sklearn.metrics import roc_auc_score

    return float(np.mean([roc_auc_score(y[:, k], p[:, k]) for k in range(y.shape[1]) if 0 < y[:, k].sum() < len(y)]))


def bootstrap_ci(y: np.ndarray, ps: list[np.ndarray], n_boot: int, seed: int = 0) -> tuple[float, float]:
    """95 % percentile CI of the macro AUROC averaged over the seeds' models, rows resampled (same rows for all)."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        vals.append(np.mean([macro_auroc(y[idx], p[idx]) for p in ps]))
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def summarise(name: str, runs: list[dict[str, Any]], n_train: int, n_test: int, n_boot: int) -> dict[str, Any]:
    """Median throughputs over the seeds (CPU and wall) and the AUROC figures of one variant."""
    def rate(items: float, sec: list[float]) -> tuple[float, float]:
        return items / max(sec[0], 1e-9), items / max(sec[1], 1e-9)

    r0 = runs[0]
    med = lambda xs: tuple(float(np.median([x[i] for x in xs])) for i in (0, 1))  # noqa: E731
    ft = [[r["clock"]["finetune"][i] - r["clock"]["tuning"][i] for i in (0, 1)] for r in runs]
    y = np.asarray(r0["y"])
    ps = [np.asarray(r["proba"]) for r in runs]
    aucs = [macro_auroc(y, p) for p in ps]
    return {
        "name": name,
        "mlm": med([rate(r["train_windows"] * r["mlm_epochs"], r["clock"]["mlm"]) for r in runs]),
        "finetune": med([rate(n_train * r["epochs"], f) for r, f in zip(runs, ft)]),
        "predict": med([rate(n_test, r["predict"]) for r in runs]),
        "fit": med([r["fit"] for r in runs]),
        "auroc": aucs, "ci": bootstrap_ci(y, ps, n_boot), "proba": ps,
        "win_per_report": r0["test_windows"] / n_test,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=1000, help="site-A training reports")
    ap.add_argument("--n-tune", type=int, default=200, help="site-A tuning reports")
    ap.add_argument("--n-test", type=int, default=400, help="site-B test reports")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--baseline-ref", default=BASELINE_REF, help="git ref of the old package (default: the text "
                    "classifier before issue #15)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 150 reports, one seed, two rows")
    ap.add_argument("--all", action="store_true", help="also the row with attention_dropout 0 alone")
    a = ap.parse_args()
    variants = VARIANTS + (EXTRA if a.all else [])
    if a.quick:
        a.n_train, a.n_tune, a.n_test, a.seeds, a.n_boot = 150, 60, 100, 1, 20
        variants = VARIANTS[:2]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in variants}
    with old_package(a.baseline_ref) as old_dir:
        if old_dir is None:
            raise SystemExit(f"no old package from git ref {a.baseline_ref}")
        for seed in range(a.seeds):
            order = variants if seed % 2 == 0 else variants[::-1]  # alternate, so load drifts fall on both
            for name, which, overrides in order:
                if seed and name in ONE_SEED:
                    continue
                spec = {"n_train": a.n_train, "n_tune": a.n_tune, "n_test": a.n_test, "seed": seed,
                        "overrides": overrides}
                runs[name].append(run_case(spec, old_dir if which == "old" else None))
                print(f"seed {seed} {name}: fit {runs[name][-1]['fit'][1]:.1f}s wall", file=sys.stderr)
    rows = [summarise(name, runs[name], a.n_train, a.n_test, a.n_boot) for name, _, _ in variants]
    write_markdown(a, rows)


def write_markdown(a: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """The table (ratios against the old row) and the old-vs-new probability check."""
    base = rows[0]
    head = ("| path | masked-LM windows/s CPU (wall) | fine-tune reports/s CPU (wall) | inference reports/s "
            "CPU (wall) | fit s CPU (wall) | fit speed-up CPU (wall) | inference speed-up CPU (wall) | "
            "macro AUROC site B, mean (range) | 95 % CI |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        f = lambda v, d=0: f"{v[0]:.{d}f} ({v[1]:.{d}f})"  # noqa: E731
        up_fit = (base["fit"][0] / r["fit"][0], base["fit"][1] / r["fit"][1])
        up_pred = (r["predict"][0] / base["predict"][0], r["predict"][1] / base["predict"][1])
        au = r["auroc"]
        if len(au) < len(base["auroc"]):  # the one-seed row: seed 0 against old's seed 0
            quality = f"seed 0: {au[0]:.3f} (old seed 0: {base['auroc'][0]:.3f}) | - |"
        else:
            quality = f"{np.mean(au):.3f} ({min(au):.3f}-{max(au):.3f}) | {r['ci'][0]:.3f}-{r['ci'][1]:.3f} |"
        lines.append(f"| {r['name']} | {f(r['mlm'])} | {f(r['finetune'])} | {f(r['predict'])} | {f(r['fit'], 1)} | "
                     f"{f(up_fit, 2)}x | {f(up_pred, 2)}x | {quality}")
    same = next((r for r in rows if r["name"] == "new, same training"), None)
    diff = max(float(np.abs(p - q).max()) for p, q in zip(base["proba"], same["proba"])) if same else float("nan")
    seeds_same = "seed 0 (its AUROC is the old row's)" if same and len(same["proba"]) == 1 else "each seed"
    body = "\n".join([
        f"- data: synthetic reports, {a.n_train} train + {a.n_tune} tuning from site A, {a.n_test} test from "
        f"site B ({base['win_per_report']:.2f} windows/report); seeds 0-{a.seeds - 1}, one subprocess per (path, "
        "seed) at one thread (OMP_NUM_THREADS=1, torch.set_num_threads(1)), old and new alternating",
        "- model: preset small (DistilBERT from scratch, dim 64, 2 layers, 4 heads, max_length 256), ensemble 1, "
        "1 masked-LM + 3 fine-tune epochs",
        "- throughputs: median over seeds; CPU = process CPU time (robust to other jobs on the machine), wall in "
        "brackets; fine-tune excludes the per-epoch tuning scoring; inference includes tokenisation (fastest of "
        "three calls); speed-ups are old / new time in this run",
        f"- AUROC: mean and range over the seeds; CI: {a.n_boot} row-bootstrap resamples of the seed-averaged "
        "macro AUROC",
        f"- old = the ehrseq of git {a.baseline_ref}; old vs 'new, same training', run on {seeds_same}: largest "
        f"probability difference {diff:.1e}",
        "", *lines,
    ])
    old = RESULTS / "text_speed.md"  # the hand-written findings below the table survive a rerun
    text = old.read_text() if old.exists() else ""
    notes = text[text.index(FINDINGS):] if FINDINGS in text else ""
    path = write_result("Biopsy-report classifier speed (old code vs working tree)", body + "\n\n" + notes)
    print(path.read_text())


if __name__ == "__main__":
    main()
