"""Run configuration: frozen dataclasses loaded from YAML, checked key by key before any data is read.

YAML is read with a strict ``SafeLoader`` (no python tags, no duplicate keys, no anchors or aliases). Unknown
keys fail with the closest known key; every value is checked against its field's type hint. Every mistake is a
one-line :class:`ehrseq.errors.ConfigError` naming the file, the dotted key and what was expected.

Configs never hold import paths: model and target names map to builders in closed registries.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ehrseq import codes
from ehrseq.errors import ConfigError
from ehrseq.featurize.featurizer import FeaturizerConfig
from ehrseq.train.trainer import TrainConfig


@dataclass(frozen=True)
class SplitConfig:
    """How patients are split into train, tuning and held_out (the ``split`` section of a run config)."""

    strategy: str = "data"  # data (use the dataset's subject_splits) | random | site | temporal
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    held_out_sites: tuple[str, ...] = ()
    cutoff: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class FinetuneConfig:
    """A run config: task, model family and size, featurizer, trainer and split settings."""

    target: str = "cdai"  # cdai | cdai_value | next_visit_dx | survival | biopsy (built-in targets)
    labels: str | None = None  # a MEDS label file or directory: the task is its rows (replaces target)
    label_kind: str | None = None  # labels: read them as this kind (e.g. survival) instead of from the file
    task: str | None = None  # an ACES task file (plus optional time_to_event block): labels built from it
    predicates: str | None = None  # an ACES predicates file for `task` (codes of one dataset)
    max_unmatched_label_fraction: float = 0.05  # label rows of unknown subjects / with no history: refuse above
    allow_init_overlap: bool = False  # --init: accept an artifact whose train subjects are now tuning/held out
    model: str = "rnn"  # rnn | behrt | deepsurv | text
    text_model: str = "distilbert"  # model text (biopsy): distilbert | tfidf_scope (ehrseq.names.TEXT_MODELS)
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
    min_train_subjects: int = 10  # refuse to train on fewer train subjects with a label row (ehrseq.io.guards)
    min_class_count: int = 5  # ... or fewer train rows per class (binary: each; multiclass: two; survival: events)
    n_bootstrap: int = 200
    max_train_rows_per_subject: int | None = None  # subsample train label rows per patient (seeded), e.g. for BEHRT
    train_set: tuple[str, ...] = ()  # the train keys the user set (filled by load_config; families map them)

    def __post_init__(self) -> None:
        from ehrseq.names import TEXT_MODELS

        if self.text_model not in TEXT_MODELS:
            raise ValueError(f"text_model '{self.text_model}' is not one of {', '.join(TEXT_MODELS)}")
        if self.text_model != "distilbert" and self.model != "text" and self.target != "biopsy":
            raise ValueError(f"text_model '{self.text_model}' applies to the biopsy text model (model: text) only; "
                             f"remove it or set model: text")


# ------------------------------------------------------------------------------------------ YAML reading
class _StrictLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that also refuses duplicate keys, anchors and aliases (each a ConfigError).

    Refusing anchors where they are declared stops an alias bomb before any expansion uses memory.
    """

    source = "config"

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise ConfigError(f"{self.source}: line {event.start_mark.line + 1}: YAML alias '*{event.anchor}' is "
                              "not allowed in a config; write the value out in full")
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise ConfigError(f"{self.source}: line {event.start_mark.line + 1}: YAML anchor '&{anchor}' is not "
                              "allowed in a config; write each value out in full")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise ConfigError(f"{self.source}: line {line}: YAML merge keys (<<) are not allowed in a config; "
                                  "write each value out in full")
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise ConfigError(f"{self.source}: line {line}: duplicate key '{key}' (first set on line "
                                      f"{seen[key]}); keep one of them")
                seen[key] = line
            except TypeError:  # an unhashable key: the base constructor reports it
                continue
        return super().construct_mapping(node, deep=deep)


