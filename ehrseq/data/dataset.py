"""A torch Dataset over a FeatureSet, the collate function that pads to a typed Batch, and length buckets.

BEHRT's token views are built once per dataset (``cache_tokens``), so every epoch reads them instead of
rebuilding them, their lengths are known up front (:class:`LengthBucketSampler` batches rows of similar length,
so little compute goes to padding) and their ids are range-checked once (``id_limits``), not in every forward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ehrseq.data.batch import CLS_ID, PAD_ID, Batch
from ehrseq.data.token_views import token_views
from ehrseq.errors import DataValidationError
from ehrseq.featurize.featurizer import FeatureSet, build_tokens

_CLS_ONLY = np.array([CLS_ID], np.int64)
TOKEN_KEYS = ("code_ids", "age_ids", "segment_ids", "position_ids", "time_ids", "value_ids")
BUCKET_WINDOW = 50  # batches per sorting window of LengthBucketSampler


class SequenceDataset(Dataset):
    """Item ``i`` is label row ``i`` of the FeatureSet, sliced at its prediction_time.

    targets: (N, K) float32 array aligned with ``fs.labels`` or None (scoring).
    cache_tokens: build every row's token view once here (the default) rather than in each ``__getitem__``.
    id_limits: exclusive upper bound per token key (``BehrtConfig.id_limits()``); with the cache, an id outside
        it raises DataValidationError here, naming the key, the row count and subject ids.
    ``lengths``: (N,) tokens per row (1 per row without tokens), what length buckets sort on.
    """

    def __init__(
        self,
        fs: FeatureSet,
        targets: np.ndarray | None = None,
        *,
        max_len: int = 256,
        max_visits: int = 64,
        max_steps: int = 64,
        tokens: bool = True,
        steps: bool = True,
        positions: str = "first",
        cache_tokens: bool = True,
        id_limits: Mapping[str, int] | None = None,
    ) -> None:
        if targets is not None and len(targets) != len(fs):
            raise ValueError(f"targets has {len(targets)} rows but the feature set has {len(fs)}")
        self.fs = fs
        self.targets = None if targets is None else np.asarray(targets, np.float32).reshape(len(fs), -1)
        self.max_len, self.max_visits, self.max_steps = max_len, max_visits, max_steps
        self.positions = positions  # BEHRT visit numbering, see build_tokens
        self.subject_ids = fs.labels["subject_id"].to_numpy(np.int64)
        self.tokens, self.steps = tokens, steps  # which views to build (the RNN needs no tokens, BEHRT no steps)
        self._cache: dict[str, np.ndarray] | None = None
        self._offsets: np.ndarray | None = None if tokens else np.arange(len(fs) + 1, dtype=np.int64)
        self._step_window: tuple[np.ndarray, np.ndarray] | None = None  # built by the first batch()
        if tokens and cache_tokens:
            self._build_cache(id_limits)

    @property
    def lengths(self) -> np.ndarray:
        """(N,) int64 tokens per row."""
        if self._offsets is None:  # uncached tokens: counted once, on demand
            self._offsets = np.r_[0, np.cumsum([len(self._tokens(i)["code_ids"]) for i in range(len(self))])]
        return np.diff(self._offsets).astype(np.int64)

    @classmethod
    def from_token_views(cls, fs: FeatureSet, targets: np.ndarray | None, offsets: np.ndarray,
                         views: Mapping[str, np.ndarray], **kwargs: Any) -> SequenceDataset:
        """A token dataset over views built elsewhere (:func:`~ehrseq.data.token_views.token_views`' offsets
        and flat arrays, already checked and compacted; e.g. memory-mapped from :mod:`ehrseq.data.store`).
        ``fs`` needs labels, static_x and a (0, F) step_x only; ``kwargs``: the constructor's settings."""
        ds = cls(fs, targets, tokens=True, steps=False, cache_tokens=False, **kwargs)
        ds._offsets, ds._cache = np.asarray(offsets, np.int64), dict(views)
        return ds

    def _tokens(self, i: int) -> dict[str, np.ndarray]:
        return build_tokens(self.fs, i, self.max_len, self.max_visits, self.positions)

    def _build_cache(self, id_limits: Mapping[str, int] | None) -> None:
        self._offsets, flat = token_views(self.fs, self.max_len, self.max_visits, self.positions)
        check_token_ids(flat, self._offsets, self.subject_ids, id_limits)
        self._cache = {k: _compact(v) for k, v in flat.items()}

    def __len__(self) -> int:
        return len(self.fs)

    def __getitems__(self, indices: Sequence[int]) -> Rows:
        """The rows ``indices`` as a lazy :class:`Rows` (what a DataLoader hands its collate function):
        :func:`collate` pads them with :meth:`batch` in a few array operations instead of row by row."""
        return Rows(self, indices)

    def batch(self, indices: Sequence[int] | np.ndarray) -> Batch:
        """The padded batch of rows ``indices``, equal to ``collate([self[i] for i in indices])``, built from the
        flat arrays with one gather per view (tokens, steps) instead of one slice per row and key."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        if not len(idx):
            raise ValueError("a batch needs at least one row")
        fs = self.fs
        if (self.tokens and self._cache is None) or fs.step_x.ndim != 2:  # tokens built per row: no flat arrays
            return collate([self[int(i)] for i in idx])
        b = len(idx)
        if self.tokens:
            lo = self._offsets[idx]
            n = self._offsets[idx + 1] - lo
        else:
            lo, n = np.zeros(b, np.int64), np.ones(b, np.int64)
        L = int(n.max())
        at, real = _window(lo, n, L)
        tok = {k: np.full((b, L), PAD_ID, np.int64) for k in TOKEN_KEYS}
        num = np.zeros((b, L), np.float32)
        if self.tokens:
            for k, v in self._cache.items():  # type: ignore[union-attr]
                if k == "value_num" or k in tok:
                    out = num if k == "value_num" else tok[k]
                    out[...] = _take(v, at)
                    out[~real] = 0 if k == "value_num" else PAD_ID
        else:
            tok["code_ids"][:, 0] = CLS_ID
        F = fs.step_x.shape[1]
        if self.steps:
            if self._step_window is None:  # every row's [first, last) step kept, computed once per dataset
                hi = np.asarray(fs.step_cut, np.int64)
                first = np.maximum(np.asarray(fs.step_start, np.int64), hi - self.max_steps)
                self._step_window = first, np.maximum(hi - first, 0)
            s_lo, m = self._step_window[0][idx], self._step_window[1][idx]
        else:
            s_lo, m = np.zeros(b, np.int64), np.zeros(b, np.int64)
        s_at, smask = _window(s_lo, m, max(int(m.max()), 1))
        steps = np.asarray(_take(fs.step_x, s_at), np.float32) if len(fs.step_x) else \
            np.zeros((*s_at.shape, F), np.float32)
        steps[~smask] = 0  # left-aligned; visit_mask marks real steps
        mask = real.astype(np.int64)
        return Batch(
            subject_id=torch.from_numpy(self.subject_ids[idx]),
            **{k: torch.from_numpy(v) for k, v in tok.items()},
            attention_mask=torch.from_numpy(mask),
            visit_x=torch.from_numpy(steps),
            visit_mask=torch.from_numpy(smask),
            static_x=torch.from_numpy(np.asarray(fs.static_x[idx], np.float32)),
            labels=None if self.targets is None else torch.from_numpy(self.targets[idx]),
            value_num=torch.from_numpy(num),
        )

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        fs = self.fs
        if not self.tokens:
            item: dict[str, np.ndarray] = {"code_ids": _CLS_ONLY}
        elif self._cache is not None:
            lo, hi = self._offsets[i], self._offsets[i + 1]
            item = {k: v[lo:hi] for k, v in self._cache.items()}
        else:
            item = self._tokens(i)
        if self.steps:
            lo, hi = int(fs.step_start[i]), int(fs.step_cut[i])
            item["steps"] = fs.step_x[max(lo, hi - self.max_steps):hi]
        else:
            item["steps"] = fs.step_x[:0]
        item["static"] = fs.static_x[i]
        item["subject_id"] = self.subject_ids[i]
        if self.targets is not None:
            item["labels"] = self.targets[i]
        return item


def check_token_ids(flat: Mapping[str, np.ndarray], offsets: np.ndarray, subject_ids: np.ndarray,
                    id_limits: Mapping[str, int] | None) -> None:
    """DataValidationError, naming the key, the row count and subject ids, when a token id of the flat views
    (rows cut by ``offsets``) lies outside ``id_limits`` (exclusive upper bound per key)."""
    for k, hi in (id_limits or {}).items():
        v = flat[k]
        bad = (v < 0) | (v >= hi)
        if bad.any():
            rows = np.unique(np.searchsorted(offsets, np.flatnonzero(bad), side="right") - 1)
            raise DataValidationError(
                f"token ids lie outside the model's embedding table [0, {hi})", column=k, n_rows=len(rows),
                subject_ids=subject_ids[rows].tolist(),
                hint="the model and the featurizer that built these rows disagree: use the featurizer "
                     "saved with the model (its artifact), or refit both")


class Rows(Sequence[dict[str, np.ndarray]]):
    """Rows ``indices`` of a :class:`SequenceDataset`, read lazily: a sequence of its items (``ds[i]``) for any
    collate function, which :func:`collate` pads with ``ds.batch(indices)`` without building the items."""

    def __init__(self, ds: SequenceDataset, indices: Sequence[int] | np.ndarray) -> None:
        self.dataset, self.indices = ds, np.asarray(indices, np.int64).reshape(-1)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return Rows(self.dataset, self.indices[k])
        return self.dataset[int(self.indices[k])]


def _window(starts: np.ndarray, counts: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, width) source index of each padded cell of ranges [starts[r], starts[r] + counts[r]) (padding cells
    repeat a valid index) and the (B, width) mask of real cells."""
    pos = np.arange(width)
    return starts[:, None] + pos, pos < counts[:, None]


