"""`ehrseq score` per model family: rows/s and the share of wall time in the forward pass, old against new.

    /work/main/.venv/bin/python -m benchmarks.scoring                       # ~5-10 minutes on 2 busy cores
    /work/main/.venv/bin/python -m benchmarks.scoring --patients 1000 --families rnn,deepsurv   # a quick look

One run synthesizes an RA cohort (MEDS Parquet, biopsy reports included), trains a tiny artifact per family on a
separate cohort, then scores the extract with each artifact twice: with this working tree ("new") and with the
``ehrseq`` package of ``--baseline-ref`` ("old", extracted with ``git archive`` into a temporary directory), each
run in its own subprocess with one thread (OMP_NUM_THREADS=1, torch threads 1). Wall time is the whole
``score()`` call (artifact load, input hashing, read + validation, labels, featurize, forward, write).

The forward pass is timed the same way on both sides, from outside the package: the loaded model's own entry
point is wrapped with a timer (``nn.Module.forward`` of the RNN, BEHRT and the text classifier's networks;
``predict_risk``/``predict_survival`` of DeepSurv and the discrete-time heads), so 'forward share' = that time /
wall time, and 'overhead' is everything else. The new side also reports the job's own split (``timings``).
Predictions of old and new are compared row for row (max abs difference). ``--profile`` adds a cProfile of one
scoring run per family (new side) with the functions that take the most time outside the forward pass.
Writes ``benchmarks/results/scoring.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import old_package

REPO = Path(__file__).resolve().parent.parent
FAMILIES = ("rnn", "behrt", "deepsurv", "logistic_hazard", "text")


# ------------------------------------------------------------------------------- inside the subprocess
def _wrap_forward(model: Any, acc: list[float]) -> None:
    """Accumulate into ``acc[0]`` the seconds spent in ``model``'s forward entry points (re-entrant safe)."""
    import torch

    depth = [0]

    def timed(fn: Any) -> Any:
        def inner(*a: Any, **k: Any) -> Any:
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    acc[0] += time.perf_counter() - t0
        return inner

    nets = getattr(model, "nets_", None)
    if nets:  # the text classifier: its networks (tokenisation counts as overhead)
        for net in nets:
            net.forward = timed(net.forward)
    elif isinstance(model, torch.nn.Module):
        model.forward = timed(model.forward)
    else:  # DeepSurv and the discrete-time heads
        for name in ("predict_risk", "predict_survival"):
            setattr(model, name, timed(getattr(model, name)))


def _case(spec: dict[str, Any]) -> dict[str, Any]:
    """One scoring job with whichever ``ehrseq`` is importable; its summary, forward seconds, wall seconds."""
    import torch

    from ehrseq.scoring import predict, score

    torch.set_num_threads(1)
    acc = [0.0]
    init = predict.Scorer.__init__

    def patched(self: Any, *a: Any, **k: Any) -> None:
        init(self, *a, **k)
        _wrap_forward(self.model, acc)

    predict.Scorer.__init__ = patched  # type: ignore[method-assign]
    t0 = time.perf_counter()  # the model modules (BEHRT's pulls in transformers), imported lazily by score()
    import ehrseq.models.text_classifier  # noqa: F401
    import ehrseq.registry  # noqa: F401

    imports = time.perf_counter() - t0
    prof = None
    if spec.get("profile"):
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    t0 = time.perf_counter()
    s = score(spec["artifact"], spec["data"], spec["out"], prediction_time=spec.get("prediction_time"),
              resume=False, overwrite=True)
    wall = time.perf_counter() - t0
    res = {**s.to_dict(), "wall": wall, "forward_s": acc[0], "peak_rss_mib": _peak_rss_mib(), "imports_s": imports}
    if prof is not None:
        prof.disable()
        res["profile"] = _top(prof)
    return res


