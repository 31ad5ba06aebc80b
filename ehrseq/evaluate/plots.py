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


def plot_roc(curves: Mapping[str, Mapping[str, list[float]] | None], title: str = "ROC") -> bytes:
    """ROC curves, one line per name; each curve is ``{"fpr": [...], "tpr": [...]}`` (None is skipped)."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    for name, c in curves.items():
        if c:
            ax.plot(c["fpr"], c["tpr"], label=name)
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
