"""Time columns parsed at the boundary: ISO 8601 and day/month/year text, time-zone-aware values converted to
UTC and made naive, ambiguous day/month orders stopped with a question (:class:`ValidationPolicy` answers it)."""

from __future__ import annotations

import pandas as pd

from ehrseq.errors import DataValidationError
from ehrseq.io.policy import _DMY, _TZ_SUFFIX, ValidationPolicy, ValidationReport, _ids, _rows, _where


def parse_time_column(
    values: pd.Series,
    *,
    column: str,
    file: str | None,
    policy: ValidationPolicy,
    report: ValidationReport,
    subject_ids: pd.Series | None = None,
) -> pd.Series:
    """Convert one column of dates/timestamps to naive ``datetime64[us]`` (null -> NaT).

    Accepts datetime columns (zoned ones converted to UTC), ISO 8601 text, and day/month/year text
    (``policy.dayfirst``). Raises on numbers, unparseable text, mixed time zones and ambiguous dates.
    """
    s = values.reset_index(drop=True)
    where = _where(file)
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        report.timezone_converted += int(s.notna().sum())
        return s.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[us]")
    if pd.api.types.is_datetime64_dtype(s.dtype):
        return s.astype("datetime64[us]")
    if pd.api.types.is_numeric_dtype(s.dtype) and not s.isna().all():
        raise DataValidationError(
            f"holds numbers, not timestamps (dtype {s.dtype})", file=where, column=column,
            n_rows=int(s.notna().sum()), subject_ids=_ids(subject_ids, s.notna()),
            hint="Store times as a timestamp type or ISO 8601 text (YYYY-MM-DD[THH:MM:SS]).",
        )
    kind = pd.api.types.infer_dtype(s, skipna=True)
    if kind in ("empty",) or s.isna().all():
        return pd.Series(pd.NaT, index=s.index, dtype="datetime64[us]")
    if kind != "string":
        return _parse_time_objects(s, column=column, where=where, policy=policy, report=report,
                                   subject_ids=subject_ids)
    return _parse_time_text(s.astype(object), column=column, where=where, policy=policy, report=report,
                            subject_ids=subject_ids)


def _parse_time_objects(s: pd.Series, *, column: str, where: str, policy: ValidationPolicy,
                        report: ValidationReport, subject_ids: pd.Series | None) -> pd.Series:
    try:
        parsed = pd.to_datetime(s, utc=policy.utc)
    except (ValueError, TypeError) as e:
        if "tz" in str(e).lower() or "zone" in str(e).lower() or "offset" in str(e).lower():
            raise _mixed_tz_error(column, where, int(s.notna().sum()), []) from None
        raise DataValidationError(
            "holds values that are not timestamps", file=where, column=column, n_rows=int(s.notna().sum()),
            hint="Store times as a timestamp type or ISO 8601 text.",
        ) from None
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        report.timezone_converted += int(parsed.notna().sum())
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed.astype("datetime64[us]")


def _mixed_tz_error(column: str, where: str, n: int, ids: list[object]) -> DataValidationError:
    return DataValidationError(
        "mixes time zones (or zoned and naive timestamps)", file=where, column=column, n_rows=n,
        subject_ids=ids,
        hint="Convert the column to one time zone, or read it from Python with ValidationPolicy(utc=True) "
             "to convert every value to UTC, naive values taken as UTC (the command line has no such option).",
    )


def _parse_time_text(s: pd.Series, *, column: str, where: str, policy: ValidationPolicy,
                     report: ValidationReport, subject_ids: pd.Series | None) -> pd.Series:
    stripped = s.str.strip()
    null = (s.isna() | (stripped == "")).to_numpy()
    text = stripped.where(~null, None)
    report.times_parsed_from_text += int((~null).sum())

    # Day/month/year (or month/day/year) text: decide the order, then rewrite as ISO 8601.
    dmy = text.str.extract(_DMY)
    matched = dmy[0].notna().to_numpy()
    if matched.any():
        a = pd.to_numeric(dmy.loc[matched, 0]).to_numpy()
        b = pd.to_numeric(dmy.loc[matched, 1]).to_numpy()
        dayfirst = policy.dayfirst
        if dayfirst is None:
            a_big, b_big = bool((a > 12).any()), bool((b > 12).any())
            if a_big and b_big:
                raise DataValidationError(
                    "mixes day-first and month-first dates", file=where, column=column,
                    n_rows=int(matched.sum()), subject_ids=_ids(subject_ids, matched),
                    hint="Write the column in one format, ideally ISO 8601 (YYYY-MM-DD).",
                )
            if not a_big and not b_big and bool((a != b).any()):
                raise DataValidationError(
                    "has ambiguous dates: every day and month part is <= 12, so day/month order "
                    "cannot be told", file=where, column=column, n_rows=int(matched.sum()),
                    subject_ids=_ids(subject_ids, matched),
                    hint="Use ISO 8601 dates (YYYY-MM-DD), or read from Python with "
                         "ValidationPolicy(dayfirst=True) for day/month/year or dayfirst=False for "
                         "month/day/year (the command line has no such option).",
                )
            dayfirst = a_big or not b_big
            report.dayfirst_inferred += 1
        day, month = (dmy.loc[matched, 0], dmy.loc[matched, 1]) if dayfirst else (dmy.loc[matched, 1],
                                                                                dmy.loc[matched, 0])
        iso = dmy.loc[matched, 2] + "-" + month.str.zfill(2) + "-" + day.str.zfill(2) + dmy.loc[matched, 3]
        text = text.copy()
        text[matched] = iso.to_numpy()

    offsets = text.str.extract(_TZ_SUFFIX)[0]
    zoned = offsets.notna().to_numpy()
    utc = bool(zoned.any())
    if utc:
        norm = offsets[zoned].str.replace("Z", "+00:00").str.replace(r"^([+-]\d{2})(\d{2})$", r"\1:\2",
                                                                     regex=True)
        mixed = norm.nunique() > 1 or bool((~zoned & ~null).any())
        if mixed and not policy.utc:
            raise _mixed_tz_error(column, where, int(zoned.sum()), _ids(subject_ids, zoned))
        report.timezone_converted += int(zoned.sum())
    utc = utc or policy.utc
    parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=utc)
    if utc:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    bad = parsed.isna().to_numpy() & ~null
    if bad.any():
        raise DataValidationError(
            "has values that are not dates/timestamps", file=where, column=column, n_rows=int(bad.sum()),
            subject_ids=_ids(subject_ids, bad),
            hint=f"Use ISO 8601 (YYYY-MM-DD[THH:MM:SS]) or day/month/year text; first bad row(s): "
                 f"{_rows(bad)}.",
        )
    return parsed.astype("datetime64[us]")


# ---------------------------------------------------------------------------------------- columns
