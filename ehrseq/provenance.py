"""Which subjects trained an artifact, and whether a run that starts from it (``--init``) evaluates on them.

An artifact records the ids of the subjects whose data trained it (its weights or its vocabulary) in
``train_subjects.json`` (:func:`ehrseq.artifacts.save_artifact`). A fine-tuning run that starts from it and
splits the data differently would score the model on patients it has already learnt from: its tuning-based
early stopping and its held-out metrics would be optimistic. :func:`check_init_overlap` refuses that unless
the user accepts it knowingly; what it accepted is returned for the metrics and the report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ehrseq.artifacts import Artifact, load_artifact
from ehrseq.errors import LeakageError
from ehrseq.split import ids_in

log = logging.getLogger(__name__)

EVALUATED_SPLITS = ("tuning", "held_out")  # splits a run scores on (tuning: early stopping, calibration)
N_IDS_SHOWN = 5


def _as_artifact(init_artifact: Artifact | str | Path) -> Artifact:
    return init_artifact if isinstance(init_artifact, Artifact) else load_artifact(init_artifact)


def training_subjects(splits: pd.DataFrame, init_artifact: Artifact | str | Path | None = None) -> list[int]:
    """The ids to record as ``train_subjects`` of a model fitted on the train split of ``splits``.

    With ``init_artifact`` (the run started from its weights or vocabulary) its own train subjects are added:
    what they taught it is still in the model. When the init artifact records none, only this run's train
    subjects are returned (a warning says the record is incomplete).
    """
    ids = set(ids_in(splits, "train").tolist())
    if init_artifact is not None:
        art = _as_artifact(init_artifact)
        if art.train_subjects is None:
            log.warning("init artifact %s records no train subjects: this artifact's train_subjects list only "
                        "the subjects of this run", art.path)
        else:
            ids.update(art.train_subjects)
    return sorted(int(i) for i in ids)


def check_init_overlap(init_artifact: Artifact | str | Path, splits: pd.DataFrame, *,
                       allow: bool) -> dict[str, Any] | None:
    """Refuse to evaluate on subjects that trained the ``--init`` artifact.

    Args:
        init_artifact: the artifact the run starts from (or its directory).
        splits: this run's split (subject_id, split), after any restriction to sites or a train fraction.
        allow: accept an overlap (``--allow-init-overlap`` / ``allow_init_overlap: true``) and describe it.

    Returns:
        None when the artifact's train subjects are all outside tuning and held_out. With ``allow`` and an
        overlap: ``{"checked": True, "allowed": True, "init_artifact", "n_init_train_subjects", "overlap":
        {split: count}, "first_subject_ids": {split: [...]}}`` for the metrics. An artifact that records no
        train subjects: ``{"checked": False, "init_artifact", "reason"}`` (and a warning).

    Raises:
        LeakageError: an overlap without ``allow``; it names the counts per split, the first ids and the fix.
    """
    art = _as_artifact(init_artifact)
    if art.train_subjects is None:
        reason = ("the init artifact records no train subjects (written before ehrseq recorded them), so "
                  "whether its training patients are now tuning or held out could not be checked")
        log.warning("%s: %s", art.path, reason)
        return {"checked": False, "init_artifact": str(art.path), "reason": reason}
    trained = np.asarray(art.train_subjects, dtype=np.int64)
    overlap: dict[str, int] = {}
    first: dict[str, list[int]] = {}
    for name in EVALUATED_SPLITS:
        here = ids_in(splits, name)
        hit = np.sort(here[np.isin(here, trained)])
        if hit.size:
            overlap[name] = int(hit.size)
            first[name] = [int(i) for i in hit[:N_IDS_SHOWN]]
    if not overlap:
        return None
    if not allow:
        counts = ", ".join(f"{n} in {name}" for name, n in overlap.items())
        ids = "; ".join(f"{name}: {', '.join(map(str, v))}" for name, v in first.items())
        raise LeakageError(
            f"--init artifact {art.path} was trained on {sum(overlap.values())} subject(s) that this run "
            f"evaluates ({counts}); first subject_id(s) {ids}. Its tuning and held-out metrics would be "
            "optimistic. Use the split the artifact was trained with (e.g. --split data, the data's "
            "subject_splits) or pass --allow-init-overlap (allow_init_overlap: true) to accept it knowingly"
        )
    log.warning("--init artifact %s was trained on %d subject(s) now in %s; allowed by allow_init_overlap",
                art.path, sum(overlap.values()), sorted(overlap))
    return {"checked": True, "allowed": True, "init_artifact": str(art.path),
            "n_init_train_subjects": int(trained.size), "overlap": overlap, "first_subject_ids": first}
