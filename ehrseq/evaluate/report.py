"""One evaluation report for every ehrseq model: JSON for machines, Markdown and self-contained HTML for people.

Expected prediction columns (one row per subject_id x prediction_time):

    binary      y_true (0/1), y_prob
    multilabel  y_true_<label>, y_prob_<label> for each label
    regression  y_true, y_pred
    survival    duration, event (0/1), risk (higher = earlier event)

plus ``subject_id`` and any group columns (``sex``, ``site``, ``age`` -> ``age_band`` is derived when asked).
The report holds aggregates only: metrics, curves (thinned), calibration bins and subgroup counts >= the
suppression threshold, never rows. ``warnings`` (near-constant predictions, see
:func:`ehrseq.evaluate.summary.prediction_spread`) lead the Markdown and HTML pages.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ehrseq import __version__
from ehrseq.errors import DataValidationError
from ehrseq.evaluate import metrics as M
from ehrseq.evaluate.calibration import calibration_fit, ece, reliability_curve
from ehrseq.evaluate.columns import Task, task_spec
from ehrseq.evaluate.conformal import SplitConformalClassifier, SplitConformalRegressor, coverage_summary
from ehrseq.evaluate.subgroups import age_band, card_to_frame, format_ci, metrics_with_ci, subgroup_card
from ehrseq.utils import frame_hash

MODEL_CARD_FIELDS = ("name", "data_hash", "split_hash", "target_definition", "intended_use", "limitations")
NOT_STATED = "not stated"
logger = logging.getLogger("ehrseq.evaluate")


def _check(df: pd.DataFrame, cols: list[str], where: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"missing column(s) {', '.join(missing)}", file=where, hint="see ehrseq.evaluate.report for the layout"
        )


def _flat(cols: Any) -> list[str]:
    return [cols] if isinstance(cols, str) else list(cols)


def _with_age_band(df: pd.DataFrame, group_columns: Sequence[str]) -> pd.DataFrame:
    if "age_band" in group_columns and "age_band" not in df.columns and "age" in df.columns:
        df = df.assign(age_band=age_band(df["age"]).to_numpy())
    return df


# ---------------------------------------------------------------------------------------------- sections


def _calibration(df: pd.DataFrame, yt: Any, yp: Any, task: Task, n_bins: int) -> dict[str, Any]:
    def one(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
        return {"ece": ece(y, p, n_bins).to_dict(), "fit": calibration_fit(y, p).to_dict(),
                "reliability": reliability_curve(y, p, n_bins)}

    if task == "binary":
        return one(df[yt].to_numpy(float), df[yp].to_numpy(float))
    if task == "multilabel":
        return {lab: one(df[t].to_numpy(float), df[p].to_numpy(float)) for lab, t, p in zip(_labels_of(yp), yt, yp)}
    return {}


def _labels_of(pred_cols: Sequence[str]) -> list[str]:
    return [c[len("y_prob_"):] for c in pred_cols]


def _curves(df: pd.DataFrame, yt: Any, yp: Any, task: Task) -> dict[str, Any]:
    if task == "binary":
        y, s = df[yt].to_numpy(float), df[yp].to_numpy(float)
        return {"roc": M.roc_curve_points(y, s), "pr": M.pr_curve_points(y, s)}
    if task == "multilabel":
        return {
            "roc": {lab: M.roc_curve_points(df[t].to_numpy(float), df[p].to_numpy(float))
                    for lab, t, p in zip(_labels_of(yp), yt, yp)},
            "pr": {lab: M.pr_curve_points(df[t].to_numpy(float), df[p].to_numpy(float))
                   for lab, t, p in zip(_labels_of(yp), yt, yp)},
        }
    return {}


def _evaluate(df: pd.DataFrame, task: Task, yt: Any, yp: Any, fns: dict[str, M.MetricFn], kw: dict[str, Any],
              n_bins: int) -> dict[str, Any]:
    """Data summary, overall metrics, per-label metrics, calibration and curves for one frame."""
    out: dict[str, Any] = {
        "data": {"n_rows": int(len(df)), "n_patients": int(df[kw["subject_col"]].nunique())},
        "overall": metrics_with_ci(df, fns, y_true=yt, y_pred=yp, **kw),
    }
    if task == "binary":
        out["data"]["prevalence"] = float(df[yt].mean())
    if task == "multilabel":
        out["data"]["prevalence"] = {lab: float(df[t].mean()) for lab, t in zip(_labels_of(yp), yt)}
        out["per_label"] = {
            lab: metrics_with_ci(df, {"auroc": M.auroc, "auprc": M.auprc, "brier": M.brier},
                                 y_true=t, y_pred=p, **kw)
            for lab, t, p in zip(_labels_of(yp), yt, yp)
        }
    if task == "survival":
        out["data"]["event_rate"] = float(df["event"].mean())
    out["calibration"] = _calibration(df, yt, yp, task, n_bins)
    out["curves"] = _curves(df, yt, yp, task)
    return out


def _side_by_side(internal: Mapping[str, Any], external: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, a in internal.items():
        b = external.get(name, {})
        ea, eb = a.get("estimate"), b.get("estimate")
        rows.append({"metric": name, "internal": a, "external": b,
                     "difference": None if ea is None or eb is None else eb - ea})
    return rows


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def build_report(
    predictions: pd.DataFrame,
    task: Task,
    model_card: Mapping[str, Any],
    subgroup_columns: Sequence[str] = ("sex", "age_band", "site"),
    external: pd.DataFrame | None = None,
    *,
    labels: Sequence[str] | None = None,
    conformal: SplitConformalClassifier | SplitConformalRegressor | None = None,
    min_group_size: int = 30,
    n_boot: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    n_bins: int = 10,
    subject_col: str = "subject_id",
    external_name: str = "external",
) -> dict[str, Any]:
    """Evaluate held-out predictions (and optionally an external site's) into one JSON-ready report.

    Args:
        predictions: held-out rows, columns as in the module docstring.
        task: "binary", "multilabel", "regression" or "survival".
        model_card: name, data_hash, split_hash, target_definition, intended_use, limitations (missing ones
            are written "not stated"); other keys are kept.
        subgroup_columns: group columns for the subgroup card; "age_band" is derived from "age" if absent.
        external: predictions from another site/period, evaluated the same way and shown side by side.
        conformal: a fitted conformal model (fitted on the tuning split); its coverage on ``predictions`` is
            reported (binary: y_prob -> sets for y_true; regression: intervals).
        min_group_size: subgroups with fewer distinct patients are suppressed.
        n_boot, alpha, seed: patient-bootstrap settings for every CI (percentile, level 1 - alpha).
    """
    yt, yp, fns = task_spec(task, predictions, labels)
    _check(predictions, [subject_col, *_flat(yt), *_flat(yp)], "predictions")
    df = _with_age_band(predictions, subgroup_columns)
    kw = {"subject_col": subject_col, "n_boot": n_boot, "alpha": alpha, "seed": seed}
    notes: list[str] = []

    card = {k: model_card.get(k, NOT_STATED) for k in MODEL_CARD_FIELDS}
    card.update({k: v for k, v in model_card.items() if k not in card})
    card["evaluation_data_hash"] = frame_hash(df, [subject_col, *_flat(yt), *_flat(yp)])

    report: dict[str, Any] = {
        "meta": {"ehrseq_version": __version__, "created": datetime.now(UTC).isoformat(timespec="seconds"),
                 "task": task, "n_boot": n_boot, "alpha": alpha, "seed": seed, "ci": "patient bootstrap, percentile",
                 "min_group_size": min_group_size},
        "model_card": card,
        **_evaluate(df, task, yt, yp, fns, kw, n_bins),
    }
    if task == "survival" and report["overall"]["concordance"]["estimate"] is None:
        notes.append("concordance unavailable: " + str(report["overall"]["concordance"]["undefined"]))

    report["conformal"] = None
    if conformal is not None:
        if task == "binary" and isinstance(conformal, SplitConformalClassifier):
            report["conformal"] = coverage_summary(conformal, df[yp].to_numpy(float), df[yt].to_numpy(int))
        elif task == "regression" and isinstance(conformal, SplitConformalRegressor):
            report["conformal"] = coverage_summary(conformal, df[yp].to_numpy(float), df[yt].to_numpy(float))
        else:
            notes.append(f"conformal model {type(conformal).__name__} does not apply to task '{task}'; skipped")

    report["subgroups"] = subgroup_card(df, fns, list(subgroup_columns), y_true=yt, y_pred=yp,
                                        min_group_size=min_group_size, **kw)
    report["external"] = None
    if external is not None:
        _check(external, [subject_col, *_flat(yt), *_flat(yp)], external_name)
        ext = _evaluate(_with_age_band(external, subgroup_columns), task, yt, yp, fns, kw, n_bins)
        shared = set(external[subject_col]) & set(df[subject_col])
        if shared:
            notes.append(f"{len(shared)} subject_id(s) appear in both internal and {external_name} predictions")
        report["external"] = {"name": external_name, **ext,
                              "side_by_side": _side_by_side(report["overall"], ext["overall"])}
    report["notes"] = notes
    from ehrseq.evaluate.summary import prediction_spread

    report["prediction_spread"], report["warnings"] = prediction_spread(df, task)
    if external is not None:
        report["external"]["prediction_spread"], ext_w = prediction_spread(external, task)
        report["warnings"] += [{**w, "message": f"{external_name}: {w['message']}"} for w in ext_w]
    for w in report["warnings"]:
        logger.warning("%s", w["message"])
    return _clean(report)


# ---------------------------------------------------------------------------------------------- writing


def _figures(report: Mapping[str, Any]) -> tuple[dict[str, bytes], str | None]:
    """Name -> PNG bytes for every figure the report supports, or a note on why there are none."""
    from ehrseq.evaluate import plots

    if not plots.plots_available():
        return {}, "Figures omitted: matplotlib is not installed (pip install 'ehrseq[plots]')."
    figs: dict[str, bytes] = {}
    task = report["meta"]["task"]
    ext = report.get("external")
    ext_name = ext["name"] if ext else "external"
    curves = report.get("curves") or {}
    if task == "binary":
        figs["roc"] = plots.plot_roc({"internal": curves.get("roc"), **({ext_name: ext["curves"].get("roc")} if ext else {})})
        figs["pr"] = plots.plot_pr({"internal": curves.get("pr"), **({ext_name: ext["curves"].get("pr")} if ext else {})})
        rel = {"internal": report["calibration"]["reliability"]}
        if ext:
            rel[ext_name] = ext["calibration"]["reliability"]
        figs["reliability"] = plots.plot_reliability(rel)
    elif task == "multilabel":
        figs["roc"] = plots.plot_roc(curves.get("roc", {}), title="ROC by label")
        figs["pr"] = plots.plot_pr(curves.get("pr", {}), title="Precision-recall by label")
        figs["reliability"] = plots.plot_reliability(
            {lab: c["reliability"] for lab, c in report["calibration"].items()}, title="Reliability by label")
    card = report["subgroups"]
    if card["rows"] and card["overall"]:
        first = next(iter(card["overall"]))
        figs[f"forest_{first}"] = plots.plot_forest(card, first)
    return figs, None


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(_fmt(v)).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _tables(report: Mapping[str, Any]) -> list[tuple[str, str, list[str], list[list[Any]]]]:
    """(section id, title, headers, rows) for every table, shared by the Markdown and HTML writers."""
    out = []
    out.append(("model-card", "Model card", ["field", "value"],
                [[k, json.dumps(v) if isinstance(v, dict | list) else v] for k, v in report["model_card"].items()]))
    data = report["data"]
    out.append(("data", "Evaluation data", ["field", "value"],
                [[k, json.dumps(v) if isinstance(v, dict) else v] for k, v in data.items()]))
    level = f"{100 * (1 - report['meta']['alpha']):g}%"
    out.append(("overall", f"Overall metrics ({level} patient-bootstrap CI)", ["metric", "estimate [CI]", "resamples used"],
                [[k, format_ci(m), m["n_boot_used"]] for k, m in report["overall"].items()]))
    if report.get("per_label"):
        names = list(next(iter(report["per_label"].values())).keys())
        out.append(("per-label", "Per-label metrics", ["label", *names],
                    [[lab, *[format_ci(ms[n]) for n in names]] for lab, ms in report["per_label"].items()]))
    cal = report.get("calibration") or {}
    if report["meta"]["task"] == "binary" and cal:
        cal = {"(all)": cal}
    if cal:
        out.append(("calibration", "Calibration", ["label", "ECE", "slope", "intercept", "calibration-in-the-large"],
                    [[lab, _fmt(c["ece"]["value"]) if c["ece"]["value"] is not None else c["ece"]["undefined"],
                      _fmt(c["fit"]["slope"]), _fmt(c["fit"]["intercept"]), _fmt(c["fit"]["citl"])]
                     for lab, c in cal.items()]))
    conf = report.get("conformal")
    if conf:
        keys = [k for k in conf if k != "calibration"]
        out.append(("conformal", "Conformal coverage", ["field", "value"], [[k, _fmt(conf[k])] for k in keys]))
    frame = card_to_frame(report["subgroups"])
    if len(frame):
        out.append(("subgroups", f"Subgroups (suppressed below {report['subgroups']['min_group_size']} patients)",
                    list(frame.columns), frame.fillna("").to_numpy().tolist()))
    ext = report.get("external")
    if ext:
        out.append(("external", f"Internal vs {ext['name']}", ["metric", "internal", ext["name"], "difference"],
                    [[r["metric"], format_ci(r["internal"]), format_ci(r["external"]) if r["external"] else "",
                      _fmt(r["difference"], signed=True)] for r in ext["side_by_side"]]))
    return out


def _fmt(v: Any, signed: bool = False) -> Any:
    if isinstance(v, float):
        return f"{v:+.3f}" if signed else f"{v:.3f}"
    return "" if v is None else v


def _markdown(report: Mapping[str, Any], figure_files: Mapping[str, str], figure_note: str | None) -> str:
    meta = report["meta"]
    parts = [f"# Evaluation report: {report['model_card'].get('name', NOT_STATED)}",
             f"Task: {meta['task']}. ehrseq {meta['ehrseq_version']}, created {meta['created']}. "
             f"CIs: {meta['ci']}, {meta['n_boot']} resamples."]
    if report.get("warnings"):
        parts += ["## Warnings", *[f"> **Warning:** {w['message']}" for w in report["warnings"]]]
    for _, title, headers, rows in _tables(report):
        parts += [f"## {title}", _md_table(headers, rows)]
    parts.append("## Figures")
    parts += [f"![{name}]({path})" for name, path in figure_files.items()] or [figure_note or "No figures."]
    if report.get("notes"):
        parts += ["## Notes", *[f"- {n}" for n in report["notes"]]]
    return "\n\n".join(parts) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:14px;
text-align:left}th{background:#f2f2f2}img{max-width:48%;margin:4px;border:1px solid #eee}.note{color:#666}
.warning{background:#fdecea;border:2px solid #c0392b;color:#7b1c12;padding:0.3em 1em;margin:1em 0}"""


def _html(report: Mapping[str, Any], figures: Mapping[str, bytes], figure_note: str | None) -> str:
    e = html.escape
    meta = report["meta"]
    body = [f"<h1>Evaluation report: {e(str(report['model_card'].get('name', NOT_STATED)))}</h1>",
            f"<p>Task: {e(meta['task'])}. ehrseq {e(meta['ehrseq_version'])}, created {e(meta['created'])}. "
            f"CIs: {e(meta['ci'])}, {meta['n_boot']} resamples.</p>"]
    if report.get("warnings"):
        body.append('<section id="warnings" class="warning" role="alert"><h2>&#9888; Warnings</h2><ul>'
                    + "".join(f"<li><strong>{e(w['message'])}</strong></li>" for w in report["warnings"])
                    + "</ul></section>")
    for sid, title, headers, rows in _tables(report):
        head = "".join(f"<th>{e(str(h))}</th>" for h in headers)
        trs = "".join("<tr>" + "".join(f"<td>{e(str(_fmt(v)))}</td>" for v in r) + "</tr>" for r in rows)
        body.append(f'<section id="{sid}"><h2>{e(title)}</h2><table><tr>{head}</tr>{trs}</table></section>')
    imgs = "".join(
        f'<img alt="{e(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        for name, png in figures.items()
    )
    fallback = f'<p class="note">{e(figure_note or "No figures.")}</p>'
    body.append(f'<section id="figures"><h2>Figures</h2>{imgs or fallback}</section>')
    if report.get("notes"):
        body.append('<section id="notes"><h2>Notes</h2><ul>'
                    + "".join(f"<li>{e(n)}</li>" for n in report["notes"]) + "</ul></section>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>ehrseq evaluation report</title>'
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(report: Mapping[str, Any], out_dir: str | Path, *, plots: bool = True) -> dict[str, Path]:
    """Write ``report.json``, ``report.md``, ``report.html`` (figures inline) and ``figures/*.png``.

    Figures need matplotlib; without it (or with ``plots=False``) JSON and Markdown are complete and the HTML
    says why there are no figures. Returns the written paths by name.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures, note = _figures(report) if plots else ({}, "Figures turned off.")
    paths: dict[str, Path] = {}
    fig_files: dict[str, str] = {}
    if figures:
        (out / "figures").mkdir(exist_ok=True)
        for name, png in figures.items():
            (out / "figures" / f"{name}.png").write_bytes(png)
            fig_files[name] = f"figures/{name}.png"
            paths[f"figure_{name}"] = out / "figures" / f"{name}.png"
    paths["json"] = out / "report.json"
    paths["json"].write_text(json.dumps(_clean(report), indent=2, allow_nan=False) + "\n")
    paths["markdown"] = out / "report.md"
    paths["markdown"].write_text(_markdown(report, fig_files, note))
    paths["html"] = out / "report.html"
    paths["html"].write_text(_html(report, figures, note))
    return paths
