"""The pieces every ``ehrseq`` subcommand's parser is built from: option types, shared options, the help
formatter that prints each default, and the ``score`` options (also used by :mod:`ehrseq.scoring.job`).

Imports nothing heavier than argparse, so ``ehrseq --help`` starts at once.
"""

from __future__ import annotations

import argparse
import difflib
import re
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

from ehrseq import names
from ehrseq.cli_examples import EXAMPLES

# FinetuneConfig / TrainConfig defaults as the help texts quote them (tests/test_cli_help.py checks them).
CONFIG_DEFAULTS: dict[str, Any] = {
    "target": "cdai", "model": "rnn", "text_model": "distilbert", "preset": "small", "seed": 0, "epochs": 30,
    "batch_size": 64,
    "lr": 0.002,
    "patience": 3, "train_fraction": 1.0, "split": "data", "event": "EVENT//FLARE", "threshold": 10.0,
    "n_bootstrap": 200,
}
HEARTBEAT = "one log line every 30 s and per epoch instead"
DATA_HELP = "MEDS root, MEDS Parquet file or shard directory, or EHR-extract directory of CSV tables"
TRAINING_COMMANDS = ("finetune", "pretrain", "demo")  # their default log level is INFO (the heartbeat)



# ------------------------------------------------------------------------------------------- help texts
def option_help(action: argparse.Action) -> str:
    """The help text of ``action`` with its default: argparse's own, "(required)", or "(default: off)"."""
    text = action.help or ""
    if (not action.option_strings or action.help is argparse.SUPPRESS or "default" in text
            or isinstance(action, argparse._HelpAction | argparse._VersionAction)):
        return text
    if action.required:
        return f"{text} (required)"
    if action.nargs == 0:  # a flag
        return f"{text} (default: off)"
    if action.default is None or action.default == argparse.SUPPRESS:
        return f"{text} (default: not set)"
    d = action.default
    shown = " ".join(map(str, d)) if isinstance(d, list | tuple) else str(d)
    return f"{text} (default: {shown.replace('%', '%%')})"  # argparse %-formats help texts


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written; each option's default after its help text; lines never broken
    inside an option name."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return option_help(action)

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def from_config(key: str) -> str:
    """The help-text suffix for an option whose default comes from the config."""
    return f"(default: from --config, else {CONFIG_DEFAULTS[key]})"


# ------------------------------------------------------------------------------------------ value types
def typed(name: str, convert: Callable[[str], Any], ok: Callable[[Any], bool],
           want: str) -> Callable[[str], Any]:
    """An argparse type: ``convert`` the text, then require ``ok``; the error says what was wanted."""
    def parse(text: str) -> Any:
        try:
            v = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {want}, got '{text}'") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text}")
        return v

    parse.__name__ = name
    parse.__doc__ = f"A command-line value that must be {want} (argparse ``type``)."
    return parse


