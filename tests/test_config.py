"""Run configuration: unknown keys fail with the allowed keys, YAML lists become tuples, overrides merge key by
key, and YAML is read with safe_load."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest
import yaml

from ehrseq.config import FinetuneConfig, SplitConfig, config_to_dict, load_config
from ehrseq.train.trainer import TrainConfig


def _yaml(tmp_path, text: str):
    p = tmp_path / "run.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_defaults_without_a_file():
    assert load_config() == FinetuneConfig()


def test_unknown_top_level_key_names_the_key_and_the_allowed_keys(tmp_path):
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['modle'\]") as e:
        load_config(_yaml(tmp_path, "target: cdai\nmodle: rnn\n"))
    msg = str(e.value)
    assert "allowed:" in msg
    assert all(f"'{f.name}'" in msg for f in dataclasses.fields(FinetuneConfig))


def test_unknown_nested_key_names_its_section_and_the_allowed_keys(tmp_path):
    with pytest.raises(ValueError, match=r"\.train: unknown key\(s\) \['epoch'\]") as e:
        load_config(_yaml(tmp_path, "train:\n  epoch: 3\n"))
    assert "'epochs'" in str(e.value)
    assert all(f"'{f.name}'" in str(e.value) for f in dataclasses.fields(TrainConfig))


def test_unknown_key_in_an_override_fails_too():
    with pytest.raises(ValueError, match=r"\['learning_rate'\]"):
        load_config(train={"learning_rate": 0.1})


def test_yaml_lists_become_tuples(tmp_path):
    cfg = load_config(_yaml(tmp_path, """\
        sites: [A]
        split:
          strategy: site
          fractions: [0.8, 0.2, 0.0]
          held_out_sites: [B]
        featurizer:
          time_bin_edges_days: [1, 30, 365]
          numeric_codes: [SCORE//CDAI]
        """))
    assert cfg.sites == ("A",)
    assert cfg.split == SplitConfig(strategy="site", fractions=(0.8, 0.2, 0.0), held_out_sites=("B",))
    assert cfg.featurizer.time_bin_edges_days == (1, 30, 365)
    assert cfg.featurizer.numeric_codes == ("SCORE//CDAI",)
    hash(cfg.split)  # tuples, not lists: the frozen config is hashable


def test_nested_override_keeps_the_other_keys(tmp_path):
    path = _yaml(tmp_path, "model: behrt\ntrain:\n  epochs: 10\n  lr: 0.01\n  batch_size: 16\n")
    cfg = load_config(path, train={"epochs": 3}, seed=None)
    assert cfg.model == "behrt"
    assert cfg.train == dataclasses.replace(TrainConfig(), epochs=3, lr=0.01, batch_size=16)
    assert cfg.seed == 0  # None overrides change nothing


def test_override_of_an_existing_config_keeps_the_other_keys():
    base = load_config(model="behrt", train={"lr": 0.05, "epochs": 7})
    cfg = load_config(base, train={"epochs": 2})
    assert (cfg.model, cfg.train.lr, cfg.train.epochs) == ("behrt", 0.05, 2)
    assert load_config(**config_to_dict(cfg)) == cfg  # a config survives its dict form


def test_config_is_frozen():
    cfg = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model = "behrt"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.split.seed = 1  # type: ignore[misc]


def test_nested_train_config_is_frozen_too():
    cfg = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.epochs = 1  # type: ignore[misc]


def test_python_object_tags_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = _yaml(tmp_path, f'train: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(yaml.YAMLError, match="python/object"):
        load_config(path)
    assert not marker.exists()
    with pytest.raises(yaml.YAMLError):
        load_config(_yaml(tmp_path, "seed: !!python/object:ehrseq.config.SplitConfig {}\n"))


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_a_yaml_that_is_not_a_mapping_is_refused(tmp_path):
    with pytest.raises(ValueError, match="mapping"):
        load_config(_yaml(tmp_path, "- a\n- b\n"))


def test_learning_rate_schedules_warm_up_then_decay() -> None:
    from ehrseq.train.trainer import lr_factor

    total = 100
    warm = [lr_factor(k, total, "linear", 0.1) for k in range(10)]
    assert warm == sorted(warm) and warm[0] == pytest.approx(0.1) and warm[-1] == pytest.approx(1.0)
    assert lr_factor(55, total, "linear", 0.1) == pytest.approx(0.5)
    assert lr_factor(total, total, "linear", 0.1) == 0.0
    assert lr_factor(55, total, "cosine", 0.1) == pytest.approx(0.5)
    assert lr_factor(99, total, "cosine", 0.0) < 0.01
    assert {lr_factor(k, total, "constant", 0.0) for k in range(total)} == {1.0}
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="step")
    with pytest.raises(ValueError, match="warmup"):
        TrainConfig(warmup=1.0)
    assert load_config(None, train={"schedule": "cosine", "warmup": 0.05}).train.schedule == "cosine"
