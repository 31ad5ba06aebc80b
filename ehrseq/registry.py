"""Closed registries: sequence-model name -> (config class, presets, build, load); task kind -> model head.

Configs name models and presets by string; the string is looked up here and nowhere else, so a config can never
name code. Every path that builds or loads a sequence model (fine-tuning, ``--init``, prediction, scoring,
DeepSurv's sequence embeddings, explain) goes through :func:`build_model` and :func:`model_from_artifact`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ehrseq import names
from ehrseq.artifacts import Artifact
from ehrseq.data.dataset import SequenceDataset
from ehrseq.errors import ArtifactError, TargetError
from ehrseq.featurize.featurizer import FeatureSet, Featurizer
from ehrseq.models.rnn_forecaster import RNN_PRESETS, RNNConfig, RNNForecaster

PRETRAIN_TARGET = "masked_codes"  # the target recorded by `ehrseq pretrain` (masked-code) artifacts
# The model head each task kind trains (survival is DeepSurv's own Cox head).
HEAD_OF_KIND = {"binary": "binary", "regression": "regression", "multiclass": "multiclass",
                "multilabel": "multilabel"}


@dataclass(frozen=True)
class SequenceModelEntry:
    """How one sequence-model family is built from a featurizer and loaded from an artifact."""

    config_class: type
    model_class: type
    presets: dict[str, Callable[..., Any]]
    build_config: Callable[..., Any]  # (preset_fn, fz, head, num_labels, pos_weight, overrides) -> config


def _rnn_config(preset: Callable[..., Any], fz: Featurizer, head: str, num_labels: int, pos_weight: float | None,
                overrides: dict[str, Any]) -> RNNConfig:
    return RNNConfig(fz.n_step_features, fz.n_static_features, head=head, num_labels=num_labels,
                     pos_weight=pos_weight, **preset(**overrides))


def _behrt_config(preset: Callable[..., Any], fz: Featurizer, head: str, num_labels: int, pos_weight: float | None,
                  overrides: dict[str, Any]) -> Any:
    return preset(
        vocab_size=len(fz.vocab_), time_vocab_size=fz.n_time_bins, value_vocab_size=fz.n_value_ids,
        max_visits=fz.config.max_visits + 1, max_position_embeddings=fz.config.max_len + 1,
        age_vocab_size=fz.config.max_age + 1, head=head, num_labels=num_labels, pos_weight=pos_weight,
        **overrides,
    )


def _rnn_entry() -> SequenceModelEntry:
    return SequenceModelEntry(RNNConfig, RNNForecaster, dict(RNN_PRESETS), _rnn_config)


def _behrt_entry() -> SequenceModelEntry:
    from ehrseq.models.behrt import BehrtConfig, BehrtModel, behrt_base, behrt_small, behrt_tiny

    return SequenceModelEntry(BehrtConfig, BehrtModel, {"tiny": behrt_tiny, "small": behrt_small,
                                                       "base": behrt_base}, _behrt_config)


class _Entries(Mapping[str, SequenceModelEntry]):
    """Model name -> entry, each built on first use: BEHRT imports transformers (about 3 s), which an RNN or
    DeepSurv run, or a scoring job, never needs. Names, ``in`` and iteration import nothing."""

    def __init__(self, loaders: dict[str, Callable[[], SequenceModelEntry]]) -> None:
        self._loaders = loaders
        self._built: dict[str, SequenceModelEntry] = {}

    def __getitem__(self, name: str) -> SequenceModelEntry:
        if name not in self._built:
            entry = self._loaders[name]()
            # the command line offers ehrseq.names without importing torch: it must name exactly these presets
            # (an explicit check, not an assert: it must hold under python -O too)
            if tuple(entry.presets) != names.PRESETS_OF_MODEL.get(name):
                raise ImportError(f"ehrseq/names.py is out of step with the registry's '{name}' presets: update "
                                  "PRESETS_OF_MODEL")
            self._built[name] = entry
        return self._built[name]

    def __contains__(self, name: object) -> bool:  # Mapping's own would build the entry to find out
        return name in self._loaders

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaders)

    def __len__(self) -> int:
        return len(self._loaders)


SEQUENCE_MODELS: Mapping[str, SequenceModelEntry] = _Entries({"rnn": _rnn_entry, "behrt": _behrt_entry})
if tuple(SEQUENCE_MODELS) != names.SEQUENCE_MODELS:
    raise ImportError("ehrseq/names.py is out of step with the sequence-model registry: update its SEQUENCE_MODELS")


def sequence_entry(model: str) -> SequenceModelEntry:
    """The registry entry of a sequence model name; an unknown name is a TargetError."""
    if model not in SEQUENCE_MODELS:
        raise TargetError(f"unknown sequence model '{model}'; choose one of {', '.join(SEQUENCE_MODELS)}")
    return SEQUENCE_MODELS[model]


def head_for(kind: str) -> str:
    """The model head that trains a task of this kind."""
    if kind not in HEAD_OF_KIND:
        raise TargetError(f"a '{kind}' task is not trained by a sequence model's head (survival uses deepsurv)")
    return HEAD_OF_KIND[kind]


def build_model(model: str, head: str, num_labels: int, fz: Featurizer, preset: str, overrides: dict[str, Any],
                pos_weight: float | None = None) -> torch.nn.Module:
    """A freshly initialised sequence model sized for the fitted featurizer ``fz``."""
    entry = sequence_entry(model)
    if preset not in entry.presets:
        raise TargetError(f"unknown {model} preset '{preset}'; choose one of {', '.join(entry.presets)}")
    return entry.model_class(entry.build_config(entry.presets[preset], fz, head, num_labels, pos_weight, overrides))


def model_config_dict(model: torch.nn.Module) -> dict[str, Any]:
    """A sequence model's config as a plain dict (what its artifact records)."""
    cfg = model.config
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(vars(cfg))


