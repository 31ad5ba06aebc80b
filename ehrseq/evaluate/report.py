"""One evaluation report for every ehrseq model: JSON for machines, Markdown and self-contained HTML for people.

Expected prediction columns (one row per subject_id x prediction_time):

    binary      y_true (0/1), y_prob
    multilabel  y_true_<label>, y_prob_<label> for each label
    regression  y_true, y_pred
    survival    duration, event (0/1), risk (higher = earlier event)

plus ``subject_id`` and any group columns (``sex``, ``site``, ``age`` -> ``age_band`` is derived when asked).
The report holds aggregates only: metrics, curves (thinned), calibration bins and subgroup counts >= the
suppression threshold, never rows. ``warnings`` (near-constant predictions, see
:func:`ehrseq.evaluate.summary.prediction_spread`; discrimination metrics on fewer than ``min_per_class`` rows
of a class, see :mod:`ehrseq.evaluate.sample_size`) lead the Markdown and HTML pages, and every flagged figure
says so beside itself, as do a macro average (how many labels it averaged) and an interval of no width.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from ehrseq import __version__
from ehrseq.errors import DataValidationError
from ehrseq.evaluate import metrics as M
from ehrseq.evaluate.calibration import calibration_fit, ece, reliability_curve
from ehrseq.evaluate.columns import Task, task_spec
from ehrseq.evaluate.conformal import SplitConformalClassifier, SplitConformalRegressor, coverage_summary
from ehrseq.evaluate.render import NOT_STATED, clean, write_report
from ehrseq.evaluate.sample_size import MIN_PER_CLASS, class_counts, flag_small_samples
from ehrseq.evaluate.subgroups import age_band, metrics_with_ci, subgroup_card
from ehrseq.utils import frame_hash

MODEL_CARD_FIELDS = ("name", "data_hash", "split_hash", "target_definition", "intended_use", "limitations")
__all__ = ["MODEL_CARD_FIELDS", "NOT_STATED", "build_report", "write_report"]
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
    counts = class_counts(df, task)
    if counts:
        out["data"]["class_counts"] = counts[None] if None in counts else counts
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


def _clinical(df: pd.DataFrame, task: Task, yt: Any, yp: Any, kw: dict[str, Any],
              threshold: float | Mapping[str, float] | None) -> dict[str, Any]:
    """Operating points (binary; per label for multilabel) and the decision curve (binary)."""
    from ehrseq.evaluate.clinical import decision_curve, operating_points

    groups = df[kw["subject_col"]].to_numpy()
    boot = {k: kw[k] for k in ("n_boot", "alpha", "seed")}
    if task == "binary":
        t = threshold if isinstance(threshold, int | float) else None
        y, p = df[yt].to_numpy(float), df[yp].to_numpy(float)
        return {"operating_points": operating_points(y, p, groups, stored_threshold=t, **boot),
                "decision_curve": decision_curve(y, p)}
    if task == "multilabel":
        per = threshold if isinstance(threshold, Mapping) else {}
        return {"operating_points": {
            lab: operating_points(df[t].to_numpy(float), df[p].to_numpy(float), groups,
                                  stored_threshold=per.get(lab), **boot)
            for lab, t, p in zip(_labels_of(yp), yt, yp)}}
    return {}


def _group_columns(df: pd.DataFrame, cols: Sequence[str], subject_col: str) -> dict[str, Any]:
    """Per group column: distinct patients, rows, and patients whose rows fall in more than one group."""
    out = {}
    for col in cols:
        if col in df.columns:
            per = df.assign(_g=df[col].astype(object).where(df[col].notna(), "missing").astype(str))
            k = per.groupby(subject_col)["_g"].nunique()
            out[col] = {"n_patients": int(len(k)), "n_rows": int(len(df)),
                        "n_patients_in_several_groups": int((k > 1).sum())}
    return out


def _task_section(info: Mapping[str, Any] | None, task: Task, report: Mapping[str, Any],
                  threshold: Any, horizons: Sequence[float]) -> dict[str, Any]:
    from ehrseq.evaluate.plain import describe_task

    base = {"name": report["model_card"].get("name"), "kind": task,
            "definition": report["model_card"].get("target_definition")}
    full = {**base, **{k: v for k, v in (info or {}).items() if v is not None and k != "task_file"}}
    return {**full, "decision_threshold": threshold, "horizons": list(horizons),
            "description": describe_task(full, task, threshold=threshold, horizons=horizons,
                                         prevalence=report["data"].get("prevalence"))}


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
    task_info: Mapping[str, Any] | None = None,
    decision_threshold: float | Mapping[str, float] | None = None,
    survival_curves: pd.DataFrame | None = None,
    horizons: Sequence[float] = (),
    external_survival_curves: pd.DataFrame | None = None,
    min_per_class: int = MIN_PER_CLASS,
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
        task_info: the task as ``TaskSpec.to_dict()`` (name, kind, definition, source, horizon_days, event):
            the report's "Task" section describes it in words.
        decision_threshold: the model's stored threshold (multilabel: label -> threshold); None when it has
            none, and the operating-point table then says it used 0.5.
        survival_curves: survival probabilities, index = times (days), one column per prediction row in the
            rows' order; gives C-td, integrated Brier and calibration at ``horizons`` (days). Without them a
            survival report says absolute calibration cannot be judged.
        external_survival_curves: the same for the ``external`` rows (survival): the external site gets its
            own survival section.
        min_per_class: discrimination metrics (AUROC, AUPRC, macro averages, C-index) resting on fewer rows
            of a class (positives or negatives, per label; events for survival) carry ``small_sample`` and a
            ``small_sample`` warning (:mod:`ehrseq.evaluate.sample_size`); 0 turns the check off.
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
                 "min_group_size": min_group_size, "n_bins": n_bins, "min_per_class": min_per_class},
        "model_card": card,
        **_evaluate(df, task, yt, yp, fns, kw, n_bins),
    }
    if task == "survival" and report["overall"]["concordance"]["estimate"] is None:
        notes.append("concordance unavailable: " + str(report["overall"]["concordance"]["undefined"]))
    report.update(_clinical(df, task, yt, yp, kw, decision_threshold))
    if task == "survival":
        from ehrseq.evaluate.survival_report import survival_section

        report["survival"] = survival_section(df, survival_curves, horizons, **kw)
        report["overall"].update(report["survival"]["metrics"])
    report["task"] = _task_section(task_info, task, report, decision_threshold, horizons)

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
    report["subgroups"]["columns"] = _group_columns(df, subgroup_columns, subject_col)
    report["external"] = None
    if external is not None:
        _check(external, [subject_col, *_flat(yt), *_flat(yp)], external_name)
        ext = _evaluate(_with_age_band(external, subgroup_columns), task, yt, yp, fns, kw, n_bins)
        if task == "survival":
            from ehrseq.evaluate.survival_report import survival_section

            ext["survival"] = survival_section(external, external_survival_curves, horizons, **kw)
            ext["overall"].update(ext["survival"]["metrics"])
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
    report["warnings"] += flag_small_samples(df, task, report["overall"], report.get("per_label"),
                                             min_per_class=min_per_class)
    if external is not None:
        report["warnings"] += flag_small_samples(external, task, report["external"]["overall"],
                                                 report["external"].get("per_label"), min_per_class=min_per_class,
                                                 where=external_name)
    for w in report["warnings"]:
        logger.warning("%s", w["message"])
    from ehrseq.evaluate.plain import explanations

    report = clean(report)
    report["plain_language"] = explanations(report)
    return report
