"""The ``ehrseq`` argument parser: every subcommand, option, help text, default and example.

Imports nothing heavier than argparse (no torch, pandas or transformers), so ``ehrseq --help`` starts at once;
the command functions in :mod:`ehrseq.cli` import what they need when they run.
"""

from __future__ import annotations

import argparse
import difflib
import re
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

from ehrseq import __version__, names
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


def _from_config(key: str) -> str:
    return f"(default: from --config, else {CONFIG_DEFAULTS[key]})"


# ------------------------------------------------------------------------------------------ value types
def _typed(name: str, convert: Callable[[str], Any], ok: Callable[[Any], bool],
           want: str) -> Callable[[str], Any]:
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


positive_int = _typed("positive_int", int, lambda v: v >= 1, "a whole number >= 1")
nonnegative_int = _typed("nonnegative_int", int, lambda v: v >= 0, "a whole number >= 0")
positive_float = _typed("positive_float", float, lambda v: v > 0, "a number > 0")
share = _typed("share", float, lambda v: 0 < v <= 1, "a number in (0, 1]")
rate = _typed("rate", float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
_device = _typed("device", str, lambda v: re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None,
                 "auto, cpu, cuda or cuda:N")


def _pair(text: str) -> str:
    if "=" not in text or text.startswith("=") or text.endswith("="):
        raise argparse.ArgumentTypeError(f"takes SOURCE=TARGET pairs, e.g. value=numeric_value, got '{text}'")
    return text


def _choice(what: str, options: Sequence[str]) -> Callable[[str], str]:
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
def _verbosity(p: argparse.ArgumentParser, *, top: bool) -> None:
    """-v / -q, accepted before and after the subcommand (SUPPRESS: a subcommand never resets the top's)."""
    d: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument("-v", "--verbose", action="count",
                   help="more log lines: -v INFO for every library, -vv DEBUG "
                   "(default: INFO for ehrseq in finetune, pretrain and demo, else warnings only)",
                   **({"default": 0} if top else d))
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only; no progress bars or "
                   "heartbeat (default: off)", **({"default": False} if top else d))


def _column_map_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--column-map", nargs="+", type=_pair, metavar="SRC=MEDS",
                   help="rename source columns as they are read, e.g. value=numeric_value")


def _code_map_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--code-map", metavar="FILE", help="rename codes as they are read: a CSV (source_code,"
                   "target_code) or YAML map, e.g. a second site's local codes to those the model was trained "
                   "on; the rows renamed are logged (default: not set)")


def _overwrite_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace {what} already at --out (default: refuse, "
                   "and say so before any data is read)")


def _data_arg(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--data", required=required, metavar="PATH", help=DATA_HELP)


def _model_args(p: argparse.ArgumentParser, out_help: str,
                sizes: str = "rnn, text: tiny | small; behrt: tiny | small | base") -> None:
    _data_arg(p)
    p.add_argument("--out", required=True, metavar="DIR", help=out_help)
    p.add_argument("--config", metavar="YAML", help="run config: a YAML path or a shipped name (cdai_rnn, "
                   "cdai_behrt, ...; see configs/); unknown keys fail (default: built-in defaults)")
    p.add_argument("--preset", type=_choice("preset", names.PRESETS), choices=names.PRESETS,
                   help=f"model size ({sizes}) {_from_config('preset')}")
    p.add_argument("--seed", type=nonnegative_int, metavar="N",
                   help=f"seed of the model init and shuffling {_from_config('seed')}")
    p.add_argument("--epochs", type=positive_int, metavar="N",
                   help=f"most training epochs; early stopping may end sooner "
                   f"{_from_config('epochs')}")
    p.add_argument("--batch-size", type=positive_int, metavar="N",
                   help=f"sequences per step {_from_config('batch_size')}")
    p.add_argument("--lr", type=positive_float, help=f"learning rate {_from_config('lr')}")
    p.add_argument("--patience", type=positive_int, metavar="N",
                   help="epochs without a better tuning loss before stopping "
                   + _from_config("patience"))
    p.add_argument("--device", type=_device, metavar="DEVICE", help="where the model trains: auto (a CUDA GPU "
                   "when torch sees one, else the CPU), cpu, cuda or cuda:N (default: from --config, else auto)")
    p.add_argument("--no-progress", action="store_true", help=f"no progress bars; {HEARTBEAT}")
    _column_map_arg(p)
    _overwrite_arg(p, "an artifact")


def _task_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", type=_choice("target", names.TARGETS), choices=names.TARGETS,
                   help=f"built-in target of the synthetic RA cohort {_from_config('target')}")
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
    parser.add_argument("--max-quarantine-fraction", type=rate, default=0.01, metavar="SHARE",
                        help="abort when more than this share of rows fails validation")
    parser.add_argument("--horizons", type=positive_float, nargs="+", metavar="DAYS",
                        help="DeepSurv artifacts: report survival at these days after prediction_time "
                             "(default: the task's horizon, else the quartiles of the training event times)")
    _column_map_arg(parser)
    _code_map_arg(parser)
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="start over instead of skipping shards an interrupted run already wrote")
    _overwrite_arg(parser, "the output of a different scoring job")
    return parser


