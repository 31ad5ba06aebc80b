"""Run configuration: frozen dataclasses loaded from YAML with ``yaml.safe_load``. Unknown keys fail.

Configs never hold import paths: model and target names map to builders in closed registries.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ehrseq import codes
from ehrseq.featurize.featurizer import FeaturizerConfig
from ehrseq.train.trainer import TrainConfig


@dataclass(frozen=True)
class SplitConfig:
    strategy: str = "data"  # data (use the dataset's subject_splits) | random | site | temporal
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    held_out_sites: tuple[str, ...] = ()
    cutoff: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class FinetuneConfig:
    target: str = "cdai"  # cdai | cdai_value | next_visit_dx | survival | biopsy
    model: str = "rnn"  # rnn | behrt | deepsurv | text
    preset: str = "small"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    featurizer: FeaturizerConfig = field(default_factory=FeaturizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    seed: int = 0
    sites: tuple[str, ...] = ()  # restrict training and evaluation to these sites (empty: all)
    adapt_sites: tuple[str, ...] = ()  # biopsy: self-train towards these sites on their unlabelled reports
    train_fraction: float = 1.0  # share of train-split patients used (transfer learning)
    cdai_threshold: float = codes.CDAI_CONTROLLED_MAX
    event_code: str = codes.FLARE  # survival
    landmark_visit: int = 1  # survival
    min_label_count: int = 20  # next_visit_dx: codes rarer than this in train are not predicted
    n_bootstrap: int = 200
    max_train_rows_per_subject: int | None = None  # subsample train label rows per patient (seeded), e.g. for BEHRT


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    kw = {}
    for k, v in data.items():
        t = hints[k]
        if dataclasses.is_dataclass(t):
            kw[k] = _build(t, v, f"{where}.{k}")
        elif _is_tuple(t) and isinstance(v, list):
            kw[k] = tuple(v)
        else:
            kw[k] = v
    return cls(**kw)


def _is_tuple(t: Any) -> bool:
    if typing.get_origin(t) is tuple:
        return True
    if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union:
        return any(_is_tuple(a) for a in typing.get_args(t))
    return False


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if v is None:
            continue
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | FinetuneConfig | None = None, **overrides: Any) -> FinetuneConfig:
    """Read a YAML config (or defaults, or an existing config) and merge overrides into it.

    Nested overrides merge key by key (``train={"epochs": 3}`` keeps the other train settings); None values
    are ignored, so CLI flags left unset change nothing.
    """
    if isinstance(path, FinetuneConfig):
        return _build(FinetuneConfig, _merge(config_to_dict(path), overrides), "config")
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"config file {p} does not exist (see configs/ for examples)")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{p}: a config is a mapping of keys to values")
    return _build(FinetuneConfig, _merge(data, overrides), str(path or "config"))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
