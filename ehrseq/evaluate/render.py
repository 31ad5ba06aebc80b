"""Writing an evaluation report (:func:`ehrseq.evaluate.report.build_report`) as JSON, Markdown and one
self-contained HTML page (figures inline), each table and figure followed by a plain-language line
(:mod:`ehrseq.evaluate.plain`). The page is readable on a phone: tables scroll inside their own box and
figures shrink to the screen."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ehrseq.evaluate.plain import explanations
from ehrseq.evaluate.sample_size import few_rows_text
from ehrseq.evaluate.subgroups import card_to_frame, format_ci

NOT_STATED = "not stated"
_CAPTION_KEY = {"roc": "fig_roc", "pr": "fig_pr", "reliability": "fig_reliability", "km": "fig_km",
                "decision_curve": "fig_decision_curve", "survival_calibration": "fig_survival_calibration"}


def clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None."""
    if isinstance(obj, Mapping):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


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
        auc = {"internal": report["overall"]["auroc"]["estimate"],
               **({ext_name: ext["overall"]["auroc"]["estimate"]} if ext else {})}
        figs["roc"] = plots.plot_roc({"internal": curves.get("roc"), **({ext_name: ext["curves"].get("roc")} if ext else {})},
                                     auc=auc)
        figs["pr"] = plots.plot_pr({"internal": curves.get("pr"), **({ext_name: ext["curves"].get("pr")} if ext else {})})
        rel = {"internal": report["calibration"]["reliability"]}
        if ext:
            rel[ext_name] = ext["calibration"]["reliability"]
        figs["reliability"] = plots.plot_reliability(rel)
        if report.get("decision_curve"):
            figs["decision_curve"] = plots.plot_decision_curve(report["decision_curve"])
    elif task == "multilabel":
        auc = {lab: m["auroc"]["estimate"] for lab, m in (report.get("per_label") or {}).items()}
        figs["roc"] = plots.plot_roc(curves.get("roc", {}), title="ROC by label", auc=auc)
        figs["pr"] = plots.plot_pr(curves.get("pr", {}), title="Precision-recall by label")
        figs["reliability"] = plots.plot_reliability(
            {lab: c["reliability"] for lab, c in report["calibration"].items()}, title="Reliability by label")
    surv = report.get("survival") or {}
    if surv.get("km_by_risk_group", {}).get("groups"):
        figs["km"] = plots.plot_km_groups(surv["km_by_risk_group"])
    if any(c.get("groups") for c in surv.get("calibration") or []):
        figs["survival_calibration"] = plots.plot_survival_calibration(surv["calibration"])
    card = report["subgroups"]
    if card["rows"] and card["overall"]:
        first = next(iter(card["overall"]))
        figs[f"forest_{first}"] = plots.plot_forest(card, first)
    return figs, None


def _fmt(v: Any, signed: bool = False) -> Any:
    if isinstance(v, float):
        return f"{v:+.3f}" if signed else f"{v:.3f}"
    return "" if v is None else v


def _cell(m: Mapping[str, Any]) -> str:
    """A metric's 'estimate [CI]' with its small-sample flag, e.g. '0.525 [0.31, 0.72] [few rows: 3 positives]'."""
    return format_ci(m) + few_rows_text(m)


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(_fmt(v)).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


_OP_HEADERS = ["rule", "threshold", "flagged", "sensitivity", "specificity", "PPV", "NPV", "NNE (1/PPV)"]


def _op_rows(points: Sequence[Mapping[str, Any]], label: str | None = None) -> list[list[Any]]:
    rows = []
    for p in points:
        cells = [p["rule"], f"{p['threshold']:.3g}", f"{100 * p['share_flagged']:.1f}%"
                 if p["share_flagged"] is not None else ""]
        cells += [format_ci(p[k], 2) for k in ("sensitivity", "specificity", "ppv", "npv")]
        nne = p["nne"]
        cells.append(f"{nne['estimate']:.1f} [{nne['lo']:.1f}, no upper limit]" if nne.get("unbounded_above")
                     and nne["estimate"] is not None else format_ci(nne, 1))
        rows.append(cells if label is None else [label, *cells])
    return rows


def _survival_tables(report: Mapping[str, Any], sid: str = "survival-calibration",
                     where: str = "") -> list[tuple[str, str, list[str], list[list[Any]]]]:
    surv = report.get("survival") or {}
    rows = []
    for entry in surv.get("calibration") or []:
        for g in entry.get("groups") or []:
            rows.append([f"{entry['horizon']:g}", f"{g['risk_group']} of {entry['n_groups']}", g["n"], g["n_events"],
                         f"{g['predicted']:.3f}", f"{g['observed']:.3f} [{g['observed_lower']:.3f}, "
                                                  f"{g['observed_upper']:.3f}]"])
    if not rows:
        return []
    return [(sid, f"Calibration at horizon{where} (event-free survival by predicted risk group)",
             ["horizon (days)", "risk group (1 = lowest)", "predictions", "events by horizon", "predicted",
              "observed (Kaplan-Meier) [95%]"], rows)]


