"""DeepSurv and the discrete-time heads (LogisticHazard, PMF, DeepHit) vs pycox CoxPH, linear Cox and a random
survival forest on five real datasets (5-fold CV).

Run:  OMP_NUM_THREADS=1 /work/main/.venv/bin/python -m benchmarks.deepsurv_real
Needs scikit-survival (benchmark-only): /work/main/.venv/bin/pip install scikit-survival
Writes benchmarks/results/deepsurv_real.md.

Every model sees the same folds, the same fold-wise preprocessing (one-hot, train-fold median imputation,
train-fold standardisation) and is scored by the same ehrseq.evaluate.survival functions on the same time grid.
The neural models hold out 20% of each training fold (stratified by event) for early stopping; the linear Cox
and the forest train on the whole training fold. No hyper-parameter is tuned per dataset.
"""

from __future__ import annotations

import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats
from sklearn.model_selection import StratifiedKFold, train_test_split
from threadpoolctl import threadpool_limits

from benchmarks.common import machine
from ehrseq.evaluate.survival import (
    concordance_index,
    concordance_td,
    default_time_grid,
    integrated_brier_score,
    kaplan_meier,
)
from ehrseq.models.deepsurv import DeepSurv, DeepSurvConfig
from ehrseq.models.discrete_time import DISCRETE_TIME_MODELS, DiscreteTimeConfig

OUT = Path(__file__).parent / "results" / "deepsurv_real.md"
SEED = 0
K = 5
FLCHAIN_ROWS = 3000
HIDDEN = (32, 32)
DS_CONFIG = DeepSurvConfig(hidden_sizes=HIDDEN, dropout=0.1, batch_norm=True, lr=1e-2, weight_decay=1e-4,
                           epochs=200, batch_size=256, patience=10, seed=SEED)
# The discrete-time heads: the same MLP and training as DeepSurv, 20 cut points at Kaplan-Meier quantiles (the
# registry's "small" preset).
DT_CONFIG = DiscreteTimeConfig(hidden_sizes=HIDDEN, dropout=0.1, batch_norm=True, lr=1e-2, weight_decay=1e-4,
                               epochs=200, batch_size=256, patience=10, seed=SEED, num_durations=20,
                               cut_scheme="quantiles")
COX, PYCOX, DEEPSURV, KM = "linear Cox (sksurv)", "pycox CoxPH", "ehrseq DeepSurv", "Kaplan-Meier (no covariates)"
HEADS = {"ehrseq LogisticHazard": "logistic_hazard", "ehrseq PMF": "pmf", "ehrseq DeepHit": "deephit"}
MODELS = [COX, "RSF (sksurv)", PYCOX, DEEPSURV, *HEADS, KM]


# -------------------------------------------------------------------------------------------- data
def load(name: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, str]:
    """(features with NaN allowed, durations, events, note) for one sksurv dataset."""
    from sksurv import datasets

    X, y = getattr(datasets, f"load_{name}")()
    event_field, time_field = y.dtype.names
    t = y[time_field].astype(float)
    e = y[event_field].astype(float)
    note = ""
    if name == "flchain":
        # 'chapter' is the chapter of the cause of death: only known for those who died (label leakage).
        X = X.drop(columns=["chapter"])
        keep = np.random.default_rng(SEED).choice(len(X), FLCHAIN_ROWS, replace=False)
        keep.sort()
        X, t, e = X.iloc[keep].reset_index(drop=True), t[keep], e[keep]
        note = f"chapter dropped (leaks death); random {FLCHAIN_ROWS} of 7874 rows; creatinine imputed"
    zero = t <= 0
    if zero.any():
        t = np.where(zero, 0.5, t)  # events/censoring on day 0 -> half a day (DeepSurv requires t > 0)
        note += ("; " if note else "") + f"{int(zero.sum())} zero durations set to 0.5"
    X = pd.get_dummies(X, drop_first=True, dtype=float)
    return X.astype(float), t, e, note


