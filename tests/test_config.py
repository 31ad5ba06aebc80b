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


# --- type checks, strict YAML, and the CLI reading the config before the data --------------------------------
def test_a_value_of_the_wrong_type_names_the_file_the_dotted_key_and_the_type(tmp_path):
    from ehrseq.errors import ConfigError

    path = _yaml(tmp_path, "train:\n  epochs: ten\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: train\.epochs must be a whole number, got a string"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"train\.lr must be a number, got a string \(YAML reads .*1\.0e-3"):
        load_config(_yaml(tmp_path, "train:\n  lr: 1e-3\n"))  # YAML 1.1 reads 1e-3 as text
    with pytest.raises(ConfigError, match=r"seed must be a whole number"):
        load_config(_yaml(tmp_path, "seed: 1.5\n"))
    with pytest.raises(ConfigError, match=r"split\.fractions must be a list of 3 numbers, got a list of 2"):
        load_config(_yaml(tmp_path, "split:\n  fractions: [0.7, 0.3]\n"))
    with pytest.raises(ConfigError, match=r"sites must be a list of strings, got a list whose item 2 is a whole"):
        load_config(_yaml(tmp_path, "sites: [A, 2]\n"))
    with pytest.raises(ConfigError, match=r"featurizer\.numeric_codes must be a list of strings or null"):
        load_config(_yaml(tmp_path, "featurizer:\n  numeric_codes: SCORE//CDAI\n"))
    with pytest.raises(ConfigError, match=r"train must be a mapping of TrainConfig keys, got a string"):
        load_config(_yaml(tmp_path, "train: fast\n"))
    with pytest.raises(ConfigError, match=r"model_overrides must be a mapping"):
        load_config(_yaml(tmp_path, "model_overrides: [1, 2]\n"))


def test_booleans_refuse_strings_and_numbers_and_floats_accept_whole_numbers(tmp_path):
    from ehrseq.errors import ConfigError

    for text in ("'yes'", "'true'", "1", "0"):
        with pytest.raises(ConfigError, match=r"allow_init_overlap must be true or false"):
            load_config(_yaml(tmp_path, f"allow_init_overlap: {text}\n"))
    cfg = load_config(_yaml(tmp_path, "allow_init_overlap: true\ncdai_threshold: 12\nmax_train_rows_per_subject: null\n"))
    assert cfg.allow_init_overlap is True
    assert cfg.cdai_threshold == 12.0 and isinstance(cfg.cdai_threshold, float)
    assert cfg.max_train_rows_per_subject is None
    assert load_config(max_train_rows_per_subject=4).max_train_rows_per_subject == 4


def test_an_unknown_key_suggests_the_closest_known_one(tmp_path):
    from ehrseq.errors import ConfigError

    with pytest.raises(ConfigError, match=r"run\.yaml: unknown key\(s\) \['modle'\] \(did you mean 'model'\?\)"):
        load_config(_yaml(tmp_path, "modle: rnn\n"))
    with pytest.raises(ConfigError, match=r"\['epochs'\] \(did you mean 'train\.epochs'\?\)"):
        load_config(_yaml(tmp_path, "epochs: 3\n"))  # a key of a section, written at the top level
    with pytest.raises(ConfigError, match=r"\['epoch'\] \(did you mean 'train\.epochs'\?\)"):
        load_config(_yaml(tmp_path, "train:\n  epoch: 3\n"))


def test_errors_in_overrides_are_blamed_on_the_overrides_not_the_file(tmp_path):
    from ehrseq.errors import ConfigError

    path = _yaml(tmp_path, "train:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"^config overrides: train\.epochs must be a whole number"):
        load_config(path, train={"epochs": "4"})
    with pytest.raises(ConfigError, match=r"^config overrides: .*\['learning_rate'\]"):
        load_config(path, train={"learning_rate": 0.1})


def test_duplicate_keys_are_refused_with_their_line(tmp_path):
    from ehrseq.errors import ConfigError

    with pytest.raises(ConfigError, match=r"run\.yaml: line 3: duplicate key 'seed' \(first set on line 1\)"):
        load_config(_yaml(tmp_path, "seed: 1\nmodel: rnn\nseed: 2\n"))
    with pytest.raises(ConfigError, match=r"line 3: duplicate key 'lr'"):
        load_config(_yaml(tmp_path, "train:\n  lr: 0.1\n  lr: 0.2\n"))


def test_anchors_aliases_and_an_alias_bomb_are_refused_at_once(tmp_path):
    import time

    from ehrseq.errors import ConfigError

    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]  # 9**10 leaves if expanded
    bomb = "model_overrides:\n" + "".join(f"  {line}\n" for line in levels)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"run\.yaml: line 2: YAML anchor '&a0' is not allowed"):
        load_config(_yaml(tmp_path, bomb))
    assert time.perf_counter() - t0 < 1.0
    with pytest.raises(ConfigError, match=r"line 2: YAML alias '\*x' is not allowed"):
        load_config(_yaml(tmp_path, "sites: [A]\nadapt_sites: *x\n"))
    with pytest.raises(ConfigError, match=r"line 1: YAML merge keys \(<<\) are not allowed"):
        load_config(_yaml(tmp_path, "train: {<<: {lr: 0.1}}\n"))


def test_invalid_yaml_is_a_one_line_config_error_naming_file_and_line(tmp_path):
    from ehrseq.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        load_config(_yaml(tmp_path, "seed: 1\ntrain: [1, 2\n"))
    assert isinstance(e.value, yaml.YAMLError)  # still a YAML error for callers that catch those
    assert "\n" not in str(e.value) and str(e.value).startswith(f"{tmp_path / 'run.yaml'}: line ")


@pytest.mark.parametrize("command", ["finetune", "pretrain"])
def test_the_cli_checks_the_config_before_reading_any_data(tmp_path, monkeypatch, capsys, command):
    import ehrseq.cli
    from ehrseq.cli import main

    read = []
    monkeypatch.setattr(ehrseq.cli, "_load", lambda a: read.append(a) or pytest.fail("data was read"))
    data = tmp_path / "meds"
    data.mkdir()
    bad = _yaml(tmp_path, "train:\n  epochs: ten\n")
    rc = main([command, "--config", str(bad), "--data", str(data), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not read
    assert err == f"ehrseq {command}: error: {bad}: train.epochs must be a whole number, got a string"
    assert not (tmp_path / "out").exists()
