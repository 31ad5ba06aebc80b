"""The data layer against a plain Parquet scan of the same MEDS file (the ratio is the figure), old against new.

    python -m benchmarks.featurize [--patients 10000] [--mimic PATH] [--baseline-ref HEAD] [--threads 1,2]
                                   [--repeat 5] [--synth-patients 0]

One run measures, on the same files and in the same process state: the plain scan (``pyarrow.parquet.read_table
(...).to_pandas()``), ``read_meds`` (validated, canonical, sorted), ``Featurizer.fit`` and ``Featurizer.transform``,
for this working tree ("new") and for the ``ehrseq`` package of ``--baseline-ref`` ("old", extracted with
``git archive`` into a temporary directory and run in a subprocess, same thread settings). Best of ``--repeat``
runs each, the steps interleaved (scan, read, fit, transform, then again), so that each ratio compares times from
the same stretches of machine load; wall time and process CPU time (the machine is shared: CPU time is the
steadier ratio; with more than one thread, CPU time counts every thread, so wall time is the figure there, on a
machine with idle cores). Each thread count in
``--threads`` sets pyarrow's CPU count (the scan too), OMP / OpenBLAS and ``EHRSEQ_NUM_THREADS`` (the
transform's thread pool). The fitted state and the transform outputs are checked equal: old against new, and
every thread count against the first; the run exits 1 when any differs.
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
ARRAYS = ("tok_code", "tok_age", "tok_visit", "tok_delta", "tok_value", "tok_num", "tok_start", "tok_cut",
          "age_at_pred", "step_x", "step_start", "step_cut", "static_x", "tok_pin", "tok_next")


def best_of(fn: Callable[[], object], repeat: int) -> tuple[float, float, object]:
    """(best wall seconds, best CPU seconds, last result) over ``repeat`` runs."""
    wall = cpu = float("inf")
    out = None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return wall, cpu, out


def set_threads(n: int) -> None:
    """pyarrow, OpenMP / OpenBLAS (for libraries started after this) and the transform's thread pool."""
    import pyarrow as pa

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "EHRSEQ_NUM_THREADS"):
        os.environ[var] = str(n)
    pa.set_cpu_count(n)


def arrays(fs: object) -> dict[str, object]:
    """The FeatureSet's arrays (static tokens concatenated, with their lengths) and counts, for comparison."""
    import numpy as np

    out = {k: getattr(fs, k) for k in ARRAYS if getattr(fs, k) is not None}
    st = fs.static_tokens  # type: ignore[attr-defined]
    out["static_tokens"] = np.concatenate([np.r_[len(x), x] for x in st]) if len(st) else np.zeros(0, np.int64)
    out["counts"] = np.array(sorted(fs.counts.items()), dtype=object)  # type: ignore[attr-defined]
    return out


def differences(a: dict[str, object], b: dict[str, object]) -> list[str]:
    """Names of the arrays that differ (dtype, shape or a value; NaN equals NaN)."""
    import numpy as np

    bad = [k for k in set(a) ^ set(b)]
    for k in sorted(set(a) & set(b)):
        x, y = np.asarray(a[k]), np.asarray(b[k])
        same = x.dtype == y.dtype and x.shape == y.shape and (
            np.array_equal(x, y, equal_nan=True) if x.dtype.kind == "f" else np.array_equal(x, y))
        if not same:
            bad.append(k)
    return bad


