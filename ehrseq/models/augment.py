"""Paraphrase augmentation for the biopsy-report models: which paraphraser reads the training reports.

Two label-preserving paraphrasers exist, one per synthetic report grammar, each written without sight of the
other grammar: :mod:`ehrseq.models.paraphrase` (grammar A, :mod:`ehrseq.synth.reports`) and
:mod:`ehrseq.models.paraphrase_alt` (grammar B, :mod:`ehrseq.synth.reports_alt`). ``paraphraser="auto"``
takes the one that recognises a labelled statement in more of the training reports (a fixed sample of at most
200), so the choice depends on the training reports only, never on the reports a model is later tested on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ehrseq.codes import BIOPSY_LABELS
from ehrseq.models import paraphrase, paraphrase_alt

PARAPHRASERS = ("auto", "grammar_a", "grammar_b")
_PROBE = 200
log = logging.getLogger(__name__)


def recognised(name: str, texts: Sequence[str]) -> int:
    """How many of ``texts`` paraphraser ``name`` ("grammar_a" / "grammar_b") finds a labelled statement in."""
    if name == "grammar_a":
        _, _, _, traces = paraphrase.paraphrase_with_trace(list(texts), np.zeros((len(texts), 1)), 1, 0)
        return sum(any(s.concept in BIOPSY_LABELS for s in tr) for tr in traces)
    if name == "grammar_b":
        return sum(any(a.concept in BIOPSY_LABELS and a.polarity in paraphrase_alt.LABELLING
                       for a in paraphrase_alt.assertions_alt(t)) for t in texts)
    raise ValueError(f"paraphraser must be one of {list(PARAPHRASERS[1:])}, got {name!r}")


def choose_paraphraser(texts: Sequence[str], paraphraser: str = "auto") -> str:
    """``paraphraser`` itself, or for "auto" the one that recognises more of (a fixed sample of) ``texts``
    (grammar A on a tie)."""
    if paraphraser not in PARAPHRASERS:
        raise ValueError(f"paraphraser must be one of {list(PARAPHRASERS)}, got {paraphraser!r}")
    if paraphraser != "auto":
        return paraphraser
    sample = list(texts)[::max(1, len(texts) // _PROBE)][:_PROBE]
    counts = {name: recognised(name, sample) for name in PARAPHRASERS[1:]}
    best = max(counts, key=lambda n: counts[n])
    log.info("augment: paraphraser %s (recognised %s of %d sampled training reports)", best, counts, len(sample))
    return best


def augmented(texts: list[str], y: np.ndarray, k: int, seed: int,
              paraphraser: str = "auto") -> tuple[list[str], np.ndarray]:
    """``texts`` / ``y`` followed by ``k`` label-preserving paraphrases of each report the chosen paraphraser
    (:func:`choose_paraphraser`) recognises a labelled statement in; the same seed gives the same output."""
    name = choose_paraphraser(texts, paraphraser)
    fn = paraphrase.augmented if name == "grammar_a" else paraphrase_alt.augmented_alt
    return fn(list(texts), np.asarray(y), k, seed)
