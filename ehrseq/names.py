"""The names the command line offers as choices, importable without torch or pandas.

The registries that act on these names (:mod:`ehrseq.registry` for the sequence models, :mod:`ehrseq.labels`
for the built-in targets, :mod:`ehrseq.models.text_classifier` for the text presets) are the source of truth;
``ehrseq.registry`` asserts at import that its keys equal these, and the tests check the rest, so a name added
to a registry without being added here fails loudly instead of being refused by ``ehrseq --help``.
"""

from __future__ import annotations

SEQUENCE_MODELS: tuple[str, ...] = ("rnn", "behrt")
# Time-to-event models: DeepSurv (Cox) and the discrete-time heads of ehrseq.models.discrete_time.
DISCRETE_TIME_MODELS: tuple[str, ...] = ("logistic_hazard", "pmf", "deephit")
SURVIVAL_MODELS: tuple[str, ...] = ("deepsurv", *DISCRETE_TIME_MODELS)
MODELS: tuple[str, ...] = (*SEQUENCE_MODELS, *SURVIVAL_MODELS, "text")
# The text family's models (config key text_model; ehrseq.models.text_models.TEXT_MODELS is the source of truth):
# DistilBERT (the default) or the scope-marked TF-IDF model.
TEXT_MODELS: tuple[str, ...] = ("distilbert", "tfidf_scope")

# Size presets per model family (deepsurv has none: --preset does not apply to it).
PRESETS_OF_MODEL: dict[str, tuple[str, ...]] = {
    "rnn": ("tiny", "small"),
    "behrt": ("tiny", "small", "base"),
    "text": ("tiny", "small"),
    **{m: ("tiny", "small") for m in DISCRETE_TIME_MODELS},
}
PRESETS: tuple[str, ...] = ("tiny", "small", "base")

# Built-in targets: the label builders of ehrseq.labels plus the biopsy reports (the text classifier).
LABEL_TARGETS: tuple[str, ...] = ("cdai", "cdai_value", "next_visit_dx", "survival")
TARGETS: tuple[str, ...] = (*LABEL_TARGETS, "biopsy")

LABEL_KINDS: tuple[str, ...] = ("binary", "regression", "multiclass", "survival")
SPLIT_STRATEGIES: tuple[str, ...] = ("data", "random", "site", "temporal")
