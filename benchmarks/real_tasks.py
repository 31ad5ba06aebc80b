"""The shipped MIMIC-IV demo tasks end to end: ehrseq's models against MEDS-Tab-style count baselines.

    python -m benchmarks.real_tasks [--data PATH] [--tasks in_hospital_mortality ...] [--seeds 0 1 2] [--quick]
    python -m benchmarks.real_tasks --labels my_task=labels/    # a MEDS label file/dir instead of a task file

For each task file in configs/tasks/mimic/ (with predicates.yaml): labels are built once (ACES); per seed
(--seeds, default 0 1 2) one random patient split (70/15/15) is shared by every model, and every model is
scored on the same held-out rows by the same code (ehrseq.evaluate.summary.summarize for binary tasks;
Harrell's C with the same patient bootstrap, C-td and IBS on one time grid for time-to-event tasks). Binary
tasks: ehrseq RNN and BEHRT through api.finetune, with today's defaults (small presets) and with the run
configs for dense real data (configs/mimic_rnn.yaml, configs/mimic_behrt.yaml), against L2 logistic
regression and gradient boosting on count features (benchmarks/baselines.py) and a no-skill reference (the
train prevalence). Time-to-event tasks: ehrseq DeepSurv against an elastic-net Cox model on the same count
features and Kaplan-Meier. Writes benchmarks/results/real_tasks.md: the first seed's tables in full, then
AUROC (C) and near-constant flags of every model on every seed.

Cost per step: wall seconds, and peak RSS above the RSS at the step's start (MB), from /proc/self/statm sampled
every 5 ms by a thread. The steps of api.finetune are timed by wrapping, for the run only, Featurizer.fit and
.transform (featurize), the training loop / DeepSurv.fit (train) and the trainer's predict_logits /
DeepSurv.predict_* (predict); "other" is the rest of the call (label matching, building datasets, calibration).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import resource
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from benchmarks import baselines as B
from benchmarks.common import write_result
from benchmarks.real_tasks_report import COX, GBM, LR, cost_section, header, seeds_section, task_section
from ehrseq import api
from ehrseq.config import FinetuneConfig, load_config
from ehrseq.evaluate.bootstrap import bootstrap_ci
from ehrseq.evaluate.metrics import MetricResult, auroc
from ehrseq.evaluate.summary import prediction_spread, summarize
from ehrseq.evaluate.survival import (
    concordance_td,
    default_time_grid,
    harrell_c,
    integrated_brier_score,
    kaplan_meier,
)
from ehrseq.split import PatientSplitter, ids_in, subjects_table
from ehrseq.tasks.label_files import TaskLabels, match_labels, read_task_labels

ROOT = Path(__file__).resolve().parents[1]
TASK_DIR = ROOT / "configs" / "tasks" / "mimic"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mimic_iv_demo_meds" / "events.parquet"  # ../shared beside the checkout
COLUMN_MAP = {"value": "numeric_value"}
SPLITS = ("train", "tuning", "held_out")

MB = 1024 * 1024
RNN_DEFAULT, BEHRT_DEFAULT = "ehrseq RNN (GRU, small)", "ehrseq BEHRT (small)"  # today's defaults
# the run configs for dense real data (each file says what it changes and why)
RUN_CONFIGS = {"ehrseq RNN (configs/mimic_rnn.yaml)": ROOT / "configs" / "mimic_rnn.yaml",
               "ehrseq BEHRT (configs/mimic_behrt.yaml)": ROOT / "configs" / "mimic_behrt.yaml"}
AGE = "age only (no model)"
log = logging.getLogger("benchmarks.real_tasks")


# ------------------------------------------------------------------------------------ cost of each step
def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


class StepMeter:
    """Wall time and peak RSS above the step's starting RSS, per (task, model, step); nested steps count in
    the outermost one. ``where`` says which (task, model) the wrapped library calls belong to."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], dict[str, float]] = {}
        self.where: tuple[str, str] = ("", "")
        self._active = False
        self._peak = 0
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            r = _rss()
            if r > self._peak:
                self._peak = r

    @contextlib.contextmanager
    def step(self, name: str, task: str | None = None, model: str | None = None) -> Iterator[None]:
        if self._active:
            yield
            return
        key = (task or self.where[0], model or self.where[1], name)
        self._active = True
        start = self._peak = _rss()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            row = self.rows.setdefault(key, {"s": 0.0, "mb": 0.0})
            row["s"] += time.perf_counter() - t0
            row["mb"] = max(row["mb"], (max(self._peak, _rss()) - start) / MB)
            self._active = False

    def close(self) -> None:
        self._stop.set()