def saved_behrt_config(mc: dict[str, Any]) -> dict[str, Any]:
    """BehrtConfig keyword arguments from an artifact's model config (transformers' bookkeeping keys dropped).

    Artifacts written before pooling was an option read the CLS token."""
    return {"pooling": "cls", **{k: v for k, v in mc.items() if k not in ("transformers_version", "architectures")}}


def _config_kwargs(kind: str, mc: dict[str, Any]) -> dict[str, Any]:
    return saved_behrt_config(mc) if kind == "behrt" else dict(mc)


def model_from_artifact(art: Artifact) -> torch.nn.Module:
    """The trained sequence model of an artifact, in eval mode; weights must match the config exactly."""
    kind = art.config.get("model_type")
    if kind not in SEQUENCE_MODELS:
        raise ArtifactError(f"{art.path}: model_type '{kind}' is not a sequence model ({', '.join(SEQUENCE_MODELS)})")
    entry = SEQUENCE_MODELS[kind]
    try:
        m: torch.nn.Module = entry.model_class(entry.config_class(**_config_kwargs(kind, dict(art.config["model"]))))
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"{art.path}: config.json 'model' cannot be read by this ehrseq ({e})") from e
    missing, unexpected = m.load_state_dict(art.state_dict, strict=False)
    if missing or unexpected:
        raise ArtifactError(f"{art.path}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    m.eval()
    return m


def behrt_from_pretrained(art: Artifact, head: str, num_labels: int,
                          overrides: dict[str, Any] | None = None, pos_weight: float | None = None) -> torch.nn.Module:
    """A BEHRT with a fresh ``head`` whose embeddings and encoder come from an MLM-pretraining artifact.

    ``overrides`` (the fine-tuning config's model_overrides) may change what has no weights: pooling, dropout.
    """
    mc = saved_behrt_config(art.config["model"])
    mc.update(head=head, num_labels=num_labels, pos_weight=pos_weight, **(overrides or {}))
    entry = SEQUENCE_MODELS["behrt"]
    model = entry.model_class(entry.config_class(**mc))
    body = {k: v for k, v in art.state_dict.items() if k.startswith(("embeddings.", "encoder."))}
    missing, unexpected = model.load_state_dict(body, strict=False)
    if unexpected or any(k.startswith(("embeddings.", "encoder.")) for k in missing):
        raise ArtifactError(f"{art.path}: pretrained weights do not fit this BEHRT configuration")
    return model


def make_dataset(fs: FeatureSet, targets: Any, fz: Featurizer, model: str) -> SequenceDataset:
    """A dataset building only the view ``model`` reads: steps for the RNN, tokens for BEHRT."""
    return SequenceDataset(fs, targets, max_len=fz.config.max_len, max_visits=fz.config.max_visits,
                           max_steps=fz.config.max_visits, tokens=model == "behrt", steps=model == "rnn",
                           positions=fz.config.positions,
                           id_limits=behrt_id_limits(fz) if model == "behrt" else None)


def behrt_id_limits(fz: Featurizer) -> dict[str, int]:
    """The id ranges a BEHRT sized for ``fz`` embeds (exclusive bound per token key); datasets check them once."""
    return _behrt_config(SEQUENCE_MODELS["behrt"].config_class, fz, "binary", 1, None, {}).id_limits()


# --------------------------------------------------------------------------- hyper-parameters per family
# DeepSurv's presets (its training knobs live in DeepSurvConfig; lr 1e-2 is the benchmarked default).
DEEPSURV_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_sizes": (16,), "epochs": 50, "lr": 1e-2},
    "small": {"hidden_sizes": (32, 32), "lr": 1e-2},
}
# The discrete-time heads' presets (DiscreteTimeConfig; num_durations: cut points of the time axis, also a
# model_overrides key). The same for logistic_hazard, pmf and deephit.
DISCRETE_TIME_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_sizes": (16,), "epochs": 50, "lr": 1e-2, "num_durations": 10},
    "small": {"hidden_sizes": (32, 32), "lr": 1e-2, "num_durations": 20},
}
# The `train` keys (config file or CLI flags) each family has a knob for, and the knob's name there.
TRAIN_KNOBS: dict[str, dict[str, str]] = {
    "deepsurv": {"epochs": "epochs", "lr": "lr", "batch_size": "batch_size", "patience": "patience",
                 "weight_decay": "weight_decay", "device": "device"},
    "text": {"epochs": "epochs", "lr": "lr", "batch_size": "batch_size", "weight_decay": "weight_decay",
             "warmup": "warmup", "device": "device"},
}
TRAIN_KNOBS.update({m: TRAIN_KNOBS["deepsurv"] for m in names.DISCRETE_TIME_MODELS})
TRAIN_KNOBS["tfidf_scope"] = {}  # text_model tfidf_scope: no epochs / lr; its settings are model_overrides


