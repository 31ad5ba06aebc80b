"""The Markdown of benchmarks/real_tasks.py: one section per task (scores, the reading of them) and the cost
of each step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ehrseq.config import FinetuneConfig, config_to_dict, load_config
from ehrseq.tasks.label_files import TaskLabels

LR, GBM, COX = "LR (counts)", "GBM (counts)", "Coxnet (counts)"


def _ci(m: dict[str, Any] | None) -> str:
    """'0.842 [0.830, 0.853]', '0.842 (CI undefined)' or 'undefined (reason)'."""
    if not m or m.get("value") is None:
        return "undefined" + (f" ({m['undefined']})" if m and m.get("undefined") else "")
    if m.get("lo") is None:
        return f"{m['value']:.3f} (CI undefined)" if "ci_undefined" in m else f"{m['value']:.3f}"
    return f"{m['value']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}]"


def _excludes_zero(d: dict[str, Any]) -> str:
    if d.get("lo") is None:
        return "paired CI undefined"
    return "paired CI excludes 0" if d["lo"] > 0 or d["hi"] < 0 else "paired CI includes 0"


def _ratio(m: dict[str, Any], ref: dict[str, Any]) -> str:
    v, r = m.get("value"), ref.get("value")
    return f"{v / r:.2f}" if v is not None and r else "-"


def _overlap(m: dict[str, Any], ref: dict[str, Any]) -> str:
    if None in (m.get("lo"), ref.get("lo")):
        return "CI undefined"
    return "CIs overlap" if m["lo"] <= ref["hi"] and ref["lo"] <= m["hi"] else "CIs do not overlap"


def _std(m: dict[str, Any], col: str) -> tuple[str, bool]:
    s = (m.get("prediction_spread") or {}).get(col) or {}
    flat = any(w.get("code") == "near_constant_predictions" for w in m.get("warnings") or [])  # not small_sample
    return (f"{s['std']:.3g}" if s.get("std") is not None else "-"), flat


def _counts(part: dict[str, pd.DataFrame], kind: str) -> str:
    col = "boolean_value" if kind == "binary" else "event"
    what = "positive" if kind == "binary" else "events"
    return "; ".join(f"{s} {len(f)} rows / {f['subject_id'].nunique()} patients / {int(f[col].sum())} {what}"
                     for s, f in part.items())


def task_section(name: str, tl: TaskLabels, r: dict[str, Any]) -> list[str]:
    """Counts, the score table and one line per ehrseq model: does it beat the baselines, do the CIs overlap."""
    sc, kind, notes = r["scores"], r["kind"], r["notes"]
    lines = [f"## {name} ({kind})", "", f"_{tl.spec.definition or tl.spec.source}_", "",
             f"Rows: {_counts(r['part'], kind)}.", ""]
    if kind == "binary":
        ref = sc[LR]
        lines += ["| model | AUROC | AUPRC | Brier | AUROC / LR | ΔAUROC vs LR (paired) | prob std | note |",
                  "|---|---|---|---|---|---|---|---|"]
        for model, m in sc.items():
            std, flat = _std(m, "y_prob")
            note = "; ".join(x for x in (notes.get(model, ""), "**near-constant**" if flat else "") if x)
            lines.append(f"| {model} | {_ci(m['auroc'])} | {_ci(m['auprc'])} | {_ci(m['brier'])} | "
                         f"{_ratio(m['auroc'], ref['auroc'])} | "
                         f"{'' if model == LR else _ci(m['delta_auroc_vs_lr'])} | {std} | {note} |")
        key, refs, metric, delta = "auroc", (LR, GBM), "AUROC", ("delta_auroc_vs_lr", LR)
    else:
        ref = sc[COX]
        lines += ["| model | Harrell's C | C-td | IBS | C / Cox | IBS / Cox | ΔC vs Cox (paired) | risk std | note |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for model, m in sc.items():
            std, flat = _std(m, "risk")
            note = "; ".join(x for x in (notes.get(model, ""), "**constant**" if flat else "") if x)
            lines.append(f"| {model} | {_ci(m['harrell_c'])} | {_ci(m['c_td'])} | {_ci(m['integrated_brier'])} | "
                         f"{_ratio(m['harrell_c'], ref['harrell_c'])} | "
                         f"{_ratio(m['integrated_brier'], ref['integrated_brier'])} | "
                         f"{'' if model == COX else _ci(m['delta_c_vs_cox'])} | {std} | {note} |")
        key, refs, metric, delta = "harrell_c", (COX,), "Harrell's C", ("delta_c_vs_cox", COX)
    lines.append("")
    for model in (m for m in sc if m.startswith("ehrseq")):
        v = sc[model][key].get("value")
        parts = []
        for b in refs:
            bv = sc[b][key].get("value")
            if v is None or bv is None:
                parts.append(f"vs {b}: undefined")
                continue
            paired = f"; {_excludes_zero(sc[model][delta[0]])}" if b == delta[1] else ""
            parts.append(f"{'beats' if v > bv else 'does not beat'} {b} on the point estimate "
                         f"({v:.3f} vs {bv:.3f}; {_overlap(sc[model][key], sc[b][key])}{paired})")
        lines.append(f"- {model} ({metric}): " + "; ".join(parts) + ".")
    return lines + [""]


def config_summary(path: Path) -> str:
    """What a run config sets that differs from ehrseq's defaults, as 'model rnn, preset small, featurizer.x 1'."""
    cfg = config_to_dict(load_config(path))
    base = config_to_dict(FinetuneConfig())
    out = [f"model {cfg['model']}", f"preset {cfg['preset']}"]
    for section in ("featurizer", "model_overrides", "train"):
        for k, v in cfg[section].items():
            if section == "model_overrides" or v != base[section].get(k) or (section, k) == ("train", "epochs"):
                out.append(f"{section}.{k} {v}")
    return ", ".join(out)