@contextlib.contextmanager
def instrument(meter: StepMeter) -> Iterator[None]:
    """Time the steps inside api.finetune by wrapping library functions for the duration of the run."""
    import ehrseq.train.trainer as trainer
    from ehrseq.featurize.featurizer import Featurizer
    from ehrseq.models.deepsurv import DeepSurv

    targets = [(Featurizer, "fit", "featurize"), (Featurizer, "transform", "featurize"), (trainer, "train", "train"),
               (DeepSurv, "fit", "train"), (trainer, "predict_logits", "predict"),
               (DeepSurv, "predict_risk", "predict"), (DeepSurv, "predict_survival", "predict")]
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in targets]

    def wrap(fn: Callable[..., Any], step: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with meter.step(step):
                return fn(*args, **kwargs)
        return timed

    for (obj, attr, step), (_, _, fn) in zip(targets, saved, strict=True):
        setattr(obj, attr, wrap(fn, step))
    try:
        yield
    finally:
        for obj, attr, fn in saved:
            setattr(obj, attr, fn)


# ---------------------------------------------------------------------------------------------- scoring
def _paired_delta(metric: Callable[..., MetricResult]) -> Callable[..., MetricResult]:
    """metric(model) - metric(reference) on the same rows; y_pred is (N, 2) [model, reference]."""
    def delta(y_true: np.ndarray, y_pred: np.ndarray, sample_weight: np.ndarray | None = None) -> MetricResult:
        a, b = metric(y_true, y_pred[:, 0], sample_weight=sample_weight), metric(
            y_true, y_pred[:, 1], sample_weight=sample_weight)
        if a.value is None or b.value is None:
            return MetricResult(None, a.undefined or b.undefined)
        return MetricResult(a.value - b.value)
    return delta


def score_binary(preds: dict[str, pd.DataFrame], n_boot: int, seed: int) -> dict[str, dict[str, Any]]:
    """summarize() of each model plus the paired bootstrap ΔAUROC against LR (same resamples of patients)."""
    out = {name: summarize(p, "binary", n_bootstrap=n_boot, seed=seed) for name, p in preds.items()}
    ref = preds[LR]
    for name, p in preds.items():
        pair = np.stack([p["y_prob"].to_numpy(float), ref["y_prob"].to_numpy(float)], axis=1)
        d = bootstrap_ci(_paired_delta(auroc), p["y_true"].to_numpy(float), pair, groups=p["subject_id"].to_numpy(),
                         n_boot=n_boot, seed=seed)
        out[name]["delta_auroc_vs_lr"] = d.to_summary()
    return out


def score_survival(preds: dict[str, pd.DataFrame], curves: dict[str, pd.DataFrame | None], grid: np.ndarray,
                   n_boot: int, seed: int, stored: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Harrell's C (patient bootstrap), C-td and IBS on ``grid`` for each model; ``stored`` (DeepSurv's own
    metrics, computed by ehrseq on the same grid) fills C-td and IBS where no curves are passed."""
    out = {}
    ref = preds[COX]
    for name, p in preds.items():
        y = p[["duration", "event"]].to_numpy(float)
        g = p["subject_id"].to_numpy()
        c = bootstrap_ci(harrell_c, y, p["risk"].to_numpy(float), groups=g, n_boot=n_boot, seed=seed)
        pair = np.stack([p["risk"].to_numpy(float), ref["risk"].to_numpy(float)], axis=1)
        dc = bootstrap_ci(_paired_delta(harrell_c), y, pair, groups=g, n_boot=n_boot, seed=seed)
        m: dict[str, Any] = {"n_rows": len(p), "n_patients": int(p["subject_id"].nunique()),
                             "n_events": int(p["event"].sum()), "harrell_c": c.to_summary(),
                             "delta_c_vs_cox": dc.to_summary()}
        if curves.get(name) is not None:
            d, e = y[:, 0], y[:, 1].astype(int)
            m["c_td"] = {"value": float(concordance_td(d, e, curves[name]))}
            m["integrated_brier"] = {"value": float(integrated_brier_score(d, e, curves[name], grid))}
        else:
            m["c_td"], m["integrated_brier"] = stored[name]["c_td"], stored[name]["integrated_brier"]
        m["prediction_spread"], m["warnings"] = prediction_spread(p, "survival")
        out[name] = m
    return out


# ---------------------------------------------------------------------------------------------- running
def _part(tl: TaskLabels, splits: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {s: tl.subset(ids_in(splits, s)).frame for s in SPLITS}


def _rows(feats: B.TabularFeatures, mask: np.ndarray) -> B.TabularFeatures:
    return B.TabularFeatures(feats.counts[mask], feats.dense[mask], feats.count_names, feats.dense_names)


def binary_runs(a: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The ehrseq runs of a binary task: today's defaults (small presets) and the MIMIC run configs."""
    epochs, behrt_epochs = (2, 2) if a.quick else (a.epochs, a.behrt_epochs)
    quick = {"epochs": 2} if a.quick else {}
    return {RNN_DEFAULT: dict(model="rnn", preset="small", train={"epochs": epochs, "patience": 5, "progress": False}),
            BEHRT_DEFAULT: dict(model="behrt", preset="small",
                                train={"epochs": behrt_epochs, "patience": 3, "progress": False}),
            **{name: dict(config=str(path), train={"progress": False, **quick}) for name, path in RUN_CONFIGS.items()}}


def _note(res: api.FinetuneResult, cfg: FinetuneConfig) -> str:
    """Best epoch of the cap, what the model saw and, for the run configs, how the epoch was chosen."""
    best = res.metrics["train"].get("best_epoch")  # DeepSurv counts from 0, the trainer from 1
    best = None if best is None else best + (cfg.model == "deepsurv")
    cap = cfg.model_overrides.get("epochs") if cfg.model == "deepsurv" else cfg.train.epochs
    fz = res.featurizer
    seen = {"rnn": f"{fz.n_step_features} step + {fz.n_static_features} static features"
                   + (f", steps per {fz.config.step_every}" if fz.config.step_every != "event" else ""),
            "behrt": f"vocabulary {len(fz.vocab_)} codes, max_len {fz.config.max_len}",
            "deepsurv": f"{fz.n_static_features + fz.n_step_features} tabular features"}[cfg.model]
    how = {"auroc": "best tuning AUROC", "last_epoch": "tuning has one class: last epoch"}.get(
        res.metrics["train"].get("monitor", "loss"), "")
    pw = res.metrics["train"].get("pos_weight")
    extra = "".join(f"; {x}" for x in (how, f"pos_weight {pw:.1f}" if pw else "") if x)
    return (f"best epoch {best} of <= {cap}{extra}; {seen}" if best is not None else seen)


def run_task(name: str, tl: TaskLabels, data: api.LoadedData, meter: StepMeter, a: argparse.Namespace,
             seed: int) -> dict[str, Any]:
    """Every model of one task on the shared split of ``seed``; returns scores, row counts, per-model notes."""
    events, splits = data.events, data.splits
    kind = tl.spec.kind
    part = _part(tl, splits)
    with meter.step("featurize", name, "count features (shared)"):
        cf = B.CountFeaturizer(top_k=a.top_k).fit(events, ids_in(splits, "train"))
        x_all = cf.transform(events, tl.frame)
    split_of = tl.frame["subject_id"].map(splits.set_index("subject_id")["split"]).to_numpy()
    X = {s: _rows(x_all, split_of == s) for s in SPLITS}
    ho = part["held_out"]
    preds: dict[str, pd.DataFrame] = {}
    notes: dict[str, str] = {LR: f"{x_all.counts.shape[1]} count + {x_all.dense.shape[1]} dense features"}
    common = dict(labels=tl, seed=seed, n_bootstrap=0, split={"strategy": "data"})
    if kind == "binary":
        y_tr = part["train"]["boolean_value"].to_numpy(int)
        base = ho[["subject_id", "prediction_time"]].assign(y_true=ho["boolean_value"].astype(float).to_numpy())
        with meter.step("train", name, LR):
            lr, design = B.fit_logistic(X["train"], y_tr, seed=seed)
        with meter.step("predict", name, LR):
            preds[LR] = base.assign(y_prob=lr.predict_proba(design.transform(X["held_out"]))[:, 1])
        with meter.step("train", name, GBM):
            gbm = B.fit_gbm(X["train"], y_tr, seed=seed, max_iter=20 if a.quick else 200)
        with meter.step("predict", name, GBM):
            preds[GBM] = base.assign(y_prob=gbm.predict_proba(X["held_out"].to_dense())[:, 1])
        preds["train prevalence (no skill)"] = base.assign(y_prob=float(y_tr.mean()))
        runs = binary_runs(a)
    else:
        d_tr, e_tr = part["train"]["duration"].to_numpy(float), part["train"]["event"].to_numpy(int)
        base = ho[["subject_id", "prediction_time", "duration", "event"]]
        runs = {"ehrseq DeepSurv": dict(model="deepsurv", model_overrides={"epochs": 2 if a.quick else 200})}
    stored: dict[str, dict[str, Any]] = {}
    with instrument(meter):
        for model, kw in runs.items():
            meter.where = (name, model)
            t0 = time.perf_counter()
            res = api.finetune(data, **common, **kw)
            meter.rows[(name, model, "total")] = {"s": time.perf_counter() - t0, "mb": 0.0}
            p = res.predictions["held_out"]
            preds[model] = p
            stored[model] = res.metrics["held_out"]
            notes[model] = _note(res, load_config(kw.get("config"), **{k: v for k, v in kw.items() if k != "config"}))
    for model, p in preds.items():
        same = p[["subject_id", "prediction_time"]].reset_index(drop=True)
        if not same.equals(base[["subject_id", "prediction_time"]].reset_index(drop=True)):
            raise RuntimeError(f"{name}: {model} scored other held-out rows than the baselines")
    if kind == "binary":
        return {"kind": kind, "scores": score_binary(preds, a.n_boot, seed), "part": part, "notes": notes}
    grid = default_time_grid(base["duration"].to_numpy(float))
    curves: dict[str, pd.DataFrame | None] = {"ehrseq DeepSurv": None}
    if B.have_sksurv():
        with meter.step("train", name, COX):
            cox = B.CoxnetBaseline().fit(X["train"], d_tr, e_tr, X["tuning"],
                                         part["tuning"]["duration"].to_numpy(float),
                                         part["tuning"]["event"].to_numpy(int))
        with meter.step("predict", name, COX):
            preds[COX] = base.assign(risk=cox.predict_risk(X["held_out"]))
            curves[COX] = cox.predict_survival(X["held_out"], grid)
        notes[COX] = f"alpha {cox.alpha_:.3g} (best tuning C), l1_ratio {cox.l1_ratio}; {notes.pop(LR)}"
    else:  # not a survival model: ranks by P(event observed in follow-up), censoring ignored
        name_fb = COX.replace("Coxnet", "GBM on observed event (ignores censoring)")
        gbm = B.fit_gbm(X["train"], e_tr, seed=seed)
        preds[COX] = base.assign(risk=gbm.predict_proba(X["held_out"].to_dense())[:, 1])
        curves[COX] = None
        notes[COX] = f"scikit-survival not installed: {name_fb}; no curves"
    km = kaplan_meier(d_tr, e_tr)["survival"]
    pos = np.searchsorted(km.index.to_numpy(float), grid, side="right") - 1  # a step function: last value <= t
    km_at = np.where(pos >= 0, km.to_numpy(float)[np.maximum(pos, 0)], 1.0)
    preds["Kaplan-Meier (no covariates)"] = base.assign(risk=0.0)
    curves["Kaplan-Meier (no covariates)"] = pd.DataFrame(np.repeat(km_at[:, None], len(base), 1), index=grid)
    age = X["held_out"].dense[:, cf.dense_names.index("age_years")]
    preds[AGE] = base.assign(risk=np.nan_to_num(age, nan=float(np.nanmedian(age))))
    notes[AGE] = "risk = age at prediction_time; a ranking, no curves"
    no_curves = {"c_td": {"value": None, "undefined": "no curves"},
                 "integrated_brier": {"value": None, "undefined": "no curves"}}
    stored[AGE] = no_curves
    if curves[COX] is None:
        stored[COX] = no_curves
    scores = score_survival(preds, curves, grid, a.n_boot, seed, stored)
    return {"kind": kind, "scores": scores, "part": part, "notes": notes}


# ------------------------------------------------------------------------------------------------- main
def task_sources(a: argparse.Namespace) -> dict[str, tuple[str, Path]]:
    """name -> ("task" | "labels", path): the task files of --task-dir (or --tasks of them) and --labels."""
    found = {p.stem: ("task", p) for p in sorted(Path(a.task_dir).glob("*.yaml")) if p.stem != "predicates"}
    for spec in a.labels or []:
        n, _, path = spec.partition("=")
        found[n] = ("labels", Path(path))
    if a.tasks:
        missing = [t for t in a.tasks if t not in found]
        if missing:
            raise SystemExit(f"unknown task(s) {missing}; found {sorted(found)} in {a.task_dir} and --labels")
        found = {t: found[t] for t in a.tasks}
    if not found:
        raise SystemExit(f"no task files in {a.task_dir} and no --labels NAME=PATH")
    return found


def _task_labels(name: str, how: str, path: Path, ev: pd.DataFrame, a: argparse.Namespace) -> TaskLabels:
    if how == "task":
        from ehrseq.tasks.aces import extract_labels

        tl = extract_labels(path, ev, predicates_path=Path(a.task_dir) / "predicates.yaml", name=name)
    else:
        tl = read_task_labels(path, name=name)
    return match_labels(tl, ev, file=str(path))[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--task-dir", type=Path, default=TASK_DIR)
    ap.add_argument("--tasks", nargs="+", help="task names (file stems); default: every task file")
    ap.add_argument("--labels", nargs="+", metavar="NAME=PATH", help="MEDS label files/dirs as extra tasks")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="patient splits to run; the first one's tables are written in full, all in a summary")
    ap.add_argument("--seed", type=int, help="one split only (the same as --seeds SEED)")
    ap.add_argument("--quick", action="store_true", help="2 epochs, 20 boosting rounds, 100 resamples (smoke run)")
    ap.add_argument("--epochs", type=int, default=30, help="max epochs of the default RNN and DeepSurv")
    ap.add_argument("--behrt-epochs", type=int, default=15, help="max epochs of the default BEHRT")
    ap.add_argument("--top-k", type=int, default=500)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1, help="torch and BLAS/OpenMP threads")
    a = ap.parse_args()
    seeds = [a.seed] if a.seed is not None else list(dict.fromkeys(a.seeds))
    if a.quick:
        a.n_boot = min(a.n_boot, 100)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for quiet in ("ehrseq.evaluate", "ehrseq.recipes.sequence"):  # near-constant / fallback notes: in the table
        logging.getLogger(quiet).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(a.threads)
    sources = task_sources(a)
    meters = {s: StepMeter() for s in seeds}
    t0 = time.perf_counter()
    by_seed: dict[int, dict[str, dict[str, Any]]] = {}
    split_of: dict[int, pd.DataFrame] = {}
    labels: dict[str, TaskLabels] = {}
    with threadpool_limits(a.threads):
        with meters[seeds[0]].step("labels", "(data)", "read events"):
            raw = api.load_data(a.data, column_map=COLUMN_MAP)
        ev = raw.events
        for seed in seeds:
            meter, results = meters[seed], by_seed.setdefault(seed, {})
            splits = split_of[seed] = PatientSplitter(strategy="random", fractions=(0.7, 0.15, 0.15),
                                                      seed=seed).split(subjects_table(ev))
            data = api.LoadedData(ev, splits, None, raw.source)
            for name, (how, path) in sources.items():
                if name not in labels:
                    with meter.step("labels", name, "labels (shared)"):
                        labels[name] = _task_labels(name, how, path, ev, a)
                    print(f"{name}: {len(labels[name])} rows ({labels[name].spec.kind})", flush=True)
                results[name] = run_task(name, labels[name], data, meter, a, seed)
                print(f"seed {seed} {name}: done at {time.perf_counter() - t0:.0f}s", flush=True)
    for m in meters.values():
        m.close()
    total = time.perf_counter() - t0
    first = by_seed[seeds[0]]
    body = header(a, ev, split_of[seeds[0]], seeds, RUN_CONFIGS)
    for name, r in first.items():
        body += task_section(name, labels[name], r)
    if len(seeds) > 1:
        body += seeds_section(by_seed)
    body += cost_section(meters[seeds[0]].rows, ["(data)", *first])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    body += [f"Cost of the seed-{seeds[0]} split. Peak RSS: RSS sampled every 5 ms from /proc/self/statm; the figure "
             "is the step's peak minus its starting RSS (memory freed by an earlier step may be reused, so it "
             f"understates a step run alone). Process max RSS (getrusage): {peak:.0f} MB. The label step of each task "
             "includes ACES; featurize of 'count features (shared)' is fitted once per task for LR, GBM and Coxnet. "
             f"torch threads {a.threads}, BLAS/OpenMP threads {a.threads}.", "",
             f"Total wall time ({len(seeds)} split{'s' if len(seeds) > 1 else ''}): {total:.0f} s "
             f"({total / 60:.1f} min){' (--quick)' if a.quick else ''}."]
    text = "\n".join(body)
    print(text)
    print(f"wrote {write_result('Real tasks: MIMIC-IV demo, ehrseq models vs count-feature baselines', text)}")


if __name__ == "__main__":
    main()
