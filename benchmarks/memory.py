"""Peak memory of `finetune` and `pretrain` as the extract grows: 1x, 4x and 16x a synthetic MEDS cohort.

The 1x cohort is synthesized once; the larger ones repeat its patients under new subject ids (each copy a MEDS
shard of its own, splits repeated), so every scale has the same events per patient and the same task. Each
measurement runs in a fresh Python process (one thread: ``OMP_NUM_THREADS=1``) and reports its own peak
resident memory (``VmHWM``, which counts the file-backed pages of memory-mapped stores it touched) and its
peak anonymous memory (``RssAnon`` of ``/proc/self/status``, sampled every 20 ms by a thread: heap, arrays,
tensors; no file pages). ``finetune`` / ``pretrain`` stream the MEDS shards through an on-disk feature store
(:mod:`ehrseq.recipes.streamed`, :mod:`ehrseq.data.store`); the baselines ``finetune_mem`` / ``pretrain_mem``
are the same calls on the in-memory path (``EHRSEQ_STREAM=0``), and ``scan`` a plain Parquet scan of the same
files into pandas, all measured in the same run at every scale.

Training is capped (one epoch, tiny preset, ``max_train_seconds``): what grows with the extract is the data
held in memory (events, featurized sequences, labels), not the model.

    python -m benchmarks.memory                       # 1x = 1,500 patients; scales 1 4 16
    python -m benchmarks.memory --patients 1000       # what results/memory.md was run with (15 min limit)
    python -m benchmarks.memory --patients 500 --scales 1 4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import write_result

CHILD_TRAIN = {"epochs": 1, "progress": False, "max_train_seconds": 20.0}
JOBS = ["scan", "finetune", "pretrain", "finetune_mem", "pretrain_mem"]
SAMPLE_SECONDS = 0.02


def replicate(src: Path, dst: Path, k: int) -> int:
    """``src`` (a MEDS root) repeated ``k`` times under new subject ids into ``dst``; returns the event count."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    (dst / "data").mkdir(parents=True)
    (dst / "metadata").mkdir()
    for f in ("codes.parquet", "dataset.json"):
        shutil.copy(src / "metadata" / f, dst / "metadata" / f)
    shards = sorted((src / "data").glob("*.parquet"))
    tables = [pq.read_table(s) for s in shards]
    offset = 10 ** (len(str(max(pc.max(t["subject_id"]).as_py() for t in tables))) + 1)
    n = 0
    splits = pq.read_table(src / "metadata" / "subject_splits.parquet")
    parts = []
    for i in range(k):
        for j, t in enumerate(tables):
            ids = pc.add(t["subject_id"], pa.scalar(i * offset, t.schema.field("subject_id").type))
            pq.write_table(t.set_column(t.schema.get_field_index("subject_id"), "subject_id", ids),
                           dst / "data" / f"{i:03d}_{j:03d}.parquet")  # names sort in subject order
            n += t.num_rows
        sid = pc.add(splits["subject_id"], pa.scalar(i * offset, splits.schema.field("subject_id").type))
        parts.append(splits.set_column(splits.schema.get_field_index("subject_id"), "subject_id", sid))
    pq.write_table(pa.concat_tables(parts), dst / "metadata" / "subject_splits.parquet")
    return n


def child(job: str, data: str, out: str) -> None:
    """Run one job in this process and print its peak RSS and peak anonymous memory (MiB) and wall seconds as
    JSON. A ``_mem`` job is the same job on the in-memory path (``EHRSEQ_STREAM=0``)."""
    if job.endswith("_mem"):
        os.environ["EHRSEQ_STREAM"] = "0"
        job = job[: -len("_mem")]
    anon = AnonPeak()
    t = time.perf_counter()
    if job == "scan":
        import pyarrow.dataset as ds

        df = ds.dataset(Path(data) / "data", format="parquet").to_table().to_pandas()
        assert len(df)
    else:
        from ehrseq import api

        if job == "finetune":
            api.finetune(data, target="cdai", model="rnn", preset="tiny", out=out, train=CHILD_TRAIN, n_bootstrap=0)
        elif job == "pretrain":
            from ehrseq.recipes.pretrain import pretrain

            pretrain(data, out=out, model="behrt", preset="tiny", train=CHILD_TRAIN)
        else:
            raise SystemExit(f"unknown job {job}")
    print(json.dumps({"peak_mib": peak_mib(), "anon_mib": anon.stop(), "seconds": time.perf_counter() - t}))


