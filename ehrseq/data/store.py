"""An on-disk store of one split's featurized rows, filled batch by batch, read as a :class:`SequenceDataset`.

:class:`FeatureStore` takes the split's label rows up front (a few columns per row: they stay in memory, as the
predictions need them) and then batches of events of whole subjects (:meth:`FeatureStore.add`): each batch's
rows are featurized with the fitted featurizer, and what the model reads is appended to files -- the RNN's step
vectors, or BEHRT's token views (:func:`~ehrseq.data.token_views.token_views`, range-checked per batch) --
while the batch's events and flat per-event arrays are dropped. :meth:`FeatureStore.dataset` maps the files
(``numpy.memmap``): peak memory then holds one batch, not the extract, and the dataset's rows, in the label
table's order, are those of ``make_dataset(fz.transform(events, labels), ...)`` array for array.

Why plain ``.npy`` memory maps and not an Arrow / Hugging Face ``datasets`` table: the trainer gathers padded
batches from flat numeric arrays by row ranges (``SequenceDataset.batch``), which a memory map serves with no
copy and no conversion; an Arrow table would be converted to numpy per batch, and ``datasets`` adds a
dependency (and its cache) for what is a handful of fixed-width columns. The files live in a temporary
directory (under ``TMPDIR``) removed when the dataset is garbage collected or the process exits.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ehrseq.data.dataset import SequenceDataset, check_token_ids
from ehrseq.data.token_views import KEYS, token_views
from ehrseq.featurize.featureset import FeatureSet
from ehrseq.featurize.featurizer import Featurizer

ROW_CHUNK = 4096  # rows copied at a time when the token views are put in label order


class _Appender:
    """A flat array written to a file in pieces; ``read()`` maps what was written."""

    def __init__(self, path: Path, dtype: Any, width: int | None = None) -> None:
        self.path, self.dtype, self.width, self.n = path, np.dtype(dtype), width, 0
        self.f = open(path, "wb")  # noqa: SIM115 (closed by read)
        self.lo, self.hi = 0, 0

    def append(self, a: np.ndarray) -> None:
        a = np.ascontiguousarray(a, self.dtype)
        if len(a) and a.dtype.kind == "i":
            self.lo, self.hi = min(self.lo, int(a.min())), max(self.hi, int(a.max()))
        self.f.write(a.tobytes())
        self.n += len(a)

    def read(self) -> np.ndarray:
        self.f.close()
        shape = (self.n,) if self.width is None else (self.n, self.width)
        if not self.n:
            return np.zeros(shape, self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=shape)

    def compact_dtype(self) -> np.dtype:
        """The dtype ``SequenceDataset`` caches these values in: the smallest of int16 / int32 holding them."""
        if self.dtype.kind != "i" or not self.n:
            return self.dtype
        for dt in (np.int16, np.int32):
            if np.iinfo(dt).min <= self.lo and self.hi <= np.iinfo(dt).max:
                return np.dtype(dt)
        return self.dtype


class FeatureStore:
    """One split's rows for ``model`` ("rnn": steps; "behrt": token views), written under a temporary
    directory batch by batch (:meth:`add`), then read by :meth:`dataset`."""

    def __init__(self, fz: Featurizer, model: str, labels: pd.DataFrame, *,
                 id_limits: dict[str, int] | None = None, directory: str | Path | None = None) -> None:
        self.fz, self.model, self.id_limits = fz, model, id_limits
        self.labels = labels.reset_index(drop=True)
        self.sid = self.labels["subject_id"].to_numpy(np.int64)
        self.dir = Path(tempfile.mkdtemp(prefix="ehrseq_store_", dir=directory))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.dir, ignore_errors=True)
        n = len(self.labels)
        self.static_x = np.zeros((n, fz.n_static_features), np.float32)
        self.done = np.zeros(n, bool)
        self.counts: dict[str, int] = {}
        if model == "rnn":
            self.steps = _Appender(self.dir / "step_x.bin", np.float32, fz.n_step_features)
            self.step_start = np.zeros(n, np.int64)
            self.step_cut = np.zeros(n, np.int64)
        else:
            self.views = {k: _Appender(self.dir / f"{k}.bin", np.float32 if k == "value_num" else np.int64)
                          for k in KEYS}
            self.tok_at = np.zeros(n, np.int64)  # each row's first token in the files
            self.tok_len = np.zeros(n, np.int64)

    def add(self, events: pd.DataFrame) -> None:
        """Featurize the label rows of the subjects of ``events`` (all of each subject's events) and append
        them; rows of subjects not in ``events`` wait for their batch."""
        pos = np.flatnonzero(np.isin(self.sid, events["subject_id"].unique()))
        if not len(pos):
            return
        if self.done[pos].any():
            raise ValueError("a batch repeats subjects whose rows are already stored")
        fs = self.fz.transform(events, self.labels.iloc[pos])
        for k, v in fs.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v
        self.static_x[pos] = fs.static_x
        self.done[pos] = True
        if self.model == "rnn":
            self.step_start[pos] = fs.step_start + self.steps.n
            self.step_cut[pos] = fs.step_cut + self.steps.n
            self.steps.append(fs.step_x)
            return
        cfg = self.fz.config
        offsets, flat = token_views(fs, cfg.max_len, cfg.max_visits, cfg.positions)
        check_token_ids(flat, offsets, self.sid[pos], self.id_limits)
        self.tok_at[pos] = offsets[:-1] + self.views["code_ids"].n
        self.tok_len[pos] = np.diff(offsets)
        for k, v in flat.items():
            self.views[k].append(v)

    def _placeholder(self, step_x: np.ndarray) -> FeatureSet:
        """The FeatureSet the dataset reads: labels, static_x, steps; no flat token arrays (not kept)."""
        e = np.zeros(0, np.int64)
        n = len(self.labels)
        return FeatureSet(
            labels=self.labels, tok_code=e, tok_age=e, tok_visit=e, tok_delta=e, tok_value=e,
            tok_num=np.zeros(0, np.float32), tok_start=np.zeros(n, np.int64), tok_cut=np.zeros(n, np.int64),
            static_tokens=[], age_at_pred=np.zeros(n, np.int64), step_x=step_x,
            step_start=self.step_start if self.model == "rnn" else np.zeros(n, np.int64),
            step_cut=self.step_cut if self.model == "rnn" else np.zeros(n, np.int64),
            static_x=self.static_x, counts=dict(self.counts))

    def dataset(self, targets: np.ndarray | None) -> SequenceDataset:
        """The stored rows as the dataset ``make_dataset`` builds in memory (``targets`` aligned with the
        labels); the files stay until the dataset is garbage collected."""
        if not self.done.all():
            raise ValueError(f"{int((~self.done).sum())} label row(s) have no batch: their subjects' events "
                             "were never added")
        cfg = self.fz.config
        kw = {"max_len": cfg.max_len, "max_visits": cfg.max_visits, "max_steps": cfg.max_visits,
              "positions": cfg.positions}
        if self.model == "rnn":
            ds = SequenceDataset(self._placeholder(self.steps.read()), targets, tokens=False, steps=True, **kw)
        else:
            offsets, views = self._token_files()
            fs = self._placeholder(np.zeros((0, self.fz.n_step_features), np.float32))
            ds = SequenceDataset.from_token_views(fs, targets, offsets, views, **kw)
        ds._store = self  # type: ignore[attr-defined]  # the files live as long as the dataset reads them
        return ds

    def _token_files(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The token views in label-row order, in the dtypes the in-memory cache uses, as memory maps."""
        offsets = np.r_[0, np.cumsum(self.tok_len)].astype(np.int64)
        total = int(offsets[-1])
        in_order = bool(np.array_equal(self.tok_at, offsets[:-1]))
        out = {}
        for k, app in self.views.items():
            src, dt = app.read(), app.compact_dtype()
            if not total:
                out[k] = np.zeros(0, dt)
                continue
            dst = np.lib.format.open_memmap(self.dir / f"{k}.npy", mode="w+", dtype=dt, shape=(total,))
            for r0 in range(0, len(offsets) - 1, ROW_CHUNK):
                r1 = min(r0 + ROW_CHUNK, len(offsets) - 1)
                a, b = int(offsets[r0]), int(offsets[r1])
                if in_order:
                    dst[a:b] = src[a:b]
                else:
                    n = self.tok_len[r0:r1]
                    idx = np.repeat(self.tok_at[r0:r1] - offsets[r0:r1], n) + np.arange(a, b)
                    dst[a:b] = src[idx]
            dst.flush()
            del dst
            app.path.unlink()
            out[k] = np.load(self.dir / f"{k}.npy", mmap_mode="r")
        return offsets, out


__all__ = ["FeatureStore"]
