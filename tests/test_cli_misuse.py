"""Misusing the command line ends in exit code 2 and one error line on stderr: no traceback, no output.

Each case runs ``ehrseq.cli.main`` in-process (one console-script run checks the real exit status). Parse
errors may print argparse's usage block above the error line; everything else is the error line alone.
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

import ehrseq
from ehrseq.cli import main
from ehrseq.cli_parser import build_parser

PKG = Path(ehrseq.__file__).parent

# Cases: (id, argv with {data} {out} {cfg} {dir} placeholders, words the error line must hold).
FT = ["finetune", "--data", "{data}", "--out", "{out}"]
SCORE = ["score", "--artifact", "{dir}", "--data", "{data}", "--out", "{out}"]
MISUSE = [
    ("unknown subcommand", ["frobnicate"], "invalid choice: 'frobnicate'"),
    ("unknown option", [*FT, "--frobnicate"], "unrecognized arguments: --frobnicate"),
    ("typo'd option", [*FT, "--epocs", "3"], "did you mean --epochs?"),
    ("typo'd option of score", [*SCORE, "--horizon", "30"], "did you mean --horizons?"),
    ("unknown model", [*FT, "--model", "lstm"], "unknown model 'lstm'"),
    ("unknown target", [*FT, "--target", "nope"], "unknown target 'nope'"),
    ("negative epochs", [*FT, "--epochs", "-1"], "--epochs: must be a whole number >= 1, got -1"),
    ("epochs not a number", [*FT, "--epochs", "abc"], "--epochs: must be a whole number >= 1, got 'abc'"),
    ("train fraction above 1", [*FT, "--train-fraction", "1.5"],
     "--train-fraction: must be a number in (0, 1]"),
    ("column map without =", [*FT, "--column-map", "value"], "takes SOURCE=TARGET pairs"),
    ("missing --out", ["finetune", "--data", "{data}"], "the following arguments are required: --out"),
    ("pretrain zero prefixes", ["pretrain", "--data", "{data}", "--out", "{out}", "--prefixes", "0"],
     "--prefixes: must be a whole number >= 1"),
    ("score with labels and a prediction time",
     [*SCORE, "--labels", "l.parquet", "--prediction-time", "2020-01-01"], "not allowed with argument"),
    ("label kind without labels", [*FT, "--label-kind", "binary"], "--label-kind needs --labels"),
    ("validate: label kind without labels", ["validate", "--data", "{data}", "--label-kind", "binary"],
     "--label-kind needs --labels"),
    ("predicates without a task", [*FT, "--predicates", "{cfg}"], "--predicates needs --task"),
    ("held-out sites without a site split", [*FT, "--held-out-sites", "B"],
     "--held-out-sites needs --split site"),
    ("threshold on a survival target", [*FT, "--target", "survival", "--threshold", "5"],
     "--threshold applies to --target cdai only"),
    ("preset the model does not have", [*FT, "--preset", "base"],
     "preset 'base' is not one of model rnn's presets (tiny, small)"),
    ("missing data", ["finetune", "--data", "{dir}/nope.parquet", "--out", "{out}"], "does not exist"),
    ("missing config", [*FT, "--config", "{dir}/nope.yaml"], "does not exist"),
    ("unknown shipped config name", [*FT, "--config", "cdai_bert"], "not one shipped with ehrseq"),
    ("config with an unknown key", [*FT, "--config", "{cfg}"],
     "unknown key(s) ['epoch'] (did you mean 'train.epochs'?)"),
    ("config naming an unknown model", [*FT, "--config", "{dir}/lstm.yaml"],
     "model 'lstm' is not one of rnn, behrt, deepsurv, logistic_hazard, pmf, deephit, text"),
    ("missing task file", ["labels", "--task", "mimic/nope", "--data", "{data}", "--out", "{out}"],
     "task file mimic/nope does not exist"),
    ("evaluate a missing artifact", ["evaluate", "--artifact", "{dir}/none", "--data", "{data}", "--out",
                                     "{out}"], "not an artifact directory"),
    ("explain a missing artifact", ["explain", "--artifact", "{dir}/none", "--data", "{data}"],
     "not an artifact directory"),
]


@pytest.fixture
def place(tmp_path: Path, mimic_slice: Path) -> dict[str, str]:
    (tmp_path / "unknown_key.yaml").write_text("seed: 1\nepoch: 3\n")
    (tmp_path / "lstm.yaml").write_text("model: lstm\n")
    return {"data": str(mimic_slice), "out": str(tmp_path / "out"), "cfg": str(tmp_path / "unknown_key.yaml"),
            "dir": str(tmp_path)}


def _error_line(err: str) -> str:
    """The one error line of ``err``, after asserting that anything above it is argparse's usage block."""
    assert "Traceback" not in err
    lines = err.rstrip("\n").splitlines()
    assert lines, "nothing on stderr"
    usage = lines[:-1]
    if usage:
        assert usage[0].startswith("usage: ehrseq") and all(ln.startswith(" ") for ln in usage[1:]), err
    assert re.match(r"ehrseq( \w+)?: error: ", lines[-1]), lines[-1]
    return lines[-1]


@pytest.mark.parametrize("argv, words", [pytest.param(a, w, id=i) for i, a, w in MISUSE])
def test_misuse_is_exit_2_with_one_error_line_and_no_output(argv, words, place, capsys):
    rc = main([a.format(**place) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 2
    assert words in _error_line(err)
    assert not Path(place["out"]).exists()


def test_typo_in_a_subcommand_shows_that_subcommands_usage(place, capsys):
    assert main(["evaluate", "--artifact", "a", "--data", "d", "--out", "o", "--n-bots", "9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ehrseq evaluate ") and "did you mean --n-boot?" in err


def test_the_console_script_exits_2_without_a_traceback(tmp_path):
    code = "import sys; from ehrseq.cli import main; sys.exit(main())"
    argv = ["finetune", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--model", "lstm"]
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines()[-1].startswith("ehrseq finetune: error: argument --model: unknown model")


# --------------------------------------------------------------------- every flag a message names exists
OTHER_TOOLS_FLAGS: dict[str, str] = {
    # none yet: add "--flag": "which tool's flag it is" for a flag of pip, pytest, ... quoted in a message
}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]")


def _parser_flags() -> set[str]:
    p = build_parser()
    flags = {s for a in p._actions for s in a.option_strings}
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            flags |= {s for sp in a.choices.values() for x in sp._actions for s in x.option_strings}
    return flags


def _flags_named_in_strings() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for f in sorted(PKG.rglob("*.py")):
        for tok in tokenize.generate_tokens(io.StringIO(f.read_text()).readline):
            if tok.type == tokenize.STRING:
                for flag in FLAG.findall(tok.string):
                    found.setdefault(flag, []).append(f"{f.relative_to(PKG.parent)}:{tok.start[0]}")
    return found


def test_every_flag_named_in_a_message_or_help_text_exists():
    named = _flags_named_in_strings()
    assert "--column-map" in named and "--epochs" in named  # the scan sees hints and help texts
    missing = {
        flag: where
        for flag, where in named.items()
        if flag not in _parser_flags() and flag not in OTHER_TOOLS_FLAGS
    }
    assert not missing, f"messages name flags no ehrseq command has: {missing}"
