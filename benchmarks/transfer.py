"""Site transfer A -> B of the CDAI forecaster on the synthetic cohort with a realistic site shift.

    python -m benchmarks.transfer [--patients 6000] [--shift realistic] [--behrt]   # 11 min on 2 shared cores
                                                                                    # (3 min without --behrt)

Site B differs from A as :data:`ehrseq.synth.shift.REALISTIC` says (local lab codes, ICD-9, CRP in mg/dL,
state-dependent cadence and lab ordering, nurse visits without a CDAI, a tighter treat-to-target policy with an
unrecorded depot steroid, an older and sicker case mix). Models trained at A are scored at B's held-out
patients: as is; fine-tuned from A on 5%, 10%, 25% of B's train and tuning patients (A's featurizer frozen);
trained from scratch on the same patients; trained on all of B (the within-B reference). Each transfer row is
run twice, reading B's events with and without the code map the generator writes (B's codes -> A's; a
researcher would write it from the two sites' dictionaries). Models: the RNN, logistic regression on the
featurizer's tabular view (fine-tuning = refitting with an L2 pull towards A's coefficients), and with
``--behrt`` BEHRT (small) for as-is, 10% and all of B.

Every figure is on the same held-out rows of site B, with patient-bootstrap 95% CIs
(:func:`ehrseq.evaluate.summary.summarize`); differences between models (fine-tuned minus scratch, the share
of the gap closed) use a paired patient bootstrap over the same resamples. Gap closed =
(model - as is) / (within B - as is), as-is taken in the same code-map condition.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.optimize import minimize
from scipy.special import expit, log_expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from benchmarks.common import write_result
from ehrseq import api
from ehrseq.evaluate.summary import fmt, summarize
from ehrseq.featurize.featurizer import Featurizer
from ehrseq.featurize.tabular import tabular_view
from ehrseq.labels import cdai_labels
from ehrseq.scoring.prediction import predict_rows
from ehrseq.split import PatientSplitter, ids_in, subjects_table
from ehrseq.synth.shift import resolve_shift

LOG = logging.getLogger("benchmarks.transfer")


def _site(data: api.LoadedData, site: str, splits: pd.DataFrame) -> api.LoadedData:
    keep = splits["subject_id"]
    return api.LoadedData(data.events.loc[data.events["subject_id"].isin(keep)], splits, None, site)


def site_splits(events: pd.DataFrame, seed: int, b_fractions: tuple[float, float, float]) -> dict[str, pd.DataFrame]:
    """Per-site random patient splits: A 70/15/15, B ``b_fractions`` (a larger held-out part for tighter CIs)."""
    subj = subjects_table(events)
    out = {}
    for site, fr in (("A", (0.7, 0.15, 0.15)), ("B", b_fractions)):
        out[site] = PatientSplitter(fractions=fr, seed=seed).split(subj.loc[subj["site"] == site]).reset_index(drop=True)
    return out


def fraction_of(splits: pd.DataFrame, f: float, seed: int) -> pd.DataFrame:
    """A seeded share ``f`` of the train and of the tuning patients, every held-out patient."""
    rng = np.random.default_rng(seed)
    keep = [ids_in(splits, "held_out")]
    for name in ("train", "tuning"):
        ids = np.sort(ids_in(splits, name))
        keep.append(rng.choice(ids, size=max(5, int(round(f * len(ids)))), replace=False))
    return splits.loc[splits["subject_id"].isin(np.concatenate(keep))].reset_index(drop=True)


def paired(preds: dict[str, pd.DataFrame], n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """AUROC of every model on the same patient-bootstrap resamples (rows in the same order in every frame)."""
    first = next(iter(preds.values()))
    codes, _ = pd.factorize(first["subject_id"])
    y = first["y_true"].to_numpy(int)
    rng = np.random.default_rng(seed)
    out = {k: np.empty(n_boot) for k in preds}
    n_sub = codes.max() + 1
    for b in range(n_boot):
        w = rng.multinomial(n_sub, np.full(n_sub, 1.0 / n_sub))[codes]
        for k, p in preds.items():
            out[k][b] = roc_auc_score(y, p["y_prob"].to_numpy(), sample_weight=w)
    return out


@dataclass
class LRTransfer:
    """Logistic regression on the featurizer's tabular view (static features + the last step), its C chosen on
    the tuning patients; ``refit`` fine-tunes it on another site's data (A's featurizer kept) with an L2 pull
    towards its coefficients, the pull's strength chosen on the tuning patients."""

    fz: Featurizer
    coef: np.ndarray
    intercept: float

    @staticmethod
    def _xy(fz: Featurizer, events: pd.DataFrame, splits: pd.DataFrame, split: str) -> tuple[np.ndarray, np.ndarray]:
        lab = cdai_labels(events)
        lab = lab.loc[lab["subject_id"].isin(ids_in(splits, split))].reset_index(drop=True)
        return tabular_view(fz.transform(events, lab)), lab["boolean_value"].to_numpy(int)

    @classmethod
    def fit(cls, events: pd.DataFrame, splits: pd.DataFrame, seed: int) -> LRTransfer:
        """Featurizer and model fitted on ``splits``' train patients; C from (0.01, 0.1, 1) on its tuning ones."""
        fz = Featurizer().fit(events, splits)
        (X, y), (Xt, yt) = cls._xy(fz, events, splits, "train"), cls._xy(fz, events, splits, "tuning")
        best = max((LogisticRegression(C=C, max_iter=3000, random_state=seed).fit(X, y) for C in (0.01, 0.1, 1.0)),
                   key=lambda m: roc_auc_score(yt, m.decision_function(Xt)))
        return cls(fz, best.coef_[0].astype(float), float(best.intercept_[0]))

    def refit(self, events: pd.DataFrame, splits: pd.DataFrame) -> LRTransfer:
        """Fine-tuned on ``splits``' train patients: minimise log loss + lam/2 |w - w_A|^2, lam from (1, 10, 100)
        on the tuning patients; the featurizer stays this model's."""
        (X, y), (Xt, yt) = self._xy(self.fz, events, splits, "train"), self._xy(self.fz, events, splits, "tuning")
        w0 = np.append(self.coef, self.intercept)

        def loss(w: np.ndarray, lam: float) -> tuple[float, np.ndarray]:
            z = X @ w[:-1] + w[-1]
            nll = -(y * log_expit(z) + (1 - y) * log_expit(-z)).sum()
            g = X.T @ (expit(z) - y)
            d = w[:-1] - self.coef
            return nll + 0.5 * lam * d @ d, np.append(g + lam * d, (expit(z) - y).sum())

        fits = [minimize(loss, w0, args=(lam,), jac=True, method="L-BFGS-B").x for lam in (1.0, 10.0, 100.0)]
        w = max(fits, key=lambda w: roc_auc_score(yt, Xt @ w[:-1] + w[-1]))
        return LRTransfer(self.fz, w[:-1], float(w[-1]))

    def predict(self, events: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
        """subject_id, prediction_time, y_prob at ``rows``."""
        X = tabular_view(self.fz.transform(events, rows))
        return rows.assign(y_prob=expit(X @ self.coef + self.intercept))


def ci(x: np.ndarray) -> str:
    lo, hi = np.quantile(x, [0.025, 0.975])
    return f"({lo:.2f} to {hi:.2f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=6000)
    ap.add_argument("--shift", default="realistic")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1, 0.25])
    ap.add_argument("--b-split", type=float, nargs=3, default=[0.5, 0.1, 0.4], help="site B train/tuning/held-out")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--small-epochs", type=int, default=30, help="max epochs on a fraction of B, fine-tuned and "
                    "scratch alike")
    ap.add_argument("--small-patience", type=int, default=6, help="early-stopping patience on a fraction of B (its "
                    "tuning patients are few, so their loss is noisy)")
    ap.add_argument("--small-lr", type=float, default=1e-3, help="RNN learning rate on a fraction of B, "
                    "fine-tuned and scratch alike")
    ap.add_argument("--behrt", action="store_true", help="BEHRT small too (as is, 10%%, all of B)")
    ap.add_argument("--behrt-epochs", type=int, default=6)
    ap.add_argument("--behrt-rows", type=int, default=4, help="BEHRT: train label rows per patient (0: all)")
    ap.add_argument("--no-lr", action="store_true", help="skip logistic regression")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=300)
    ap.add_argument("--dry-run", action="store_true", help="print the table, do not write results/transfer.md")
    a = ap.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for name in ("ehrseq", "ehrseq.io.code_map"):
        logging.getLogger(name).setLevel(logging.WARNING)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="ehrseq-transfer-"))
    shift = resolve_shift(a.shift)
    api.synthesize(a.patients, out=tmp / "c", seed=a.seed, extract=False, biopsy_rate=0.0, shift=shift)
    root = tmp / "c" / "meds"
    cmap = root / "truth" / "code_map_b_to_a.csv"
    data = {"raw": api.load_data(root), "mapped": api.load_data(root, code_map=cmap) if cmap.exists() else None}
    truth = pd.read_parquet(root / "truth" / "cdai_next.parquet")
    sp = site_splits(data["raw"].events, a.seed, tuple(a.b_split))
    A = _site(data["raw"], "A", sp["A"])
    B = {k: _site(d, "B", sp["B"]) for k, d in data.items() if d is not None}
    conds = list(B)
    lab = cdai_labels(B["raw"].events)
    ho = lab.loc[lab["subject_id"].isin(ids_in(sp["B"], "held_out"))].reset_index(drop=True)
    rows = ho[["subject_id", "prediction_time"]]
    y = ho["boolean_value"].astype(float).to_numpy()
    subsets = {f: fraction_of(sp["B"], f, a.seed) for f in a.fractions}
    n_b = {f: {s: len(ids_in(v, s)) for s in ("train", "tuning")} for f, v in subsets.items()}
    tr = {"epochs": a.epochs, "progress": False, "patience": 2}
    small = {"epochs": a.small_epochs, "progress": False, "patience": a.small_patience, "lr": a.small_lr}
    preds: dict[str, pd.DataFrame] = {}
    timing: dict[str, float] = {}

    def held(res: api.FinetuneResult) -> pd.DataFrame:
        p = res.predictions["held_out"]
        assert p[["subject_id", "prediction_time"]].equals(rows), "held-out rows differ between models"
        return p

    def rnn(name: str, d: api.LoadedData, **kw) -> None:
        t = time.perf_counter()
        res = api.finetune(d, target="cdai", model="rnn", seed=a.seed, n_bootstrap=0, **kw)
        preds[name] = held(res)
        timing[name] = time.perf_counter() - t
        LOG.info("%s: AUROC %.3f, best epoch %s (%.0fs)", name, roc_auc_score(y, preds[name]["y_prob"]),
                 res.metrics["train"]["best_epoch"], timing[name])

    t = time.perf_counter()
    api.finetune(A, out=tmp / "rnn_a", target="cdai", model="rnn", preset="small", seed=a.seed, train=tr, n_bootstrap=0)
    timing["RNN at A"] = time.perf_counter() - t
    for c in conds:
        preds[f"RNN as is [{c}]"] = predict_rows(tmp / "rnn_a", B[c], rows).eval_frame().assign(y_true=y)
    rnn("RNN all of B", B["raw"], preset="small", train=tr)
    for f, s in subsets.items():
        rnn(f"RNN scratch {f:.0%}", _site(B["raw"], "B", s), preset="small", train=small)
        for c in conds:
            rnn(f"RNN fine-tuned {f:.0%} [{c}]", _site(B[c], "B", s), init=tmp / "rnn_a", train=small)

    if not a.no_lr:
        t = time.perf_counter()
        lr_a = LRTransfer.fit(A.events, sp["A"], seed=a.seed)
        for c in conds:
            preds[f"LR as is [{c}]"] = lr_a.predict(B[c].events, rows).assign(y_true=y)
        preds["LR all of B"] = LRTransfer.fit(B["raw"].events, sp["B"], seed=a.seed).predict(B["raw"].events, rows).assign(y_true=y)
        for f, s in subsets.items():
            preds[f"LR scratch {f:.0%}"] = LRTransfer.fit(B["raw"].events, s, seed=a.seed).predict(
                B["raw"].events, rows).assign(y_true=y)
            for c in conds:
                preds[f"LR fine-tuned {f:.0%} [{c}]"] = lr_a.refit(B[c].events, s).predict(B[c].events, rows).assign(y_true=y)
        timing["logistic regression (all fits)"] = time.perf_counter() - t

    if a.behrt:
        bkw = dict(target="cdai", model="behrt", preset="small", seed=a.seed, n_bootstrap=0, featurizer={"max_len": 96},
                   max_train_rows_per_subject=a.behrt_rows or None)
        btr = {"epochs": a.behrt_epochs, "progress": False, "patience": 2, "lr": 2e-3, "batch_size": 32}
        t = time.perf_counter()
        api.finetune(A, out=tmp / "behrt_a", train=btr, **bkw)
        timing["BEHRT at A"] = time.perf_counter() - t
        c = conds[-1]
        preds[f"BEHRT as is [{c}]"] = predict_rows(tmp / "behrt_a", B[c], rows).eval_frame().assign(y_true=y)
        for name, d, kw in (("BEHRT all of B", B["raw"], {"train": btr}),
                            ("BEHRT scratch 10%", _site(B["raw"], "B", subsets[0.1]),
                             {"train": {**btr, "epochs": a.small_epochs, "patience": a.small_patience}}),
                            (f"BEHRT fine-tuned 10% [{c}]", _site(B[c], "B", subsets[0.1]),
                             {"init": tmp / "behrt_a", "train": {**btr, "epochs": a.small_epochs,
                                                                "patience": a.small_patience, "lr": 5e-4}})):
            t = time.perf_counter()
            res = api.finetune(d, **{**bkw, **kw})
            preds[name] = held(res)
            timing[name] = time.perf_counter() - t
            LOG.info("%s: AUROC %.3f, best epoch %s (%.0fs)", name, roc_auc_score(y, preds[name]["y_prob"]),
                     res.metrics["train"]["best_epoch"], timing[name])

    m = ho.merge(truth, on=["subject_id", "prediction_time"], how="left")
    known = m["true_prob_controlled_next_cdai"].notna().to_numpy()
    oracle = rows.assign(y_true=y, y_prob=m["true_prob_controlled_next_cdai"].to_numpy())[known]
    text = report(a, preds, oracle, paired(preds, a.n_boot, a.seed), conds, n_b, len(ho), ho["subject_id"].nunique(),
                  timing, time.perf_counter() - t0, shift.to_dict())
    print(text)
    if not a.dry_run:
        print(f"wrote {write_result('Site transfer A -> B: CDAI at the next visit, realistic site shift', text)}")


