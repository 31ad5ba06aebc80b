"""Read a dataset from disk once: events (canonical MEDS frame), its subject splits and report labels."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ehrseq import codes
from ehrseq.errors import DataValidationError, TargetError
from ehrseq.io import read_extract, read_meds, read_subject_splits
from ehrseq.split import subjects_table


@dataclass
class LoadedData:
    """Canonical events, the dataset's subject splits (None when it has none), biopsy report labels (synthetic
    cohort / extract reports table) and where it came from."""

    events: pd.DataFrame
    splits: pd.DataFrame | None
    report_labels: pd.DataFrame | None
    source: str


def load_data(path: str | Path, *, column_map: Mapping[str, str] | None = None,
              code_map: str | Path | Mapping[str, str] | None = None) -> LoadedData:
    """Read a MEDS root, a MEDS Parquet file/directory, or an EHR-extract directory.

    column_map: source column name -> MEDS name for exports that name columns differently
    (e.g. ``{"value": "numeric_value"}``); EHR extracts follow ``data_schemas/`` and take none.
    code_map: a code map file (CSV or YAML) or mapping, source code -> target code, applied to the events as
    they are read (:mod:`ehrseq.io.code_map`; the rows renamed are logged), e.g. a second site's local codes
    renamed to those a model was trained on.
    """
    return with_code_map(_load(path, column_map), code_map)


def with_code_map(data: LoadedData, code_map: str | Path | Mapping[str, str] | None) -> LoadedData:
    """``data`` with its event codes renamed by ``code_map`` (a file or a mapping); None returns ``data``."""
    from ehrseq.io.code_map import apply_code_map, resolve_code_map

    mapping = resolve_code_map(code_map)
    if mapping is None:
        return data
    events, _ = apply_code_map(data.events, mapping)
    return LoadedData(events, data.splits, data.report_labels, data.source)


def _load(path: str | Path, column_map: Mapping[str, str] | None) -> LoadedData:
    p = Path(path)
    if not p.exists():
        raise DataValidationError("path does not exist", file=str(p), hint="Pass a MEDS root, a MEDS Parquet "
                                  "file or shard directory, or an EHR-extract directory.")
    if p.is_dir() and any((p / f"patients.{ext}").exists() for ext in ("csv", "parquet")):
        res = read_extract(p)
        return LoadedData(res.events, None, getattr(res, "report_labels", None), "extract")
    res = read_meds(p, column_map=column_map)
    splits = None
    if (p / "metadata" / "subject_splits.parquet").exists():
        splits = read_subject_splits(p)
    labels = None
    if (p / "truth" / "biopsy_labels.parquet").exists():
        labels = pd.read_parquet(p / "truth" / "biopsy_labels.parquet")
    return LoadedData(res.events, splits, labels, "meds")


def biopsy_frame(d: LoadedData) -> pd.DataFrame:
    """Biopsy reports joined with their labels: subject_id, time, report_id, text, site, one column per label."""
    ev = d.events.loc[d.events["code"] == codes.BIOPSY_REPORT, ["subject_id", "time", "text_value"]]
    if ev.empty:
        raise TargetError(f"no '{codes.BIOPSY_REPORT}' events with report text: the biopsy target needs reports")
    if d.report_labels is None:
        raise TargetError("the biopsy target needs report labels (truth/biopsy_labels.parquet, or label columns "
                          "in the extract's reports table)")
    lab = d.report_labels.copy()
    lab["time"] = lab["time"].astype("datetime64[us]")
    ev = ev.assign(time=ev["time"].astype("datetime64[us]"))
    df = ev.merge(lab, on=["subject_id", "time"], how="inner").rename(columns={"text_value": "text"})
    site = subjects_table(d.events).set_index("subject_id")["site"]
    return df.assign(site=df["subject_id"].map(site))


def subset_split(data: LoadedData, split: str, recorded: dict[str, list[int]] | None = None) -> LoadedData:
    """The events of one split's subjects (``split="all"``: everything).

    The data's own subject_splits decide; data without them uses ``recorded``, the split an artifact was
    trained with (its ``split.json``), so a model is evaluated on the patients it held out.
    """
    if split == "all":
        return data
    if data.splits is not None:
        ids = data.splits.loc[data.splits["split"] == split, "subject_id"]
        where = "the data's subject_splits"
    elif recorded is not None and split in recorded:
        ids, where = pd.Series(recorded[split], dtype="int64"), "the artifact's recorded split (split.json)"
    else:
        raise DataValidationError(f"the data has no subject_splits and the artifact records no split: no '{split}' subjects to "
                                  "evaluate", hint="Pass --split all to use every subject.")
    if len(ids) == 0:
        raise DataValidationError(f"{where} has no '{split}' subjects",
                                  hint="Pass another --split, or --split all.")
    ev = data.events.loc[data.events["subject_id"].isin(ids)]
    if ev.empty:
        raise DataValidationError(f"none of the '{split}' subjects of {where} is in this data",
                                  hint="Evaluate on the data the model was trained on, or pass --split all.")
    return LoadedData(ev, data.splits, data.report_labels, data.source)
