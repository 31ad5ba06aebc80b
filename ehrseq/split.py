"""Patient-level splits: no patient in two splits, written as data (MEDS ``subject_splits``).

Three strategies:

- ``random``: subjects shuffled by seed, optionally stratified by a per-subject column.
- ``site``: train and tune at some sites, hold out others (external validation).
- ``temporal``: out-of-time: subjects whose first event is on or after ``cutoff`` are held out.

``assert_disjoint`` is called by every consumer of a split (featurizer fitting, datasets, training).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ehrseq.errors import LeakageError, first_ids

SPLITS = ("train", "tuning", "held_out")


@dataclass
class PatientSplitter:
    """Assign each subject to train / tuning / held_out.

    Parameters are stored as given (scikit-learn style); ``split`` does the work.

    strategy:        "random" | "site" | "temporal"
    fractions:       (train, tuning, held_out) for random; for site/temporal, how the non-held-out
                     subjects are divided between train and tuning (held_out share is ignored).
    stratify:        per-subject column to stratify on (random strategy)
    held_out_sites:  sites to hold out (site strategy)
    cutoff:          first-event time at or after which a subject is held out (temporal strategy)
    seed:            the same seed and the same subjects give the same split
    """

    strategy: str = "random"
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    stratify: str | None = None
    held_out_sites: Sequence[str] = ()
    cutoff: str | pd.Timestamp | None = None
    seed: int = 0

    def split(self, subjects: pd.DataFrame) -> pd.DataFrame:
        """``subjects`` has one row per subject_id (plus ``site`` / ``first_time`` / the stratify column as
        the strategy needs). Returns MEDS ``subject_splits``: subject_id, split."""
        if subjects["subject_id"].duplicated().any():
            dups = subjects.loc[subjects["subject_id"].duplicated(), "subject_id"]
            raise ValueError(f"subjects table repeats subject_id(s) {first_ids(dups)}; pass one row per subject")
        f = np.asarray(self.fractions, dtype=float)
        if f.shape != (3,) or (f < 0).any() or not np.isclose(f.sum(), 1.0):
            raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {self.fractions}")
        subj = subjects.sort_values("subject_id", kind="stable").reset_index(drop=True)
        rng = np.random.default_rng(self.seed)
        split = np.empty(len(subj), dtype=object)
        if self.strategy == "random":
            groups = subj[self.stratify].astype(str).to_numpy() if self.stratify else np.zeros(len(subj), dtype=str)
            for g in np.unique(groups):
                idx = np.flatnonzero(groups == g)
                split[idx] = _assign(rng.permutation(idx.size), f)
        elif self.strategy in ("site", "temporal"):
            if self.strategy == "site":
                if not self.held_out_sites:
                    raise ValueError("the site strategy needs held_out_sites (e.g. ['B'])")
                if "site" not in subj:
                    raise ValueError("the site strategy needs a 'site' column per subject")
                unknown = set(map(str, self.held_out_sites)) - set(subj["site"].astype(str))
                if unknown:
                    raise ValueError(f"held_out_sites {sorted(unknown)} do not occur in the data")
                held = subj["site"].astype(str).isin([str(s) for s in self.held_out_sites]).to_numpy()
            else:
                if self.cutoff is None or "first_time" not in subj:
                    raise ValueError("the temporal strategy needs cutoff and a 'first_time' column per subject")
                held = (subj["first_time"] >= pd.Timestamp(self.cutoff)).to_numpy()
            split[held] = "held_out"
            rest = np.flatnonzero(~held)
            tr = f[0] / max(f[0] + f[1], 1e-12)
            split[rest] = _assign(rng.permutation(rest.size), np.array([tr, 1 - tr, 0.0]))
        else:
            raise ValueError(f"unknown split strategy '{self.strategy}'; use random, site or temporal")
        return pd.DataFrame({"subject_id": subj["subject_id"].astype("int64").to_numpy(), "split": split.astype(str)})


def _assign(order: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Map a permutation of positions to split names by cumulative fractions."""
    n = order.size
    bounds = np.round(np.cumsum(fractions) * n).astype(int)
    names = np.empty(n, dtype=object)
    names[order < bounds[0]] = SPLITS[0]
    names[(order >= bounds[0]) & (order < bounds[1])] = SPLITS[1]
    names[order >= bounds[1]] = SPLITS[2]
    return names


def subjects_table(events: pd.DataFrame) -> pd.DataFrame:
    """One row per subject with ``site`` (static SITE// rows, "unknown" without: MEDS has no standard site
    code) and ``first_time`` for the splitter."""
    from ehrseq import codes
    from ehrseq.io.conventions import site_of

    ids = events["subject_id"].drop_duplicates()
    site = site_of(events)
    clinical = events.loc[events["time"].notna() & (events["code"] != codes.BIRTH)]  # birth is not a first visit
    first = clinical.groupby("subject_id")["time"].min()
    out = pd.DataFrame({"subject_id": ids.to_numpy()})
    out["site"] = out["subject_id"].map(site).astype(object).fillna("unknown").astype(str)
    out["first_time"] = out["subject_id"].map(first)
    return out


def assert_disjoint(splits: pd.DataFrame | Mapping[str, Sequence[int]]) -> None:
    """Raise LeakageError if any subject is in more than one split."""
    if isinstance(splits, Mapping):
        splits = pd.DataFrame(
            [(int(s), name) for name, ids in splits.items() for s in ids], columns=["subject_id", "split"]
        )
    per = splits.drop_duplicates(["subject_id", "split"]).groupby("subject_id")["split"].nunique()
    bad = per[per > 1]
    if len(bad):
        raise LeakageError(
            f"{len(bad)} subject(s) appear in more than one split, first: {first_ids(bad.index)}; "
            "splits must be by patient"
        )
    unknown = set(splits["split"].unique()) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split name(s) {sorted(unknown)}; MEDS splits are {list(SPLITS)}")


def ids_in(splits: pd.DataFrame, name: str) -> np.ndarray:
    """Subject ids of one split, after checking the split is by patient."""
    assert_disjoint(splits)
    return splits.loc[splits["split"] == name, "subject_id"].to_numpy(dtype=np.int64)
