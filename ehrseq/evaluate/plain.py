"""Plain-language sentences for the evaluation report: what the task is, what it may be used for, and what
each metric block and figure says about *this* model, with its own values in the sentence.

:func:`explanations` maps a section or figure id of the report to its sentences; the renderers put them under
the table or figure. :func:`intended_use` and :func:`describe_task` give task-specific wording (a task from a
user's label file or ACES task file gets a neutral sentence built from its spec, never a claim about a
disease area).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NOT_FOR_DECISIONS = "Not for clinical decisions: any clinical use needs prospective validation at the site."
_BUILTIN_USE = {
    "cdai": "studying forecasts of rheumatoid arthritis disease activity (controlled or not at the next CDAI "
            "measurement) and how they hold across sites",
    "cdai_value": "studying forecasts of the next CDAI value in rheumatoid arthritis and how they hold across sites",
    "next_visit_dx": "studying which diagnosis codes are recorded at a patient's next visit",
    "biopsy": "studying automated reading of temporal artery biopsy reports (findings of giant cell arteritis); "
              "the pathologist's report stays the reference",
}
_KIND_WORDS = {"binary": "a probability of the outcome at each prediction time",
               "multilabel": "one probability per label at each prediction time",
               "multiclass": "one probability per class at each prediction time (scored one class against the rest)",
               "regression": "a predicted value at each prediction time",
               "survival": "a risk score at each prediction time (higher means an earlier event)"}


def _num(v: Any, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _pct(v: Any, digits: int = 0) -> str:
    return "n/a" if v is None else f"{100 * v:.{digits}f}%"


def _builtin(info: Mapping[str, Any] | None) -> str | None:
    src = str((info or {}).get("source") or "")
    return src.split(":", 1)[1] if src.startswith("builtin:") else None


def intended_use(info: Mapping[str, Any] | None) -> str:
    """The model card's intended-use line for a task (``TaskSpec.to_dict()``-like: name, kind, source, event,
    horizon_days): specific for the built-in targets, neutral and built from the spec for any other task."""
    info = info or {}
    target = _builtin(info)
    if target == "survival":
        what = f"studying time to the first '{info.get('event') or 'event'}' after a landmark visit"
    elif target in _BUILTIN_USE:
        what = _BUILTIN_USE[target]
    else:
        kind = info.get("kind") or "prediction"
        what = f"studying the {kind} task '{info.get('name') or 'unnamed'}' as defined above"
        if info.get("horizon_days"):
            what += f" (follow-up up to {info['horizon_days']:g} days)"
    return f"Research on retrospective data: {what}, and the model's behaviour across sites and subgroups. " \
           + NOT_FOR_DECISIONS


def describe_task(info: Mapping[str, Any], task: str, *, threshold: Any = None,
                  prevalence: Any = None, horizons: Any = ()) -> list[str]:
    """Sentences that define the task for a reader: what is predicted, the output, threshold and horizon."""
    src = str(info.get("source") or "")
    origin = ("a built-in target" if src.startswith("builtin:") else
              f"the ACES task file {src[5:]}" if src.startswith("task:") else
              f"the label file {src[7:]}" if src.startswith("labels:") else "the caller")
    out = [f"What is predicted: {info.get('definition') or info.get('name') or 'not stated'}",
           f"Task '{info.get('name') or 'unnamed'}', defined by {origin}. The model gives "
           f"{_KIND_WORDS.get(str(info.get('kind') or task), 'a prediction')}."]
    if info.get("event"):
        out.append(f"Event: '{info['event']}'.")
    if info.get("horizon_days"):
        out.append(f"Horizon: follow-up is counted up to {info['horizon_days']:g} days after each prediction time.")
    if task == "survival" and horizons:
        out.append("Calibration is judged at " + ", ".join(f"{h:g}" for h in horizons) + " days.")
    if task == "binary":
        if isinstance(threshold, int | float):
            out.append(f"Decision threshold: {threshold:.3g}, stored with the model: a prediction at or above it "
                       "counts as flagged.")
        else:
            out.append("No decision threshold is stored with the model: the operating-point table uses 0.5 and "
                       f"the prevalence ({_num(prevalence)}) as reference points, not as recommendations.")
    if task == "multilabel":
        out.append("Decision thresholds: " + (", ".join(f"{k} {v:.3g}" for k, v in threshold.items()) + " (stored "
                   "with the model)" if isinstance(threshold, Mapping) and threshold else
                   "none stored; the operating-point table uses 0.5 and each label's prevalence") + ".")
    return out


# ------------------------------------------------------------------------------------------ metric blocks
def _overall(report: Mapping[str, Any]) -> list[str]:
    task, o, data = report["meta"]["task"], report["overall"], report["data"]
    est = {k: (m or {}).get("estimate") for k, m in o.items()}
    out: list[str] = []
    if task == "binary":
        prev = data.get("prevalence")
        if est.get("auroc") is not None:
            out.append(f"AUROC {_num(est['auroc'])}: given one prediction followed by the outcome and one not, the "
                       f"model gives the first the higher probability {_pct(est['auroc'])} of the time "
                       "(50% is chance, 100% perfect).")
        if est.get("auprc") is not None:
            out.append(f"AUPRC {_num(est['auprc'])} against a prevalence of {_num(prev)}: the average PPV over all "
                       "thresholds; a model that cannot rank scores about the prevalence.")
        if est.get("brier") is not None and prev is not None:
            out.append(f"Brier score {_num(est['brier'], 3)}: the mean squared gap between predicted probability "
                       f"and outcome (0 is perfect; always predicting the prevalence scores {prev * (1 - prev):.3f}).")
    elif task == "multilabel" and est.get("macro_auroc") is not None:
        labs = report.get("per_label") or {}
        k = sum(1 for m in labs.values() if (m.get("auroc") or {}).get("estimate") is not None)
        if k == 1 and len(labs) > 1:
            out.append(f"Macro AUROC {_num(est['macro_auroc'])} is not an average: only 1 of the {len(labs)} labels "
                       "has both outcomes among the evaluated rows, so it is that label's AUROC alone (per label "
                       "below).")
        else:
            out.append(f"Macro AUROC {_num(est['macro_auroc'])}: the mean of the per-label AUROCs over the {k} of "
                       f"{len(labs)} labels that have both outcomes among the evaluated rows (per label below).")
    elif task == "regression" and est.get("mae") is not None:
        out.append(f"MAE {_num(est['mae'])}: predictions miss the true value by {_num(est['mae'])} units on average; "
                   f"RMSE {_num(est.get('rmse'))} weighs large misses more.")
    elif task == "survival" and est.get("concordance") is not None:
        out.append(f"Harrell's C {_num(est['concordance'])}: of pairs where one prediction was followed by the "
                   f"event sooner, the model gave that one the higher risk {_pct(est['concordance'])} of the time "
                   "(50% is chance).")
    if est.get("concordance_td") is not None:
        out.append(f"C-td {_num(est['concordance_td'])}: the same question asked of the predicted survival curves "
                   "at the earlier event time (equals Harrell's C for a proportional-hazards model).")
    if est.get("integrated_brier") is not None:
        lo, hi = (report.get("survival") or {}).get("ibs_time_range") or (None, None)
        span = f" over days {lo:.0f} to {hi:.0f}" if lo is not None else ""
        out.append(f"Integrated Brier score {_num(est['integrated_brier'], 3)}{span}: the squared error of the "
                   "predicted survival against what happened, averaged over time (0 is perfect; 0.25 is what "
                   "predicting 50% for everyone scores).")
    if any((m or {}).get("small_sample") for m in o.values()):
        out.append(f"Figures marked 'few rows' rest on fewer than {report['meta'].get('min_per_class')} rows of a "
                   "class (positives or negatives; events for survival): a handful of rows can swing them "
                   "widely, and their intervals understate that. Evaluate on more held-out rows before relying "
                   "on them.")
    if any((m or {}).get("ci_degenerate") for m in o.values()):
        out.append("An interval replaced by 'resamples identical' is not certainty: the rows are too few "
                   "(or the predictions too uniform) for resampling to move the figure at all.")
    n_pat = data.get("n_patients")
    level = f"{100 * (1 - report['meta']['alpha']):g}%"
    out.append(f"Bracketed ranges are {level} intervals from resampling the {n_pat} patients: differences "
               "smaller than an interval's width are not evidence of a difference.")
    return out


def _calibration_lines(label: str, c: Mapping[str, Any], n_bins: int) -> list[str]:
    e, fit, rel = c["ece"].get("value"), c["fit"], c.get("reliability") or {}
    name = "" if label == "(all)" else f"{label}: "
    out = []
    if e is not None:
        out.append(f"{name}ECE {_num(e, 3)}: in {n_bins} bins of predicted probability, the predicted risk and the "
                   f"observed rate differ by {100 * e:.1f} percentage points on average.")
    b = fit.get("slope")
    if b is not None:
        how = ("predictions are too extreme: high predicted risks are too high and low ones too low (as from an "
               "over-fitted model)" if b < 0.8 else
               "predictions are too timid: real risks spread wider than predicted" if b > 1.2 else
               "the spread of predicted risks roughly matches the data")
        out.append(f"{name}Calibration slope {_num(b)} (ideal 1): {how}.")
    citl, count = fit.get("citl"), rel.get("count") or []
    if citl is not None:
        mean_pred = sum(p * k for p, k in zip(rel.get("mean_pred", []), count)) / max(sum(count), 1)
        mean_obs = sum(o * k for o, k in zip(rel.get("observed", []), count)) / max(sum(count), 1)
        side = "under-predicts" if citl > 0.1 else "over-predicts" if citl < -0.1 else "matches"
        out.append(f"{name}Calibration-in-the-large {_num(citl)} (ideal 0; intercept {_num(fit.get('intercept'))}): "
                   f"the model {side} risk on average (mean predicted {_pct(mean_pred, 1)}, observed "
                   f"{_pct(mean_obs, 1)}).")
    return out


def _conformal(report: Mapping[str, Any]) -> list[str]:
    c = report.get("conformal") or {}
    if not c or c.get("coverage") is None:
        return []
    nom, cov = c["nominal"], c["coverage"]
    met = "as promised" if cov >= nom - 0.01 else "short of the promise: the calibration data differed from these"
    thing = "sets" if "mean_set_size" in c else "intervals"
    out = [f"Conformal prediction {thing} were built to hold the true outcome for {_pct(nom)} of predictions; "
           f"here they did for {_pct(cov, 1)} ({met})."]
    if "mean_set_size" in c:
        both = max(0.0, c["mean_set_size"] - 1 + c.get("empty_share", 0.0))
        out.append(f"{_pct(both)} of predictions get both outcomes in their set: at that confidence the model "
                   "cannot tell them apart.")
    elif c.get("mean_width") is not None:
        out.append(f"The intervals are {_num(c['mean_width'])} units wide on average.")
    return out


_RULE_WORDS = {"stored threshold": "the threshold stored with the model, {t},",
               "default 0.5": "the default threshold {t} (none is stored)",
               "sensitivity 0.90": "{t}, the threshold giving sensitivity 0.90 on these rows,",
               "sensitivity 0.95": "{t}, the threshold giving sensitivity 0.95 on these rows,",
               "prevalence": "a threshold at the prevalence, {t},"}


def _operating(points: list[Mapping[str, Any]], label: str = "") -> list[str]:
    out = []
    for row in points[:2]:
        m = {k: (row.get(k) or {}).get("estimate") for k in ("sensitivity", "specificity", "ppv", "npv", "nne")}
        where = _RULE_WORDS.get(row["rule"], row["rule"] + " {t},").format(t=f"{row['threshold']:.3g}")
        out.append(f"{label}At {where} the model flags "
                   f"{_pct(row['share_flagged'])} of predictions: it finds {_pct(m['sensitivity'])} of those with "
                   f"the outcome (sensitivity) and clears {_pct(m['specificity'])} of those without "
                   f"(specificity); {_pct(m['ppv'])} of flagged ones have it (PPV), so about "
                   f"{_num(m['nne'], 1)} flagged predictions are worked up to find one (NNE); "
                   f"{_pct(m['npv'])} of unflagged ones do not have it (NPV).")
    return out


def _decision(dc: Mapping[str, Any]) -> list[str]:
    out = ["Net benefit counts correctly flagged predictions minus wrongly flagged ones, weighted by the odds of "
           "the threshold probability (at 20%, one case found is worth four unnecessary work-ups)."]
    ranges = dc.get("useful_ranges") or []
    if not ranges:
        out.append("At no threshold does the model add net benefit over treating everyone or no one here.")
    else:
        where = ", ".join(f"{a:.2f} to {b:.2f}" if b > a else f"{a:.2f}" for a, b in ranges[:3])
        more = f" (and {len(ranges) - 3} shorter stretches)" if len(ranges) > 3 else ""
        out.append(f"The model adds net benefit over both treating everyone and treating no one at threshold "
                   f"probabilities {where}{more}; elsewhere a simple all-or-none policy does as well.")
    return out


def _subgroups(report: Mapping[str, Any]) -> list[str]:
    card, data = report["subgroups"], report["data"]
    n_rows, n_pat = data["n_rows"], data["n_patients"]
    per = n_rows / max(n_pat, 1)
    repeat = (f"each patient gives {per:.1f} predictions on average, so a metric's rows are not independent"
              if per > 1.05 else "nearly every patient gives one prediction")
    out = [f"Counts are of predictions (rows: {n_rows}) and of distinct patients ({n_pat}); {repeat}. Groups "
           f"with fewer than {card['min_group_size']} patients are suppressed."]
    for col, s in (card.get("columns") or {}).items():
        k = s.get("n_patients_in_several_groups") or 0
        if k:
            out.append(f"A patient's {col} can change between predictions: {k} of the {s['n_patients']} patients "
                       f"have predictions in more than one {col} group and count in each, so the patient counts "
                       f"of the {col} groups add up to more than {s['n_patients']}.")
    return out


def _survival(report: Mapping[str, Any]) -> list[str]:
    s = report.get("survival") or {}
    out = list(s.get("notes") or [])
    for entry in s.get("calibration") or []:
        g = entry.get("groups") or []
        if entry.get("note") or not g:
            out.append(entry.get("note") or f"No calibration at {entry['horizon']:g} days.")
            continue
        lo, hi = g[0], g[-1]
        out.append(f"At {entry['horizon']:g} days, the highest-risk group ({hi['risk_group']} of "
                   f"{entry['n_groups']}) was predicted {_pct(hi['predicted'])} event-free and "
                   f"{_pct(hi['observed'])} was observed (Kaplan-Meier); the lowest-risk group "
                   f"{_pct(lo['predicted'])} predicted, {_pct(lo['observed'])} observed.")
    return out


def explanations(report: Mapping[str, Any]) -> dict[str, list[str]]:
    """Section or figure id -> plain-language sentences about this model's results."""
    task = report["meta"]["task"]
    out: dict[str, list[str]] = {"overall": _overall(report)}
    cal = report.get("calibration") or {}
    n_bins = report["meta"].get("n_bins", 10)
    if task == "binary" and cal:
        out["calibration"] = _calibration_lines("(all)", cal, n_bins)
    elif task == "multilabel" and cal:
        out["calibration"] = [line for lab, c in cal.items() for line in _calibration_lines(lab, c, n_bins)[:2]]
    if report.get("conformal"):
        out["conformal"] = _conformal(report)
    ops = report.get("operating_points")
    if ops:
        if task == "binary":
            out["operating-points"] = _operating(ops)
        else:
            out["operating-points"] = [s for lab, pts in ops.items() for s in _operating(pts[:1], f"{lab}: ")]
        out["operating-points"].append("Thresholds for a target sensitivity are chosen on these same rows, so "
                                       "their figures are optimistic; every threshold is held fixed in the bootstrap.")
    if report.get("decision_curve"):
        out["fig_decision_curve"] = _decision(report["decision_curve"])
    if report["subgroups"]["rows"]:
        out["subgroups"] = _subgroups(report)
    if task == "survival":
        out["survival"] = _survival(report)
        out["fig_km"] = ["Kaplan-Meier event-free survival in equal thirds of predicted risk (shaded: 95% limits): "
                         "the further apart the curves, the better the risk score separates patients' outcomes."]
        out["fig_survival_calibration"] = ["Each point is a risk group: predicted (x) against observed (y) "
                                           "event-free survival at the horizon; points on the diagonal are calibrated."]
    prev = report["data"].get("prevalence")
    out["fig_roc"] = ["Each point of the curve is one threshold: true positive rate (sensitivity) against false "
                      "positive rate (1 - specificity); the AUC is in the legend."]
    out["fig_pr"] = ["PPV (precision) against sensitivity (recall) over all thresholds"
                     + (f"; a model that cannot rank stays at the prevalence, {prev:.2f}." if isinstance(prev, float)
                        else ".")]
    out["fig_reliability"] = ["Each dot is a bin of predictions: mean predicted probability (x) against the "
                              "observed rate (y); on the diagonal is well calibrated, bigger dots hold more rows."]
    out["fig_forest"] = ["Each subgroup's value with its interval; the dashed line is the overall value. Intervals "
                         "that cross it give no evidence that the group differs."]
    return out