def _take(v: np.ndarray, at: np.ndarray) -> np.ndarray:
    """``v[at]`` along the first axis, indices clipped into range (padding cells are overwritten after)."""
    return v.take(at, axis=0, mode="clip")


def collate(items: Sequence[dict[str, np.ndarray]]) -> Batch:
    """Pad tokens to the longest sequence (right padding) and steps to the longest history.

    ``items`` from a dataset's ``__getitems__`` (:class:`Rows`) are padded by :meth:`SequenceDataset.batch`, in
    array operations; any other sequence of items row by row (the same batch either way)."""
    if isinstance(items, Rows):
        return items.dataset.batch(items.indices)
    b = len(items)
    L = max(len(it["code_ids"]) for it in items)
    V = max(max(len(it["steps"]) for it in items), 1)
    F = items[0]["steps"].shape[1] if items[0]["steps"].ndim == 2 else 0
    tok = {k: np.full((b, L), PAD_ID, np.int64) for k in TOKEN_KEYS}
    mask = np.zeros((b, L), np.int64)
    num = np.zeros((b, L), np.float32)
    steps = np.zeros((b, V, F), np.float32)
    smask = np.zeros((b, V), bool)
    for r, it in enumerate(items):
        n = len(it["code_ids"])
        for k in TOKEN_KEYS:
            if k in it:
                tok[k][r, :n] = it[k]
        mask[r, :n] = 1
        if "value_num" in it:
            num[r, :n] = it["value_num"]
        m = len(it["steps"])
        steps[r, :m] = it["steps"]  # left-aligned; visit_mask marks real steps
        smask[r, :m] = True
    labels = np.stack([it["labels"] for it in items]) if "labels" in items[0] else None
    return Batch(
        subject_id=torch.as_tensor(np.array([it["subject_id"] for it in items], np.int64)),
        **{k: torch.from_numpy(v) for k, v in tok.items()},
        attention_mask=torch.from_numpy(mask),
        visit_x=torch.from_numpy(steps),
        visit_mask=torch.from_numpy(smask),
        static_x=torch.from_numpy(np.stack([it["static"] for it in items]).astype(np.float32)),
        labels=None if labels is None else torch.from_numpy(labels.astype(np.float32)),
        value_num=torch.from_numpy(num),
    )