# ----------------------------------------------------------------------------------------- subcommands
def _sub(sub: Any, name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=description or help[0].upper() + help[1:] + ".",
                       epilog="examples:\n" + EXAMPLES[name], formatter_class=HelpFormatter,
                       allow_abbrev=False)
    _verbosity(p, top=False)
    return p


def _finetune(sub: Any) -> None:
    f = _sub(sub, "finetune", "train a model for a task and write an artifact",
             "Train a model for a task on the train split, early-stop on tuning, evaluate tuning and "
             "held_out, and write an artifact (safetensors + JSON).\n"
             "The task is --labels, else --task, else --target.")
    _model_args(f, "artifact directory to write")
    _task_args(f)
    f.add_argument("--model", type=_choice("model", names.MODELS), choices=names.MODELS,
                   help="model family: rnn | behrt (sequence tasks), deepsurv (time to event), text (biopsy "
                        f"reports) {_from_config('model')}; survival tasks use deepsurv, biopsy text")
    f.add_argument("--text-model", type=_choice("text model", names.TEXT_MODELS), choices=names.TEXT_MODELS,
                   help="the biopsy text model: distilbert (the default) or tfidf_scope (scope-marked character "
                        "TF-IDF, configs/biopsy_tfidf.yaml; see benchmarks/results/text_out_of_style.md) "
                        f"{_from_config('text_model')}")
    f.add_argument("--init", metavar="DIR", help="artifact to start from (transfer learning or a BEHRT "
                   "pretraining); for survival a sequence artifact whose embeddings join the features "
                   "(default: train from scratch)")
    f.add_argument("--allow-init-overlap", action="store_true", help="accept an --init artifact trained on "
                   "subjects now in tuning/held_out (the report says so)")
    f.add_argument("--train-fraction", type=share, metavar="SHARE",
                   help="share of train-split patients to use, e.g. 0.1 "
                   + _from_config("train_fraction"))
    f.add_argument("--sites", nargs="+", metavar="SITE",
                   help="restrict to these sites, e.g. B (default: all)")
    f.add_argument("--adapt-sites", nargs="+", metavar="SITE",
                   help="biopsy: self-train towards these sites on "
                   "their train-split reports, labels unread, with --sites A --adapt-sites B "
                   "(default: not set)")
    f.add_argument("--split", type=_choice("split strategy", names.SPLIT_STRATEGIES),
                   choices=names.SPLIT_STRATEGIES,
                   help="patient split: data = the data's subject_splits (else seeded random), random, site, "
                        f"temporal {_from_config('split')}")
    f.add_argument("--held-out-sites", nargs="+", metavar="SITE",
                   help="with --split site: the held-out sites")
    f.add_argument("--cutoff", metavar="DATE", help="with --split temporal: first-event date at/after which "
                   "subjects are held out")
    f.add_argument("--event", metavar="CODE",
                   help=f"--target survival: the event code {_from_config('event')}")
    f.add_argument("--threshold", type=float, metavar="CDAI",
                   help="--target cdai: controlled when CDAI <= this "
                   + _from_config("threshold"))
    f.add_argument("--n-bootstrap", type=positive_int, metavar="N",
                   help="patient-bootstrap resamples for the CIs "
                   + _from_config("n_bootstrap"))
    _code_map_arg(f)


def _pretrain(sub: Any) -> None:
    pr = _sub(sub, "pretrain", "masked-code pretraining of BEHRT on the train split",
              "Masked-code pretraining of BEHRT on the train split; early stopping on the tuning MLM loss. "
              "Fine-tune from it with `ehrseq finetune --model behrt --init DIR`.")
    _model_args(pr, "artifact directory to write (an MLM artifact for --init)", "tiny | small | base")
    pr.add_argument("--mask-prob", type=share, default=0.15, metavar="SHARE",
                    help="share of codes masked per sequence")
    pr.add_argument("--prefixes", type=positive_int, default=1, metavar="K",
                    help="sequences per train patient: the whole history plus k-1 cut at earlier visit days")