def _deepsurv_class() -> type:
    from ehrseq.models.deepsurv import DeepSurv

    return DeepSurv


def _discrete_time_class(model: str) -> Callable[[], type]:
    def load() -> type:
        from ehrseq.models.discrete_time import DISCRETE_TIME_MODELS  # imports pycox: only when asked

        return DISCRETE_TIME_MODELS[model]
    return load


# Time-to-event model name -> its estimator class (imported when first asked for). Each class has fit,
# predict_risk, predict_survival(X, times), save and load; artifacts record the name as model_type.
SURVIVAL_MODELS: dict[str, Callable[[], type]] = {
    "deepsurv": _deepsurv_class, **{m: _discrete_time_class(m) for m in names.DISCRETE_TIME_MODELS}}
if tuple(SURVIVAL_MODELS) != names.SURVIVAL_MODELS or any(
        tuple(DISCRETE_TIME_PRESETS) != names.PRESETS_OF_MODEL.get(m) for m in names.DISCRETE_TIME_MODELS):
    raise ImportError("ehrseq/names.py is out of step with the survival-model registry: update its "
                      "SURVIVAL_MODELS / PRESETS_OF_MODEL")


def survival_model_class(model: str) -> type:
    """The estimator class of a time-to-event model name (``deepsurv``, ``logistic_hazard``, ``pmf``, ``deephit``)."""
    if model not in SURVIVAL_MODELS:
        raise TargetError(f"unknown time-to-event model '{model}'; choose one of {', '.join(SURVIVAL_MODELS)}")
    return SURVIVAL_MODELS[model]()


def family_train_overrides(family: str, train: Any, train_set: tuple[str, ...],
                           model_overrides: dict[str, Any]) -> dict[str, Any]:
    """The family's own config fields for the ``train`` keys the user set; refuses a key the family has no knob
    for (it would be ignored) and one set both in ``train`` and in ``model_overrides``."""
    from ehrseq.errors import ConfigError

    knobs = TRAIN_KNOBS[family]
    unknown = [k for k in train_set if k not in knobs]
    if unknown:
        raise ConfigError(f"train.{unknown[0]} does not apply to the {family} model (flags --epochs, --lr, "
                          f"--batch-size, --patience map to its {', '.join(sorted(knobs))}); remove it")
    out = {knobs[k]: getattr(train, k) for k in train_set}
    both = sorted(set(out) & set(model_overrides))
    if both:
        raise ConfigError(f"'{both[0]}' is set both in train (or a flag) and in model_overrides; keep one")
    return out


def family_config(family: str, cfg: Any, presets: dict[str, dict[str, Any]], build: Callable[[dict[str, Any]], Any]) -> Any:
    """A family's model config from a run config: its preset, then ``model_overrides``, then the ``train``
    keys the user set (:func:`family_train_overrides`); ``build`` makes the config object from the keywords."""
    from ehrseq.errors import ConfigError

    if cfg.preset not in presets:
        raise ConfigError(f"unknown {family} preset '{cfg.preset}'; choose one of {', '.join(presets)}")
    over = dict(cfg.model_overrides)
    train = family_train_overrides(family, cfg.train, cfg.train_set, over)
    try:
        return build({**presets[cfg.preset], **over, **train})
    except TypeError as e:
        raise ConfigError(f"model_overrides: {e}") from e