def _peak_rss_mib() -> float:
    """Peak RSS of this process (VmHWM: per address space, so not the parent's peak across fork+exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _top(prof: Any, n: int = 14) -> list[tuple[str, float, float, int]]:
    """(function, tottime, cumtime, calls) of the ``n`` functions with the most own time."""
    import pstats

    st = pstats.Stats(prof)
    rows = []
    for (file, line, fn), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        where = file.split("site-packages/")[-1].split("/work/main/")[-1]
        rows.append((f"{where}:{line}({fn})", tt, ct, nc))
    rows.sort(key=lambda r: -r[1])
    return rows[:n]


# ------------------------------------------------------------------------------------ the driver side
def run_case(spec: dict[str, Any], package_dir: str | None = None) -> dict[str, Any]:
    """``_case(spec)`` in a fresh one-thread subprocess, with ``package_dir``'s ehrseq first on the path."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    code = ("import json, sys; sys.path.append(sys.argv[1]); from benchmarks.scoring import _case; "
            "print(json.dumps(_case(json.loads(sys.argv[2]))))")
    if package_dir:
        env["PYTHONPATH"] = package_dir
    r = subprocess.run([sys.executable, "-c", code, str(REPO), json.dumps(spec)], env=env, capture_output=True,
                       text=True, cwd=package_dir or str(REPO))
    if r.returncode != 0:
        raise RuntimeError(f"case {spec} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def train_artifacts(work: Path, families: list[str]) -> dict[str, str]:
    """A tiny artifact per family, trained on a separate 300-patient cohort (speed does not depend on fit)."""
    from ehrseq import api

    api.synthesize(300, out=work / "train", extract=False, seed=1, biopsy_rate=0.3)
    meds = work / "train" / "meds"
    arts: dict[str, str] = {}
    for fam in families:
        out = work / f"art_{fam}"
        arts[fam] = str(out)
        if fam in ("rnn", "behrt"):
            api.finetune(meds, target="cdai", model=fam, out=out, preset="tiny", overwrite=True,
                         train={"epochs": 1, "progress": False}, n_bootstrap=0)
        elif fam in ("deepsurv", "logistic_hazard"):
            api.finetune(meds, target="survival", model=fam, event_code="EVENT//FLARE", landmark_visit=1,
                         out=out, preset="tiny", overwrite=True, n_bootstrap=0)
        else:
            import shutil

            from ehrseq.models.text_classifier import TextClassifier, TextClassifierConfig
            from ehrseq.synth.reports import generate_reports

            cfg = TextClassifierConfig.from_preset("tiny", epochs=1, mlm_epochs=0, self_train_rounds=0)
            shutil.rmtree(out, ignore_errors=True)
            TextClassifier(cfg).fit(generate_reports(60, seed=1, site="A"),
                                    generate_reports(20, seed=2, site="A")).save(out)
    return arts


def _train(work: Path, families: list[str], package_dir: str | None) -> dict[str, str]:
    """:func:`train_artifacts` with the old package when there is one (the new one reads its artifacts; the old
    one may not read the new one's)."""
    if not package_dir:
        return train_artifacts(work, families)
    code = ("import json, sys; sys.path.append(sys.argv[1]); from pathlib import Path; "
            "from benchmarks.scoring import train_artifacts; "
            "print(json.dumps(train_artifacts(Path(sys.argv[2]), sys.argv[3].split(','))))")
    env = {**os.environ, "PYTHONPATH": package_dir, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code, str(REPO), str(work), ",".join(families)], env=env,
                       capture_output=True, text=True, cwd=package_dir)
    if r.returncode != 0:
        raise RuntimeError(f"training with the old package failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _max_diff(a: Path, b: Path) -> float:
    import numpy as np
    import pandas as pd

    x, y = pd.read_parquet(a), pd.read_parquet(b)
    if list(x.columns) != list(y.columns) or len(x) != len(y):
        return float("inf")
    keys = ["subject_id", "prediction_time"]
    if not (x[keys].reset_index(drop=True).equals(y[keys].reset_index(drop=True))):
        return float("inf")
    d = 0.0
    for c in x.columns:
        if c.startswith("predicted_") and x[c].dtype.kind == "f":
            d = max(d, float(np.nanmax(np.abs(x[c].to_numpy(float) - y[c].to_numpy(float)), initial=0.0)))
        elif c.startswith("predicted_") and not x[c].equals(y[c]):
            return float("inf")
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=4000)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--baseline-ref", default="HEAD", help="git ref whose ehrseq is the 'old' side ('' to skip)")
    ap.add_argument("--workdir", default="/tmp/ehrseq-bench-scoring")
    ap.add_argument("--profile", action="store_true", help="add a cProfile of one run per family (new side)")
    a = ap.parse_args()
    import pyarrow.parquet as pq

    from ehrseq import api

    families = [f for f in a.families.split(",") if f]
    work = Path(a.workdir)
    t_all = time.perf_counter()
    print(f"synthesizing {a.patients} patients ...", flush=True)
    api.synthesize(a.patients, out=work / "x1", extract=False, seed=0, biopsy_rate=0.3)
    data = str(work / "x1" / "meds")
    n_ev = sum(pq.ParquetFile(f).metadata.num_rows for f in (work / "x1" / "meds" / "data").glob("*.parquet"))
    results: dict[str, dict[str, Any]] = {}
    with old_package(a.baseline_ref) if a.baseline_ref else contextlib.nullcontext(None) as old_dir:
        arts = _train(work, families, old_dir)
        for fam in families:
            spec = {"artifact": arts[fam], "data": data}
            if fam == "behrt":  # one forward pass per CDAI visit would take minutes on one core
                spec["prediction_time"] = "2024-01-01"
            row: dict[str, Any] = {}
            for side, pkg in (("new", None), ("old", old_dir)):
                if side == "old" and not old_dir:
                    continue
                print(f"scoring {fam} ({side}) ...", flush=True)
                try:
                    row[side] = run_case({**spec, "out": str(work / f"out_{fam}_{side}")}, pkg)
                except RuntimeError as e:
                    print(str(e)[-1500:], file=sys.stderr)
                    continue
                r = row[side]
                print(f"  {r['wall']:.1f}s, forward {100 * r['forward_s'] / r['wall']:.0f}%", flush=True)
            if "old" in row and "new" in row:
                row["max_diff"] = _max_diff(work / f"out_{fam}_old", work / f"out_{fam}_new")
            if a.profile:
                print(f"profiling {fam} ...", flush=True)
                row["profile"] = run_case({**spec, "out": str(work / f"out_{fam}_prof"), "profile": True})["profile"]
            results[fam] = row
    write_report(results, n_ev, a, time.perf_counter() - t_all)


