"""One recipe per model family, each with the same steps: set up from a config and data, train, evaluate, save.

``RECIPES`` maps a recipe's name to its entry point; :func:`recipe_for` picks the one a task needs. The API
(:mod:`ehrseq.api`) loads the config and the data, builds the run (:func:`ehrseq.recipes.common.prepare`) and
calls the recipe; nothing else dispatches on model or task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ehrseq.errors import TargetError
from ehrseq.names import SURVIVAL_MODELS
from ehrseq.recipes.pretrain import pretrain
from ehrseq.recipes.sequence import finetune_sequence
from ehrseq.recipes.survival import finetune_survival
from ehrseq.recipes.text import finetune_text
from ehrseq.registry import SEQUENCE_MODELS

RECIPES: dict[str, Callable[..., Any]] = {
    "sequence": finetune_sequence,  # RNN / BEHRT: binary, regression, multiclass, multi-label
    "survival": finetune_survival,  # DeepSurv, LogisticHazard, PMF, DeepHit: time to event
    "text": finetune_text,  # the biopsy-report classifier
    "pretrain": pretrain,  # BEHRT masked-code pretraining
}


def recipe_for(kind: str, model: str) -> str:
    """The recipe that fits a task of ``kind`` with ``model`` (refuses a model that cannot)."""
    if kind == "survival" or model in SURVIVAL_MODELS:
        if kind != "survival":
            raise TargetError(f"{model} fits time-to-event tasks; this task is '{kind}'")
        return "survival"
    if model not in SEQUENCE_MODELS:
        raise TargetError(f"model '{model}' cannot fit a '{kind}' task; use one of {', '.join(SEQUENCE_MODELS)} "
                          f"(or {', '.join(SURVIVAL_MODELS)} for time to event)")
    return "sequence"
