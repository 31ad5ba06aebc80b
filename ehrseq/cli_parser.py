"""The ``ehrseq`` argument parser: every subcommand, option, help text, default and example.

Imports nothing heavier than argparse (no torch, pandas or transformers), so ``ehrseq --help`` starts at once;
the command functions in :mod:`ehrseq.cli` import what they need when they run. The option types and the options
shared by several subcommands are in :mod:`ehrseq.cli_options`.
"""

from __future__ import annotations

import argparse
import difflib
from typing import Any

from ehrseq import __version__, names
from ehrseq.cli_examples import EXAMPLES
from ehrseq.cli_options import (  # noqa: F401  (CONFIG_DEFAULTS, option_help, add_score_args: re-exported)
    CONFIG_DEFAULTS,
    HEARTBEAT,
    HelpFormatter,
    add_command,
    add_score_args,
    choice,
    code_map_arg,
    column_map_arg,
    data_arg,
    from_config,
    model_args,
    nonnegative_int,
    option_help,
    overwrite_arg,
    pair,
    positive_int,
    rate,
    share,
    task_args,
    verbosity_args,
)


# ----------------------------------------------------------------------------------------- subcommands
def _finetune(sub: Any) -> None:
    f = add_command(sub, "finetune", "train a model for a task and write an artifact",
                    "Train a model for a task on the train split, early-stop on tuning, evaluate tuning and "
                    "held_out, and write an artifact (safetensors + JSON).\n"
                    "The task is --labels, else --task, else --target.")
    model_args(f, "artifact directory to write")
    task_args(f)
    f.add_argument("--model", type=choice("model", names.MODELS), choices=names.MODELS,
                   help="model family: rnn | behrt (sequence tasks), deepsurv (time to event), text (biopsy "
                        f"reports) {from_config('model')}; survival tasks use deepsurv, biopsy text")
    f.add_argument("--text-model", type=choice("text model", names.TEXT_MODELS), choices=names.TEXT_MODELS,
                   help="the biopsy text model: distilbert (the default) or tfidf_scope (scope-marked character "
                        "TF-IDF, configs/biopsy_tfidf.yaml; see benchmarks/results/text_out_of_style.md) "
                        f"{from_config('text_model')}")
    f.add_argument("--init", metavar="DIR", help="artifact to start from (transfer learning or a BEHRT "
                   "pretraining); for survival a sequence artifact whose embeddings join the features "
                   "(default: train from scratch)")
    f.add_argument("--allow-init-overlap", action="store_true", help="accept an --init artifact trained on "
                   "subjects now in tuning/held_out (the report says so)")
    f.add_argument("--train-fraction", type=share, metavar="SHARE",
                   help="share of train-split patients to use, e.g. 0.1 "
                   + from_config("train_fraction"))
    f.add_argument("--sites", nargs="+", metavar="SITE",
                   help="restrict to these sites, e.g. B (default: all)")
    f.add_argument("--adapt-sites", nargs="+", metavar="SITE",
                   help="biopsy: self-train towards these sites on "
                   "their train-split reports, labels unread, with --sites A --adapt-sites B "
                   "(default: not set)")
    f.add_argument("--split", type=choice("split strategy", names.SPLIT_STRATEGIES),
                   choices=names.SPLIT_STRATEGIES,
                   help="patient split: data = the data's subject_splits (else seeded random), random, site, "
                        f"temporal {from_config('split')}")
    f.add_argument("--held-out-sites", nargs="+", metavar="SITE",
                   help="with --split site: the held-out sites")
    f.add_argument("--cutoff", metavar="DATE", help="with --split temporal: first-event date at/after which "
                   "subjects are held out")
    f.add_argument("--event", metavar="CODE",
                   help=f"--target survival: the event code {from_config('event')}")
    f.add_argument("--threshold", type=float, metavar="CDAI",
                   help="--target cdai: controlled when CDAI <= this "
                   + from_config("threshold"))
    f.add_argument("--n-bootstrap", type=positive_int, metavar="N",
                   help="patient-bootstrap resamples for the CIs "
                   + from_config("n_bootstrap"))
    code_map_arg(f)


def _pretrain(sub: Any) -> None:
    pr = add_command(sub, "pretrain", "masked-code pretraining of BEHRT on the train split",
                     "Masked-code pretraining of BEHRT on the train split; early stopping on the tuning MLM loss. "
                     "Fine-tune from it with `ehrseq finetune --model behrt --init DIR`.")
    model_args(pr, "artifact directory to write (an MLM artifact for --init)", "tiny | small | base")
    pr.add_argument("--mask-prob", type=share, default=0.15, metavar="SHARE",
                    help="share of codes masked per sequence")
    pr.add_argument("--prefixes", type=positive_int, default=1, metavar="K",
                    help="sequences per train patient: the whole history plus k-1 cut at earlier visit days")


