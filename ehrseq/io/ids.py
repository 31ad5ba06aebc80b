"""Subject ids read exactly: int64, or a row-level reason why a value cannot be one.

MEDS stores ``subject_id`` as int64. Sources do not always: a float column, an unsigned 64-bit column, text.
Every reader (and the scoring quarantine) goes through :func:`parse_subject_ids`, which never rounds or wraps:

- integers are taken as they are; unsigned values above 2**63 - 1 are *out of range* (a cast would wrap them
  onto other, negative ids);
- floats must be whole numbers and below 2**53 in magnitude: a float64 above that cannot hold every integer,
  so two different ids may already be one value (``float_inexact``);
- text must be a whole number (``"12"``, ``" 12 "``, ``"12.0"``), parsed exactly, then range-checked.

Two patients are therefore never merged by a conversion: a value that cannot be represented is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min
FLOAT_EXACT = float(2**53)  # every integer of smaller magnitude is exactly representable in float64

# reason codes, in the order a row is judged
EMPTY, BOOLEAN, NOT_A_NUMBER, NOT_WHOLE, OUT_OF_RANGE, FLOAT_INEXACT = (
    "empty", "boolean", "not_a_number", "not_whole", "out_of_range", "float_inexact")


@dataclass
class ParsedIds:
    """``ids``: int64 (0 where ``reason`` is set); ``reason``: object array of None or a reason code per row;
    ``from_float``: the number of ids converted from a float column (whole numbers below 2**53)."""

    ids: np.ndarray
    reason: np.ndarray
    from_float: int = 0

    @property
    def ok(self) -> np.ndarray:
        """True where the row holds a valid id."""
        return np.asarray(self.reason == None, dtype=bool)  # noqa: E711  (elementwise)


def _from_floats(f: np.ndarray, reason: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(f)
        whole = finite & (f == np.round(np.where(finite, f, 0)))
        inexact = whole & (np.abs(np.where(finite, f, 0)) >= FLOAT_EXACT)
    reason[~finite & (reason == None)] = NOT_A_NUMBER  # noqa: E711  (elementwise)
    reason[finite & ~whole & (reason == None)] = NOT_WHOLE  # noqa: E711
    reason[inexact & (reason == None)] = FLOAT_INEXACT  # noqa: E711
    good = whole & ~inexact
    return np.where(good, np.where(good, f, 0), 0).astype(np.int64)


def _exact_text(v: object) -> tuple[int | None, str | None]:
    """One value as an exact Python int, or the reason it is not one."""
    if isinstance(v, bool | np.bool_):
        return None, BOOLEAN
    if isinstance(v, int | np.integer):
        n = int(v)
    elif isinstance(v, float | np.floating):
        fv = float(v)
        if not np.isfinite(fv):
            return None, NOT_A_NUMBER
        if fv != round(fv):
            return None, NOT_WHOLE
        if abs(fv) >= FLOAT_EXACT:
            return None, FLOAT_INEXACT
        n = int(fv)
    else:
        t = str(v).strip()
        if t.lstrip("+-").isdigit():
            n = int(t)
        else:
            try:
                fv = float(t)
            except ValueError:
                return None, NOT_A_NUMBER
            return _exact_text(fv) if np.isfinite(fv) else (None, NOT_A_NUMBER)
    if not INT64_MIN <= n <= INT64_MAX:
        return None, OUT_OF_RANGE
    return n, None


def parse_subject_ids(values: pd.Series) -> ParsedIds:
    """Convert one column to exact int64 ids; rows that cannot be converted get a reason (see module doc)."""
    s = values.reset_index(drop=True)
    n = len(s)
    reason = np.full(n, None, dtype=object)
    null = s.isna().to_numpy(dtype=bool)
    reason[null] = EMPTY
    if pd.api.types.is_bool_dtype(s.dtype):
        reason[~null] = BOOLEAN
        return ParsedIds(np.zeros(n, np.int64), reason)
    if pd.api.types.is_integer_dtype(s.dtype):
        if null.any():  # a nullable integer column: value by value (nulls already have their reason)
            return _per_value(s.to_numpy(dtype=object, na_value=None), reason)
        raw = s.to_numpy()
        if pd.api.types.is_unsigned_integer_dtype(s.dtype):
            big = raw > np.uint64(INT64_MAX)
            reason[big] = OUT_OF_RANGE
            raw = np.where(big, 0, raw)
        return ParsedIds(raw.astype(np.int64), reason)
    if pd.api.types.is_float_dtype(s.dtype):
        f = s.to_numpy(dtype="float64", na_value=np.nan)
        ids = _from_floats(f, reason)
        return ParsedIds(ids, reason, int((reason == None).sum()))  # noqa: E711
    # text or mixed objects: a fast path through pandas, exact per-value parsing where it could round
    obj = s.astype(object).where(~null, None)
    txt = obj.map(lambda v: v.strip() if isinstance(v, str) else v)
    num = pd.to_numeric(txt, errors="coerce")
    if pd.api.types.is_signed_integer_dtype(num.dtype) and not num.isna().any():
        return ParsedIds(num.to_numpy(np.int64), reason)
    if pd.api.types.is_float_dtype(num.dtype):
        f = num.to_numpy(dtype="float64", na_value=np.nan)
        with np.errstate(invalid="ignore"):
            safe = np.isfinite(f) & (np.abs(np.where(np.isfinite(f), f, 0)) < FLOAT_EXACT)
        if safe[~null].all():
            ids = _from_floats(f, reason)
            return ParsedIds(ids, reason)
    return _per_value(obj.to_numpy(dtype=object), reason)


def _per_value(raw: np.ndarray, reason: np.ndarray) -> ParsedIds:
    ids = np.zeros(len(raw), np.int64)
    for i, v in enumerate(raw):
        if reason[i] is not None:
            continue
        n, why = _exact_text(v)
        if why is not None:
            reason[i] = why
        else:
            ids[i] = n
    return ParsedIds(ids, reason)


__all__ = ["FLOAT_EXACT", "ParsedIds", "parse_subject_ids"]