def _compact(v: np.ndarray) -> np.ndarray:
    """The smallest of int16 / int32 that holds integer array ``v`` (float arrays as they are)."""
    if v.dtype.kind != "i" or not len(v):
        return v
    lo, hi = int(v.min()), int(v.max())
    for dt in (np.int16, np.int32):
        if np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max:
            return v.astype(dt)
    return v


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of row indices of similar length, so a batch pads to little more than its longest row.

    Shuffled (the default): each epoch draws a permutation with ``(seed, epoch)``, sorts each window of
    ``window * batch_size`` consecutive rows of it by length, cuts the result into batches of ``batch_size`` (the
    last one shorter) and shuffles their order. Every row is in exactly one batch per epoch; the same seed and
    epoch give the same batches; there are ``ceil(N / batch_size)`` of them, as with an unbucketed loader.
    Not shuffled: one pass in length order (inference; see :class:`LengthOrdered`).
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, *, seed: int = 0, epoch: int = 0,
                 shuffle: bool = True, window: int = BUCKET_WINDOW) -> None:
        if batch_size < 1 or window < 1:
            raise ValueError(f"batch_size and window must be >= 1, got {batch_size} and {window}")
        self.lengths, self.batch_size = np.asarray(lengths, np.int64), int(batch_size)
        self.seed, self.epoch, self.shuffle, self.window = int(seed), int(epoch), shuffle, int(window)

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        n, bs = len(self.lengths), self.batch_size
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            yield from (order[j:j + bs].tolist() for j in range(0, n, bs))
            return
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = length_buckets(rng.permutation(n), self.lengths, bs, self.window)
        for k in rng.permutation(len(batches)):
            yield batches[k].tolist()


