"""Featurization throughput against a plain Parquet scan of the same MEDS data (the ratio is the figure).

    python -m benchmarks.featurize [--patients 10000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as pads

from benchmarks.common import write_result
from ehrseq.featurize.featurizer import Featurizer
from ehrseq.io import read_meds, write_meds
from ehrseq.labels import cdai_labels
from ehrseq.split import PatientSplitter, subjects_table
from ehrseq.synth.cohort import generate_cohort


def best_of(fn, repeat: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=10_000)
    ap.add_argument("--synth-patients", type=int, default=100_000, help="size for the generator timing (0: skip)")
    a = ap.parse_args()
    synth_line = ""
    if a.synth_patients:
        t = time.perf_counter()
        big = generate_cohort(a.synth_patients, seed=1)
        g = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            write_meds(big.events, Path(tmp) / "meds")
            w = time.perf_counter() - t
        synth_line = (f"\nSynthetic cohort generator at {a.synth_patients:,} patients (biopsy reports included): "
                      f"{len(big.events):,} events generated in {g:.1f}s, written as MEDS in {w:.1f}s.\n")
        del big
    t = time.perf_counter()
    c = generate_cohort(a.patients, seed=0, biopsy_rate=0.0)
    gen_s = time.perf_counter() - t
    n_ev = len(c.events)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_meds(c.events, Path(tmp) / "meds")
        scan_s, _ = best_of(lambda: pads.dataset(root / "data", format="parquet").to_table().to_pandas())
        read_s, res = best_of(lambda: read_meds(root))
    ev = res.events
    splits = PatientSplitter(seed=0).split(subjects_table(ev))
    labels = cdai_labels(ev)
    fit_s, fz = best_of(lambda: Featurizer().fit(ev, splits))
    tr_s, fs = best_of(lambda: fz.transform(ev, labels))
    rows = [
        ("plain Parquet scan (pyarrow -> pandas), baseline", scan_s),
        ("read_meds (validated, canonical, sorted)", read_s),
        ("Featurizer.fit (train split)", fit_s),
        ("Featurizer.transform (all label rows)", tr_s),
        ("read_meds + transform", read_s + tr_s),
    ]
    body = [f"Synthetic cohort: {a.patients} patients, {n_ev:,} events, {len(labels):,} CDAI label rows "
            f"(generated in {gen_s:.1f}s). Best of 3 runs each.\n",
            "| step | seconds | events/s | time / scan |", "|---|---|---|---|"]
    for name, s in rows:
        body.append(f"| {name} | {s:.2f} | {n_ev / s:,.0f} | {s / scan_s:.2f}x |")
    body.append(f"\nTransform output: {fs.counts}.")
    body.append(synth_line)
    path = write_result("Featurization throughput", "\n".join(body))
    print("\n".join(body))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