def header(a: Any, ev: pd.DataFrame, splits: pd.DataFrame, seeds: list[int], configs: dict[str, Path]) -> list[str]:
    """The paragraphs above the tables: data, split, how wide the intervals are, the models and baselines."""
    n_held = int((splits["split"] == "held_out").sum())
    sizes = ", ".join(f"{s} {int((splits['split'] == s).sum())}" for s in ("train", "tuning", "held_out"))
    q = a.quick
    others = f"; the section 'Across seeds' scores every model on seeds {', '.join(map(str, seeds))}" \
        if len(seeds) > 1 else " (rerun with --seeds 0 1 2 for the across-seeds summary)"
    run_cfgs = "; ".join(f"`{path.relative_to(path.parents[1])}` ({config_summary(path)})" for path in configs.values())
    return [
        f"Data: `{a.data}` ({ev['subject_id'].nunique()} patients, {len(ev)} events after de-duplication); one "
        f"random patient split per seed, 70/15/15; the tables below are seed {seeds[0]} ({sizes} patients), "
        f"shared by every model{others}. Task files in configs/tasks/mimic/ with predicates.yaml, labels built once "
        "(ACES).",
        "",
        f"**With {n_held} held-out patients every interval below is wide** (95% patient-bootstrap percentile "
        f"intervals, {a.n_boot} resamples; 'CI undefined' when fewer than 80% of the resamples hold both classes "
        "or an event). These numbers show that every model runs end to end on real data; they cannot rank the "
        "models. The paired Δ columns resample the same patients for both models, which is the fair test of a "
        "difference; overlapping marginal CIs alone do not show there is none. The split alone moves these "
        "numbers a lot (see 'Across seeds').",
        "",
        f"Models: ehrseq RNN (GRU, preset small) and BEHRT (preset small, max_len 256) through api.finetune with "
        f"today's defaults: <= {2 if q else a.epochs} epochs (BEHRT <= {2 if q else a.behrt_epochs}) with early "
        "stopping on the tuning loss (RNN patience 5, BEHRT 3), lr 2e-3, batch 64, one RNN step per distinct event "
        f"time. The run configs for dense real data{' (--quick: 2 epochs)' if q else ''}: {run_cfgs}. DeepSurv "
        f"(ehrseq defaults: MLP [32, 32], lr 1e-2, patience 10, <= {2 if q else 200} epochs) on the featurizer's "
        "tabular view. Baselines on count features "
        f"(benchmarks/baselines.py, MEDS-Tab style): counts of the train split's top {a.top_k} codes over the whole "
        "history, 7 days and 24 h up to prediction_time (inclusive), last value of the 100 most measured numeric "
        "codes, age, sex; L2 logistic regression (C 0.1, standardised log-counts), HistGradientBoosting "
        f"({20 if q else 200} rounds, lr 0.05, 15 leaves), elastic-net Cox (scikit-survival Coxnet, l1_ratio 0.5, "
        "alpha by tuning C). Baselines train on the train split; no hyper-parameter is tuned per task except the "
        "Coxnet alpha. prob/risk std: standard deviation of the held-out predictions; near-constant (std < 0.01 or "
        "< 2 distinct values, ehrseq.evaluate.summary) is flagged. The no-skill rows are references, constant by "
        "construction.",
        "",
    ]


