"""``ehrseq compare``: several artifacts of one task scored on the same rows, side by side.

The question it answers is site transfer's: is the model adapted with a little of site B's data better at B
than the site-A model as it is, or than a model trained at B alone? Each artifact's own ``metrics.json`` and
``ehrseq evaluate`` score different rows, so they cannot tell. Here every artifact scores one split of one
dataset (``--sites`` keeps the patients of some sites), patients whose data trained *any* of the models are
dropped (counted per model), only rows every model scored are kept, and
:func:`ehrseq.evaluate.compare.compare_frames` gives each metric with its CI and the paired difference to the
first artifact.
"""

from __future__ import annotations

import html
import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ehrseq.artifacts import Artifact, load_artifact
from ehrseq.errors import DataValidationError, TargetError
from ehrseq.io.guards import replace_directory


def _task_kind(art: Artifact) -> tuple[str, str]:
    """(report task kind, task name) of an artifact."""
    from ehrseq.recipes.evaluate import report_task

    kind, spec = report_task(art)
    return kind, "biopsy" if spec is None else spec.name


def _names(artifacts: Sequence[Path], names: Sequence[str] | None) -> list[str]:
    if names:
        if len(names) != len(artifacts):
            raise TargetError(f"--names gives {len(names)} names for {len(artifacts)} artifacts: give one per artifact")
        out = list(names)
    else:
        out = [Path(a).name or str(a) for a in artifacts]
    if len(set(out)) != len(out):
        raise TargetError(f"two artifacts share the name {sorted({n for n in out if out.count(n) > 1})}: pass --names")
    return out


def compare_artifacts(artifacts: Sequence[str | Path], data: Any, out: str | Path, *,
                      names: Sequence[str] | None = None, split: str = "held_out", sites: Sequence[str] = (),
                      labels: Any = None, column_map: Mapping[str, str] | None = None, code_map: Any = None,
                      n_boot: int = 1000, seed: int = 0) -> dict[str, Path]:
    """Write compare.json, compare.md and compare.html for ``artifacts`` (two or more, one task; the first is
    the reference) on the ``split`` of ``data`` (optionally only ``sites``). Returns the written paths."""
    from ehrseq.data.loading import LoadedData, load_data, subset_split
    from ehrseq.evaluate.compare import compare_frames, comparison_markdown
    from ehrseq.io.conventions import detect, site_of
    from ehrseq.recipes.evaluate import predict_for_report

    if len(artifacts) < 2:
        raise TargetError("compare needs two or more artifacts (--artifacts A B ...)")
    label = _names([Path(a) for a in artifacts], names)
    arts = [load_artifact(a) for a in artifacts]
    kinds = {n: _task_kind(a) for n, a in zip(label, arts, strict=True)}
    if len({k for k, _ in kinds.values()}) > 1 or len({t for _, t in kinds.values()}) > 1:
        raise TargetError(f"the artifacts were trained for different tasks ({kinds}): compare models of one task")
    task = next(iter(kinds.values()))[0]
    d = data if isinstance(data, LoadedData) else load_data(data, column_map=column_map, code_map=code_map)
    d = subset_split(d, split, arts[0].extras.get("split"))
    notes: dict[str, Any] = {"split": split, "sites": list(sites)}
    ev = d.events
    if sites:
        site = site_of(ev, detect(ev))
        keep = site.index[site.isin(list(sites))]
        if len(keep) == 0:
            raise DataValidationError(f"no patient of site(s) {list(sites)} in the '{split}' split",
                                      hint="check --sites against the sites `ehrseq validate` lists")
        ev = ev.loc[ev["subject_id"].isin(keep)]
    trained = {n: set(a.train_subjects or ()) for n, a in zip(label, arts, strict=True)}
    seen = ev["subject_id"].isin(set().union(*trained.values()))
    notes["patients_dropped_trained_a_model"] = {n: int(ev.loc[ev["subject_id"].isin(t), "subject_id"].nunique())
                                                 for n, t in trained.items()}
    ev = ev.loc[~seen]
    if ev.empty:
        raise DataValidationError(f"every patient of the '{split}' split trained one of the models",
                                  hint="compare on patients none of them trained on (another --split or --data)")
    d = LoadedData(ev, d.splits, d.report_labels, d.source)
    frames = {n: predict_for_report(a, d, labels)[0] for n, a in zip(label, arts, strict=True)}
    cmp = compare_frames(frames, task, n_boot=n_boot, seed=seed)
    cmp.update(notes, artifacts={n: a.artifact_id for n, a in zip(label, arts, strict=True)})
    return _write(cmp, Path(out), comparison_markdown(cmp))


def _write(cmp: Mapping[str, Any], out: Path, md: str) -> dict[str, Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        title = f"ehrseq comparison: {', '.join(cmp['models'])}"
        dropped = ", ".join(f"{n} {c}" for n, c in cmp["patients_dropped_trained_a_model"].items())
        intro = (f"Split '{cmp['split']}'" + (f", site(s) {', '.join(cmp['sites'])}" if cmp["sites"] else "")
                 + f"; patients left out because they trained a model: {dropped}.")
        (tmp / "compare.json").write_text(json.dumps(cmp, indent=2, default=str) + "\n")
        (tmp / "compare.md").write_text(f"# {title}\n\n{intro}\n\n{md}")
        (tmp / "compare.html").write_text(_html(title, intro, md))
        replace_directory(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {k: out / f"compare.{k}" for k in ("json", "md", "html")}


def _html(title: str, intro: str, md: str) -> str:
    """A small self-contained page: the Markdown table as an HTML table, the notes as paragraphs."""
    rows, paras = [], []
    for line in md.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif line.strip() and not line.startswith("|"):
            paras.append(line)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    text = "".join(f"<p>{html.escape(p)}</p>" for p in [intro, *paras])
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
            f"content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title><style>"
            "body{font-family:system-ui,sans-serif;max-width:72rem;margin:1rem auto;padding:0 1rem;color:#222}"
            ".t{overflow-x:auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .5rem;"
            "text-align:right;white-space:nowrap}td:first-child,th:first-child{text-align:left}</style></head>"
            f"<body><h1>{html.escape(title)}</h1><div class='t'><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>{text}</body></html>\n")


__all__ = ["compare_artifacts"]