def preprocess(train: pd.DataFrame, test: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Median-impute and standardise with training-fold statistics only."""
    med = train.median()
    tr, te = train.fillna(med), test.fillna(med)
    mu, sd = tr.mean(), tr.std(ddof=0).replace(0, 1.0)
    return ((tr - mu) / sd).to_numpy(np.float64), ((te - mu) / sd).to_numpy(np.float64)


# ------------------------------------------------------------------------------------------ models
def fit_predict(model: str, xtr, ttr, etr, xte) -> tuple[np.ndarray, pd.DataFrame, float]:
    """(risk (N_test,), survival frame (times, N_test), epochs trained or NaN) for one model on one fold."""
    if model == KM:
        km = kaplan_meier(ttr, etr)["survival"]
        return np.zeros(len(xte)), pd.DataFrame(np.repeat(km.to_numpy()[:, None], len(xte), 1), km.index), np.nan
    if model == "linear Cox (sksurv)":
        from sksurv.linear_model import CoxPHSurvivalAnalysis
        from sksurv.util import Surv

        m = CoxPHSurvivalAnalysis(alpha=0.01, ties="breslow").fit(xtr, Surv.from_arrays(etr.astype(bool), ttr))
        return m.predict(xte), _sksurv_frame(m, xte), np.nan
    if model == "RSF (sksurv)":
        from sksurv.ensemble import RandomSurvivalForest
        from sksurv.util import Surv

        m = RandomSurvivalForest(n_estimators=100, min_samples_leaf=10, max_features="sqrt", n_jobs=2,
                                 random_state=SEED)
        m.fit(xtr, Surv.from_arrays(etr.astype(bool), ttr))
        return m.predict(xte), _sksurv_frame(m, xte), np.nan
    # neural models: same 20% early-stopping split of the training fold
    fit_idx, val_idx = train_test_split(np.arange(len(ttr)), test_size=0.2, stratify=etr, random_state=SEED)
    if model == "ehrseq DeepSurv":
        m = DeepSurv(DS_CONFIG).fit(xtr[fit_idx], ttr[fit_idx], etr[fit_idx],
                                    xtr[val_idx], ttr[val_idx], etr[val_idx])
        return m.predict_risk(xte), m.predict_survival(xte), float(len(m.history_))
    if model in HEADS:  # curves on pycox's interpolation grid joined with the training event times
        m = DISCRETE_TIME_MODELS[HEADS[model]](DT_CONFIG).fit(xtr[fit_idx], ttr[fit_idx], etr[fit_idx],
                                                              xtr[val_idx], ttr[val_idx], etr[val_idx])
        return m.predict_risk(xte), m.predict_survival(xte), float(len(m.history_))
    if model == "pycox CoxPH":
        return _pycox(xtr[fit_idx], ttr[fit_idx], etr[fit_idx], xtr[val_idx], ttr[val_idx], etr[val_idx], xte)
    raise ValueError(model)


def _sksurv_frame(m, x: np.ndarray) -> pd.DataFrame:
    arr = m.predict_survival_function(x, return_array=True)  # (N, n_times)
    return pd.DataFrame(arr.T, index=np.asarray(m.unique_times_, dtype=float))


def _pycox(x, t, e, xv, tv, ev, xte) -> tuple[np.ndarray, pd.DataFrame, float]:
    """pycox's own CoxPH + torchtuples MLPVanilla, matched to DS_CONFIG (pycox save/load avoided)."""
    import torchtuples as tt
    from pycox.models import CoxPH

    torch.manual_seed(SEED)
    np.random.seed(SEED)
    f32 = np.float32
    net = tt.practical.MLPVanilla(x.shape[1], list(HIDDEN), 1, batch_norm=True, dropout=DS_CONFIG.dropout,
                                  output_bias=False)
    model = CoxPH(net, tt.optim.AdamW(lr=DS_CONFIG.lr, decoupled_weight_decay=DS_CONFIG.weight_decay))
    y, yv = (t.astype(f32), e.astype(f32)), (tv.astype(f32), ev.astype(f32))
    model.fit(x.astype(f32), y, DS_CONFIG.batch_size, DS_CONFIG.epochs,
              [tt.callbacks.EarlyStopping(patience=DS_CONFIG.patience)], verbose=False,
              val_data=(xv.astype(f32), yv), val_batch_size=len(tv))
    model.compute_baseline_hazards()
    risk = model.predict(xte.astype(f32)).reshape(-1)
    surv = model.predict_surv_df(xte.astype(f32))
    return risk, surv, float(len(model.log.to_pandas()))


# ----------------------------------------------------------------------------------------- running
def run_dataset(name: str) -> tuple[list[dict], dict]:
    X, t, e, note = load(name)
    info = {"dataset": name, "n": len(t), "p": X.shape[1], "events": float(e.mean()), "note": note}
    folds = StratifiedKFold(K, shuffle=True, random_state=SEED).split(X, e)
    rows = []
    for k, (tr, te) in enumerate(folds):
        xtr, xte = preprocess(X.iloc[tr], X.iloc[te])
        grid = default_time_grid(t[te])  # one grid per fold, shared by every model
        for model in MODELS:
            start = time.perf_counter()
            risk, surv, epochs = fit_predict(model, xtr, t[tr], e[tr], xte)
            rows.append({
                "dataset": name, "fold": k, "model": model,
                "C": concordance_index(t[te], e[te], risk),
                "Ctd": concordance_td(t[te], e[te], surv),
                "IBS": integrated_brier_score(t[te], e[te], surv, grid),
                "seconds": time.perf_counter() - start, "epochs": epochs,
            })
        print(f"{name} fold {k} done", flush=True)
    return rows, info


def ci(values: pd.Series) -> tuple[float, float]:
    """Mean and half-width of a t-based 95% CI over folds."""
    v = values.to_numpy()
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def to_markdown(res: pd.DataFrame, infos: list[dict], seconds: float) -> str:
    import pycox
    import sksurv

    lines = [
        "# DeepSurv on real survival data (5-fold CV)",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        "- command: `OMP_NUM_THREADS=1 /work/main/.venv/bin/python -m benchmarks.deepsurv_real`",
        f"- machine: {machine()}",
        f"- versions: pycox {pycox.__version__}, scikit-survival {sksurv.__version__}, "
        f"numpy {np.__version__}, pandas {pd.__version__}",
        f"- total runtime: {seconds / 60:.1f} min",
        f"- neural config (DeepSurv, pycox CoxPH and the discrete-time heads): MLP {list(HIDDEN)}, ReLU, batch norm, dropout "
        f"{DS_CONFIG.dropout}, AdamW lr {DS_CONFIG.lr} wd {DS_CONFIG.weight_decay}, batch {DS_CONFIG.batch_size}, "
        f"<= {DS_CONFIG.epochs} epochs, early stopping patience {DS_CONFIG.patience} on a stratified 20% of the "
        "training fold; linear Cox: sksurv CoxPHSurvivalAnalysis(alpha=0.01, Breslow ties); RSF: 100 trees, "
        "min_samples_leaf=10, max_features=sqrt.",
        f"- discrete-time heads (ehrseq.models.discrete_time on pycox's LabTransDiscreteTime and losses): "
        f"{DT_CONFIG.num_durations} cut points at Kaplan-Meier quantiles of the fitting part; DeepHit alpha "
        f"{DT_CONFIG.alpha}, sigma {DT_CONFIG.sigma} (ranking pairs within a batch); survival linear between cut "
        "points (constant density, pycox's const_pdf interpolation), read on 10 points per interval joined with "
        "the training event times; risk score for Harrell's C: 1 - RMST(tau) / tau, tau the last cut point.",
        "- metrics (ehrseq.evaluate.survival, same for all models): Harrell's C on the risk score; C-td "
        "(Antolini) on the survival curves; IBS (IPCW, KM censoring on the test fold, 100-point grid from the "
        "shortest follow-up to the 90th percentile). Mean over 5 folds ± t(0.975, 4)·sd/√5. Ratios are the "
        "fold-mean over the linear Cox fold-mean (C: >1 better; IBS: <1 better).",
        "",
    ]
    for info in infos:
        lines += [f"## {info['dataset']}  (n={info['n']}, p={info['p']}, events {info['events']:.0%})", ""]
        if info["note"]:
            lines += [f"_{info['note']}_", ""]
        lines += ["| model | Harrell's C | C-td | IBS | C / Cox | IBS / Cox | s/fold | epochs |",
                  "|---|---|---|---|---|---|---|---|"]
        sub = res[res.dataset == info["dataset"]]
        base = sub[sub.model == COX]
        for model in MODELS:
            m = sub[sub.model == model]
            (c, dc), (ctd, dctd), (ibs, dibs) = ci(m.C), ci(m.Ctd), ci(m.IBS)
            lines.append(
                f"| {model} | {c:.3f} ± {dc:.3f} | {ctd:.3f} ± {dctd:.3f} | {ibs:.3f} ± {dibs:.3f} | "
                f"{c / base.C.mean():.3f} | {ibs / base.IBS.mean():.3f} | {m.seconds.mean():.1f} | "
                f"{'' if m.epochs.isna().all() else f'{m.epochs.mean():.0f}'} |"
            )
        lines.append("")
    return "\n".join(lines + findings(res) + head_findings(res)) + "\n"


def findings(res: pd.DataFrame) -> list[str]:
    """Paired (same-fold) differences DeepSurv - linear Cox and - pycox, and the reading of them."""
    lines = ["## DeepSurv vs linear Cox and pycox CoxPH, paired over folds (mean ± 95% CI half-width)", "",
             "| dataset | ΔC vs Cox | ΔIBS vs Cox | ΔC vs pycox CoxPH | ΔIBS vs pycox CoxPH |",
             "|---|---|---|---|---|"]
    worse, better = [], []
    for name, sub in res.groupby("dataset", sort=False):
        piv = sub.pivot(index="fold", columns="model")
        diffs = {
            ("C", "Cox"): piv["C"][DEEPSURV] - piv["C"][COX],
            ("IBS", "Cox"): piv["IBS"][DEEPSURV] - piv["IBS"][COX],
            ("C", "pycox"): piv["C"][DEEPSURV] - piv["C"][PYCOX],
            ("IBS", "pycox"): piv["IBS"][DEEPSURV] - piv["IBS"][PYCOX],
        }
        cells = []
        for (metric, other), d in diffs.items():
            m, h = ci(d)
            cells.append(f"{m:+.3f} ± {h:.3f}")
            sign = m if metric == "C" else -m  # > 0 means DeepSurv is better
            if abs(m) > h:
                (better if sign > 0 else worse).append(f"{name} ({metric} vs {other})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Paired CIs excluding 0 — DeepSurv worse: " + (", ".join(worse) or "none")
        + "; DeepSurv better: " + (", ".join(better) or "none") + ". Everything else is within fold noise.",
        "",
        "Reading (the prose was written after looking at the numbers of the run recorded above):",
        "",
        "- DeepSurv does not beat a lightly penalised linear Cox model on these five classic datasets; at best",
        "  it ties (gbsg2, flchain). Likely reasons: the datasets are small (137 to 3000 rows, 8 to 23",
        "  features after one-hot) with mostly monotone, near-linear effects, so the MLP has little",
        "  non-linearity to find and pays in variance (RSF, the other non-linear model, does not win either,",
        "  except on gbsg2); the neural models train on 80% of each training fold because 20% is held out for",
        "  early stopping, while the linear Cox and the forest use all of it; aids has 8% events (about 60",
        "  events to train on per fold) and veterans 137 rows; early stopping at lr 0.01 ends after 15-25",
        "  epochs; and there is one fixed config, not tuned per dataset as in Katzman et al. (2018).",
        "- IBS is where DeepSurv loses most clearly (whas500). Likely causes, not separately tested: its Breslow",
        "  baseline is estimated on the 80% fitting part only, and early-stopped MLP risk scores are less well",
        "  scaled than a converged linear Cox fit on 400 rows.",
        "- Against pycox's own CoxPH with the same architecture, optimiser, batch size and early stopping,",
        "  ehrseq DeepSurv is level on C (every paired ΔC CI includes 0) and level or marginally better on IBS.",
        "  Remaining differences: ehrseq deals events evenly over batches and uses Breslow risk sets for tied",
        "  times; pycox shuffles freely and uses a running sum over sorted rows.",
        "- For proportional-hazards models C-td equals Harrell's C up to ties in S; RSF is the only model whose",
        "  curves cross, so its C-td and C differ. Kaplan-Meier (no covariates) is the no-skill reference:",
        "  every model beats it on IBS, though only barely on aids (8% events, little to predict by 90% follow-up).",
    ]
    return lines


def head_findings(res: pd.DataFrame) -> list[str]:
    """Paired (same-fold) differences of each discrete-time head against DeepSurv and linear Cox."""
    lines = ["", "## Discrete-time heads vs DeepSurv and linear Cox, paired over folds (mean ± 95% CI half-width)",
             "", "| dataset | head | ΔC vs DeepSurv | ΔC-td vs DeepSurv | ΔIBS vs DeepSurv | ΔC vs Cox | ΔIBS vs Cox |",
             "|---|---|---|---|---|---|---|"]
    for name, sub in res.groupby("dataset", sort=False):
        piv = sub.pivot(index="fold", columns="model")
        for head in HEADS:
            cells = [ci(piv[metric][head] - piv[metric][other])
                     for metric, other in (("C", DEEPSURV), ("Ctd", DEEPSURV), ("IBS", DEEPSURV), ("C", COX),
                                           ("IBS", COX))]
            lines.append(f"| {name} | {head.removeprefix('ehrseq ')} | "
                         + " | ".join(f"{m:+.3f} ± {h:.3f}" for m, h in cells) + " |")
    return lines + [""] + HEADS_READING


# Written after looking at the numbers of the run recorded in benchmarks/results/deepsurv_real.md.
HEADS_READING: list[str] = [
    'Reading of the discrete-time heads (written after looking at the numbers of the run recorded above):',
    '',
    '- No discrete-time head beats DeepSurv or the linear Cox model on C anywhere (no paired CI excludes 0 in',
    '  their favour). LogisticHazard and PMF are level with DeepSurv on whas500, gbsg2, veterans and flchain',
    '  (|ΔC| <= 0.02). On aids (8% events: about 60 training events per fold over 20 cut intervals)',
    '  LogisticHazard is clearly worse (ΔC -0.072 ± 0.032 vs DeepSurv); PMF and DeepHit are lower too, within',
    '  fold noise. One config, 20 cut points at Kaplan-Meier quantiles, is used everywhere; nothing was tuned.',
    '- Calibration: LogisticHazard and PMF are a little worse than DeepSurv on IBS (ΔIBS +0.002 to +0.010;',
    '  CIs excluding 0 on gbsg2 for LogisticHazard and on flchain for both). DeepHit is clearly worse (+0.014',
    '  to +0.030, CIs excluding 0 on whas500, gbsg2, veterans and flchain): 80% of its loss (1 - alpha) is the',
    '  ranking term, which rewards the order of the curves, not calibrated probabilities. Likely contributors',
    '  for all three, not separately tested: cut points fitted on 80% of the training fold, linear curves',
    '  within intervals, flat curves after the last cut point.',
    '- On the dense grid (10 points per interval joined with the training event times) C-td is within 0.02',
    "  of Harrell's C for every head except on aids (up to 0.04 either way); the heads do not assume",
    '  proportional hazards, so their curves may cross and the two measures may differ.',
    "- The output layer starts at the training Kaplan-Meier curve. With pycox's default start (hazards near",
    '  1/2 per interval), in a run before that change, early stopping left LogisticHazard on',
    "  veterans_lung_cancer with an IBS of 0.230, worse than Kaplan-Meier's 0.196.",
    '- On these small, near-linear datasets DeepSurv (or a linear Cox model) stays the better default;',
    '  LogisticHazard and PMF cost nothing in C where events are plentiful (flchain, whas500) and give',
    '  curves free of the proportional-hazards assumption.',
]


def main() -> None:
    torch.set_num_threads(1)  # the machine is shared; BLAS/OpenMP pools are capped below as well
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message="This overload of add", category=UserWarning)  # torchtuples
    start = time.perf_counter()
    rows, infos = [], []
    with threadpool_limits(1):
        for name in ["whas500", "gbsg2", "veterans_lung_cancer", "aids", "flchain"]:
            r, info = run_dataset(name)
            rows += r
            infos.append(info)
    res = pd.DataFrame(rows)
    md = to_markdown(res, infos, time.perf_counter() - start)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(md)
    print(md)


if __name__ == "__main__":
    main()
