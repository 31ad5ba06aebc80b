"""Evaluation figures as PNG bytes. matplotlib is optional: ``pip install 'ehrseq[plots]'``.

Every function takes the JSON-ready curve data the report already holds (no raw predictions), so a figure can
be redrawn from ``report.json``. Figures are built on ``matplotlib.figure.Figure`` directly (no pyplot global
state, no display needed).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any


def _figure(width: float = 4.5, height: float = 4.0) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError(
            "ehrseq plots need matplotlib, which is not installed: pip install 'ehrseq[plots]'"
        ) from err
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def plots_available() -> bool:
    """True when matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_roc(curves: Mapping[str, Mapping[str, list[float]] | None], title: str = "ROC",
             auc: Mapping[str, float | None] | None = None) -> bytes:
    """ROC curves, one line per name; each curve is ``{"fpr": [...], "tpr": [...]}`` (None is skipped).
    ``auc`` (name -> AUROC) puts each curve's AUC in the legend."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="chance (AUC 0.50)")
    for name, c in curves.items():
        if c:
            a = (auc or {}).get(name)
            ax.plot(c["fpr"], c["tpr"], label=name if a is None else f"{name} (AUC {a:.2f})")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def plot_pr(curves: Mapping[str, Mapping[str, list[float]] | None], title: str = "Precision-recall") -> bytes:
    """Precision-recall curves; each curve is ``{"recall": [...], "precision": [...]}``."""
    fig = _figure()
    ax = fig.add_subplot()
    for name, c in curves.items():
        if c:
            ax.step(c["recall"], c["precision"], where="post", label=name)
    ax.set(xlabel="Recall", ylabel="Precision", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="upper right", fontsize=8)
    return _png(fig)


def plot_reliability(curves: Mapping[str, Mapping[str, list[float]]], title: str = "Reliability") -> bytes:
    """Reliability diagrams from :func:`ehrseq.evaluate.calibration.reliability_curve` outputs.

    Marker area grows with the bin's row count; the diagonal is perfect calibration.
    """
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    for name, c in curves.items():
        if c and c["count"]:
            total = max(sum(c["count"]), 1)
            sizes = [10 + 300 * k / total for k in c["count"]]
            (line,) = ax.plot(c["mean_pred"], c["observed"], lw=1, label=name)
            ax.scatter(c["mean_pred"], c["observed"], s=sizes, alpha=0.6, color=line.get_color())
    ax.set(xlabel="Mean predicted probability", ylabel="Observed rate", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def plot_forest(card: Mapping[str, Any], metric: str, title: str | None = None) -> bytes:
    """Forest plot of one metric by subgroup from a subgroup card; suppressed groups are listed, not drawn."""
    rows = [r for r in card["rows"] if r["group"] is not None]
    fig = _figure(6.0, 0.8 + 0.32 * (len(rows) + 1))
    ax = fig.add_subplot()
    labels, ys = [], []
    overall = card["overall"].get(metric, {}).get("estimate")
    for i, r in enumerate([{"column": "overall", "group": "", "metrics": card["overall"], "note": None}, *rows]):
        y = -i
        labels.append(f"{r['column']}: {r['group']}" if r["group"] else "overall")
        ys.append(y)
        m = r["metrics"].get(metric)
        if not m or m.get("estimate") is None:
            ax.text(0.02, y, r.get("note") or "undefined", va="center", fontsize=7, transform=ax.get_yaxis_transform())
            continue
        if m.get("lo") is not None:
            ax.plot([m["lo"], m["hi"]], [y, y], color="black", lw=1)
        ax.plot([m["estimate"]], [y], marker="s", color="tab:blue" if i else "black")
    if overall is not None:
        ax.axvline(overall, ls="--", color="grey", lw=0.8)
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set(xlabel=metric, title=title or f"{metric} by subgroup")
    return _png(fig)


def plot_decision_curve(curve: Mapping[str, Any], title: str = "Decision curve") -> bytes:
    """Net benefit against threshold probability from :func:`ehrseq.evaluate.clinical.decision_curve`, with
    the treat-all and treat-none lines; the y axis starts a little below 0 (treat-all falls far below)."""
    fig = _figure(5.0, 4.0)
    ax = fig.add_subplot()
    x = curve["threshold"]
    ax.plot(x, curve["model"], label="model", lw=1.5)
    ax.plot(x, curve["treat_all"], label="treat all", ls="--", color="tab:red", lw=1)
    ax.plot(x, curve["treat_none"], label="treat none", ls=":", color="black", lw=1)
    top = max([0.01, *[v for v in curve["model"] if v is not None], *curve["treat_all"]])
    ax.set(xlabel="Threshold probability", ylabel="Net benefit", title=title, xlim=(0, 1),
           ylim=(-0.25 * top, 1.1 * top))
    ax.legend(loc="upper right", fontsize=8)
    return _png(fig)


def plot_km_groups(km: Mapping[str, Any], title: str = "Kaplan-Meier by predicted risk group") -> bytes:
    """Kaplan-Meier curves (95% band) per predicted-risk group from
    :func:`ehrseq.evaluate.survival_report.km_by_risk_group`; group 1 is the lowest predicted risk."""
    fig = _figure(5.0, 4.0)
    ax = fig.add_subplot()
    n = km.get("n_groups", len(km["groups"]))
    for g in km["groups"]:
        label = f"{g['group']} of {n} (n={g['n']}, events={g['n_events']})"
        (line,) = ax.step(g["time"], g["survival"], where="post", label=label)
        ax.fill_between(g["time"], g["lower"], g["upper"], step="post", alpha=0.15, color=line.get_color())
    ax.set(xlabel="Days after prediction time", ylabel="Event-free (Kaplan-Meier)", title=title, ylim=(0, 1.02))
    ax.legend(loc="lower left", fontsize=7, title="risk group (1 = lowest)", title_fontsize=7)
    return _png(fig)


def plot_survival_calibration(calibration: list[Mapping[str, Any]], title: str = "Calibration at horizon"
                              ) -> bytes:
    """Predicted vs Kaplan-Meier observed event-free survival by risk group, one series per horizon."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    for entry in calibration:
        rows = entry["groups"]
        if not rows:
            continue
        pred = [r["predicted"] for r in rows]
        obs = [r["observed"] for r in rows]
        err = [[max(o - r["observed_lower"], 0) for o, r in zip(obs, rows)],
               [max(r["observed_upper"] - o, 0) for o, r in zip(obs, rows)]]
        ax.errorbar(pred, obs, yerr=err, fmt="o", capsize=3, label=f"{entry['horizon']:g} days")
    ax.set(xlabel="Predicted event-free survival", ylabel="Observed (Kaplan-Meier)", title=title, xlim=(0, 1),
           ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)