def write_report(results: dict[str, dict[str, Any]], n_ev: int, a: argparse.Namespace, total: float) -> None:
    from benchmarks.common import write_result

    body = [
        f"Data: synthetic RA cohort, {a.patients:,} patients / {n_ev:,} events (MEDS Parquet, biopsy_rate 0.3), "
        "one shard per 250,000 rows. Artifacts: `preset='tiny'` on a separate 300-patient cohort. One thread "
        f"per run (OMP_NUM_THREADS=1, torch 1), each run in its own subprocess. 'old' = the ehrseq package of "
        f"`{a.baseline_ref}` (git archive). Rows: prediction rows written; BEHRT at one prediction time per "
        "patient, every other family at its task's own rows. Artifacts trained with the old package. Wall time "
        "excludes importing the model modules (BEHRT's imports transformers: see 'imports s'), the same on both "
        "sides. Whole benchmark: "
        f"{total:.0f} s.\n",
        "| family | predictions | old s | new s | old rows/s | new rows/s | speed-up | old forward share "
        "| new forward share | new overhead | old / new peak RSS MiB | max abs diff old/new |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for fam, row in results.items():
        new, old = row.get("new"), row.get("old")
        if new is None:
            continue
        n = new["predictions_written"]
        fn = new["forward_s"] / new["wall"]
        o_s = f"{old['wall']:.2f}" if old else "-"
        o_r = f"{n / old['wall']:,.0f}" if old else "-"
        sp = f"{old['wall'] / new['wall']:.2f}x" if old else "-"
        o_f = f"{100 * old['forward_s'] / old['wall']:.0f}%" if old else "-"
        md = f"{row['max_diff']:.1e}" if "max_diff" in row else "-"
        rss = f"{old['peak_rss_mib']:.0f} / {new['peak_rss_mib']:.0f}" if old else f"- / {new['peak_rss_mib']:.0f}"
        body.append(f"| {fam} | {n:,} | {o_s} | {new['wall']:.2f} | {o_r} | {n / new['wall']:,.0f} | {sp} | {o_f} "
                    f"| {100 * fn:.0f}% | **{100 * (1 - fn):.0f}%** | {rss} | {md} |")
    body += ["", "New side, the job's own split of its wall time (seconds; `timings` of the summary; 'forward' "
             "here is the timer above, 'model step' the Scorer's featurize + views + forward):", "",
             "| family | imports s | wall | read+validate | labels | featurize | views+collate | forward | write "
             "| rest (load, hashing, sharding) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for fam, row in results.items():
        new = row.get("new")
        if new is None:
            continue
        tm = new.get("timings", {})
        parts = [tm.get("io", 0.0), tm.get("labels", 0.0), tm.get("featurize", 0.0), tm.get("views", 0.0),
                 new["forward_s"], tm.get("write", 0.0)]
        rest = new["wall"] - sum(parts)
        body.append(f"| {fam} | {new['imports_s']:.2f} | {new['wall']:.2f} | " + " | ".join(f"{p:.2f}" for p in parts) + f" | {rest:.2f} |")
    for fam, row in results.items():
        if "profile" not in row:
            continue
        body += ["", f"Profile, {fam} (new side, cProfile; own time):", "",
                 "| function | own s | cumulative s | calls |", "|---|---:|---:|---:|"]
        body += [f"| `{f}` | {tt:.2f} | {ct:.2f} | {nc:,} |" for f, tt, ct, nc in row["profile"]]
    body += ["", "Notes: DeepSurv and the discrete-time heads are an MLP on a tabular row: their forward pass takes "
             "milliseconds for thousands of rows, so reading + featurizing is the whole job whatever it costs. "
             "'imports s' is paid once per process: `ehrseq.registry` imports BEHRT, which imports transformers, "
             "for every family; the discrete-time heads' load imports numba/llvmlite ('rest').", ""]
    path = write_result("`ehrseq score` per model family", "\n".join(body))
    print("\n".join(body))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
