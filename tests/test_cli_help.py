"""The command line's help, names, shipped configs and training heartbeat (no model is trained here)."""

from __future__ import annotations

import argparse
import logging
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

import ehrseq
from ehrseq import names
from ehrseq.cli import _setup_logging, main
from ehrseq.cli_parser import CONFIG_DEFAULTS, EXAMPLES, build_parser, option_help
from ehrseq.config import load_config, resolve_config_path, shipped_configs_dir

ROOT = Path(ehrseq.__file__).parent.parent


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    p = build_parser()
    return next(a.choices for a in p._actions if isinstance(a, argparse._SubParsersAction))


def test_help_and_version_import_nothing_heavy():
    code = (
        "import contextlib, io, sys; from ehrseq.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    argvs = (['--help'], ['--version'], ['finetune', '--help'], ['score', '--help'])\n"
        "    codes = [main(a) for a in argvs]\n"
        "heavy = [m for m in ('torch', 'pandas', 'numpy', 'transformers', 'pyarrow') if m in sys.modules]\n"
        "print(codes, heavy)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert r.stdout.strip() == "[0, 0, 0, 0] []"


def test_every_option_says_what_it_does_and_its_default():
    for name, sp in _subparsers().items():
        for a in sp._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            text = option_help(a)
            assert a.help and len(a.help) > 10, f"{name} {a.option_strings}: no help text"
            assert "(required)" in text or "default" in text, (
                f"{name} {a.option_strings}: no default in {text!r}"
            )


def test_help_quotes_the_config_defaults():
    cfg = load_config()
    actual = {
        "target": cfg.target,
        "model": cfg.model,
        "text_model": cfg.text_model,
        "preset": cfg.preset,
        "seed": cfg.seed,
        "epochs": cfg.train.epochs,
        "batch_size": cfg.train.batch_size,
        "lr": cfg.train.lr,
        "patience": cfg.train.patience,
        "train_fraction": cfg.train_fraction,
        "split": cfg.split.strategy,
        "event": cfg.event_code,
        "threshold": cfg.cdai_threshold,
        "n_bootstrap": cfg.n_bootstrap,
    }
    assert CONFIG_DEFAULTS == actual
    assert "(default: from --config, else 30)" in _subparsers()["finetune"].format_help()


def test_every_subcommand_has_examples_that_parse():
    p = build_parser()
    for name, sp in _subparsers().items():
        assert sp.epilog and sp.epilog.startswith("examples:"), name
        examples = EXAMPLES[name].replace("\\\n", " ").splitlines()
        assert 1 <= len(examples) <= 3, name
        for ex in examples:
            argv = shlex.split(ex)
            assert argv[:2] == ["ehrseq", name]
            assert p.parse_args(argv[1:]).command == name  # a typo in an example would exit here


def test_verbosity_flags_work_before_and_after_the_subcommand():
    p = build_parser()
    base = ["finetune", "--data", "d", "--out", "o"]
    assert p.parse_args(base).verbose == 0 and not p.parse_args(base).quiet
    assert p.parse_args(["-v", *base]).verbose == 1
    assert p.parse_args([*base, "-vv"]).verbose == 2
    assert p.parse_args([*base, "-q"]).quiet


@pytest.mark.parametrize(
    "argv, level",
    [
        (["finetune", "--data", "d", "--out", "o"], logging.INFO),  # training shows its heartbeat by default
        (["finetune", "--data", "d", "--out", "o", "-q"], logging.WARNING),
        (["evaluate", "--artifact", "a", "--data", "d", "--out", "o"], logging.WARNING),
        (["-v", "evaluate", "--artifact", "a", "--data", "d", "--out", "o"], logging.INFO),
    ],
)
def test_log_level_of_each_command(argv, level):
    pkg = logging.getLogger("ehrseq")
    before = pkg.level
    undo = _setup_logging(build_parser().parse_args(argv))
    try:
        assert pkg.getEffectiveLevel() == level
    finally:
        undo()
    assert pkg.level == before


def test_names_match_the_registries():
    from ehrseq.labels import TARGETS
    from ehrseq.models.text_classifier import PRESETS as TEXT_PRESETS
    from ehrseq.registry import SEQUENCE_MODELS

    assert names.LABEL_TARGETS == tuple(TARGETS) and names.TARGETS == (*TARGETS, "biopsy")
    assert names.SEQUENCE_MODELS == tuple(SEQUENCE_MODELS)
    assert names.PRESETS_OF_MODEL["text"] == tuple(TEXT_PRESETS)
    assert set(names.PRESETS) == {p for ps in names.PRESETS_OF_MODEL.values() for p in ps}


# ------------------------------------------------------------------------------------------ shipped configs
def test_shipped_configs_are_the_repositorys_configs_folder():
    shipped = shipped_configs_dir()
    assert shipped is not None and shipped.resolve() == (ROOT / "configs").resolve()


@pytest.mark.parametrize(
    "name, folder, want",
    [
        ("cdai_behrt", "", "cdai_behrt.yaml"),
        ("cdai_behrt.yaml", "", "cdai_behrt.yaml"),
        ("configs/cdai_behrt.yaml", "", "cdai_behrt.yaml"),  # the README's path, run from another directory
        ("mimic/long_los", "tasks", "tasks/mimic/long_los.yaml"),
        ("configs/tasks/mimic/predicates.yaml", "tasks", "tasks/mimic/predicates.yaml"),
    ],
)
def test_shipped_configs_can_be_named_from_any_directory(name, folder, want, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path(name, folder).resolve() == (ROOT / "configs" / want).resolve()


def test_a_path_that_exists_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("cdai_behrt").write_text("seed: 3\n")
    assert resolve_config_path("cdai_behrt") == Path("cdai_behrt")
    assert load_config("cdai_behrt").seed == 3
    assert load_config("cdai_rnn_site_a") == load_config(ROOT / "configs" / "cdai_rnn_site_a.yaml")


def test_an_unknown_name_lists_the_shipped_configs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist") as e:
        resolve_config_path("cdai_bert")
    assert "cdai_behrt" in str(e.value) and "mimic/" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="mimic/long_los"):
        resolve_config_path("mimic/long_stay", "tasks")


def test_the_wheel_ships_every_file_in_configs():
    """pyproject's package-data globs (through the ehrseq/configs link) cover every file under configs/."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "ehrseq"
    ]
    shipped = {f.resolve() for pattern in data for f in (ROOT / "ehrseq").glob(pattern) if f.is_file()}
    wanted = {f.resolve() for f in (ROOT / "configs").rglob("*") if f.is_file()}
    assert wanted and wanted <= shipped, sorted(str(f) for f in wanted - shipped)


# ------------------------------------------------------------------------------------------- heartbeat
class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Linear(2, 1)


def test_training_without_a_terminal_logs_a_heartbeat_with_step_loss_and_eta(monkeypatch, caplog):
    from ehrseq.train import trainer

    monkeypatch.setattr(trainer, "HEARTBEAT_SECONDS", 0.0)  # every step
    x = torch.randn(40, 2)
    model = _Tiny()
    cfg = trainer.TrainConfig(epochs=2, batch_size=10, patience=5, progress=True)  # stderr is not a TTY here
    with caplog.at_level(logging.INFO, logger="ehrseq"):
        trainer.train(model, x, None, cfg, collate_fn=torch.stack, loss_fn=lambda m, b: (m.w(b) ** 2).mean())
    lines = [r.getMessage() for r in caplog.records if r.name == "ehrseq.train.trainer"]
    steps = [ln for ln in lines if " step " in ln]
    assert len(steps) == 8 and steps[0].startswith("epoch 1/2 step 1/4 loss ") and "ETA" in steps[0]
    assert steps[-1].startswith("epoch 2/2 step 4/4 ")
    done = [ln for ln in lines if " done: " in ln]
    assert [d.split(" done")[0] for d in done] == ["epoch 1/2", "epoch 2/2"] and "train_loss" in done[0]


def test_help_of_finetune_names_the_choices(capsys):
    assert main(["finetune", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "{rnn,behrt,deepsurv,logistic_hazard,pmf,deephit,text}" in out and "{cdai,cdai_value,next_visit_dx,survival,biopsy}" in out
    assert "examples:" in out and "(default: from --config, else rnn)" in out