def measure(path: str, column_map: dict[str, str] | None, labels_kind: str, repeat: int, threads: int = 1,
            dump: str = "") -> dict[str, object]:
    """Time scan, read_meds, fit and transform on one MEDS file or root with whichever ``ehrseq`` is imported,
    with ``threads`` threads; ``dump``: write the transform's arrays there (.npz) for the comparison."""
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    set_threads(threads)
    from ehrseq.featurize.featurizer import Featurizer
    from ehrseq.io import read_meds
    from ehrseq.labels import cdai_labels
    from ehrseq.split import PatientSplitter, subjects_table

    logging.disable(logging.WARNING)
    p = Path(path)
    files = [p] if p.is_file() else sorted((p / "data").glob("*.parquet"))
    ev = read_meds(path, column_map=column_map).events  # untimed first pass: the inputs of the later steps
    splits = PatientSplitter(seed=0).split(subjects_table(ev))
    if labels_kind == "cdai":
        labels = cdai_labels(ev)
    else:  # a label row every 30 days of each subject's timed history
        timed = ev.loc[ev["time"].notna() & (ev["code"] != "MEDS_BIRTH"), ["subject_id", "time"]]
        span = timed.groupby("subject_id")["time"].agg(["min", "max"])
        rows = [(s, t) for s, (a, b) in span.iterrows() for t in pd.date_range(a, b, freq="30D")]
        labels = pd.DataFrame(rows, columns=["subject_id", "prediction_time"]).astype(
            {"subject_id": np.int64, "prediction_time": "datetime64[us]"})
    fz = Featurizer().fit(ev, splits)
    steps = {"scan": lambda: [pq.read_table(f).to_pandas() for f in files],
             "read": lambda: read_meds(path, column_map=column_map), "fit": lambda: Featurizer().fit(ev, splits),
             "transform": lambda: fz.transform(ev, labels)}
    res: dict[str, object] = {k: (float("inf"), float("inf")) for k in steps}
    out: dict[str, object] = {}
    for _ in range(repeat):  # interleaved: each step's best comes from the same stretches of machine load
        for k, fn in steps.items():
            w, c, out[k] = best_of(fn, 1)
            res[k] = (min(res[k][0], w), min(res[k][1], c))
    fs = out["transform"]
    res["events"], res["labels"], res["counts"] = len(ev), len(labels), fs.counts
    if dump:
        np.savez(dump, **arrays(fs), fit=np.array(json.dumps(out["fit"].to_dict(), sort_keys=True)))
    return res


