"""Which codes of a dataset carry birth, death, sex and site: found in the data, not assumed.

MEDS fixes ``MEDS_BIRTH`` and ``MEDS_DEATH``; sex is a static (null-time) row whose code has a prefix that
depends on the export: ``SEX//F`` (ehrseq's synthetic cohort and EHR-extract reader) or ``GENDER//F`` (the
MIMIC-IV MEDS export, MEDS-ETL). Site has no MEDS standard; ehrseq writes ``SITE//<name>``. Everything that
reports or featurizes sex or site goes through :func:`sex_of` and :func:`site_of`, so a dataset with another
convention is handled in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

MEDS_BIRTH = "MEDS_BIRTH"
MEDS_DEATH = "MEDS_DEATH"
SEX_PREFIXES = ("SEX//", "GENDER//")  # in order of preference when a subject has both
SITE_PREFIXES = ("SITE//",)
UNKNOWN = "unknown"

_FEMALE = frozenset({"F", "FEMALE", "WOMAN"})
_MALE = frozenset({"M", "MALE", "MAN"})


@dataclass(frozen=True)
class DatasetConventions:
    """The codes one dataset uses. ``None`` means the dataset has no such code at all."""

    birth_code: str | None = MEDS_BIRTH
    death_code: str | None = MEDS_DEATH
    sex_prefixes: tuple[str, ...] = SEX_PREFIXES  # static rows: <prefix><value>, value F / M / other
    site_prefix: str | None = SITE_PREFIXES[0]  # static rows: <prefix><site name>


def _static_codes(events: pd.DataFrame) -> pd.Series:
    return events.loc[events["time"].isna(), "code"].astype(str)


def detect(events: pd.DataFrame) -> DatasetConventions:
    """The conventions present in ``events`` (a canonical events frame): the MEDS birth and death codes if any
    row has them, and the sex and site prefixes that occur on static (null-time) rows."""
    code = events["code"]
    static = pd.Series(_static_codes(events).unique())
    sex = tuple(p for p in SEX_PREFIXES if static.str.startswith(p).any())
    site = next((p for p in SITE_PREFIXES if static.str.startswith(p).any()), None)
    return DatasetConventions(
        birth_code=MEDS_BIRTH if bool((code == MEDS_BIRTH).any()) else None,
        death_code=MEDS_DEATH if bool((code == MEDS_DEATH).any()) else None,
        sex_prefixes=sex,
        site_prefix=site,
    )


def normalise_sex(value: str) -> str:
    """'F' for F / female / woman, 'M' for M / male / man (any case), otherwise the value upper-cased
    ('unknown' when empty)."""
    v = str(value).strip().upper()
    if v in _FEMALE:
        return "F"
    if v in _MALE:
        return "M"
    return v or UNKNOWN


def _first_static(events: pd.DataFrame, prefixes: tuple[str, ...]) -> pd.Series:
    """subject_id -> the code after its prefix, from each subject's first static row with one of
    ``prefixes``; an earlier prefix in the tuple wins over a later one."""
    static = events.loc[events["time"].isna(), ["subject_id", "code"]]
    code = static["code"].astype(str)
    parts = [pd.Series(code[code.str.startswith(p)].str.slice(len(p)).to_numpy(),
                       index=static["subject_id"][code.str.startswith(p)].to_numpy()) for p in prefixes]
    out = pd.concat(parts) if parts else pd.Series([], dtype=object)
    out = out[~out.index.duplicated(keep="first")]
    out.index = out.index.astype("int64").rename("subject_id")
    return out.astype(object)


def sex_of(events: pd.DataFrame, conventions: DatasetConventions | None = None) -> pd.Series:
    """subject_id -> 'F', 'M' or another upper-cased value, from each subject's first static sex/gender row
    (prefixes from ``conventions``, detected when not given). Subjects without one are absent."""
    conv = conventions or detect(events)
    raw = _first_static(events, conv.sex_prefixes)
    return raw.map({v: normalise_sex(v) for v in raw.unique()}.__getitem__).rename("sex")  # once per value


def site_of(events: pd.DataFrame, conventions: DatasetConventions | None = None) -> pd.Series:
    """subject_id -> site name (the code after the site prefix, stripped), from each subject's first static
    site row. Empty when the dataset has no site code (MEDS has no standard one)."""
    conv = conventions or detect(events)
    return _first_static(events, (conv.site_prefix,) if conv.site_prefix else ()).str.strip().rename("site")