positive_int = typed("positive_int", int, lambda v: v >= 1, "a whole number >= 1")
nonnegative_int = typed("nonnegative_int", int, lambda v: v >= 0, "a whole number >= 0")
positive_float = typed("positive_float", float, lambda v: v > 0, "a number > 0")
share = typed("share", float, lambda v: 0 < v <= 1, "a number in (0, 1]")
rate = typed("rate", float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
_device = typed("device", str, lambda v: re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None,
                 "auto, cpu, cuda or cuda:N")


def pair(text: str) -> str:
    """An argparse type for KEY=VALUE."""
    if "=" not in text or text.startswith("=") or text.endswith("="):
        raise argparse.ArgumentTypeError(f"takes SOURCE=TARGET pairs, e.g. value=numeric_value, got '{text}'")
    return text


def choice(what: str, options: Sequence[str]) -> Callable[[str], str]:
    """A type that names what is unknown and the nearest option (argparse then shows the subcommand usage)."""

    def parse(text: str) -> str:
        if text not in options:
            near = difflib.get_close_matches(text, options, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise argparse.ArgumentTypeError(f"unknown {what} '{text}'{hint}; choose one of "
                                             f"{', '.join(options)}")
        return text

    parse.__name__ = what
    return parse


# --------------------------------------------------------------------------------------- shared options
def verbosity_args(p: argparse.ArgumentParser, *, top: bool) -> None:
    """-v / -q, accepted before and after the subcommand (SUPPRESS: a subcommand never resets the top's)."""
    d: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument("-v", "--verbose", action="count",
                   help="more log lines: -v INFO for every library, -vv DEBUG "
                   "(default: INFO for ehrseq in finetune, pretrain and demo, else warnings only)",
                   **({"default": 0} if top else d))
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only; no progress bars or "
                   "heartbeat (default: off)", **({"default": False} if top else d))


def column_map_arg(p: argparse.ArgumentParser) -> None:
    """Add ``--column-map SRC=MEDS ...``."""
    p.add_argument("--column-map", nargs="+", type=pair, metavar="SRC=MEDS",
                   help="rename source columns as they are read, e.g. value=numeric_value")


def code_map_arg(p: argparse.ArgumentParser) -> None:
    """Add ``--code-map``."""
    p.add_argument("--code-map", metavar="FILE", help="rename codes as they are read: a CSV (source_code,"
                   "target_code) or YAML map, e.g. a second site's local codes to those the model was trained "
                   "on; the rows renamed are logged (default: not set)")


def overwrite_arg(p: argparse.ArgumentParser, what: str) -> None:
    """Add ``--overwrite`` for an output that holds ``what``."""
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace {what} already at --out (default: refuse, "
                   "and say so before any data is read)")


def data_arg(p: argparse.ArgumentParser, required: bool = True) -> None:
    """Add ``--data``."""
    p.add_argument("--data", required=required, metavar="PATH", help=DATA_HELP)


def model_args(p: argparse.ArgumentParser, out_help: str,
                sizes: str = "rnn, text: tiny | small; behrt: tiny | small | base") -> None:
    """Add the options every training command shares (config, out, preset, seed, epochs, ...)."""
    data_arg(p)
    p.add_argument("--out", required=True, metavar="DIR", help=out_help)
    p.add_argument("--config", metavar="YAML", help="run config: a YAML path or a shipped name (cdai_rnn, "
                   "cdai_behrt, ...; see configs/); unknown keys fail (default: built-in defaults)")
    p.add_argument("--preset", type=choice("preset", names.PRESETS), choices=names.PRESETS,
                   help=f"model size ({sizes}) {from_config('preset')}")
    p.add_argument("--seed", type=nonnegative_int, metavar="N",
                   help=f"seed of the model init and shuffling {from_config('seed')}")
    p.add_argument("--epochs", type=positive_int, metavar="N",
                   help=f"most training epochs; early stopping may end sooner "
                   f"{from_config('epochs')}")
    p.add_argument("--batch-size", type=positive_int, metavar="N",
                   help=f"sequences per step {from_config('batch_size')}")
    p.add_argument("--lr", type=positive_float, help=f"learning rate {from_config('lr')}")
    p.add_argument("--patience", type=positive_int, metavar="N",
                   help="epochs without a better tuning loss before stopping "
                   + from_config("patience"))
    p.add_argument("--device", type=_device, metavar="DEVICE", help="where the model trains: auto (a CUDA GPU "
                   "when torch sees one, else the CPU), cpu, cuda or cuda:N (default: from --config, else auto)")
    p.add_argument("--no-progress", action="store_true", help=f"no progress bars; {HEARTBEAT}")
    column_map_arg(p)
    overwrite_arg(p, "an artifact")


def task_args(p: argparse.ArgumentParser) -> None:
    """Add the task options (``--labels``, ``--task``, ``--target`` and their kin)."""
    p.add_argument("--target", type=choice("target", names.TARGETS), choices=names.TARGETS,
                   help=f"built-in target of the synthetic RA cohort {from_config('target')}")
    p.add_argument("--labels", metavar="PATH", help="MEDS label file or directory: the task is its rows "
                   "(data_schemas/README.md) (default: the built-in --target)")
    p.add_argument("--label-kind", choices=names.LABEL_KINDS,
                   help="read --labels as this kind (default: from "
                   "the file's value column or its ehrseq metadata)")
    p.add_argument("--task", metavar="YAML", help="ACES task file, a path or a shipped name such as "
                   "mimic/long_los (configs/tasks/): its labels are built from --data (default: not set)")
    p.add_argument("--predicates", metavar="YAML", help="ACES predicates file for --task (the codes of one "
                   "dataset), a path or a shipped name such as mimic/predicates (default: not set)")


def add_score_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``ehrseq score`` options to ``parser`` (``ehrseq.scoring.run_score`` runs them)."""
    parser.add_argument("--artifact", required=True, metavar="DIR", help="artifact directory written by "
                        "`ehrseq finetune`")
    parser.add_argument("--data", required=True, metavar="PATH", help=DATA_HELP)
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output directory (part-NNNNN.parquet shards)")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--prediction-time", metavar="ISO", help="score every subject at this ISO 8601 time "
                      "(default: the artifact's task rebuilt on --data)")
    when.add_argument("--labels", metavar="PATH", help="MEDS label file (subject_id, prediction_time): one "
                      "prediction per row (default: the artifact's task rebuilt on --data)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="ray needs pip install 'ehrseq[ray]'")
    parser.add_argument("--batch-rows", type=positive_int, default=65_536, metavar="N",
                        help="raw rows read at a time")
    parser.add_argument("--shard-rows", type=positive_int, default=250_000, metavar="N",
                        help="event rows per output shard")
    parser.add_argument("--prefetch", type=nonnegative_int, default=1, metavar="N",
                        help="shards read and featurized ahead on a thread while the model scores one (local "
                             "engine; 0: none). Each adds a shard to peak memory; outputs do not change")
    parser.add_argument("--max-quarantine-fraction", type=rate, default=0.01, metavar="SHARE",
                        help="abort when more than this share of rows fails validation")
    parser.add_argument("--horizons", type=positive_float, nargs="+", metavar="DAYS",
                        help="DeepSurv artifacts: report survival at these days after prediction_time "
                             "(default: the task's horizon, else the quartiles of the training event times)")
    column_map_arg(parser)
    code_map_arg(parser)
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="start over instead of skipping shards an interrupted run already wrote")
    overwrite_arg(parser, "the output of a different scoring job")
    return parser


def add_command(sub: Any, name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
    """Add subcommand ``name`` with its help, description, examples and verbosity flags."""
    p = sub.add_parser(name, help=help, description=description or help[0].upper() + help[1:] + ".",
                       epilog="examples:\n" + EXAMPLES[name], formatter_class=HelpFormatter,
                       allow_abbrev=False)
    verbosity_args(p, top=False)
    return p
