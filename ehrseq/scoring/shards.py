"""One output shard of a scoring job: its file name, its atomic write with the stats in its footer, and the
per-shard scoring function both engines (local, Ray) call."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ehrseq.scoring.constants import META_KEY
from ehrseq.scoring.predict import LabelSource, PreparedShard, Scorer


def shard_path(out: Path, i: int) -> Path:
    """The path of output shard ``i`` in ``out``."""
    return out / f"part-{i:05d}.parquet"


def _write_shard(out: Path, i: int, table: pa.Table, stats: dict[str, Any]) -> Path:
    """Write one shard atomically (temporary file, then os.replace); the footer records ``stats``."""
    path = shard_path(out, i)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    meta = dict(table.schema.metadata or {})
    meta[META_KEY] = json.dumps(stats, sort_keys=True).encode()
    try:
        pq.write_table(table.replace_schema_metadata(meta), tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _shard_stats(path: Path) -> dict[str, Any] | None:
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    raw = meta.get(META_KEY)
    return json.loads(raw) if raw else None


def _score_and_write(scorer: Scorer, out: Path, i: int, events: pd.DataFrame, source: LabelSource,
                     job_hash: str) -> dict[str, Any]:
    """Score one shard of canonical events and write part-<i>.parquet; returns its stats (with timings)."""
    return _finish_and_write(scorer, out, i, scorer.prepare(events, source), job_hash)


def _finish_and_write(scorer: Scorer, out: Path, i: int, prepared: PreparedShard, job_hash: str) -> dict[str, Any]:
    """Score one shard made ready by :meth:`Scorer.prepare` and write part-<i>.parquet; its stats (with timings)."""
    table, tm = scorer.finish(prepared)
    events = prepared.events
    t0 = time.perf_counter()
    stats = {"job_hash": job_hash, "shard": i, "input_rows": int(len(events)),
             "subjects": int(events["subject_id"].nunique()), "predictions": table.num_rows,
             "subjects_scored": int(len(pc.unique(table["subject_id"]))) if table.num_rows else 0}
    _write_shard(out, i, table, stats)
    tm["write"] = tm.get("write", 0.0) + time.perf_counter() - t0
    return {**stats, "timings": tm}