REFERENCES = ("train prevalence (no skill)", "Kaplan-Meier (no covariates)")  # constant by construction


def seeds_section(by_seed: dict[int, dict[str, dict[str, Any]]]) -> list[str]:
    """AUROC (Harrell's C) and the near-constant flag of every model on every seed, per task, and a summary
    over the binary tasks: mean AUROC and how many (task, seed) fits were near-constant."""
    seeds = list(by_seed)
    tasks = list(by_seed[seeds[0]])
    lines = ["## Across seeds", "",
             f"One random patient split per seed ({', '.join(map(str, seeds))}); everything else as above. A cell is "
             "the held-out AUROC (Harrell's C for time to event), **nc** when the predictions are near-constant. "
             "The no-skill references are left out.", ""]
    binary = [t for t in tasks if by_seed[seeds[0]][t]["kind"] == "binary"]
    if binary:
        models = [m for m in by_seed[seeds[0]][binary[0]]["scores"] if m not in REFERENCES]
        lines += [f"Binary tasks ({', '.join(binary)}), {len(binary) * len(seeds)} fits per model:", "",
                  "| model | mean AUROC | near-constant fits | lowest prob std |", "|---|---|---|---|"]
        for m in models:
            cells = [by_seed[s][t]["scores"][m] for s in seeds for t in binary]
            vals = [c["auroc"].get("value") for c in cells if c["auroc"].get("value") is not None]
            mean = f"{sum(vals) / len(vals):.3f}" if vals else "undefined"
            stds = [sd for c in cells if (sd := ((c.get("prediction_spread") or {}).get("y_prob") or {}).get("std"))
                    is not None]
            low = f"{min(stds):.3g}" if stds else "-"
            lines.append(f"| {m} | {mean} | {sum(bool(c.get('warnings')) for c in cells)} of {len(cells)} | {low} |")
        lines.append("")
    for t in tasks:
        kind = by_seed[seeds[0]][t]["kind"]
        key, col = ("auroc", "positives") if kind == "binary" else ("harrell_c", "events")
        truth = "boolean_value" if kind == "binary" else "event"
        counts = "; ".join(f"seed {s}: " + ", ".join(
            f"{sp} {int(by_seed[s][t]['part'][sp][truth].sum())}" for sp in ("train", "tuning", "held_out"))
            for s in seeds)
        lines += [f"### {t} ({kind})", "", f"{col.capitalize()} per split ({counts}).", "",
                  "| model | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
                  "|---|" + "---|" * (len(seeds) + 1)]
        for m in (m for m in by_seed[seeds[0]][t]["scores"] if m not in REFERENCES):
            row, vals = [], []
            for s in seeds:
                sc = by_seed[s][t]["scores"].get(m)
                v = None if sc is None else sc[key].get("value")
                row.append("-" if v is None else f"{v:.3f}{' **nc**' if sc.get('warnings') else ''}")
                vals += [] if v is None else [v]
            mean = f"{sum(vals) / len(vals):.3f}" if vals else "-"
            lines.append(f"| {m} | " + " | ".join(row) + f" | {mean} |")
        lines.append("")
    return lines


def cost_section(rows: dict[tuple[str, str, str], dict[str, float]], tasks: list[str]) -> list[str]:
    """The cost table from StepMeter.rows: (task, model, step) -> {\"s\": seconds, \"mb\": peak MB}."""
    lines = ["## Cost per step (wall s / peak RSS above the step's start, MB)", "",
             "| task | model | labels | featurize | train | predict | other | total s |", "|---|---|---|---|---|---|---|---|"]
    for t in tasks:
        models = list(dict.fromkeys(m for (tt, m, _) in rows if tt == t))
        for m in models:
            r = {s: rows.get((t, m, s)) for s in ("labels", "featurize", "train", "predict", "total")}
            cell = {s: (f"{v['s']:.1f} / {v['mb']:.0f}" if v else "") for s, v in r.items()}
            inner = sum(v["s"] for s, v in r.items() if v and s != "total")
            total = r["total"]["s"] if r["total"] else inner
            other = f"{total - inner:.1f}" if r["total"] else ""
            lines.append(f"| {t} | {m} | {cell['labels']} | {cell['featurize']} | {cell['train']} | "
                         f"{cell['predict']} | {other} | {total:.1f} |")
    return lines + [""]