def _subgroup_table(report: Mapping[str, Any]) -> list[tuple[str, str, list[str], list[list[Any]]]]:
    card = report["subgroups"]
    frame = card_to_frame(card)
    if not len(frame):
        return []
    frame.insert(3, "predictions", [r["n_rows"] if not r["suppressed"] else "" for r in card["rows"]])
    return [("subgroups", f"Subgroups (suppressed below {card['min_group_size']} patients)", list(frame.columns),
             frame.fillna("").to_numpy().tolist())]


def _tables(report: Mapping[str, Any]) -> list[tuple[str, str, list[str], list[list[Any]]]]:
    """(section id, title, headers, rows) for every table, shared by the Markdown and HTML writers."""
    out = [("model-card", "Model card", ["field", "value"],
            [[k, json.dumps(v) if isinstance(v, dict | list) else v] for k, v in report["model_card"].items()])]
    out.append(("data", "Evaluation data", ["field", "value"],
                [[k, json.dumps(v) if isinstance(v, dict) else v] for k, v in report["data"].items()]))
    level = f"{100 * (1 - report['meta']['alpha']):g}%"
    out.append(("overall", f"Overall metrics ({level} patient-bootstrap CI)",
                ["metric", "estimate [CI]", "resamples used", "note"],
                [[k, _cell(m), m["n_boot_used"], m.get("note") or ""] for k, m in report["overall"].items()]))
    if report.get("per_label"):
        names = list(next(iter(report["per_label"].values())).keys())
        counts = report["data"].get("class_counts") or {}
        out.append(("per-label", "Per-label metrics", ["label", "positives / negatives", *names],
                    [[lab, "{positives} / {negatives}".format(**counts[lab]) if lab in counts else "",
                      *[_cell(ms[n]) for n in names]] for lab, ms in report["per_label"].items()]))
    ops = report.get("operating_points")
    if ops:
        title = f"Operating points ({level} patient-bootstrap CI)"
        if isinstance(ops, Mapping):
            out.append(("operating-points", title, ["label", *_OP_HEADERS],
                        [r for lab, pts in ops.items() for r in _op_rows(pts, lab)]))
        else:
            out.append(("operating-points", title, _OP_HEADERS, _op_rows(ops)))
    cal = report.get("calibration") or {}
    if report["meta"]["task"] == "binary" and cal:
        cal = {"(all)": cal}
    if cal:
        out.append(("calibration", "Calibration", ["label", "ECE", "slope", "intercept", "calibration-in-the-large"],
                    [[lab, _fmt(c["ece"]["value"]) if c["ece"]["value"] is not None else c["ece"]["undefined"],
                      _fmt(c["fit"]["slope"]), _fmt(c["fit"]["intercept"]), _fmt(c["fit"]["citl"])]
                     for lab, c in cal.items()]))
    out += _survival_tables(report)
    conf = report.get("conformal")
    if conf:
        keys = [k for k in conf if k != "calibration"]
        out.append(("conformal", "Conformal coverage", ["field", "value"], [[k, _fmt(conf[k])] for k in keys]))
    out += _subgroup_table(report)
    ext = report.get("external")
    if ext:
        out.append(("external", f"Internal vs {ext['name']}", ["metric", "internal", ext["name"], "difference"],
                    [[r["metric"], _cell(r["internal"]), _cell(r["external"]) if r["external"] else "",
                      _fmt(r["difference"], signed=True)] for r in ext["side_by_side"]]))
        out += _survival_tables(ext, "external-survival-calibration", f", {ext['name']}")
    return out


def _explained(report: Mapping[str, Any]) -> dict[str, list[str]]:
    return dict(report.get("plain_language") or explanations(report))


def _caption(expl: Mapping[str, list[str]], name: str) -> list[str]:
    return expl.get(_CAPTION_KEY.get(name, "fig_forest" if name.startswith("forest_") else name), [])


def _task_lines(report: Mapping[str, Any]) -> list[str]:
    return list((report.get("task") or {}).get("description") or [])


def _markdown(report: Mapping[str, Any], figure_files: Mapping[str, str], figure_note: str | None) -> str:
    meta, expl = report["meta"], _explained(report)
    parts = [f"# Evaluation report: {report['model_card'].get('name', NOT_STATED)}",
             f"Task: {meta['task']}. ehrseq {meta['ehrseq_version']}, created {meta['created']}. "
             f"CIs: {meta['ci']}, {meta['n_boot']} resamples."]
    if report.get("warnings"):
        parts += ["## Warnings", *[f"> **Warning:** {w['message']}" for w in report["warnings"]]]
    if _task_lines(report):
        parts += ["## Task", *_task_lines(report)]
    for sid, title, headers, rows in _tables(report):
        parts += [f"## {title}", _md_table(headers, rows), *[f"*{s}*" for s in expl.get(sid, [])]]
    if expl.get("survival"):
        parts += ["## Survival: what the figures say", *expl["survival"]]
    parts.append("## Figures")
    figs = [f"![{name}]({path})\n\n" + " ".join(f"*{s}*" for s in _caption(expl, name))
            for name, path in figure_files.items()]
    parts += figs or [figure_note or "No figures."]
    if report.get("notes"):
        parts += ["## Notes", *[f"- {n}" for n in report["notes"]]]
    return "\n\n".join(parts) + "\n"


