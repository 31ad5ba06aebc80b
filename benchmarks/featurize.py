"""The data layer against a plain Parquet scan of the same MEDS file (the ratio is the figure), old against new.

    python -m benchmarks.featurize [--patients 10000] [--mimic PATH] [--baseline-ref HEAD] [--synth-patients 0]

One run measures, on the same files and in the same process state: the plain scan (``pyarrow.parquet.read_table
(...).to_pandas()``), ``read_meds`` (validated, canonical, sorted), ``Featurizer.fit`` and ``Featurizer.transform``,
for this working tree ("new") and for the ``ehrseq`` package of ``--baseline-ref`` ("old", extracted with
``git archive`` into a temporary directory and run in a subprocess, same thread settings). Best of ``--repeat``
runs each; wall time and process CPU time (the machine is shared: CPU time is the steadier ratio).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import old_package

REPO = Path(__file__).resolve().parent.parent
MIMIC = Path("/work/shared/data/mimic_iv_demo_meds/events.parquet")
THREADS = "2"


def best_of(fn: Callable[[], object], repeat: int) -> tuple[float, float, object]:
    """(best wall seconds, best CPU seconds, last result) over ``repeat`` runs."""
    wall = cpu = float("inf")
    out = None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return wall, cpu, out


def measure(path: str, column_map: dict[str, str] | None, labels_kind: str, repeat: int) -> dict[str, object]:
    """Time scan, read_meds, fit and transform on one MEDS file or root with whichever ``ehrseq`` is imported."""
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    from ehrseq.featurize.featurizer import Featurizer
    from ehrseq.io import read_meds
    from ehrseq.labels import cdai_labels
    from ehrseq.split import PatientSplitter, subjects_table

    logging.disable(logging.WARNING)
    p = Path(path)
    files = [p] if p.is_file() else sorted((p / "data").glob("*.parquet"))
    res: dict[str, object] = {}
    res["scan"] = best_of(lambda: [pq.read_table(f).to_pandas() for f in files], repeat)[:2]
    *res["read"], r = best_of(lambda: read_meds(path, column_map=column_map), repeat)
    ev = r.events
    splits = PatientSplitter(seed=0).split(subjects_table(ev))
    if labels_kind == "cdai":
        labels = cdai_labels(ev)
    else:  # a label row every 30 days of each subject's timed history
        timed = ev.loc[ev["time"].notna() & (ev["code"] != "MEDS_BIRTH"), ["subject_id", "time"]]
        span = timed.groupby("subject_id")["time"].agg(["min", "max"])
        rows = [(s, t) for s, (a, b) in span.iterrows() for t in pd.date_range(a, b, freq="30D")]
        labels = pd.DataFrame(rows, columns=["subject_id", "prediction_time"]).astype(
            {"subject_id": np.int64, "prediction_time": "datetime64[us]"})
    *res["fit"], fz = best_of(lambda: Featurizer().fit(ev, splits), repeat)
    *res["transform"], fs = best_of(lambda: fz.transform(ev, labels), repeat)
    res["events"], res["labels"], res["counts"] = len(ev), len(labels), fs.counts
    return res


def _baseline(ref: str, cases: list[tuple[str, dict[str, str] | None, str]], repeat: int) -> list[dict] | None:
    """``measure`` with the ``ehrseq`` package of git ``ref``, in a subprocess; None when git cannot give it."""
    with old_package(ref) as tmp:
        if tmp is None:
            return None
        code = ("import json, sys; sys.path.append(sys.argv[1]); from benchmarks.featurize import measure; "
                "print(json.dumps([measure(*c, int(sys.argv[3])) for c in json.loads(sys.argv[2])]))")
        env = {**os.environ, "PYTHONPATH": tmp}
        out = subprocess.run([sys.executable, "-c", code, str(REPO), json.dumps(cases), str(repeat)], env=env,
                             check=True, capture_output=True, text=True, cwd=tmp)
        return json.loads(out.stdout.strip().splitlines()[-1])


def _table(name: str, new: dict, old: dict | None) -> list[str]:
    scan_w, scan_c = new["scan"]
    lines = [f"**{name}**: {new['events']:,} events, {new['labels']:,} label rows.\n",
             "| step | wall s | wall / scan | CPU s | CPU / scan | old wall / scan | old CPU / scan |",
             "|---|---|---|---|---|---|---|"]
    for key, label in (("scan", "plain Parquet scan (pyarrow -> pandas), baseline"),
                       ("read", "read_meds (validated, canonical, sorted)"), ("fit", "Featurizer.fit (train split)"),
                       ("transform", "Featurizer.transform (all label rows)")):
        w, c = new[key]
        o = f"{old[key][0] / old['scan'][0]:.2f}x | {old[key][1] / old['scan'][1]:.2f}x" if old else "- | -"
        lines.append(f"| {label} | {w:.3f} | {w / scan_w:.2f}x | {c:.3f} | {c / scan_c:.2f}x | {o} |")
    lines.append(f"\nTransform output: {new['counts']}.\n")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=10_000)
    ap.add_argument("--mimic", default=str(MIMIC), help="MIMIC-IV demo MEDS events file ('' to skip)")
    ap.add_argument("--baseline-ref", default="HEAD", help="git ref whose ehrseq is the 'old' side ('' to skip)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--synth-patients", type=int, default=0, help="size for the generator timing (0: skip)")
    a = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = THREADS
    import pyarrow as pa

    from benchmarks.common import write_result
    from ehrseq.io import write_meds
    from ehrseq.synth.cohort import generate_cohort

    pa.set_cpu_count(int(THREADS))
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        cohort = generate_cohort(a.patients, seed=0, biopsy_rate=0.0)
        gen_s = time.perf_counter() - t
        root = write_meds(cohort.events, Path(tmp) / "meds")
        del cohort
        cases: list[tuple[str, dict[str, str] | None, str]] = [(str(root), None, "cdai")]
        if a.mimic and Path(a.mimic).is_file():
            cases.append((a.mimic, {"value": "numeric_value"}, "every_30_days"))
        new = [measure(*c, a.repeat) for c in cases]
        old = _baseline(a.baseline_ref, cases, a.repeat) if a.baseline_ref else None
    body = [f"Both sides run in one invocation on the same files, {THREADS} threads (pyarrow, OpenMP); best of "
            f"{a.repeat}. 'old' is the ehrseq package of `{a.baseline_ref}` (git archive, subprocess)"
            + ("." if old else " (not measured).") + "\n"]
    names = [f"Synthetic RA cohort ({a.patients:,} patients, generated in {gen_s:.1f}s)",
             "MIMIC-IV demo (column_map value -> numeric_value; unsorted, 82k duplicate rows dropped)"]
    for i, n in enumerate(new):
        body += _table(names[i], n, old[i] if old else None)
    if a.synth_patients:
        t = time.perf_counter()
        big = generate_cohort(a.synth_patients, seed=1)
        g = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            write_meds(big.events, Path(tmp) / "meds")
            w = time.perf_counter() - t
        body.append(f"Synthetic cohort generator at {a.synth_patients:,} patients (biopsy reports included): "
                    f"{len(big.events):,} events generated in {g:.1f}s, written as MEDS in {w:.1f}s.\n")
    path = write_result("Featurization throughput", "\n".join(body))
    print("\n".join(body))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