def _status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class AnonPeak:
    """The peak of this process's ``RssAnon`` while it runs, sampled by a daemon thread."""

    def __init__(self) -> None:
        self.peak, self._stop = _status_mib("RssAnon"), threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.peak = max(self.peak, _status_mib("RssAnon"))

    def stop(self) -> float:
        """Stop sampling; the peak in MiB."""
        self._stop.set()
        self._t.join()
        return max(self.peak, _status_mib("RssAnon"))


def peak_mib() -> float:
    """This process's peak resident memory in MiB: ``VmHWM`` of its own address space. (``ru_maxrss`` is not
    used: Linux carries it across fork and exec, so a child launched by a big parent reports the parent's.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(job: str, data: Path, out: Path) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EHRSEQ_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--child", job, str(data), str(out)],
                       capture_output=True, text=True, check=False, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{job} on {data} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run the benchmark (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--patients", type=int, default=1500, help="patients of the 1x cohort")
    p.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--jobs", nargs="+", default=JOBS)
    p.add_argument("--child", nargs=3, metavar=("JOB", "DATA", "OUT"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(*a.child)
        return
    from ehrseq import api

    tmp = Path(tempfile.mkdtemp(prefix="ehrseq_mem_"))
    try:
        api.synthesize(a.patients, out=tmp / "base", seed=0, extract=False, biopsy_rate=0.0)
        rows, events = [], {}
        for s in a.scales:
            root = tmp / f"x{s}"
            events[s] = replicate(tmp / "base" / "meds", root, s)
            res = {j: measure(j, root, tmp / f"out_{j}_{s}") for j in a.jobs}
            rows.append((s, res))
            print(s, events[s], {j: round(r["peak_mib"]) for j, r in res.items()}, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    first = dict(rows[0][1])
    ratios = [f"{j} / scan" for j in a.jobs if j != "scan"] if "scan" in a.jobs else []
    head = ["scale", "events", *[f"{j} peak MiB" for j in a.jobs], *ratios,
            *[f"{j} vs 1x" for j in a.jobs], *[f"{j} s" for j in a.jobs if j != "scan"]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s, res in rows:
        cells = [f"{s}x", f"{events[s]:,}", *[f"{res[j]['peak_mib']:.0f}" for j in a.jobs]]
        if "scan" in res:
            cells += [f"{res[j]['peak_mib'] / res['scan']['peak_mib']:.2f}" for j in a.jobs if j != "scan"]
        cells += [f"{res[j]['peak_mib'] / first[j]['peak_mib']:.2f}x" for j in a.jobs]
        cells += [f"{res[j]['seconds']:.0f}" for j in a.jobs if j != "scan"]
        lines.append("| " + " | ".join(cells) + " |")
    head = ["scale", "events", *[f"{j} anon MiB" for j in a.jobs], *[f"{j} anon vs 1x" for j in a.jobs]]
    anon = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s, res in rows:
        cells = [f"{s}x", f"{events[s]:,}", *[f"{res[j]['anon_mib']:.0f}" for j in a.jobs],
                 *[f"{res[j]['anon_mib'] / first[j]['anon_mib']:.2f}x" for j in a.jobs]]
        anon.append("| " + " | ".join(cells) + " |")
    body = "Peak resident memory (`VmHWM`, file-backed pages of the memory-mapped store included):\n\n" + \
        "\n".join(lines) + "\n\nPeak anonymous memory (`RssAnon`, sampled every " + \
        f"{SAMPLE_SECONDS * 1000:.0f} ms):\n\n" + "\n".join(anon) + (
        f"\n\n1x = {a.patients} synthetic patients (`api.synthesize(seed=0)`); larger scales repeat them under new "
        "ids. Peak = `VmHWM` of a fresh process per job (imports included: about 110 MiB for pyarrow and pandas, "
        "more with torch). `scan` = pyarrow dataset scan of the same shards into pandas. `finetune` / `pretrain` "
        "stream the shards (the default for a MEDS root with splits); `*_mem` = the in-memory path "
        "(`EHRSEQ_STREAM=0`), the baseline. One thread per process. Training is capped "
        f"({CHILD_TRAIN}), so the figures measure the data held in memory.\n")
    print(write_result("Peak memory of finetune and pretrain against the extract's size", body))


if __name__ == "__main__":
    main()