def _evaluate_explain(sub: Any) -> None:
    e = _sub(sub, "evaluate", "report (JSON, Markdown, HTML) for an artifact on a dataset")
    e.add_argument("--artifact", required=True, metavar="DIR",
                   help="artifact directory written by `ehrseq finetune`")
    _data_arg(e)
    e.add_argument("--out", required=True, metavar="DIR", help="report directory (report.json, .md, .html, "
                   "predictions.parquet)")
    e.add_argument("--split", default="held_out", metavar="SPLIT",
                   help="which split of --data to evaluate: train, tuning, "
                   "held_out or all")
    e.add_argument("--labels", metavar="PATH",
                   help="MEDS label file or directory to evaluate at (default: the "
                   "artifact's task rebuilt on --data; needed for a task that came from a label file)")
    _column_map_arg(e)
    _code_map_arg(e)
    e.add_argument("--external", metavar="PATH", help="a second site's data, reported side by side "
                   "(default: not set)")
    e.add_argument("--group-by", nargs="+", metavar="COLUMN",
                   help="subgroup columns besides sex, age_band and "
                   "site, which are always reported (default: none)")
    e.add_argument("--min-group-size", type=positive_int, default=30, metavar="N",
                   help="smallest subgroup reported")
    e.add_argument("--n-boot", type=positive_int, default=1000, metavar="N",
                   help="patient-bootstrap resamples for the CIs")
    e.add_argument("--no-plots", action="store_true", help="no figures (they need matplotlib: ehrseq[plots])")
    _overwrite_arg(e, "a report")

    c = _sub(sub, "compare", "several artifacts of one task on the same rows, side by side (site transfer)",
             "Score two or more artifacts of one task on the same split of one dataset, leaving out patients "
             "whose data trained any of them; each metric with its CI and the paired-bootstrap difference to "
             "the first artifact (compare.json, .md, .html).")
    c.add_argument("--artifacts", required=True, nargs="+", metavar="DIR",
                   help="two or more artifact directories; the first is the reference")
    c.add_argument("--names", nargs="+", metavar="NAME",
                   help="one short name per artifact for the table (default: the directory names)")
    _data_arg(c)
    c.add_argument("--out", required=True, metavar="DIR", help="directory for compare.json, .md, .html")
    c.add_argument("--split", default="held_out", metavar="SPLIT",
                   help="which split of --data: train, tuning, held_out or all")
    c.add_argument("--sites", nargs="+", metavar="SITE",
                   help="only the patients of these sites, e.g. B (default: every site)")
    c.add_argument("--labels", metavar="PATH",
                   help="MEDS label file or directory (default: the task rebuilt on --data)")
    _column_map_arg(c)
    _code_map_arg(c)
    c.add_argument("--n-boot", type=positive_int, default=1000, metavar="N",
                   help="paired patient-bootstrap resamples for the CIs")
    _overwrite_arg(c, "a comparison")

    x = _sub(sub, "explain", "importance per input group (RNN, BEHRT, DeepSurv; every task kind)",
             "Permutation importance per input group: how much the metric drops when the group is shuffled "
             "across patients.")
    x.add_argument("--artifact", required=True, metavar="DIR",
                   help="artifact directory written by `ehrseq finetune`")
    _data_arg(x)
    x.add_argument("--split", default="held_out", metavar="SPLIT",
                   help="which split of --data: train, tuning, held_out or all")
    x.add_argument("--labels", metavar="PATH",
                   help="MEDS label file or directory (default: the artifact's task "
                   "rebuilt on --data)")
    _column_map_arg(x)
    x.add_argument("--n-repeats", type=positive_int, default=3, metavar="N", help="shuffles per input group")
    x.add_argument("--out", metavar="CSV", help="CSV file for the table (default: print only)")
    _overwrite_arg(x, "a CSV file")


def _validate_labels(sub: Any) -> None:
    v = _sub(sub, "validate", "what a dataset holds, read as training would (errors exit 2)")
    _data_arg(v)
    v.add_argument("--labels", metavar="PATH",
                   help="a MEDS label file or directory: summarised and matched to "
                   "the data (default: not set)")
    v.add_argument("--label-kind", choices=names.LABEL_KINDS, help="read --labels as this kind (survival: "
                   "float_value = days, boolean_value = event) (default: from the file)")
    _column_map_arg(v)
    v.add_argument("--json", action="store_true", help="print the summary as JSON")

    lb = _sub(sub, "labels", "MEDS labels from an ACES task file (configs/tasks/)")
    lb.add_argument("--task", required=True, metavar="YAML", help="ACES task file, optionally with a "
                    "time_to_event block: a path or a shipped name such as mimic/long_los")
    lb.add_argument("--predicates", metavar="YAML",
                    help="ACES predicates file (the codes of one dataset): a path "
                    "or a shipped name such as mimic/predicates (default: not set)")
    _data_arg(lb)
    lb.add_argument("--out", required=True, metavar="DIR",
                    help="directory to write labels.parquet and task.json")
    _column_map_arg(lb)
    _overwrite_arg(lb, "labels")


