"""The Markdown of benchmarks/real_tasks.py: one section per task (scores, the reading of them) and the cost
of each step."""

from __future__ import annotations

from typing import Any

import pandas as pd

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
    return (f"{s['std']:.3g}" if s.get("std") is not None else "-"), bool(m.get("warnings"))


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
