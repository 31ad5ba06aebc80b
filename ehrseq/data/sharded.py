"""Reading a MEDS directory in batches of whole subjects, for recipes that stream over its shards.

A recipe given a MEDS root with subject splits (:func:`sharded_root`) reads it twice with :func:`batches`
(validated as :func:`ehrseq.io.read_meds` validates it, each batch a few hundred thousand rows of whole
subjects, in ascending subject order): once to build its labels and fit the featurizer
(:class:`ehrseq.featurize.sharded.FitAccumulator`) and hash the data (:class:`RowHasher`), once to featurize each
split into an on-disk store (:func:`stream_datasets`). Peak memory then holds one batch plus the label rows,
not the extract. Shards whose subjects are not in ascending order (hash-partitioned) raise
:class:`OutOfOrder`; the recipes then read the extract whole, which gives the same result.

Set ``EHRSEQ_STREAM=0`` to read every extract whole (the in-memory path).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ehrseq.data.dataset import SequenceDataset
from ehrseq.data.store import FeatureStore
from ehrseq.featurize.featurizer import Featurizer
from ehrseq.io.meds import iter_meds_batches
from ehrseq.utils import EVENT_HASH_COLUMNS, FrameHasher

STREAM_ENV = "EHRSEQ_STREAM"
BATCH_ROWS = 1 << 17  # events per batch (about; whole subjects)
HASH_COLUMNS = list(EVENT_HASH_COLUMNS)


class OutOfOrder(Exception):
    """The shards' subjects are not in ascending order: the data cannot be streamed in frame order."""


def sharded_root(data: Any) -> Path | None:
    """``data`` as a MEDS root to stream: a path to a directory with ``data/`` Parquet shards and
    ``metadata/subject_splits.parquet`` (and no EHR-extract ``patients`` table); None otherwise, or when
    ``EHRSEQ_STREAM=0``."""
    if os.environ.get(STREAM_ENV, "").strip() == "0" or not isinstance(data, str | os.PathLike):
        return None
    p = Path(data)
    if not (p / "data").is_dir() or not (p / "metadata" / "subject_splits.parquet").is_file():
        return None
    if any((p / f"patients.{ext}").exists() for ext in ("csv", "parquet")):
        return None
    return p if any((p / "data").rglob("*.parquet")) else None


def batches(root: Path, column_map: Mapping[str, str] | None = None, keep: Any = None,
            batch_rows: int | None = None) -> Iterator[pd.DataFrame]:
    """Canonical events of ``root`` in batches of whole subjects, ascending, each restricted to the subject ids
    ``keep`` (None: all; ``batch_rows``: events per batch, default :data:`BATCH_ROWS`); concatenated they are ``read_meds(root).events`` (restricted). :class:`OutOfOrder`
    when a batch's subjects come before an earlier batch's."""
    keep_ids = None if keep is None else np.unique(np.asarray(keep, np.int64))
    last: int | None = None
    for b in iter_meds_batches(root, batch_rows=batch_rows or BATCH_ROWS, column_map=column_map):
        sid = b["subject_id"].to_numpy(np.int64)
        if last is not None and int(sid.min()) <= last:
            raise OutOfOrder(str(root))
        last = int(sid.max())
        if keep_ids is not None:
            b = b.loc[np.isin(sid, keep_ids)].reset_index(drop=True)
        if len(b):
            yield b


class RowHasher(FrameHasher):
    """:class:`ehrseq.utils.FrameHasher` over the columns an artifact's data hash covers (default)."""

    def __init__(self, columns: list[str] | None = None) -> None:
        super().__init__(columns or HASH_COLUMNS)


def stream_datasets(root: Path, column_map: Mapping[str, str] | None, keep: Any, fz: Featurizer, model: str,
                    parts: Mapping[str, tuple[pd.DataFrame, np.ndarray | None]],
                    id_limits: dict[str, int] | None = None) -> dict[str, SequenceDataset]:
    """One pass over ``root``: each part's label rows (``parts``: name -> (labels, targets)) featurized with the
    fitted ``fz`` into an on-disk store, read back as the dataset ``make_dataset`` would build for ``model``."""
    stores = {name: FeatureStore(fz, model, lab, id_limits=id_limits) for name, (lab, _) in parts.items()}
    for b in batches(root, column_map, keep):
        for s in stores.values():
            s.add(b)
    return {name: stores[name].dataset(targets) for name, (_, targets) in parts.items()}


__all__ = ["BATCH_ROWS", "STREAM_ENV", "OutOfOrder", "RowHasher", "batches", "sharded_root", "stream_datasets"]
