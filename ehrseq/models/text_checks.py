"""Behavioural minimal pairs for the biopsy-report classifier (in the style of CheckList).

For each label, a short report that affirms the finding is paired with the same report that negates it,
hedges it or places it in the clinical history only; the prediction for that label must be higher for the
affirmed version. The sentences are written afresh here (neither report grammar of :mod:`ehrseq.synth`
uses them), so a pass means the model reads the construction, not a memorised template.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

_TAIL = " The specimen is a segment of temporal artery."
# label -> [(kind, affirmed, altered)]
MINIMAL_PAIRS: dict[str, list[tuple[str, str, str]]] = {
    "giant_cells": [
        ("negate", "Giant cells are seen in the media.", "No giant cells are seen in the media."),
        ("negate", "Multinucleated giant cells are found.", "Multinucleated giant cells are absent."),
        ("hedge", "Giant cells are seen in the media.", "Possible giant cells in the media, not definitive."),
        ("history", "Giant cells are seen in the media.",
         "History of giant cell arteritis. No giant cells are seen in the media."),
    ],
    "adventitial_inflammation": [
        ("negate", "Lymphocytic inflammation of the adventitia is seen.",
         "No lymphocytic inflammation of the adventitia is seen."),
        ("negate", "Adventitial inflammation is present.", "Adventitial inflammation is absent."),
        ("hedge", "Adventitial inflammation is present.", "Questionable adventitial inflammation, cannot be "
         "confirmed."),
        ("history", "Adventitial inflammation is present.",
         "Previous biopsy showed adventitial inflammation. The adventitia is now unremarkable."),
    ],
    "intimal_hyperplasia": [
        ("negate", "Mild intimal thickening.", "No intimal thickening."),
        ("negate", "There is intimal hyperplasia.", "There is no intimal hyperplasia."),
        ("hedge", "There is intimal hyperplasia.", "Possible intimal hyperplasia, cannot be assessed."),
        ("history", "There is intimal hyperplasia.",
         "History of intimal hyperplasia elsewhere. The intima is unremarkable."),
    ],
    "gca": [
        ("negate", "Diagnosis: giant cell arteritis.", "Diagnosis: no giant cell arteritis."),
        ("negate", "Diagnosis: temporal arteritis.", "Diagnosis: negative for temporal arteritis."),
        ("hedge", "Diagnosis: giant cell arteritis.", "Diagnosis: giant cell arteritis cannot be excluded."),
        ("history", "Diagnosis: giant cell arteritis.",
         "Clinical history: ?GCA, does not exclude GCA. Diagnosis: benign artery."),
    ],
}


def minimal_pair_frame() -> pd.DataFrame:
    """One row per pair: label, kind (negate / hedge / history), affirmed text, altered text."""
    rows = [{"label": lab, "kind": kind, "affirmed": a + _TAIL, "altered": b + _TAIL}
            for lab, pairs in MINIMAL_PAIRS.items() for kind, a, b in pairs]
    return pd.DataFrame(rows)


def run_minimal_pairs(predict_proba: Callable[[list[str]], np.ndarray], labels: Sequence[str]) -> pd.DataFrame:
    """Score every pair: ``p_affirmed`` and ``p_altered`` of the pair's label and ``passed`` (affirmed higher).

    ``predict_proba`` maps a list of texts to an (N, K) array with columns in ``labels`` order.
    """
    df = minimal_pair_frame()
    col = np.array([list(labels).index(lab) for lab in df.label])
    pa = predict_proba(df.affirmed.tolist())[np.arange(len(df)), col]
    pb = predict_proba(df.altered.tolist())[np.arange(len(df)), col]
    return df.assign(p_affirmed=pa, p_altered=pb, passed=pa > pb)
