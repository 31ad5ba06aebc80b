"""The scoring job: shards, atomic writes, resume, the local and Ray engines, the CLI."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ehrseq.artifacts import sha256_file
from ehrseq.cli_options import add_score_args  # noqa: F401  (defined torch-free for `ehrseq --help`)
from ehrseq.errors import DataValidationError
from ehrseq.io.code_map import apply_code_map, resolve_code_map
from ehrseq.io.files import parquet_file
from ehrseq.io.guards import OutputLock, check_output
from ehrseq.io.validate import (
    ValidationPolicy,
)
from ehrseq.scoring.constants import JOB_FORMAT, LOCK_FILE, QUARANTINE_FILE
from ehrseq.scoring.predict import TRUTH_COLUMNS, LabelSource, Scorer, _parse_prediction_time
from ehrseq.scoring.prefetch import Prefetched
from ehrseq.scoring.reading import (
    _EventStream,
    _QuarantineWriter,
    _raw_batches,
    _resolve_source,
    file_policies,
)
from ehrseq.scoring.reaper import Reaper
from ehrseq.scoring.shards import (  # noqa: F401
    _finish_and_write,
    _score_and_write,
    _shard_stats,
    _write_shard,
    shard_path,
)
from ehrseq.scoring.summary import QuarantineLimitError, ScoreSummary, ScoringError

log = logging.getLogger(__name__)


def _shards(frames: Iterator[pd.DataFrame], shard_rows: int) -> Iterator[tuple[int, pd.DataFrame]]:
    """Cut the stream of whole-subject frames into shards: a shard closes at the first subject boundary where
    it holds >= shard_rows canonical rows. The boundaries depend on the rows only, not on how frames arrive."""
    buf: list[pd.DataFrame] = []
    n = 0
    i = 0
    for frame in frames:
        while len(frame):
            sid = frame["subject_id"].to_numpy()
            ends = np.r_[np.flatnonzero(sid[1:] != sid[:-1]) + 1, len(sid)]  # exclusive end of each subject
            full = np.flatnonzero(n + ends >= shard_rows)
            if not len(full):
                buf.append(frame)
                n += len(frame)
                break
            cut = int(ends[full[0]])
            buf.append(frame.iloc[:cut])
            yield i, pd.concat(buf, ignore_index=True)
            i += 1
            buf, n = [], 0
            frame = frame.iloc[cut:].reset_index(drop=True)
    if buf:
        yield i, pd.concat(buf, ignore_index=True)


# ============================================================================================ output files
def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _file_sha256(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(sha256_file(f).encode())
    return h.hexdigest()


# ================================================================================================ the job
def score(
    artifact: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    prediction_time: str | None = None,
    labels: str | Path | None = None,
    batch_rows: int = 65_536,
    shard_rows: int = 250_000,
    max_quarantine_fraction: float = 0.01,
    engine: Literal["local", "ray"] = "local",
    resume: bool = True,
    column_map: Mapping[str, str] | None = None,
    policy: ValidationPolicy | None = None,
    after_shard: Callable[[int, Path], None] | None = None,
    horizons: Sequence[float] | None = None,
    overwrite: bool = False,
    code_map: str | Path | Mapping[str, str] | None = None,
    prefetch: int = 1,
) -> ScoreSummary:
    """Score ``data`` (MEDS root / Parquet files, or an EHR-extract directory) with a sequence-model artifact.

    Prediction rows: one per row of the MEDS label file ``labels``; else one per subject at
    ``prediction_time`` (ISO 8601); else the artifact target's default rows (cdai: each CDAI measurement
    with a later one, as :func:`ehrseq.api.predict`). Writes ``out/part-NNNNN.parquet`` shards (input subject
    order), ``out/_quarantine.parquet``, ``out/_job.json`` and, on success, ``out/_SUCCESS.json``.

    batch_rows: raw rows read at a time. shard_rows: canonical event rows per output shard (a subject is never
    split; part of the job identity). resume: skip shards already written by an interrupted run of the same
    job (False: delete this job's earlier output first). overwrite: replace the output of a *different* job in
    ``out`` (otherwise refused). after_shard(i, path): called after each shard is written (progress reporting;
    tests use it to simulate a crash). code_map: a code map (:mod:`ehrseq.io.code_map`) applied to every shard.
    prefetch: shards read, validated and featurized ahead on a background thread while the model scores the
    current one (local engine; 0: none, one shard at a time). Each adds one shard's events and features to
    peak memory; outputs are the same for every value.

    The job's identity (``out/_job.json``) is the artifact, the input's content (sha256 of every file, streamed),
    and every option that changes the output (prediction rows, shard_rows, horizons, column_map, policy); not
    batch_rows, prefetch, the engine or the quarantine limit, which change neither predictions nor quarantine. One process
    writes to ``out`` at a time (``out/_lock``; a second is refused, a dead one's lock taken over).
    Raises ArtifactError (tampered / unsupported artifact), DataValidationError (unreadable or empty input, a time
    column whose format is wrong for the whole file), ScoringError (out holds another job, ray missing),
    OutputLockedError (another process is writing to out), QuarantineLimitError (too many bad rows; finished
    shards are kept).
    """
    t_start = time.perf_counter()
    if prediction_time is not None and labels is not None:
        raise ValueError("pass either prediction_time or labels, not both")
    if batch_rows < 1 or shard_rows < 1:
        raise ValueError("batch_rows and shard_rows must be >= 1")
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
        raise ValueError(f"prefetch must be a whole number >= 0 (shards made ahead), got {prefetch!r}")
    if not 0 <= max_quarantine_fraction <= 1:
        raise ValueError("max_quarantine_fraction must be in [0, 1]")
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', not '{engine}'")
    if engine == "ray":
        _import_ray()
    policy = policy or ValidationPolicy()
    cmap = resolve_code_map(code_map)  # a bad map file fails before any output
    out = Path(out)
    check_output(out, overwrite=True)  # writable (an existing job dir is checked by _prepare_out)
    scorer = Scorer.load(artifact, horizons=horizons)
    src = _resolve_source(data)
    if src.kind == "meds" and src.total_rows == 0:
        raise DataValidationError("has no rows: there is nothing to score", file=str(data), n_rows=0,
                                  hint="Check the export (every .parquet file under the path is empty)")
    file_policies(src, column_map, policy)  # time formats judged per file; a bad file fails before any output
    if prediction_time is not None:
        _parse_prediction_time(prediction_time)
        source = LabelSource("time", prediction_time=str(prediction_time))
    elif labels is not None:
        from ehrseq.io.meds import _parquet_files

        lfiles = _parquet_files(labels)
        schemas = [parquet_file(f).schema_arrow for f in lfiles]  # an unreadable label file is named
        types = {sc.field("subject_id").type for sc in schemas if "subject_id" in sc.names}
        if not types or not all(pa.types.is_signed_integer(t) for t in types):
            raise DataValidationError("label file needs an integer subject_id column (signed, int64)",
                                      file=str(labels), column="subject_id",
                                      hint="MEDS label files store subject_id as int64")
        names = set.intersection(*(set(sc.names) for sc in schemas))
        truth = tuple(c for c in TRUTH_COLUMNS[scorer.head] if c in names)
        source = LabelSource("labels", labels_files=tuple(str(f) for f in lfiles), truth_columns=truth)
    else:
        if not scorer.can_default():
            raise ScoringError(f"{artifact}: its task '{scorer.spec.name}' came from a label file; pass --labels "
                               "(or --prediction-time) to say where to predict")
        source = LabelSource("default")

    job = {
        "format": JOB_FORMAT,
        "artifact_sha256": scorer.artifact_sha256,
        "artifact_id": scorer.artifact_id,
        "data": src.fingerprint(),
        "prediction_time": None if prediction_time is None else str(prediction_time),
        "labels_sha256": _file_sha256([Path(f) for f in source.labels_files]) if source.labels_files else None,
        "shard_rows": int(shard_rows),
        "horizons": list(scorer.horizons),
        "column_map": dict(column_map or {}),
        "policy": asdict(policy),
        **({"code_map": cmap} if cmap else {}),
    }
    job_hash = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:16]
    out.mkdir(parents=True, exist_ok=True)
    with OutputLock(out / LOCK_FILE, "scoring output"):
        return _run_job(scorer, src, source, out, job, job_hash, resume=resume, overwrite=overwrite,
                        batch_rows=batch_rows, shard_rows=shard_rows, column_map=column_map, policy=policy,
                        engine=engine, artifact=artifact, after_shard=after_shard,
                        max_quarantine_fraction=max_quarantine_fraction, t_start=t_start, code_map=cmap,
                        prefetch=prefetch)


def _run_job(scorer: Scorer, src: Any, source: LabelSource, out: Path, job: dict[str, Any], job_hash: str, *,
             resume: bool, overwrite: bool, batch_rows: int, shard_rows: int, column_map: Mapping[str, str] | None,
             policy: ValidationPolicy, engine: str, artifact: str | Path,
             after_shard: Callable[[int, Path], None] | None, max_quarantine_fraction: float,
             t_start: float, code_map: Mapping[str, str] | None = None, prefetch: int = 1) -> ScoreSummary:
    """The body of :func:`score`, run while holding ``out``'s lock."""
    done = _prepare_out(out, job, job_hash, resume, overwrite)

    summary = ScoreSummary(out=str(out), artifact_id=scorer.artifact_id, artifact_sha256=scorer.artifact_sha256,
                           engine=engine)
    timings: Counter[str] = Counter()
    quarantine = _QuarantineWriter(out)

    def check_budget() -> None:
        total = max(src.total_rows, stream.rows_read)
        if quarantine.count > max_quarantine_fraction * total:
            dups = (f"; subject ids whose rows are not contiguous (DUPLICATE_SUBJECT): {stream.duplicate_ids}"
                    if stream.duplicate_ids else "")
            raise QuarantineLimitError(  # the shards kept are counted where it reaches the job's thread
                f"{quarantine.count} of {total} input rows failed validation, more than max_quarantine_fraction="
                f"{max_quarantine_fraction} ({dict(quarantine.reasons)}{dups})")

    stream = _EventStream(quarantine, policy, check_budget)
    finished: list[dict[str, Any]] = []
    try:
        shards = _shards(stream.frames(_raw_batches(src, batch_rows, column_map, policy)), shard_rows)
        shards = ((i, apply_code_map(ev, code_map)[0]) for i, ev in shards) if code_map else shards
        if engine == "local":
            # read, validate, label and featurize the next shard on a thread while the model scores this one
            ready = ((i, None if i in done else scorer.prepare(events, source)) for i, events in shards)
            ahead = Prefetched(ready, depth=prefetch) if prefetch else None
            try:
                for i, prepared in ahead if ahead is not None else ready:
                    if prepared is None:
                        finished.append(done[i])
                        summary.shards_skipped += 1
                        continue
                    stats = _finish_and_write(scorer, out, i, prepared, job_hash)
                    timings.update(stats.pop("timings"))
                    finished.append(stats)
                    if after_shard is not None:
                        after_shard(i, shard_path(out, i))
            finally:
                if ahead is not None:
                    ahead.close()  # before the quarantine file closes: the thread may be writing to it
        else:
            finished = _run_ray(shards, done, summary, timings, out, artifact, source, job_hash, after_shard,
                                scorer.horizons)
    except QuarantineLimitError as e:
        raise QuarantineLimitError(
            f"{e}; stopped after {len(finished)} shard(s), which are kept in {out}. See {quarantine.final} "
            "(reason_code, source_file, source_row) and fix the input, or raise the limit "
            "(--max-quarantine-fraction) and rerun to resume") from None
    finally:
        quarantine.close()
    timings["io"] += stream.seconds

    summary.rows_read = stream.rows_read
    summary.rows_quarantined = quarantine.count
    summary.rows_accepted = stream.rows_read - quarantine.count
    summary.quarantine_reasons = dict(sorted(quarantine.reasons.items()))
    summary.subjects_read = stream.subjects
    summary.shards = len(finished)
    summary.predictions_written = sum(s["predictions"] for s in finished)
    summary.subjects_scored = sum(s["subjects_scored"] for s in finished)
    if source.labels_files:
        total_labels = sum(pq.ParquetFile(f).metadata.num_rows for f in source.labels_files)
        summary.label_rows_without_events = total_labels - summary.predictions_written
        if summary.label_rows_without_events:
            log.warning("%d label row(s) name subjects with no accepted events; they have no prediction",
                        summary.label_rows_without_events)
    for stale in sorted(out.glob("part-*.parquet")):  # shards beyond the last one belong to nobody: never here
        if int(stale.stem.split("-")[1]) >= len(finished):
            raise ScoringError(f"{stale} is not part of this job's output; remove it")
    if summary.predictions_written == 0:
        summary.warnings.append(
            f"no prediction rows: none of the {summary.subjects_read} subject(s) read has a row to predict at "
            f"({source.mode} rows); check --labels / --prediction-time or the artifact's task")
    for w in summary.warnings:
        log.warning("%s: %s", out, w)
    summary.seconds = round(time.perf_counter() - t_start, 3)
    summary.timings = {k: round(v, 3) for k, v in sorted(timings.items())}
    _atomic_json(out / "_SUCCESS.json", {**summary.to_dict(), "job_hash": job_hash})
    log.info("scored %d subjects: %d predictions in %d shard(s), %d row(s) quarantined, %.1fs",
             summary.subjects_scored, summary.predictions_written, summary.shards, summary.rows_quarantined,
             summary.seconds)
    return summary


def _job_files(out: Path) -> list[Path]:
    return [*out.glob("part-*.parquet"), out / "_SUCCESS.json", out / QUARANTINE_FILE]


def _prepare_out(out: Path, job: dict[str, Any], job_hash: str, resume: bool,
                 overwrite: bool = False) -> dict[int, dict[str, Any]]:
    """Check ``out`` (its lock is held); return the stats of shards already finished by this job (resuming)."""
    jpath = out / "_job.json"
    if jpath.exists():
        try:
            old = json.loads(jpath.read_text())
        except ValueError:
            old = {}
        if old.get("job_hash") != job_hash:
            old_job = old.get("job", {}) if isinstance(old.get("job"), dict) else {}
            diff = sorted(k for k in set(old_job) | set(job) if old_job.get(k) != job.get(k))
            if not overwrite:
                raise ScoringError(
                    f"{out} holds the output of a different scoring job (differs in: {', '.join(diff) or 'format'}); "
                    "choose another --out, or pass --overwrite to replace it")
            log.warning("%s: replacing the output of a different scoring job (--overwrite)", out)
            resume = False
        if not resume:
            for f in _job_files(out):
                f.unlink(missing_ok=True)
    elif any(p.name.startswith("part-") for p in out.iterdir()):
        raise ScoringError(f"{out} holds prediction shards but no _job.json; choose an empty --out")
    _atomic_json(jpath, {"job_hash": job_hash, "job": job})
    (out / "_SUCCESS.json").unlink(missing_ok=True)
    for tmp in out.glob(".part-*.tmp-*"):  # left by a killed run
        tmp.unlink()
    done: dict[int, dict[str, Any]] = {}
    for p in sorted(out.glob("part-*.parquet")):
        st = _shard_stats(p)
        if st and st.get("job_hash") == job_hash:
            done[int(st["shard"])] = st
    return done


# ================================================================================================== ray


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ScoringError("engine 'ray' needs Ray Data: pip install 'ehrseq[ray]'") from e
    return ray


class RayShardScorer:
    """Ray Data callable class: holds the model once per actor; each input row names a staged shard."""

    def __init__(self, artifact: str, source: LabelSource, out: str, job_hash: str,
                 horizons: Sequence[float] = ()) -> None:
        torch.set_num_threads(1)
        self.scorer = Scorer.load(artifact, horizons=horizons or None)
        self.source, self.out, self.job_hash = source, Path(out), job_hash

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        res = []
        for i, path in zip(batch["shard"], batch["path"]):
            events = pq.read_table(str(path)).to_pandas()
            events["time"] = events["time"].astype("datetime64[us]")
            res.append(json.dumps(_score_and_write(self.scorer, self.out, int(i), events, self.source,
                                                   self.job_hash)))
            Path(str(path)).unlink()
        return {"shard": np.asarray(batch["shard"], np.int64), "stats": np.asarray(res, dtype=object)}


def _run_ray(shards: Iterator[tuple[int, pd.DataFrame]], done: dict[int, dict[str, Any]], summary: ScoreSummary,
             timings: Counter[str], out: Path, artifact: str | Path, source: LabelSource, job_hash: str,
             after_shard: Callable[[int, Path], None] | None, horizons: Sequence[float] = ()) -> list[dict[str, Any]]:
    """Stage the shards' canonical events to out/_staging, then score them with Ray Data map_batches.

    The read/validate/shard pass is sequential (it carries subjects across batches) and stays in the driver;
    featurize + forward + write run in one actor with a fractional CPU so reads are not starved on small
    machines.
    """
    ray = _import_ray()
    staging = out / "_staging"
    staging.mkdir(exist_ok=True)
    items = []
    n = 0
    for i, events in shards:
        n = i + 1
        if i in done:
            summary.shards_skipped += 1
            continue
        p = staging / f"events-{i:05d}.parquet"
        t0 = time.perf_counter()
        pq.write_table(pa.Table.from_pandas(events, preserve_index=False), p)
        timings["stage"] += time.perf_counter() - t0
        items.append({"shard": i, "path": str(p)})
    new: dict[int, dict[str, Any]] = {}
    if items:
        started = not ray.is_initialized()
        # a kill -9 of this job stops the cluster it starts (a cluster it did not start is left alone)
        with Reaper() if started else contextlib.nullcontext():
            try:
                if started:
                    ray.init(num_cpus=max(os.cpu_count() or 1, 1), include_dashboard=False, log_to_driver=False,
                             configure_logging=False)
                ctx = ray.data.DataContext.get_current()
                ctx.execution_options.preserve_order = True
                ctx.enable_progress_bars = False
                ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                    RayShardScorer, batch_size=1, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.5,
                    fn_constructor_kwargs={"artifact": str(Path(artifact).resolve()), "source": source,
                                           "out": str(out.resolve()), "job_hash": job_hash,
                                           "horizons": list(horizons)})
                for row in ds.iter_rows():
                    st = json.loads(row["stats"])
                    timings.update(st.pop("timings"))
                    new[int(row["shard"])] = st
                    if after_shard is not None:
                        after_shard(int(row["shard"]), shard_path(out, int(row["shard"])))
            finally:
                if started:
                    ray.shutdown()
    shutil.rmtree(staging, ignore_errors=True)
    return [done[i] if i in done else new[i] for i in range(n)]




# =================================================================================================== CLI
def _column_map(items: list[str] | None) -> dict[str, str] | None:
    out: dict[str, str] = {}
    for it in items or []:
        if "=" not in it:
            raise ScoringError(f"--column-map takes SOURCE=TARGET pairs, got '{it}'")
        k, v = it.split("=", 1)
        out[k] = v
    return out or None


def run_score(args: argparse.Namespace) -> int:
    """Run :func:`score` from parsed ``ehrseq score`` arguments; prints the summary as JSON."""
    s = score(args.artifact, args.data, args.out, prediction_time=args.prediction_time, labels=args.labels,
              batch_rows=args.batch_rows, shard_rows=args.shard_rows,
              max_quarantine_fraction=args.max_quarantine_fraction, engine=args.engine, resume=args.resume,
              column_map=_column_map(args.column_map), horizons=args.horizons,
              overwrite=getattr(args, "overwrite", False), code_map=getattr(args, "code_map", None),
              prefetch=getattr(args, "prefetch", 1))
    print(json.dumps(s.to_dict(), indent=2))
    return 0