_CSS = """*{box-sizing:border-box}body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}h1{font-size:1.6em;overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%;margin:0.5em 0 0.5em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:14px;text-align:left;vertical-align:top;white-space:nowrap}
th{background:#f2f2f2}table.kv td:last-child{white-space:normal;overflow-wrap:anywhere;min-width:12em;max-width:60ch}
p.explain{color:#333;background:#f6f8fa;border-left:3px solid #4a7ab5;padding:0.3em 0.7em;margin:0.3em 0;
max-width:75ch}p{overflow-wrap:anywhere}
.figs{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;flex:1 1 420px;max-width:100%}
figure img{display:block;max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:13px;color:#444;margin-top:4px}.note{color:#666}
.warning{background:#fdecea;border:2px solid #c0392b;color:#7b1c12;padding:0.3em 1em;margin:1em 0}
@media (max-width:600px){body{margin:1em auto;padding:0 0.6em}h1{font-size:1.35em}h2{font-size:1.2em}
td,th{font-size:13px;padding:2px 5px}table.kv td:last-child{min-width:10em}}"""


def _max_width(png: bytes) -> str:
    """An inline style that keeps a figure (and so its caption) no wider than its image's own width in CSS
    pixels, read from the PNG header; '' for anything that is not a PNG."""
    if len(png) < 24 or png[:8] != b"\x89PNG\r\n\x1a\n":
        return ""
    return f' style="max-width:min(100%,{int.from_bytes(png[16:20], "big")}px)"'


def _html(report: Mapping[str, Any], figures: Mapping[str, bytes], figure_note: str | None) -> str:
    e = html.escape
    meta, expl = report["meta"], _explained(report)

    def paras(lines: Sequence[str]) -> str:
        return "".join(f'<p class="explain">{e(s)}</p>' for s in lines)

    body = [f"<h1>Evaluation report: {e(str(report['model_card'].get('name', NOT_STATED)))}</h1>",
            f"<p>Task: {e(meta['task'])}. ehrseq {e(meta['ehrseq_version'])}, created {e(meta['created'])}. "
            f"CIs: {e(meta['ci'])}, {meta['n_boot']} resamples.</p>"]
    if report.get("warnings"):
        body.append('<section id="warnings" class="warning" role="alert"><h2>&#9888; Warnings</h2><ul>'
                    + "".join(f"<li><strong>{e(w['message'])}</strong></li>" for w in report["warnings"])
                    + "</ul></section>")
    if _task_lines(report):
        body.append('<section id="task"><h2>Task</h2>' + "".join(f"<p>{e(s)}</p>" for s in _task_lines(report))
                    + "</section>")
    for sid, title, headers, rows in _tables(report):
        head = "".join(f"<th>{e(str(h))}</th>" for h in headers)
        trs = "".join("<tr>" + "".join(f"<td>{e(str(_fmt(v)))}</td>" for v in r) + "</tr>" for r in rows)
        kv = ' class="kv"' if headers == ["field", "value"] else ""
        body.append(f'<section id="{sid}"><h2>{e(title)}</h2><div class="scroll"><table{kv}><tr>{head}</tr>{trs}'
                    f"</table></div>{paras(expl.get(sid, []))}</section>")
    if expl.get("survival"):
        body.append(f'<section id="survival"><h2>Survival: what the figures say</h2>{paras(expl["survival"])}</section>')
    imgs = "".join(
        f'<figure id="fig-{e(name)}"{_max_width(png)}><img alt="{e(name)}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{' '.join(e(s) for s in _caption(expl, name))}</figcaption></figure>"
        for name, png in figures.items()
    )
    fallback = f'<p class="note">{e(figure_note or "No figures.")}</p>'
    body.append(f'<section id="figures"><h2>Figures</h2>{f"<div class=figs>{imgs}</div>" if imgs else fallback}</section>')
    if report.get("notes"):
        body.append('<section id="notes"><h2>Notes</h2><ul>'
                    + "".join(f"<li>{e(n)}</li>" for n in report["notes"]) + "</ul></section>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>ehrseq evaluation report</title>'
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
    paths["json"].write_text(json.dumps(clean(report), indent=2, allow_nan=False) + "\n")
    paths["markdown"] = out / "report.md"
    paths["markdown"].write_text(_markdown(report, fig_files, note))
    paths["html"] = out / "report.html"
    paths["html"].write_text(_html(report, figures, note))
    return paths
