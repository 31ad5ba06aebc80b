"""`ehrseq score` per model family: rows/s and the share of wall time in the forward pass, old against new.

    /work/main/.venv/bin/python -m benchmarks.scoring --patients 3000 --profile   # ~11 minutes on 2 busy cores
    /work/main/.venv/bin/python -m benchmarks.scoring --patients 1000 --families rnn,deepsurv --sizes tiny  # a look

Synthesizes an RA cohort (MEDS Parquet, with biopsy reports), trains an artifact per family and size on a
separate cohort (``--sizes``: 'tiny' = ``preset='tiny'``, 'default' = the shipped configs' size, see
:func:`train_artifacts`), and scores the extract with each: with the working tree ("new"; ``--only``: the
baseline with only the named files of the tree) and with the ``ehrseq`` of ``--baseline-ref`` ("old", ``git
archive``), each run in its own one-thread subprocess, sides alternating, ``--repeats`` runs each (fastest kept).
Wall time: the whole ``score()`` call. The forward pass is timed the same way on both sides, from outside: the
model's own entry point (``forward`` of the RNN, BEHRT and the text networks; ``predict_risk``/``predict_survival``
of the MLPs) is wrapped with a timer; 'overhead' = 1 - forward share. 'wall / scan': wall time over a plain
pyarrow scan of the same shards in the same run (:func:`_scan`), the floor of any job that reads the data and the
yardstick for the MLPs, whose forward pass is milliseconds. The new side also gives the job's own split
(``timings``); ``--profile`` a cProfile per family (new, tiny). Predictions of old and new are compared row for
row. Writes ``benchmarks/results/scoring.md`` (keeping its hand-written '## Reading' section).
"""

from __future__ import annotations

import argparse
import compileall
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

    load = [0.0]

    def patched(self: Any, *a: Any, **k: Any) -> None:
        t0 = time.perf_counter()
        init(self, *a, **k)
        load[0] += time.perf_counter() - t0
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
    t0, c0 = time.perf_counter(), time.process_time()
    s = score(spec["artifact"], spec["data"], spec["out"], prediction_time=spec.get("prediction_time"),
              resume=False, overwrite=True, **({"prefetch": spec["prefetch"]} if "prefetch" in spec else {}))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    res = {**s.to_dict(), "wall": wall, "cpu": cpu, "forward_s": acc[0], "peak_rss_mib": _peak_rss_mib(),
           "imports_s": imports, "load_s": load[0]}
    if prof is not None:
        prof.disable()
        res["profile"] = _top(prof)
    return res


def _scan(spec: dict[str, Any]) -> dict[str, float]:
    """Seconds of a plain pyarrow scan of the MEDS shards under ``spec["data"]`` (every column to Arrow, no
    pandas), best of 3: the floor of any job that must read the data."""
    import pyarrow.parquet as pq

    data = spec["data"]
    root = Path(data) / "data" if (Path(data) / "data").is_dir() else Path(data)
    files = sorted(root.rglob("*.parquet"))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for f in files:
            pq.read_table(f)
        best = min(best, time.perf_counter() - t0)
    return {"scan_s": best}


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
        where = file.split("site-packages/")[-1]
        where = "ehrseq/" + where.split("/ehrseq/")[-1] if "/ehrseq/" in where else where  # tree or extracted
        rows.append((f"{where}:{line}({fn})", tt, ct, nc))
    rows.sort(key=lambda r: -r[1])
    return rows[:n]