def _evaluate_explain(sub: Any) -> None:
    e = add_command(sub, "evaluate", "report (JSON, Markdown, HTML) for an artifact on a dataset")
    e.add_argument("--artifact", required=True, metavar="DIR",
                   help="artifact directory written by `ehrseq finetune`")
    data_arg(e)
    e.add_argument("--out", required=True, metavar="DIR", help="report directory (report.json, .md, .html, "
                   "predictions.parquet)")
    e.add_argument("--split", default="held_out", metavar="SPLIT",
                   help="which split of --data to evaluate: train, tuning, "
                   "held_out or all")
    e.add_argument("--labels", metavar="PATH",
                   help="MEDS label file or directory to evaluate at (default: the "
                   "artifact's task rebuilt on --data; needed for a task that came from a label file)")
    column_map_arg(e)
    code_map_arg(e)
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
    overwrite_arg(e, "a report")

    c = add_command(sub, "compare", "several artifacts of one task on the same rows, side by side (site transfer)",
                    "Score two or more artifacts of one task on the same split of one dataset, leaving out patients "
                    "whose data trained any of them; each metric with its CI and the paired-bootstrap difference to "
                    "the first artifact (compare.json, .md, .html).")
    c.add_argument("--artifacts", required=True, nargs="+", metavar="DIR",
                   help="two or more artifact directories; the first is the reference")
    c.add_argument("--names", nargs="+", metavar="NAME",
                   help="one short name per artifact for the table (default: the directory names)")
    data_arg(c)
    c.add_argument("--out", required=True, metavar="DIR", help="directory for compare.json, .md, .html")
    c.add_argument("--split", default="held_out", metavar="SPLIT",
                   help="which split of --data: train, tuning, held_out or all")
    c.add_argument("--sites", nargs="+", metavar="SITE",
                   help="only the patients of these sites, e.g. B (default: every site)")
    c.add_argument("--labels", metavar="PATH",
                   help="MEDS label file or directory (default: the task rebuilt on --data)")
    column_map_arg(c)
    code_map_arg(c)
    c.add_argument("--n-boot", type=positive_int, default=1000, metavar="N",
                   help="paired patient-bootstrap resamples for the CIs")
    overwrite_arg(c, "a comparison")

    r = add_command(sub, "retune", "re-choose a biopsy text model's thresholds on labelled reports of a new site",
                    "Keep every weight of a biopsy text artifact and write a new artifact whose decision "
                    "thresholds are chosen on a handful of labelled reports of another site (a CSV or Parquet "
                    "file: a text column and one 0/1 column per label).")
    r.add_argument("--artifact", required=True, metavar="DIR", help="biopsy artifact written by "
                   "`ehrseq finetune --target biopsy`")
    r.add_argument("--reports", required=True, metavar="FILE", help="CSV or Parquet: text, "
                   "adventitial_inflammation, giant_cells, intimal_hyperplasia, gca (0/1)")
    r.add_argument("--out", required=True, metavar="DIR", help="new artifact directory (the source is kept)")
    r.add_argument("--metric", choices=("f1", "youden"), help="what the thresholds maximise (default: the "
                   "model's own threshold_metric)")
    overwrite_arg(r, "an artifact")

    x = add_command(sub, "explain", "importance per input group (RNN, BEHRT, DeepSurv; every task kind)",
                    "Permutation importance per input group: how much the metric drops when the group is shuffled "
                    "across patients.")
    x.add_argument("--artifact", required=True, metavar="DIR",
                   help="artifact directory written by `ehrseq finetune`")
    data_arg(x)
    x.add_argument("--split", default="held_out", metavar="SPLIT",
                   help="which split of --data: train, tuning, held_out or all")
    x.add_argument("--labels", metavar="PATH",
                   help="MEDS label file or directory (default: the artifact's task "
                   "rebuilt on --data)")
    column_map_arg(x)
    x.add_argument("--n-repeats", type=positive_int, default=3, metavar="N", help="shuffles per input group")
    x.add_argument("--out", metavar="CSV", help="CSV file for the table (default: print only)")
    overwrite_arg(x, "a CSV file")


def _validate_labels(sub: Any) -> None:
    v = add_command(sub, "validate", "what a dataset holds, read as training would (errors exit 2)")
    data_arg(v)
    v.add_argument("--labels", metavar="PATH",
                   help="a MEDS label file or directory: summarised and matched to "
                   "the data (default: not set)")
    v.add_argument("--label-kind", choices=names.LABEL_KINDS, help="read --labels as this kind (survival: "
                   "float_value = days, boolean_value = event) (default: from the file)")
    column_map_arg(v)
    v.add_argument("--json", action="store_true", help="print the summary as JSON")

    lb = add_command(sub, "labels", "MEDS labels from an ACES task file (configs/tasks/)")
    lb.add_argument("--task", required=True, metavar="YAML", help="ACES task file, optionally with a "
                    "time_to_event block: a path or a shipped name such as mimic/long_los")
    lb.add_argument("--predicates", metavar="YAML",
                    help="ACES predicates file (the codes of one dataset): a path "
                    "or a shipped name such as mimic/predicates (default: not set)")
    data_arg(lb)
    lb.add_argument("--out", required=True, metavar="DIR",
                    help="directory to write labels.parquet and task.json")
    column_map_arg(lb)
    overwrite_arg(lb, "labels")


def _synth(sub: Any) -> None:
    s = add_command(sub, "synth", "write a synthetic 2-site RA cohort (MEDS + EHR extract + truth)")
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
    s.add_argument("--shift-option", nargs="+", type=pair, metavar="KEY=VALUE",
                   help="change single switches of --shift, e.g. policy=same icd9=false (fields of "
                        "SiteShift) (default: none)")


def _demo_score(sub: Any) -> None:
    d = add_command(sub, "demo", "the main job end to end: synth -> CDAI forecaster -> metrics vs oracle")
    d.add_argument("--out", default="runs/demo", metavar="DIR",
                   help="directory for the cohort and the artifact")
    d.add_argument("--n-patients", type=positive_int, default=1500, metavar="N", help="patients to generate")
    d.add_argument("--epochs", type=positive_int, default=6, metavar="N", help="most training epochs")
    d.add_argument("--seed", type=nonnegative_int, default=0, metavar="N",
                   help="seed of the cohort and the model")
    d.add_argument("--n-bootstrap", type=positive_int, default=200, metavar="N",
                   help="patient-bootstrap resamples for the CIs")
    d.add_argument("--no-progress", action="store_true", help=f"no progress bars; {HEARTBEAT}")

    sc = add_command(sub, "score", "batch-score an extract with an artifact (streaming, resumable)")
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
    verbosity_args(p, top=True)
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