def report(a: argparse.Namespace, preds: dict[str, pd.DataFrame], oracle: pd.DataFrame, boot: dict[str, np.ndarray],
           conds: list[str], n_b: dict[float, dict[str, int]], n_rows: int, n_pat: int, timing: dict[str, float],
           total: float, shift: dict) -> str:
    """The Markdown body: AUROC table per model family, the gap closed and fine-tuned vs scratch, timings."""
    s = {k: summarize(v, "binary", n_bootstrap=a.n_boot, seed=a.seed) for k, v in preds.items()}
    so = summarize(oracle, "binary", n_bootstrap=a.n_boot, seed=a.seed)
    auc = {k: v["auroc"]["value"] for k, v in s.items()}
    out = [
        f"Cohort: {a.patients} patients, `--shift {a.shift}` ({', '.join(f'{k}={v}' for k, v in shift.items())}), "
        f"seed {a.seed}. Site splits: A 70/15/15, B {'/'.join(f'{x:.0%}' for x in a.b_split)} (train/tuning/held out). "
        f"Scored: site B's held-out patients, {n_rows} label rows of {n_pat} patients. Fractions of B: "
        + ", ".join(f"{f:.0%} = {v['train']} train + {v['tuning']} tuning patients" for f, v in n_b.items())
        + f". RNN small: {a.epochs} epochs max (patience 2) at A and on all of B (lr 2e-3); on a fraction of B "
        f"{a.small_epochs} epochs max (patience {a.small_patience}), lr {a.small_lr:g}, from scratch (its own "
        "featurizer) or fine-tuned from A (A's featurizer frozen): the same recipe, only the start differs; early "
        "stopping on the fraction's own tuning patients. "
        + (f"BEHRT small, max_len 96, lr 2e-3, {a.behrt_epochs} epochs max (patience 2) at A and on all of B "
           f"({a.behrt_rows or 'all'} train rows per patient); on 10% of B {a.small_epochs} epochs max (patience "
           f"{a.small_patience}), lr 2e-3 from scratch, 5e-4 fine-tuned. " if a.behrt else "") + "torch threads 1. "
        f"Total {total / 60:.1f} min.\n",
        "| model | [code map] | AUROC (95% CI) | AUPRC | Brier | gap closed (95% CI) |", "|---|---|---|---|---|---|",
    ]
    for fam in ("RNN", "LR", "BEHRT"):
        keys = [k for k in preds if k.startswith(fam + " ")]
        if not keys:
            continue
        ref = f"{fam} all of B"
        for k in keys:
            name, _, cond = k.partition(" [")
            cond = cond.rstrip("]")
            gap = ""
            if "fine-tuned" in k or "scratch" in k:
                b0 = f"{fam} as is [{cond or conds[0]}]"  # scratch: against as is on B's own codes
                if b0 in boot and ref in boot:
                    g = (boot[k] - boot[b0]) / (boot[ref] - boot[b0])
                    gap = f"{(auc[k] - auc[b0]) / (auc[ref] - auc[b0]):.2f} {ci(g)}"
            m = s[k]
            out.append(f"| {name} | {cond or '-'} | {fmt(m['auroc'])} | {fmt(m['auprc'])} | {fmt(m['brier'])} | {gap} |")
    out.append(f"| oracle (generator's probabilities) | - | {fmt(so['auroc'])} | {fmt(so['auprc'])} | {fmt(so['brier'])} | |")
    out += ["", f"Oracle on the {len(oracle)} of {n_rows} rows where the next recorded CDAI's probability is known "
                "(the visits in between, if any, were nurse visits).", ""]
    out += ["Fine-tuned minus scratch on the same patients, AUROC (paired patient bootstrap, 95% CI):", "",
            "| model | fraction | [code map] | fine-tuned - scratch |", "|---|---|---|---|"]
    for fam in ("RNN", "LR", "BEHRT"):
        for f in n_b:
            sc = f"{fam} scratch {f:.0%}"
            for c in conds:
                k = f"{fam} fine-tuned {f:.0%} [{c}]"
                if k in boot and sc in boot:
                    out.append(f"| {fam} | {f:.0%} | {c} | {auc[k] - auc[sc]:+.3f} {ci(boot[k] - boot[sc])} |")
    for fam in ("RNN", "LR", "BEHRT"):
        ref = f"{fam} all of B"
        for c in conds:
            b0 = f"{fam} as is [{c}]"
            if b0 in boot and ref in boot:
                out.append(f"\n{fam} cross-site drop [{c}]: within B - as is = {auc[ref] - auc[b0]:.3f} "
                           f"{ci(boot[ref] - boot[b0])}")
    out += ["", "Goal (fine-tuning on 10% of B closes at least half the gap and beats scratch on the same 10%; "
                "both by the lower end of the paired 95% CI):", ""]
    for fam in ("RNN", "LR", "BEHRT"):
        for c in conds:
            k, sc, b0, ref = (f"{fam} fine-tuned 10% [{c}]", f"{fam} scratch 10%", f"{fam} as is [{c}]",
                              f"{fam} all of B")
            if not all(x in boot for x in (k, sc, b0, ref)):
                continue
            g = np.quantile((boot[k] - boot[b0]) / (boot[ref] - boot[b0]), 0.025)
            d = np.quantile(boot[k] - boot[sc], 0.025)
            out.append(f"- {fam} [{c}]: gap closed >= {g:.2f}, fine-tuned - scratch >= {d:+.3f}: "
                       f"{'met' if g >= 0.5 and d > 0 else 'not met'}")
    out += ["", "Time per model (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timing.items())]
    return "\n".join(out)


if __name__ == "__main__":
    main()