class ConfigYAMLError(ConfigError, yaml.YAMLError):
    """A config file that is not valid (safe) YAML, as one line: file, line, problem."""


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file strictly: safe types only, no duplicate keys, no anchors or aliases."""
    p = Path(path)
    loader = _StrictLoader(p.read_text())
    loader.source = str(p)
    try:
        return loader.get_single_data()
    except ConfigError:
        raise
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigYAMLError(f"{p}: {where}{e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigYAMLError(f"{p}: not valid YAML ({' '.join(str(e).split())})") from None
    finally:
        loader.dispose()


# ------------------------------------------------------------------------------------------- type checks
def _describe(t: Any) -> str:
    """A type hint in words, for error messages."""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if t is typing.Any:
        return "any value"
    if _is_union(t):
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if dataclasses.is_dataclass(t):
        return f"a mapping of {t.__name__} keys"
    if origin in (tuple, list):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} {_plural(args[0])}"
        return f"a list of {_plural(args[0]) if args else 'values'}"
    if origin is dict or t is dict:
        return "a mapping"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}.get(t, str(t))


def _plural(t: Any) -> str:
    return {bool: "true/false values", int: "whole numbers", float: "numbers", str: "strings"}.get(t, _describe(t))


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true/false"
    if isinstance(v, int):
        return "a whole number"
    if isinstance(v, float):
        return "a number" if not v.is_integer() else "a number written with a decimal point"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list | tuple):
        return "a list"
    if isinstance(v, dict):
        return "a mapping"
    return f"a {type(v).__name__}"


def _hint(v: Any, t: Any) -> str:
    if isinstance(v, str) and float in _leaves(t):
        try:
            float(v)
        except ValueError:
            return ""
        return " (YAML reads a number like 1e-3 as text: write 1.0e-3)"
    if isinstance(v, bool) and str in _leaves(t):
        return " (YAML reads yes/no/on/off/true/false as booleans: quote the value)"
    if isinstance(v, int | float) and not isinstance(v, bool) and str in _leaves(t):
        return " (quote the value to make it text)"
    return ""


def _leaves(t: Any) -> set[Any]:
    args = typing.get_args(t)
    return {t} if not args else set().union(*(_leaves(a) for a in args))


def _is_union(t: Any) -> bool:
    return isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union


class _Mismatch(Exception):
    """Internal: a value does not fit a type hint (``got`` says what it was)."""

    def __init__(self, got: str) -> None:
        self.got = got


def _coerce(v: Any, t: Any, src: str, key: str) -> Any:
    """``v`` checked against the type hint ``t`` (lists become tuples, ints become floats); else _Mismatch."""
    if t is typing.Any:
        return v
    if _is_union(t):
        args = typing.get_args(t)
        if v is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(v, a, src, key)
            except _Mismatch:
                continue
        raise _Mismatch(_kind(v))
    if dataclasses.is_dataclass(t):
        if isinstance(v, t):
            return v
        if not isinstance(v, dict):
            raise _Mismatch(_kind(v))
        return _build(t, v, src, f"{key}.")
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin in (tuple, list):
        if not isinstance(v, list | tuple):
            raise _Mismatch(_kind(v))
        fixed = origin is tuple and args and args[-1] is not Ellipsis
        if fixed and len(v) != len(args):
            raise _Mismatch(f"a list of {len(v)}")
        out = []
        for i, item in enumerate(v):
            item_t = (args[i] if fixed else args[0]) if args else typing.Any
            try:
                out.append(_coerce(item, item_t, src, f"{key}[{i}]"))
            except _Mismatch as m:
                raise _Mismatch(f"a list whose item {i + 1} is {m.got}") from None
        return tuple(out) if origin is tuple else out
    if origin is dict or t is dict:
        if not isinstance(v, dict):
            raise _Mismatch(_kind(v))
        bad = [k for k in v if not isinstance(k, str)]
        if bad:
            raise _Mismatch(f"a mapping with a key that is {_kind(bad[0])}")
        return dict(v)
    if t is bool:
        if not isinstance(v, bool):
            raise _Mismatch(_kind(v))
        return v
    if t is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Mismatch(_kind(v))
        return v
    if t is float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise _Mismatch(_kind(v))
        return float(v)
    if isinstance(t, type):
        if not isinstance(v, t):
            raise _Mismatch(_kind(v))
        return v
    return v


def _suggest(name: str, cls: type, prefix: str) -> str | None:
    """The closest known key to an unknown ``name``: at this level first, then one section down."""
    fields = dataclasses.fields(cls)
    hints = typing.get_type_hints(cls)
    here = difflib.get_close_matches(name, [f.name for f in fields], n=1, cutoff=0.6)
    if here:
        return prefix + here[0]
    below = {f"{f.name}.{g.name}": g.name for f in fields if dataclasses.is_dataclass(hints[f.name])
             for g in dataclasses.fields(hints[f.name])}
    near = difflib.get_close_matches(name, list(below.values()), n=1, cutoff=0.8)
    return next((prefix + k for k, v in below.items() if near and v == near[0]), None)


def _build(cls: type, data: Any, src: str, prefix: str = "") -> Any:
    """``cls(**data)`` with every key known and every value of its field's type, else a ConfigError.

    ``src`` names where the values came from (a file, or overrides); ``prefix`` is the dotted section.
    """
    section = prefix.rstrip(".")
    if not isinstance(data, dict):
        raise ConfigError(f"{src}: {section or 'the config'} must be a mapping of keys to values, got {_kind(data)}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(k) for k in set(data) - set(known))
    if unknown:
        near = [(k, s) for k in unknown if (s := _suggest(k, cls, prefix))]
        if len(unknown) == 1 and near:
            mean = f" (did you mean '{near[0][1]}'?)"
        else:
            mean = "".join(f" ('{prefix}{k}': did you mean '{s}'?)" for k, s in near)
        where = f".{section}: " if section else ""
        raise ConfigError(f"{src}: {where}unknown key(s) {unknown}{mean}; allowed: {sorted(known)}")
    kw = {}
    for k, v in data.items():
        try:
            kw[k] = _coerce(v, hints[k], src, prefix + k)
        except _Mismatch as m:
            raise ConfigError(f"{src}: {prefix}{k} must be {_describe(hints[k])}, got {m.got}"
                              f"{_hint(v, hints[k])}") from None
    try:
        return cls(**kw)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:  # a dataclass's own validation (__post_init__)
        raise ConfigError(f"{src}: {e}") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if v is None:
            continue
        if isinstance(v, dict) and k != "model_overrides":  # a nested config: merged key by key, None unset
            out[k] = _merge(out[k] if isinstance(out.get(k), dict) else {}, v)
        else:
            out[k] = v
    return out


def load_config(path: str | Path | FinetuneConfig | None = None, **overrides: Any) -> FinetuneConfig:
    """Read a YAML config (or defaults, or an existing config) and merge overrides into it.

    Nested overrides merge key by key (``train={"epochs": 3}`` keeps the other train settings); None values
    are ignored, so CLI flags left unset change nothing. Every key is checked against the dataclass fields and
    every value against the field's type; a mistake is a :class:`ConfigError` naming the file (or "config
    overrides"), the dotted key and what was expected. The file is checked on its own first, so an error is
    blamed on the file or on the overrides, whichever holds it. Nothing else (no data) is read.
    """
    if isinstance(path, FinetuneConfig):
        return _with_train_set(_build(FinetuneConfig, _merge(config_to_dict(path), overrides), "config overrides"),
                               path.train_set, overrides)
    data: dict[str, Any] = {}
    if path is not None:
        p = resolve_config_path(path)
        if p.is_dir():
            raise ConfigError(f"{p}: is a directory; --config takes a YAML file (see configs/)")
        data = read_yaml(p)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: a config is a mapping of keys to values, got {_kind(data)}")
        base = _build(FinetuneConfig, data, str(p))
        if not any(v is not None for v in overrides.values()):
            return _with_train_set(base, (), data)
    return _with_train_set(_build(FinetuneConfig, _merge(data, overrides), "config overrides" if overrides else "config"),
                           (), data, overrides)


def _with_train_set(cfg: FinetuneConfig, before: tuple[str, ...], *sources: dict[str, Any]) -> FinetuneConfig:
    """Record which ``train`` keys a user set (in a file or an override), so a family whose trainer has other
    defaults (DeepSurv, the text classifier) takes exactly those and refuses the ones it has no knob for."""
    keys = set(before)
    for src in sources:
        if isinstance(src, dict) and src.get("train_set") is not None:  # a config's own dict form: as recorded
            keys = set(src["train_set"])
            continue
        t = src.get("train") if isinstance(src, dict) else None
        if isinstance(t, dict):
            keys.update(k for k, v in t.items() if v is not None)
    keys.discard("progress")  # display, not a hyper-parameter
    return dataclasses.replace(cfg, train_set=tuple(sorted(keys)))


class ConfigNotFoundError(ConfigError, FileNotFoundError):
    """A config or task file is neither an existing path nor the name of a config shipped with ehrseq."""


def shipped_configs_dir() -> Path | None:
    """The configs shipped with ehrseq: ``ehrseq/configs`` (the repository's ``configs/`` folder, installed as
    package data through the ``ehrseq/configs`` link), else ``configs/`` beside the package in a checkout."""
    pkg = Path(__file__).parent
    if (pkg / "configs").is_dir():
        return pkg / "configs"
    checkout = pkg.parent / "configs"  # a checkout whose link did not survive (e.g. git without symlinks)
    return checkout if checkout.is_dir() and (pkg.parent / "pyproject.toml").is_file() else None


def resolve_config_path(name: str | Path, folder: str = "") -> Path:
    """The file ``name`` means: the path as given when it exists, else a config shipped with ehrseq.

    ``cdai_behrt``, ``cdai_behrt.yaml`` and (outside a checkout) ``configs/cdai_behrt.yaml`` all name the
    shipped ``configs/cdai_behrt.yaml``; with ``folder="tasks"``, ``mimic/long_los`` names
    ``configs/tasks/mimic/long_los.yaml``. Raises :class:`ConfigNotFoundError` listing the shipped names.
    """
    p, what = Path(name), "task file" if folder == "tasks" else "config file"
    root = shipped_configs_dir()
    if p.exists() or root is None or p.is_absolute():
        if not p.exists():
            raise ConfigNotFoundError(f"{what} {p} does not exist")
        return p
    base = root / folder if folder else root
    rel, start = (Path(*p.parts[1:]), root) if p.parts[0] == "configs" and len(p.parts) > 1 else (p, base)
    for cand in (start / rel, start / f"{rel}.yaml"):
        if cand.is_file():
            return cand
    shipped = sorted(str(f.relative_to(base).with_suffix("")) for f in base.rglob("*.yaml")
                     if folder or "tasks" not in f.relative_to(base).parts)
    raise ConfigNotFoundError(f"{what} {p} does not exist and is not one shipped with ehrseq; give a path, or "
                              f"one of: {', '.join(shipped)}")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The plain-dict form of a config (nested sections as dicts); ``load_config(**d)`` rebuilds it."""
    return dataclasses.asdict(cfg)
