"""One time format per file and column, decided from the whole column before any batch is parsed.

:func:`ehrseq.io.validate.parse_time_column` decides two things from the values it is given: whether
``01/02/2020``-style dates are day-first (a part > 12 settles it), and whether the column mixes time zones.
A streaming reader that hands it one batch at a time would decide per batch, so the batch size would change
which rows pass. :class:`TimeFormatScan` sees every value of a text time column once (in chunks), then
:meth:`TimeFormatScan.policy` returns the policy to parse every batch of that file with (``dayfirst`` fixed),
or raises the file-level error (mixed zones, mixed or ambiguous day/month order) naming the file and column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa

from ehrseq.errors import DataValidationError
from ehrseq.io.validate import _DMY, _TZ_SUFFIX, ValidationPolicy, _mixed_tz_error


class TimeFormatScan:
    """Accumulates what decides the format of one text time column, chunk by chunk (no values are kept)."""

    def __init__(self, file: str, column: str = "time") -> None:
        self.file, self.column = file, column
        self.n_dmy = 0
        self.a_big = self.b_big = self.a_ne_b = False
        self.offsets: set[str] = set()
        self.n_zoned = 0
        self.n_naive = 0

    def add(self, values: pd.Series) -> None:
        """Look at one chunk of the column (text or nulls)."""
        s = values.astype(object)
        is_text = s.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
        if not is_text.any():
            return
        text = s[is_text].str.strip()
        text = text[text != ""]
        dmy = text.str.extract(_DMY)
        matched = dmy[0].notna().to_numpy()
        if matched.any():
            a = pd.to_numeric(dmy.loc[matched, 0]).to_numpy()
            b = pd.to_numeric(dmy.loc[matched, 1]).to_numpy()
            self.n_dmy += int(matched.sum())
            self.a_big |= bool((a > 12).any())
            self.b_big |= bool((b > 12).any())
            self.a_ne_b |= bool((a != b).any())
        off = text.str.extract(_TZ_SUFFIX)[0]
        zoned = off.notna().to_numpy()
        if zoned.any():
            norm = off[zoned].str.replace("Z", "+00:00").str.replace(r"^([+-]\d{2})(\d{2})$", r"\1:\2", regex=True)
            self.offsets.update(norm.unique().tolist())
        self.n_zoned += int(zoned.sum())
        self.n_naive += int((~zoned).sum())

    def policy(self, base: ValidationPolicy) -> ValidationPolicy:
        """``base`` with the file's day/month order fixed; raises the file-level format errors."""
        mixed = len(self.offsets) > 1 or (self.n_zoned > 0 and self.n_naive > 0)
        if mixed and not base.utc:
            raise _mixed_tz_error(self.column, self.file, self.n_zoned + self.n_naive, [])
        if not self.n_dmy or base.dayfirst is not None:
            return base
        if self.a_big and self.b_big:
            raise DataValidationError("mixes day-first and month-first dates", file=self.file, column=self.column,
                                      n_rows=self.n_dmy, hint="Write the column in one format, ideally ISO 8601 "
                                                              "(YYYY-MM-DD).")
        if not self.a_big and not self.b_big and self.a_ne_b:
            raise DataValidationError(
                "has ambiguous dates: every day and month part is <= 12, so day/month order cannot be told",
                file=self.file, column=self.column, n_rows=self.n_dmy,
                hint="Use ISO 8601 dates (YYYY-MM-DD), or score from Python with ValidationPolicy(dayfirst=True) "
                     "for day/month/year or dayfirst=False for month/day/year (the command line has no such "
                     "option).")
        return replace(base, dayfirst=bool(self.a_big or not self.b_big))


def is_text_type(arrow_type: object) -> bool:
    """Whether a Parquet/Arrow column type holds text (so its time format must be scanned)."""
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    return bool(pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
                or getattr(pa.types, "is_string_view", lambda _t: False)(arrow_type))



def coerce_times(values: pd.Series, policy: ValidationPolicy) -> pd.Series:
    """Parse a time column value by value, as :func:`~ehrseq.io.validate.parse_time_column` would with
    ``policy`` (day/month order already decided), but with NaT where a value cannot be read instead of an error.

    Zoned values are converted to UTC and made naive, naive values kept: the result for every readable value is
    the one ``parse_time_column`` gives. Used to find the rows to quarantine in a batch that failed as a whole.
    """
    s = values.reset_index(drop=True).astype(object)
    out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[us]")
    is_text = s.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
    if is_text.any():
        text = s[is_text].str.strip()
        dmy = text.str.extract(_DMY)
        matched = dmy[0].notna().to_numpy()
        if matched.any() and policy.dayfirst is not None:
            first, second = dmy.loc[matched, 0], dmy.loc[matched, 1]
            day, month = (first, second) if policy.dayfirst else (second, first)
            text = text.copy()
            text[matched] = (dmy.loc[matched, 2] + "-" + month.str.zfill(2) + "-" + day.str.zfill(2)
                             + dmy.loc[matched, 3]).to_numpy()
        parsed = pd.to_datetime(text.where(text != "", None), format="ISO8601", errors="coerce", utc=True)
        out[is_text] = parsed.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[us]").to_numpy()
    other = ~is_text & s.notna().to_numpy()
    if other.any():
        parsed = pd.to_datetime(s[other], errors="coerce", utc=True)
        out[other] = parsed.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[us]").to_numpy()
    return out


def file_time_policy(path: str | Path, policy: ValidationPolicy, *, column_map: Mapping[str, str] | None = None,
                     label: str | None = None, batch_rows: int = 262_144) -> ValidationPolicy:
    """The policy to parse one Parquet file's time column with, judged from the whole column (only that column
    is read, and only when it holds text). A numeric time column, mixed time zones and mixed or ambiguous
    day/month order are a DataValidationError naming the file (``label``, default the path)."""
    from ehrseq.io.files import iter_parquet_batches, parquet_file

    name = label or str(path)
    time_col = {v: k for k, v in dict(column_map or {}).items()}.get("time", "time")
    pf = parquet_file(path)
    if time_col not in pf.schema_arrow.names:
        return policy  # the missing column is reported when the rows are read
    t = pf.schema_arrow.field(time_col).type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        raise DataValidationError(f"holds numbers, not timestamps (type {t})", file=name, column="time",
                                  n_rows=pf.metadata.num_rows, hint="Store times as a timestamp type or ISO 8601 "
                                  "text (YYYY-MM-DD[THH:MM:SS]).")
    if not is_text_type(t):
        return policy
    scan = TimeFormatScan(name, "time")
    for b in iter_parquet_batches(pf, path, batch_size=batch_rows, columns=[time_col]):
        scan.add(b.column(0).to_pandas())
    return scan.policy(policy)


__all__ = ["TimeFormatScan", "coerce_times", "file_time_policy", "is_text_type"]