def _synth(sub: Any) -> None:
    s = _sub(sub, "synth", "write a synthetic 2-site RA cohort (MEDS + EHR extract + truth)")
    s.add_argument("--n-patients", type=positive_int, default=2000, metavar="N", help="patients to generate")
    s.add_argument("--sites", type=positive_int, default=2, metavar="N", help="number of sites (A, B, ...)")
    s.add_argument("--seed", type=nonnegative_int, default=0, metavar="N", help="generator seed")
    s.add_argument("--out", required=True, metavar="DIR",
                   help="directory for meds/, extract/ and meds/truth/")
    s.add_argument("--no-extract", action="store_true", help="skip the CSV extract copy (faster for large N)")
    s.add_argument("--biopsy-rate", type=rate, default=0.05, metavar="SHARE",
                   help="share of patients over 55 with a GCA work-up and a temporal artery biopsy "
                        "report (x2)")
    s.add_argument("--shift", choices=("mild", "realistic"), default="mild",
                   help="how site B differs from A (ehrseq.synth.shift): mild = the long-standing cohort; "
                        "realistic = local lab codes, ICD-9, units, state-dependent cadence and lab ordering, "
                        "nurse visits without a CDAI, another treat-to-target policy, case mix")
    s.add_argument("--shift-option", nargs="+", type=_pair, metavar="KEY=VALUE",
                   help="change single switches of --shift, e.g. policy=same icd9=false (fields of "
                        "SiteShift) (default: none)")


def _demo_score(sub: Any) -> None:
    d = _sub(sub, "demo", "the main job end to end: synth -> CDAI forecaster -> metrics vs oracle")
    d.add_argument("--out", default="runs/demo", metavar="DIR",
                   help="directory for the cohort and the artifact")
    d.add_argument("--n-patients", type=positive_int, default=1500, metavar="N", help="patients to generate")
    d.add_argument("--epochs", type=positive_int, default=6, metavar="N", help="most training epochs")
    d.add_argument("--seed", type=nonnegative_int, default=0, metavar="N",
                   help="seed of the cohort and the model")
    d.add_argument("--n-bootstrap", type=positive_int, default=200, metavar="N",
                   help="patient-bootstrap resamples for the CIs")
    d.add_argument("--no-progress", action="store_true", help=f"no progress bars; {HEARTBEAT}")

    sc = _sub(sub, "score", "batch-score an extract with an artifact (streaming, resumable)")
    add_score_args(sc)


def build_parser() -> argparse.ArgumentParser:
    """The ``ehrseq`` parser with every subcommand (nothing heavy is imported)."""
    p = argparse.ArgumentParser(
        prog="ehrseq", formatter_class=HelpFormatter, allow_abbrev=False,
        description="Models of patient records for rheumatology research: encounter sequences (RNN, BEHRT), "
                    "clinical text and time to event (DeepSurv), on MEDS data.",
        epilog="examples:\n  ehrseq demo\n" + EXAMPLES["finetune"].split("\n")[0] + "\n"
               + EXAMPLES["evaluate"].split("\n")[0]
               + "\n\n`ehrseq COMMAND --help` lists a command's options with their defaults, and examples.")
    p.add_argument("--version", action="version", version=f"ehrseq {__version__}")
    _verbosity(p, top=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _synth(sub)
    _validate_labels(sub)
    _finetune(sub)
    _pretrain(sub)
    _evaluate_explain(sub)
    _demo_score(sub)
    return p


def subparser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    """The parser of ``command`` (the top-level parser when there is none)."""
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction) and command in a.choices:
            return a.choices[command]
    return parser


def unknown_options_error(parser: argparse.ArgumentParser, extra: list[str]) -> str:
    """``unrecognized arguments: ...`` with the nearest known option for each unknown one."""
    known = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    hints = []
    for tok in extra:
        if tok.startswith("--"):
            near = difflib.get_close_matches(tok.split("=", 1)[0], known, n=1, cutoff=0.75)
            if near:
                hints.append(f"{tok.split('=', 1)[0]}: did you mean {near[0]}?")
    return f"unrecognized arguments: {' '.join(extra)}" + (f" ({'; '.join(hints)})" if hints else "")
