"""Small-sample flags: discrimination figures that rest on too few rows of one class.

An AUROC over 3 positives, or a macro average whose labels have a handful of positives each, is printed with
the same three decimals as one over thousands; its bootstrap interval is often too narrow to warn (a few rows
cannot vary much). The rule here: a discrimination metric (AUROC, AUPRC, their macro averages over labels;
Harrell's C and C-td for survival; not the Brier score, which needs no second class) is flagged when the rows it rests on hold fewer
than ``min_per_class`` positives or negatives (per label for multi-label; events for survival). Rows are
counted as given (one per prediction), so several predictions of one patient count several times: the flag
is a floor, not a guarantee.

Each flagged metric gets a short ``small_sample`` text ("3 positives") beside its value, and each label (or
the binary/survival task as a whole) gets one ``small_sample`` warning naming the metric(s), the label and the
counts, and what to do.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

MIN_PER_CLASS = 10  # default: fewer positives (or negatives, or survival events) than this flags the metric
SMALL_SAMPLE = "small_sample"
BINARY_FLAGGED = ("auroc", "auprc")
SURVIVAL_FLAGGED = ("concordance", "concordance_td", "harrell_c", "c_td")
# which label counts a macro average (and the per-label metric it averages) needs to include a label
_NEEDS = {"auroc": ("positives", "negatives"), "auprc": ("positives",)}
MACRO_OF = {"macro_auroc": "auroc", "macro_auprc": "auprc"}
ADVICE = ("evaluate on more held-out rows (a bigger held_out split, more patients, or pooled sites) before "
          "relying on them")


def _binary_counts(y: np.ndarray) -> dict[str, int]:
    y = y[np.isfinite(y)]
    return {"positives": int((y == 1).sum()), "negatives": int((y == 0).sum())}


def class_counts(preds: pd.DataFrame, task: str) -> dict[str | None, dict[str, int]]:
    """Rows per class: ``{None: {"positives", "negatives"}}`` (binary), ``{label: {...}}`` (multilabel, from
    the ``y_true_<label>`` columns), ``{None: {"events", "censored"}}`` (survival); {} for regression."""
    if task == "binary":
        return {None: _binary_counts(preds["y_true"].to_numpy(float))}
    if task == "multilabel":
        return {c[len("y_true_"):]: _binary_counts(preds[c].to_numpy(float))
                for c in preds.columns if c.startswith("y_true_")}
    if task == "survival":
        e = preds["event"].to_numpy(float)
        e = e[np.isfinite(e)]
        return {None: {"events": int((e == 1).sum()), "censored": int((e == 0).sum())}}
    return {}


def _short(counts: Mapping[str, int], classes: Sequence[str], min_per_class: int) -> str | None:
    low = [f"{counts[c]} {c if counts[c] != 1 else c[:-1]}" for c in classes if counts[c] < min_per_class]
    return ", ".join(low) or None


def _value(m: Any) -> Any:
    return m.get("value", m.get("estimate")) if isinstance(m, Mapping) else None


def _names(metrics: Sequence[str]) -> str:
    pretty = {"auroc": "AUROC", "auprc": "AUPRC", "macro_auroc": "macro AUROC", "macro_auprc": "macro AUPRC",
              "macro_brier": "macro Brier", "concordance": "Harrell's C", "harrell_c": "Harrell's C",
              "concordance_td": "C-td", "c_td": "C-td"}
    names = list(dict.fromkeys(pretty.get(m, m) for m in metrics))
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _warning(metrics: list[str], label: str | None, counts: Mapping[str, int], min_per_class: int,
             where: str | None) -> dict[str, Any]:
    rest = " and ".join(f"{n} {c if n != 1 else c[:-1]}" for c, n in counts.items())
    unit = "" if "events" in counts else " of each class"
    many = len({_names([m]) for m in metrics}) > 1
    if label is None:
        msg = f"{_names(metrics)} {'rest' if many else 'rests'} on {rest} (fewer than {min_per_class}{unit})"
    else:
        own = [m for m in metrics if m not in MACRO_OF]
        macros = [m for m in metrics if m in MACRO_OF]
        many = len(metrics) > 1
        parts = ([f"its {_names(own)}"] if own else []) + (
            [f"the {_names(macros)} that {'include' if len(macros) > 1 else 'includes'} it"] if macros else [])
        msg = f"label '{label}' has {rest} (fewer than {min_per_class}{unit}): {', and '.join(parts)}"
    msg += (f"; read {'them' if many else 'it'} as anecdotal, not {'estimates' if many else 'an estimate'}; "
            + ADVICE + ".")
    return {"code": SMALL_SAMPLE, "metric": ", ".join(metrics), "metrics": metrics, "label": label,
            "counts": dict(counts), "min_per_class": min_per_class,
            "message": f"{where}: {msg}" if where else msg}


def flag_small_samples(preds: pd.DataFrame, task: str, metrics: MutableMapping[str, Any],
                       per_label: Mapping[str, MutableMapping[str, Any]] | None = None, *,
                       min_per_class: int = MIN_PER_CLASS, where: str | None = None) -> list[dict[str, Any]]:
    """Mark the defined discrimination metrics of ``metrics`` (name -> {"value"/"estimate", ...}, edited in
    place) and of ``per_label`` (label -> name -> dict) that rest on fewer than ``min_per_class`` rows of a
    class with ``small_sample`` (e.g. "3 positives"); return one ``small_sample`` warning per short label
    (or one for the whole binary or survival task). ``where`` prefixes the messages (e.g. an external site)."""
    return flag_counts(task, class_counts(preds, task), metrics, per_label, min_per_class=min_per_class,
                       where=where)


def flag_counts(task: str, counts: Mapping[str | None, Mapping[str, int]], metrics: MutableMapping[str, Any],
                per_label: Mapping[str, MutableMapping[str, Any]] | None = None, *,
                min_per_class: int = MIN_PER_CLASS, where: str | None = None) -> list[dict[str, Any]]:
    """:func:`flag_small_samples` from counts already known (the form of :func:`class_counts`; survival needs
    only "events"), e.g. the ``n_events`` a survival fine-tune stores beside its Harrell's C."""
    if min_per_class <= 0:
        return []
    warnings: list[dict[str, Any]] = []
    if task in ("binary", "survival"):
        c = counts[None]
        classes = ("positives", "negatives") if task == "binary" else ("events",)
        short = _short(c, classes, min_per_class)
        names = [m for m in (BINARY_FLAGGED if task == "binary" else SURVIVAL_FLAGGED)
                 if _value(metrics.get(m)) is not None]
        if short and names:
            for m in names:
                metrics[m][SMALL_SAMPLE] = short
            shown = c if task == "binary" else {"events": c["events"]}
            warnings.append(_warning(names, None, shown, min_per_class, where))
        return warnings
    if task != "multilabel":
        return warnings
    macro_short: dict[str, list[str]] = {}
    for lab, c in counts.items():
        short = _short(c, ("positives", "negatives"), min_per_class)
        if not short:
            continue
        flagged = []
        for macro_name, base in MACRO_OF.items():
            included = all(c[k] > 0 for k in _NEEDS[base])
            if included and _value(metrics.get(macro_name)) is not None:
                macro_short.setdefault(macro_name, []).append(f"{lab}: {short}")
                flagged.append(macro_name)
            lab_metrics = (per_label or {}).get(lab) or {}
            if included and _value(lab_metrics.get(base)) is not None:
                lab_metrics[base][SMALL_SAMPLE] = short
                flagged.append(base)
        if flagged:
            warnings.append(_warning(flagged, lab, c, min_per_class, where))
    for macro_name, parts in macro_short.items():
        metrics[macro_name][SMALL_SAMPLE] = "; ".join(parts)
    return warnings


def few_rows_text(m: Mapping[str, Any]) -> str:
    """' [few rows: 3 positives]' for a flagged metric dict, '' otherwise."""
    return f" [few rows: {m[SMALL_SAMPLE]}]" if m.get(SMALL_SAMPLE) else ""