def _baseline(ref: str, cases: list[tuple], repeat: int) -> list[dict] | None:
    """``measure`` of each case (with its threads and dump path) with the ``ehrseq`` package of git ``ref``, in a
    subprocess; None when git cannot give it."""
    with old_package(ref) as tmp:
        if tmp is None:
            return None
        code = ("import json, sys; sys.path.append(sys.argv[1]); from benchmarks.featurize import measure; "
                "print(json.dumps([measure(*c[:3], int(sys.argv[3]), *c[3:]) for c in json.loads(sys.argv[2])]))")
        env = {**os.environ, "PYTHONPATH": tmp}
        out = subprocess.run([sys.executable, "-c", code, str(REPO), json.dumps(cases), str(repeat)], env=env,
                             capture_output=True, text=True, cwd=tmp)
        if out.returncode:
            raise RuntimeError(f"the baseline run failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def _table(name: str, runs: list[tuple[int, dict, dict | None]]) -> list[str]:
    first = runs[0][1]
    lines = [f"**{name}**: {first['events']:,} events, {first['labels']:,} label rows.\n",
             "| step | threads | wall s | wall / scan | CPU s | CPU / scan | old wall / scan | old CPU / scan |",
             "|---|---|---|---|---|---|---|---|"]
    for key, label in (("scan", "plain Parquet scan (pyarrow -> pandas), baseline"),
                       ("read", "read_meds (validated, canonical, sorted)"), ("fit", "Featurizer.fit (train split)"),
                       ("transform", "Featurizer.transform (all label rows)")):
        for threads, new, old in runs:
            (w, c), (scan_w, scan_c) = new[key], new["scan"]
            o = f"{old[key][0] / old['scan'][0]:.2f}x | {old[key][1] / old['scan'][1]:.2f}x" if old else "- | -"
            lines.append(f"| {label} | {threads} | {w:.3f} | {w / scan_w:.2f}x | {c:.3f} | {c / scan_c:.2f}x | {o} |")
    lines.append(f"\nTransform output: {first['counts']}.\n")
    return lines


def _same_output(dumps: list[str], first_new: str) -> str:
    """One line: whether every dumped transform output equals the first new one."""
    import numpy as np

    ref = dict(np.load(first_new, allow_pickle=True))
    bad = {Path(d).stem: differences(ref, dict(np.load(d, allow_pickle=True))) for d in dumps if Path(d).exists()}
    bad = {k: v for k, v in bad.items() if v}
    checked = ", ".join(Path(d).stem for d in dumps if Path(d).exists())
    return (f"Output check ({checked} against {Path(first_new).stem}): "
            + ("all arrays identical." if not bad else f"DIFFERENT: {bad}."))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=10_000)
    ap.add_argument("--mimic", default=str(MIMIC), help="MIMIC-IV demo MEDS events file ('' to skip)")
    ap.add_argument("--baseline-ref", default="HEAD", help="git ref whose ehrseq is the 'old' side ('' to skip)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts, each measured")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--synth-patients", type=int, default=0, help="size for the generator timing (0: skip)")
    a = ap.parse_args()
    thread_counts = [int(t) for t in a.threads.split(",") if t.strip()]
    set_threads(thread_counts[0])

    from benchmarks.common import write_result
    from ehrseq.io import write_meds
    from ehrseq.synth.cohort import generate_cohort

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        cohort = generate_cohort(a.patients, seed=0, biopsy_rate=0.0)
        gen_s = time.perf_counter() - t
        root = write_meds(cohort.events, Path(tmp) / "meds")
        del cohort
        cases: list[tuple[str, dict[str, str] | None, str]] = [(str(root), None, "cdai")]
        if a.mimic and Path(a.mimic).is_file():
            cases.append((str(Path(a.mimic).resolve()), {"value": "numeric_value"}, "every_30_days"))
        runs = [(i, c, n) for i, c in enumerate(cases) for n in thread_counts]
        dump = {(i, n, side): str(Path(tmp) / f"{side}_{i}_t{n}.npz") for i, _, n in runs for side in ("new", "old")}
        new = [measure(*c, a.repeat, n, dump[i, n, "new"]) for i, c, n in runs]
        old = _baseline(a.baseline_ref, [(*c, n, dump[i, n, "old"]) for i, c, n in runs], a.repeat) \
            if a.baseline_ref else None
        checks = [_same_output([dump[i, n, side] for n in thread_counts for side in ("new", "old")
                                if (n, side) != (thread_counts[0], "new")], dump[i, thread_counts[0], "new"])
                  for i in range(len(cases))]
    body = [f"Both sides run in one invocation on the same files, at {', '.join(map(str, thread_counts))} "
            f"thread(s) (pyarrow, OpenMP, EHRSEQ_NUM_THREADS; the scan at the same count); best of {a.repeat}. "
            f"'old' is the ehrseq package of `{a.baseline_ref}` (git archive, subprocess)"
            + ("." if old else " (not measured).") + "\n"]
    names = [f"Synthetic RA cohort ({a.patients:,} patients, generated in {gen_s:.1f}s)",
             "MIMIC-IV demo (column_map value -> numeric_value; unsorted, 82k duplicate rows dropped)"]
    for i in range(len(cases)):
        sel = [(n, new[k], old[k] if old else None) for k, (j, _, n) in enumerate(runs) if j == i]
        body += _table(names[i], sel)
        body.append(checks[i] + "\n")
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
    notes = _notes()
    path = write_result("Featurization throughput", "\n".join(body) + notes)
    print("\n".join(body))
    print(f"wrote {path}")
    if any("DIFFERENT" in c for c in checks):
        raise SystemExit(1)


NOTES_HEAD = "## Notes"


def _notes() -> str:
    """The hand-written notes section of the results file (from its ``## Notes`` heading on), kept across runs."""
    from benchmarks.common import RESULTS

    old = RESULTS / "featurize.md"
    text = old.read_text() if old.exists() else ""
    at = text.find("\n" + NOTES_HEAD)
    return "\n" + text[at:].strip("\n") + "\n" if at >= 0 else ""


if __name__ == "__main__":
    main()
