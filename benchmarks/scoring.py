"""Speed and memory of `ehrseq score` on a synthetic extract of >= 1M events.

    /work/main/.venv/bin/python -m benchmarks.scoring            # ~5-8 minutes on 2 cores
    /work/main/.venv/bin/python -m benchmarks.scoring --patients 2000 --no-ray   # a quick look

Each scoring run happens in a fresh subprocess so that its peak RSS is its own (VmHWM from /proc/self/status;
``ru_maxrss`` would report the parent's peak, which Linux carries across fork+exec). The 4x extract
is the 1x extract written four times with shifted subject ids, so any growth of peak RSS with extract size
shows as RSS(4x) / RSS(1x) > 1. Writes ``benchmarks/results/scoring.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from benchmarks.common import machine

RESULTS = Path(__file__).resolve().parent / "results" / "scoring.md"
ID_SHIFT = 10_000_000


def _case(spec: dict) -> dict:
    """Run inside the subprocess: one scoring job, then report its summary and peak RSS."""
    import torch

    from ehrseq.scoring import Scorer, score

    torch.set_num_threads(int(spec.get("threads", 1)))
    t0 = time.perf_counter()
    if spec.get("load_only"):
        Scorer.load(spec["artifact"])
        summary: dict = {"seconds": time.perf_counter() - t0}
    else:
        s = score(spec["artifact"], spec["data"], spec["out"], prediction_time=spec.get("prediction_time"),
                  engine=spec.get("engine", "local"), resume=False, overwrite=True)
        summary = s.to_dict()
    summary["peak_rss_mib"] = peak_rss_mib()
    return summary


def peak_rss_mib() -> float:
    """Peak RSS of this process. Linux keeps ru_maxrss across fork+exec, so a child of a big parent reports
    the parent's peak; VmHWM (per address space, reset by exec) does not have that problem."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(spec: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "benchmarks.scoring", "--case", json.dumps(spec)], env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"case {spec} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def make_x4(src: Path, dst: Path) -> int:
    """Write the MEDS data of ``src`` four times with subject ids shifted by k * ID_SHIFT (file by file)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    (dst / "data").mkdir(parents=True, exist_ok=True)
    n = 0
    for k in range(4):
        for f in sorted((src / "data").glob("*.parquet")):
            t = pq.read_table(f)
            t = t.set_column(0, "subject_id", pc.add(t["subject_id"], k * ID_SHIFT))
            pq.write_table(t, dst / "data" / f"{k}_{f.name}")
            n += t.num_rows
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=10_000)
    ap.add_argument("--workdir", default="/tmp/ehrseq-bench-scoring")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.case:
        print(json.dumps(_case(json.loads(a.case))))
        return

    import pyarrow.parquet as pq

    from ehrseq import api

    work = Path(a.workdir)
    t_all = time.perf_counter()
    print(f"synthesizing {a.patients} patients ...", flush=True)
    api.synthesize(a.patients, out=work / "x1", extract=False, seed=0)
    n1 = sum(pq.ParquetFile(f).metadata.num_rows for f in (work / "x1" / "meds" / "data").glob("*.parquet"))
    n4 = make_x4(work / "x1" / "meds", work / "x4")
    print(f"1x: {n1} events, 4x: {n4} events; training tiny artifacts (1 epoch) ...", flush=True)
    api.synthesize(300, out=work / "train", extract=False, seed=1)
    arts = {}
    for model in ("rnn", "behrt"):
        arts[model] = str(work / f"art_{model}")
        api.finetune(work / "train" / "meds", target="cdai", model=model, out=arts[model], preset="tiny", overwrite=True,
                     train={"epochs": 1, "progress": False}, n_bootstrap=0)

    x1, x4 = str(work / "x1" / "meds"), str(work / "x4")
    cases = [
        ("rnn", "load only (baseline RSS)", {"artifact": arts["rnn"], "load_only": True}, 0, 0),
        ("rnn", "1x, every CDAI visit", {"artifact": arts["rnn"], "data": x1}, n1, a.patients),
        ("rnn", "4x, every CDAI visit", {"artifact": arts["rnn"], "data": x4}, n4, 4 * a.patients),
        ("rnn", "1x, one time per patient", {"artifact": arts["rnn"], "data": x1, "prediction_time": "2024-01-01"},
         n1, a.patients),
        ("behrt", "1x, one time per patient",
         {"artifact": arts["behrt"], "data": x1, "prediction_time": "2024-01-01"}, n1, a.patients),
    ]
    try:
        import ray  # noqa: F401

        has_ray = not a.no_ray
    except ImportError:
        has_ray = False
    if has_ray:
        cases.append(("rnn", "1x, every CDAI visit, engine=ray",
                      {"artifact": arts["rnn"], "data": x1, "engine": "ray"}, n1, a.patients))
    rows = []
    for i, (model, what, spec, n_ev, n_pat) in enumerate(cases):
        spec = {**spec, "out": str(work / f"out{i}")}
        print(f"scoring: {model} {what} ...", flush=True)
        res = run_case(spec)
        rows.append((model, what, n_ev, n_pat, res))
        print(f"  {res.get('seconds', 0):.1f}s, peak RSS {res['peak_rss_mib']:.0f} MiB", flush=True)
    write_report(rows, n1, n4, a, time.perf_counter() - t_all, has_ray)


def write_report(rows: list, n1: int, n4: int, a: argparse.Namespace, total: float, has_ray: bool) -> None:
    lines = [
        "# `ehrseq score` benchmark",
        "",
        f"- date: {date.today().isoformat()}",
        f"- command: `/work/main/.venv/bin/python -m benchmarks.scoring --patients {a.patients}`"
        f"{' --no-ray' if a.no_ray else ''} (OMP_NUM_THREADS=1, torch threads 1, each run in its own process)",
        f"- machine: {machine()}",
        f"- data: synthetic RA cohort, 1x = {a.patients} patients / {n1:,} events (MEDS Parquet); 4x = the same "
        f"written four times with shifted ids ({n4:,} events). Defaults: batch_rows=65,536, shard_rows=250,000.",
        "- artifacts: `preset='tiny'`, 1 epoch on a separate 300-patient cohort (speed does not depend on fit).",
        f"- whole benchmark: {total:.0f} s",
        "",
        "| model | run | events | patients | predictions | seconds | patients/s | events/s | predictions/s "
        "| peak RSS MiB | time in I/O+validation / featurize / forward / write |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    rss = {}
    for model, what, n_ev, n_pat, r in rows:
        rss[(model, what)] = r["peak_rss_mib"]
        sec = r["seconds"]
        if not n_ev:
            lines.append(f"| {model} | {what} | - | - | - | {sec:.1f} | - | - | - | {r['peak_rss_mib']:.0f} | - |")
            continue
        tm = r["timings"]
        parts = [tm.get("io", 0) + tm.get("stage", 0), tm.get("featurize", 0) + tm.get("labels", 0),
                 tm.get("forward", 0), tm.get("write", 0)]
        tot = max(sum(parts), 1e-9)
        share = " / ".join(f"{100 * p / tot:.0f}%" for p in parts)
        lines.append(
            f"| {model} | {what} | {n_ev:,} | {n_pat:,} | {r['predictions_written']:,} | {sec:.1f} | "
            f"{n_pat / sec:,.0f} | {n_ev / sec:,.0f} | {r['predictions_written'] / sec:,.0f} | "
            f"{r['peak_rss_mib']:.0f} | {share} |")
    r1, r4 = rss.get(("rnn", "1x, every CDAI visit")), rss.get(("rnn", "4x, every CDAI visit"))
    base = rss.get(("rnn", "load only (baseline RSS)"))
    t1 = next(r for m, w, *_, r in rows if w == "1x, every CDAI visit")["seconds"]
    t4 = next(r for m, w, *_, r in rows if w == "4x, every CDAI visit")["seconds"]
    lines += [
        "",
        "Ratios:",
        "",
        f"- peak RSS 4x / 1x (rnn): **{r4 / r1:.2f}** ({r1:.0f} -> {r4:.0f} MiB; of which {base:.0f} MiB is "
        "Python + torch + the artifact before any data is read)",
        f"- peak RSS above that baseline, 4x / 1x: {(r4 - base) / max(r1 - base, 1e-9):.2f}",
        f"- seconds 4x / 1x (rnn): {t4 / t1:.2f} (linear scaling = 4.00)",
    ]
    if has_ray:
        tr = next(r for m, w, *_, r in rows if "ray" in w)["seconds"]
        lines.append(f"- seconds ray / local (rnn, 1x): {tr / t1:.2f}; outputs are identical (tests/test_scoring.py). "
                     "The ray row's RSS is the driver's only (the actor is another process); its time includes "
                     "starting Ray and staging the shards to disk.")
    lines += [
        "",
        "Notes: 'featurize' includes building label rows and the per-row token/step views and collate; "
        "'forward' is the model alone under torch.no_grad. The RNN skips the token view it never reads. "
        "BEHRT is scored at one prediction time per patient because one forward pass per CDAI visit "
        "(~14 per patient) at a few hundred sequences/s on one core would take several minutes for the 1x extract.",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