def length_buckets(perm: np.ndarray, lengths: np.ndarray, batch_size: int,
                   window: int = BUCKET_WINDOW) -> list[np.ndarray]:
    """``perm`` (a random order of row indices) cut into spans of ``window * batch_size`` rows, each sorted by
    ``lengths`` (stable), then into batches of ``batch_size`` (the last one shorter): batches of similar-length
    rows, in span order; the caller shuffles their order with its own generator."""
    n, span = len(perm), window * batch_size
    parts = [perm[s:s + span] for s in range(0, n, span)]
    order = np.concatenate([p[np.argsort(lengths[p], kind="stable")] for p in parts]) if n else perm
    return [order[j:j + batch_size] for j in range(0, n, batch_size)]


def bucketed_batches(ds: SequenceDataset, batch_size: int, seed: int,
                     collate_fn: Callable[[Sequence[dict[str, np.ndarray]]], Batch] | None = None,
                     ) -> Callable[[int], DataLoader]:
    """The trainer's ``batches(epoch)`` hook: ``ds`` in length buckets (:class:`LengthBucketSampler`)."""

    def batches(epoch: int) -> DataLoader:
        sampler = LengthBucketSampler(ds.lengths, batch_size, seed=seed, epoch=epoch)
        return DataLoader(ds, batch_sampler=sampler, collate_fn=collate_fn or collate)

    return batches


class LengthOrdered(Dataset):
    """``ds`` read in length order (stable), for inference and tuning losses with little padding.

    ``restore(values)`` puts per-row results computed over this view back in ``ds``'s order. A model whose
    output does not depend on padding (BEHRT's) gives the same per-row results either way.
    """

    def __init__(self, ds: SequenceDataset) -> None:
        self.ds = ds
        self.order = np.argsort(ds.lengths, kind="stable")

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self.ds[int(self.order[i])]

    def __getitems__(self, indices: Sequence[int]) -> Rows:
        """Rows ``indices`` of this view, as rows of ``ds`` (padded in array operations by :func:`collate`)."""
        return Rows(self.ds, self.order[np.asarray(indices, np.int64)])

    def restore(self, values: np.ndarray) -> np.ndarray:
        """(N, ...) rows in this view's order -> the same rows in the dataset's order."""
        out = np.empty_like(values)
        out[self.order] = values
        return out