# ------------------------------------------------------------------------------------ the driver side
def run_case(spec: dict[str, Any], package_dir: str | None = None, fn: str = "_case") -> dict[str, Any]:
    """``fn(spec)`` (``_case``: one scoring job) in a fresh one-thread subprocess, with ``package_dir``'s ehrseq
    first on the path. Arrow's thread pool follows OMP_NUM_THREADS, so reads are one thread too."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    code = (f"import json, sys; sys.path.append(sys.argv[1]); from benchmarks.scoring import {fn}; "
            f"print(json.dumps({fn}(json.loads(sys.argv[2]))))")
    if package_dir:
        env["PYTHONPATH"] = package_dir
    r = subprocess.run([sys.executable, "-c", code, str(REPO), json.dumps(spec)], env=env, capture_output=True,
                       text=True, cwd=package_dir or str(REPO))
    if r.returncode != 0:
        raise RuntimeError(f"case {spec} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


SIZES = ("tiny", "default")


def train_artifacts(work: Path, families: list[str], size: str = "tiny") -> dict[str, str]:
    """An artifact per family, trained on a separate 300-patient cohort (scoring speed does not depend on fit).

    ``size`` 'tiny': ``preset='tiny'``. 'default': the model size a user gets: the shipped configs
    (configs/cdai_rnn.yaml, cdai_behrt.yaml, survival_flare.yaml; logistic_hazard at its default preset 'small'
    with survival_flare's event and MLP; the text model at biopsy.yaml's preset 'small' with its 3-member
    ensemble), trained for one epoch (a few for the MLPs): only the architecture sizes the scoring cost.
    """
    import shutil

    from ehrseq import api

    if not (work / "train" / "meds").is_dir():
        api.synthesize(300, out=work / "train", extract=False, seed=1, biopsy_rate=0.3)
    meds = work / "train" / "meds"
    cfgs = REPO / "configs"
    one = {"train": {"epochs": 1, "progress": False}, "n_bootstrap": 0, "overwrite": True}
    mlp = {"hidden_sizes": [32, 32], "dropout": 0.1, "epochs": 5}
    arts: dict[str, str] = {}
    for fam in families:
        out = work / f"art_{size}_{fam}"
        arts[fam] = str(out)
        if fam in ("rnn", "behrt") and size == "tiny":
            api.finetune(meds, target="cdai", model=fam, out=out, preset="tiny", **one)
        elif fam in ("rnn", "behrt"):
            api.finetune(meds, config=cfgs / f"cdai_{fam}.yaml", out=out, **one)
        elif fam in ("deepsurv", "logistic_hazard") and size == "tiny":
            api.finetune(meds, target="survival", model=fam, event_code="EVENT//FLARE", landmark_visit=1,
                         out=out, preset="tiny", overwrite=True, n_bootstrap=0)
        elif fam in ("deepsurv", "logistic_hazard"):
            api.finetune(meds, config=cfgs / "survival_flare.yaml", model=fam, model_overrides=mlp, out=out,
                         overwrite=True, n_bootstrap=0)
        else:
            from ehrseq.models.text_classifier import TextClassifier, TextClassifierConfig
            from ehrseq.synth.reports import generate_reports

            kw = {"epochs": 1, "mlm_epochs": 0, "self_train_rounds": 0}
            cfg = (TextClassifierConfig.from_preset("tiny", **kw) if size == "tiny"
                   else TextClassifierConfig.from_preset("small", ensemble=3, **kw))
            shutil.rmtree(out, ignore_errors=True)
            TextClassifier(cfg).fit(generate_reports(60, seed=1, site="A"),
                                    generate_reports(20, seed=2, site="A")).save(out)
    return arts


def _train(work: Path, families: list[str], package_dir: str | None, size: str) -> dict[str, str]:
    """:func:`train_artifacts` with the old package when there is one (the new one reads its artifacts; the old
    one may not read the new one's)."""
    if not package_dir:
        return train_artifacts(work, families, size)
    code = ("import json, sys; sys.path.append(sys.argv[1]); from pathlib import Path; "
            "from benchmarks.scoring import train_artifacts; "
            "print(json.dumps(train_artifacts(Path(sys.argv[2]), sys.argv[3].split(','), sys.argv[4])))")
    env = {**os.environ, "PYTHONPATH": package_dir, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code, str(REPO), str(work), ",".join(families), size], env=env,
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
    ap.add_argument("--sizes", default=",".join(SIZES), help="artifact sizes: tiny (preset) and/or default "
                    "(the shipped configs)")
    ap.add_argument("--baseline-ref", default="HEAD", help="git ref whose ehrseq is the 'old' side ('' to skip)")
    ap.add_argument("--workdir", default="/tmp/ehrseq-bench-scoring")
    ap.add_argument("--profile", action="store_true", help="add a cProfile of one run per family (new side, tiny)")
    ap.add_argument("--prefetch-ablation", action="store_true", help="also run the new side with prefetch=0")
    ap.add_argument("--repeats", type=int, default=2, help="runs per side and artifact; the fastest is kept")
    ap.add_argument("--only", default="", help="comma-separated working-tree files under ehrseq/: the 'new' side "
                    "is the baseline package with only these laid over it (when others edit the tree too)")
    a = ap.parse_args()
    import pyarrow.parquet as pq

    from ehrseq import api

    families = [f for f in a.families.split(",") if f]
    sizes = [z for z in a.sizes.split(",") if z]
    if not set(sizes) <= set(SIZES):
        ap.error(f"--sizes takes {', '.join(SIZES)}")
    work = Path(a.workdir)
    t_all = time.perf_counter()
    print(f"synthesizing {a.patients} patients ...", flush=True)
    api.synthesize(a.patients, out=work / "x1", extract=False, seed=0, biopsy_rate=0.3)
    data = str(work / "x1" / "meds")
    n_ev = sum(pq.ParquetFile(f).metadata.num_rows for f in (work / "x1" / "meds" / "data").glob("*.parquet"))
    scans = [run_case({"data": data}, fn="_scan")["scan_s"]]
    results: dict[str, dict[str, dict[str, Any]]] = {}
    only = [f for f in a.only.split(",") if f]
    with (old_package(a.baseline_ref) if a.baseline_ref else contextlib.nullcontext(None)) as old_dir, \
            (old_package(a.baseline_ref) if only else contextlib.nullcontext(None)) as new_dir:
        if new_dir:
            _overlay(new_dir, only)
        for d in (old_dir, new_dir, str(REPO / "ehrseq")):  # bytecode up front: no side pays compiling in a run
            if d:
                compileall.compile_dir(d, quiet=1)
        for size in sizes:
            print(f"training {size} artifacts ...", flush=True)
            arts = _train(work, families, old_dir, size)
            results[size] = {fam: _score_family(work, fam, size, arts[fam], data, old_dir, new_dir,
                                                a.profile and size == "tiny", a.repeats, a.prefetch_ablation)
                         for fam in families}
    scans.append(run_case({"data": data}, fn="_scan")["scan_s"])
    write_report(results, n_ev, a, time.perf_counter() - t_all, min(scans))


def _overlay(package_dir: str, files: list[str]) -> None:
    """Copy working-tree ``files`` (paths under ehrseq/) over the extracted package in ``package_dir``."""
    import shutil

    for f in files:
        if not f.startswith("ehrseq/") or not (REPO / f).is_file():
            raise SystemExit(f"--only: {f} is not a file under ehrseq/ in {REPO}")
        shutil.copyfile(REPO / f, Path(package_dir) / f)


def _score_family(work: Path, fam: str, size: str, artifact: str, data: str, old_dir: str | None,
                  new_dir: str | None, profile: bool, repeats: int, ablate: bool = False) -> dict[str, Any]:
    """Old and new scoring runs of one artifact (and a profile of the new one), their predictions compared."""
    spec: dict[str, Any] = {"artifact": artifact, "data": data}
    if fam == "behrt":  # one forward pass per CDAI visit would take minutes on one core
        spec["prediction_time"] = "2024-01-01"
    row: dict[str, Any] = {}
    for rep in range(repeats):  # sides alternate; each keeps its fastest run (the machine is shared)
        for side, pkg in (("new", new_dir), ("old", old_dir), ("new_p0", new_dir)):
            if (side == "old" and not old_dir) or (side == "new_p0" and not ablate):
                continue
            print(f"scoring {size} {fam} ({side}, run {rep + 1}) ...", flush=True)
            try:
                extra = {"prefetch": 0} if side == "new_p0" else {}
                r = run_case({**spec, **extra, "out": str(work / f"out_{size}_{fam}_{side}")}, pkg)
            except RuntimeError as e:
                print(str(e)[-1500:], file=sys.stderr)
                continue
            print(f"  {r['wall']:.1f}s, forward {100 * r['forward_s'] / r['wall']:.0f}%", flush=True)
            if side not in row or r["wall"] < row[side]["wall"]:
                row[side] = r
    if "old" in row and "new" in row:
        row["max_diff"] = _max_diff(work / f"out_{size}_{fam}_old", work / f"out_{size}_{fam}_new")
    if profile:
        print(f"profiling {fam} ...", flush=True)
        row["profile"] = run_case({**spec, "out": str(work / f"out_{size}_{fam}_prof"), "profile": True},
                                  new_dir)["profile"]
    return row


def _main_table(rows: dict[str, dict[str, Any]], scan: float) -> list[str]:
    body = ["| family | predictions | old s | new s | speed-up | new rows/s | forward share old / new "
            "| overhead old / new | wall / scan old / new | peak RSS MiB old / new | max abs diff old/new |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for fam, row in rows.items():
        new, old = row.get("new"), row.get("old")
        if new is None:
            continue
        fn = new["forward_s"] / new["wall"]
        md = f"{row['max_diff']:.1e}" if "max_diff" in row else "-"
        if old:
            fo = old["forward_s"] / old["wall"]
            o_s, sp, o_fw, o_ov = f"{old['wall']:.2f}", f"{old['wall'] / new['wall']:.2f}x", f"{100 * fo:.0f}%", \
                f"{100 * (1 - fo):.0f}%"
            o_sc, o_rss = f"{old['wall'] / scan:.1f}x", f"{old['peak_rss_mib']:.0f}"
        else:
            o_s = sp = o_fw = o_ov = o_sc = o_rss = "-"
        body.append(f"| {fam} | {new['predictions_written']:,} | {o_s} | {new['wall']:.2f} | {sp} "
                    f"| {new['predictions_written'] / new['wall']:,.0f} | {o_fw} / {100 * fn:.0f}% "
                    f"| {o_ov} / **{100 * (1 - fn):.0f}%** | {o_sc} / {new['wall'] / scan:.1f}x "
                    f"| {o_rss} / {new['peak_rss_mib']:.0f} | {md} |")
    return body


def _prefetch_table(rows: dict[str, dict[str, Any]]) -> list[str]:
    body = ["| family | wall s prefetch 1 / 0 | overhead prefetch 1 / 0 | CPU s prefetch 1 / 0 | CPU / wall 1 / 0 |",
            "|---|---:|---:|---:|---:|"]
    for fam, row in rows.items():
        p1, p0 = row.get("new"), row.get("new_p0")
        if p1 and p0:
            ov = [100 * (1 - r["forward_s"] / r["wall"]) for r in (p1, p0)]
            body.append(f"| {fam} | {p1['wall']:.2f} / {p0['wall']:.2f} | **{ov[0]:.0f}%** / {ov[1]:.0f}% "
                        f"| {p1['cpu']:.2f} / {p0['cpu']:.2f} | {p1['cpu'] / p1['wall']:.2f} / {p0['cpu'] / p0['wall']:.2f} |")
    return body if len(body) > 2 else []


def _split_table(rows: dict[str, dict[str, Any]]) -> list[str]:
    body = ["| family | imports s | wall | load | read+validate | labels | featurize | views+collate | tokenise "
            "| forward | write | rest |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for fam, row in rows.items():
        new = row.get("new")
        if new is None:
            continue
        tm = new.get("timings", {})
        tokenise = max(tm.get("forward", 0.0) - new["forward_s"], 0.0) if fam == "text" else 0.0
        parts = [new.get("load_s", 0.0), tm.get("io", 0.0), tm.get("labels", 0.0), tm.get("featurize", 0.0),
                 tm.get("views", 0.0), tokenise, new["forward_s"], tm.get("write", 0.0)]
        rest = new["wall"] - sum(parts)
        body.append(f"| {fam} | {new['imports_s']:.2f} | {new['wall']:.2f} | "
                    + " | ".join(f"{p:.2f}" for p in parts) + f" | {rest:.2f} |")
    return body


def write_report(results: dict[str, dict[str, dict[str, Any]]], n_ev: int, a: argparse.Namespace, total: float,
                 scan: float) -> None:
    from benchmarks.common import RESULTS, write_result

    only = [f for f in a.only.split(",") if f]
    titles = {"tiny": "Table 1: `preset='tiny'` artifacts (the unit-test size; forward pass far smaller than a "
                      "user's)",
              "default": "Table 2: artifacts at the shipped default size (configs/cdai_rnn.yaml, cdai_behrt.yaml, "
                         "survival_flare.yaml with each survival family, biopsy.yaml: preset 'small', the text "
                         "model a 3-member ensemble); what a user scores"}
    body = [
        f"Data: synthetic RA cohort, {a.patients:,} patients / {n_ev:,} events (MEDS Parquet, biopsy_rate 0.3), "
        "one shard per 250,000 rows. Artifacts trained on a separate 300-patient cohort (1 epoch: only the "
        "architecture matters here), with the old package. One thread per run (OMP_NUM_THREADS=1, torch 1; "
        "Arrow's pool follows OMP_NUM_THREADS), each run in its own subprocess; old and new runs alternate, "
        f"{a.repeats} of each, and each side keeps its fastest. 'old' = the ehrseq package of "
        f"`{a.baseline_ref}` (git archive); 'new' = " + (
            f"that package with only {', '.join(f'`{f}`' for f in only)} of the working tree laid over it. "
            if only else "the working tree (every uncommitted change in it, not only this issue's). ") +
        "Predictions: rows written; BEHRT at one prediction time per patient, every other "
        "family at its task's own rows. Wall time: the whole `score()` call (artifact load, input hashing, read "
        "+ validation, labels, featurize, forward, write), without importing the model modules (see 'imports "
        "s'), the same on both sides. 'forward share': the model's own forward entry point, timed from outside "
        "the package; 'overhead' = 1 - forward share. 'wall / scan': wall time over a plain pyarrow scan of the "
        f"same shards (`pq.read_table` of every shard, all columns, to Arrow; best of 3, one thread) = {scan:.3f} "
        "s in this run: the floor of any job that must read the data. Whole benchmark: "
        f"{total:.0f} s.", ""]
    for size, rows in results.items():
        body += [f"## {titles[size]}", "", *_main_table(rows, scan), "",
                 f"New side, the job's own split of its wall time ({size}; seconds): 'load' = Scorer.load (artifact "
                 "hashes, model build, and the model module's own imports: the discrete-time heads' pycox pulls "
                 "in sklearn, scipy.stats and numba); 'tokenise' = the text model's tokenisation (its "
                 "predict_proba minus the network's forward); 'rest' = input hashing, sharding, output files.",
                 "", *_split_table(rows), ""]
        if pre := _prefetch_table(rows):
            body += ["New side with the job's default `prefetch=1` (the next shard read, validated, labelled and "
                     "featurized on a thread while the model scores the current one) against `prefetch=0` (one "
                     "shard at a time), same run. With prefetch the split above overlaps, so its 'rest' can be "
                     "negative; CPU / wall above 1 is the second core at work.", "", *pre, ""]
    for fam, row in results.get("tiny", {}).items():
        if "profile" not in row:
            continue
        body += [f"Profile, {fam} (tiny, new side, cProfile; own time):", "",
                 "| function | own s | cumulative s | calls |", "|---|---:|---:|---:|"]
        body += [f"| `{f}` | {tt:.2f} | {ct:.2f} | {nc:,} |" for f, tt, ct, nc in row["profile"]]
        body.append("")
    old = RESULTS / "scoring.md"
    text = old.read_text() if old.exists() else ""
    keep = text[text.index("\n## Reading"):] if "\n## Reading" in text else ""  # the hand-written section
    path = write_result("`ehrseq score` per model family", "\n".join(body) + keep)
    print("\n".join(body))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
