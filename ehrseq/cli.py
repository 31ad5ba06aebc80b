"""``ehrseq`` command line: parse arguments, check them, build a config, call the API. Nothing else here.

The parser (every option, help text and example) is :mod:`ehrseq.cli_parser`, which imports nothing heavy;
each command imports the library when it runs, so ``ehrseq --help`` starts at once. :func:`main` returns the
exit code: 0 on success, 2 for every mistake a user can make (argparse's usage errors, :class:`UsageError`,
every :class:`ehrseq.errors.EhrseqError`), each reported as one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ehrseq import names
from ehrseq.cli_options import TRAINING_COMMANDS
from ehrseq.cli_parser import build_parser, subparser, unknown_options_error
from ehrseq.errors import ConfigError, EhrseqError

__all__ = ["UsageError", "build_parser", "main"]
log = logging.getLogger("ehrseq")


class UsageError(EhrseqError):
    """Options that do not work together; reported under the subcommand's usage line (exit code 2)."""


def _kv(items: list[str] | None) -> dict[str, str] | None:
    """``--column-map`` pairs (argparse has checked each is SOURCE=TARGET)."""
    return dict(it.split("=", 1) for it in items or []) or None


def _column_map(a: argparse.Namespace) -> dict[str, str] | None:
    return _kv(getattr(a, "column_map", None))


def _load(a: argparse.Namespace):
    from ehrseq.api import load_data

    return load_data(a.data, column_map=_column_map(a))


def _task_path(name: str | None) -> str | None:
    """A --task / --predicates value as a path: as given when it exists, else a shipped task file."""
    if name is None:
        return None
    from ehrseq.config import resolve_config_path

    return str(resolve_config_path(name, "tasks"))


def _train_overrides(a: argparse.Namespace) -> dict[str, Any]:
    t: dict[str, Any] = {k: getattr(a, k) for k in ("epochs", "batch_size", "lr", "patience", "device")
                         if getattr(a, k, None) is not None}
    if getattr(a, "no_progress", False) or getattr(a, "quiet", False):
        t["progress"] = False
    return t


def _split_overrides(a: argparse.Namespace) -> dict[str, Any] | None:
    s = {"strategy": a.split, "held_out_sites": a.held_out_sites, "cutoff": a.cutoff}
    return {k: v for k, v in s.items() if v is not None} or None


def _effective_model(cfg: Any) -> str | None:
    """The model family a config trains, where it is known before the data is read (None: it depends on the
    kind of the task in a label or task file)."""
    has_task = cfg.labels is not None or cfg.task is not None
    if cfg.model == "text" or (cfg.target == "biopsy" and not has_task):
        return "text"
    if cfg.model == "deepsurv" or (cfg.target == "survival" and not has_task):
        return "deepsurv"
    return None if has_task and cfg.model == "rnn" else cfg.model


def check_config_names(cfg: Any, source: str) -> None:
    """ConfigError unless the config's model, target and preset are names ehrseq knows, and fit together.

    ``source`` names where the config came from (a file, or the command line). Nothing is imported."""
    for key, value, options in (("model", cfg.model, names.MODELS), ("target", cfg.target, names.TARGETS)):
        if value not in options:
            raise ConfigError(f"{source}: {key} '{value}' is not one of {', '.join(options)}")
    model = _effective_model(cfg)
    presets = names.PRESETS_OF_MODEL.get(model or "", ())
    if presets and cfg.preset not in presets:
        raise ConfigError(f"{source}: preset '{cfg.preset}' is not one of model {model}'s presets "
                          f"({', '.join(presets)})")


def _check_finetune_flags(a: argparse.Namespace, cfg: Any) -> None:
    """Flags that cannot take effect are refused, never ignored."""
    builtin = cfg.labels is None and cfg.task is None
    if a.label_kind and not cfg.labels:
        raise UsageError("--label-kind needs --labels (it says how to read the label file)")
    if a.predicates and not cfg.task:
        raise UsageError("--predicates needs --task (it holds the task file's codes)")
    if a.held_out_sites and cfg.split.strategy != "site":
        raise UsageError(f"--held-out-sites needs --split site (the split is '{cfg.split.strategy}')")
    if a.cutoff and cfg.split.strategy != "temporal":
        raise UsageError(f"--cutoff needs --split temporal (the split is '{cfg.split.strategy}')")
    if a.threshold is not None and not (builtin and cfg.target == "cdai"):
        raise UsageError("--threshold applies to --target cdai only")
    if a.event is not None and not (builtin and cfg.target == "survival"):
        raise UsageError("--event applies to --target survival only (a task file names its event itself)")
    if a.adapt_sites and _effective_model(cfg) != "text":
        raise UsageError("--adapt-sites applies to the biopsy text classifier (--target biopsy) only")


def cmd_finetune(a: argparse.Namespace) -> int:
    """``ehrseq finetune``: check the config, train one model family, print its held-out metrics."""
    from ehrseq.config import load_config

    cfg = load_config(  # the config is checked before the data is read (and before the slow model imports)
        a.config, target=a.target, model=a.model, text_model=a.text_model, preset=a.preset, seed=a.seed,
        train=_train_overrides(a) or None, sites=a.sites, adapt_sites=a.adapt_sites,
        train_fraction=a.train_fraction, split=_split_overrides(a), event_code=a.event,
        cdai_threshold=a.threshold, n_bootstrap=a.n_bootstrap, labels=a.labels, task=_task_path(a.task),
        predicates=_task_path(a.predicates), label_kind=a.label_kind,
        allow_init_overlap=True if a.allow_init_overlap else None,
    )
    check_config_names(cfg, a.config or "command line")
    _check_finetune_flags(a, cfg)
    from ehrseq.api import finetune

    res = finetune(a.data, out=a.out, config=cfg, init=a.init, column_map=_column_map(a), code_map=a.code_map,
                   overwrite=a.overwrite)
    _print_metrics(res.metrics)
    print(f"artifact: {res.artifact}")
    return 0


def _print_metrics(metrics: dict[str, Any]) -> None:
    from ehrseq.evaluate.summary import split_figures

    for split in ("tuning", "held_out", "held_out_adapt_sites"):
        m = metrics.get(split)
        if not isinstance(m, dict):
            continue
        figs = split_figures(m)  # with their flags: few rows of a class, macro over k/L labels, no-width CIs
        n = m.get("n_rows", m.get("n", m.get("split_sizes", {}).get(split)))
        print(f"{split:9s} n={n}  " + "  ".join(figs))


def cmd_pretrain(a: argparse.Namespace) -> int:
    """``ehrseq pretrain``: masked-code pretraining of BEHRT, written as an artifact for ``--init``."""
    from ehrseq.config import load_config
    from ehrseq.recipes.pretrain import check_pretrain_args, pretrain

    cfg = load_config(a.config, model="behrt", preset=a.preset, seed=a.seed,  # checked before the data is read
                      train=_train_overrides(a) or None)
    check_config_names(cfg, a.config or "command line")
    check_pretrain_args(a.mask_prob, a.prefixes)
    from ehrseq.artifacts import check_artifact_out

    check_artifact_out(a.out, overwrite=a.overwrite)  # before the data is read
    m = pretrain(_load(a), out=a.out, config=cfg, mask_prob=a.mask_prob, prefixes_per_subject=a.prefixes,
                 overwrite=a.overwrite)
    print(f"best tuning MLM loss {m['train']['best_tuning_mlm_loss']:.4f} at epoch {m['train']['best_epoch']}")
    print(f"artifact: {a.out}")
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    """``ehrseq evaluate``: score an artifact's held-out patients and write the report."""
    from ehrseq.io.guards import check_output
    from ehrseq.recipes.evaluate import evaluate_artifact

    check_output(a.out, overwrite=a.overwrite, what="an ehrseq report",
                 is_ours=lambda d: (d / "report.json").is_file())  # before the data is read
    paths = evaluate_artifact(a.artifact, a.data, a.out, split=a.split, external=a.external,
                              group_by=a.group_by or [], min_group_size=a.min_group_size, n_boot=a.n_boot,
                              plots=not a.no_plots, labels=a.labels, column_map=_column_map(a),
                              code_map=a.code_map)
    for k, p in paths.items():
        print(f"{k}: {p}")
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    """``ehrseq compare --artifacts A B ... --data D --out DIR``: the artifacts side by side on the same rows."""
    from ehrseq.io.guards import check_output
    from ehrseq.recipes.compare import compare_artifacts

    check_output(a.out, overwrite=a.overwrite, what="an ehrseq comparison",
                 is_ours=lambda d: (d / "compare.json").is_file())  # before the data is read
    paths = compare_artifacts(a.artifacts, a.data, a.out, names=a.names, split=a.split, sites=a.sites or (),
                              labels=a.labels, column_map=_column_map(a), code_map=a.code_map, n_boot=a.n_boot)
    print(Path(paths["md"]).read_text().split("\n\n", 2)[-1].rstrip())
    for k, p in paths.items():
        print(f"{k}: {p}")
    return 0


def cmd_explain(a: argparse.Namespace) -> int:
    """``ehrseq explain``: permutation importance of an artifact's features."""
    from ehrseq.explain import explain_artifact

    if a.out:
        from ehrseq.io.guards import check_output_file

        check_output_file(a.out, overwrite=a.overwrite)  # before the data is read
    imp = explain_artifact(a.artifact, a.data, split=a.split, n_repeats=a.n_repeats, labels=a.labels,
                           column_map=_column_map(a))
    print(f"baseline {imp.attrs.get('metric', 'AUROC')} {imp.attrs['baseline']:.3f}; drop when each input group "
          f"is {imp.attrs.get('method', 'shuffled across patients')}:")
    print(imp.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if a.out:
        from ehrseq.io.guards import atomic_file

        with atomic_file(a.out) as tmp:  # a failed write leaves no half table, and keeps an --overwrite'd one
            imp.to_csv(tmp, index=False)
    return 0


def cmd_retune(a: argparse.Namespace) -> int:
    """``ehrseq retune``: a biopsy text artifact with thresholds re-chosen on labelled reports of a new site."""
    from ehrseq.recipes.retune import retune_artifact

    m = retune_artifact(a.artifact, a.reports, a.out, metric=a.metric, overwrite=a.overwrite)
    r = m["retuned"]
    print(f"thresholds re-chosen ({r['metric']}) on {r['reports']} labelled reports "
          f"(positives: {', '.join(f'{k} {v}' for k, v in r['positives'].items())}):")
    for lab, new in r["thresholds_after"].items():
        kept = " (kept: one class among the reports)" if lab in r["kept_one_class"] else ""
        print(f"  {lab}: {r['thresholds_before'][lab]:.3f} -> {new:.3f}; F1 on these reports "
              f"{m['before'][lab]['f1']:.3f} -> {m['after'][lab]['f1']:.3f}{kept}")
    print("(F1 measured on the reports the thresholds were chosen on: optimistic)")
    print(f"artifact: {m['artifact_path']}")
    return 0


def cmd_labels(a: argparse.Namespace) -> int:
    """``ehrseq labels --task TASK.yaml --data DATA --out DIR``: MEDS labels from an ACES task file."""
    from ehrseq.tasks.aces import extract_labels, load_task_file
    from ehrseq.tasks.label_files import write_task_labels

    task, predicates = _task_path(a.task), _task_path(a.predicates)
    load_task_file(task, predicates)  # a bad task file fails before the data is read
    from ehrseq.io.guards import check_output

    check_output(a.out, overwrite=a.overwrite, what="MEDS labels", is_ours=lambda d: (d / "labels.parquet").is_file())
    data = _load(a)
    tl = extract_labels(task, data.events, predicates_path=predicates)
    path = write_task_labels(tl, a.out)
    f = tl.frame
    extra = ""
    if tl.spec.kind == "binary":
        extra = f", positive rate {f['boolean_value'].mean():.3f}"
    elif tl.spec.kind == "survival":
        extra = f", event rate {f['event'].mean():.3f}, median follow-up {f['duration'].median():.1f} days"
    print(f"{tl.spec.name} ({tl.spec.kind}): {len(f)} rows of {f['subject_id'].nunique()} subjects{extra}")
    print(f"labels: {path}")
    return 0


def cmd_validate(a: argparse.Namespace) -> int:
    """Summarise a dataset as training would read it; exit 0 when it is usable (errors exit 2)."""
    if a.label_kind and not a.labels:
        raise UsageError("--label-kind needs --labels (it says how to read the label file)")
    from ehrseq.datacheck import format_summary, summarize_dataset

    s = summarize_dataset(a.data, column_map=_column_map(a), labels=a.labels, label_kind=a.label_kind)
    print(json.dumps(s, indent=2) if a.json else format_summary(s))
    return 0


def cmd_synth(a: argparse.Namespace) -> int:
    """``ehrseq synth``: write a synthetic RA cohort (MEDS, EHR extract and the generator's truth)."""
    from ehrseq.api import synthesize

    t = time.perf_counter()
    from ehrseq.synth.shift import parse_options, resolve_shift

    try:
        shift = resolve_shift(a.shift, **parse_options(_kv(a.shift_option) or {}))
    except ValueError as e:
        raise UsageError(f"--shift-option: {e}") from None
    out = synthesize(a.n_patients, out=a.out, n_sites=a.sites, seed=a.seed, extract=not a.no_extract,
                     biopsy_rate=a.biopsy_rate, shift=shift)
    wrote = "meds/, meds/truth/" + (", extract/" if (Path(out) / "extract").is_dir() else "")
    if (Path(out) / "meds" / "truth" / "code_map_b_to_a.csv").is_file():
        wrote += ", meds/truth/code_map_b_to_a.csv (for --code-map)"
    print(f"wrote a synthetic cohort of {a.n_patients} patients at {a.sites} site(s), {a.shift} site shift, to "
          f"{out} ({wrote}) in {time.perf_counter() - t:.1f}s")
    return 0


def cmd_score(a: argparse.Namespace) -> int:
    """``ehrseq score``: batch scoring of an artifact over a dataset (see :mod:`ehrseq.scoring`)."""
    from ehrseq.scoring import run_score

    return run_score(a)


def cmd_demo(a: argparse.Namespace) -> int:
    """The main job: synthetic 2-site cohort -> RNN CDAI forecaster -> metrics next to the oracle."""
    from ehrseq.api import finetune, synthesize
    from ehrseq.evaluate.metrics import auroc

    out = Path(a.out)
    t0 = time.perf_counter()
    synthesize(a.n_patients, out=out / "cohort", seed=a.seed)
    print(f"[1/3] synthetic RA cohort: {a.n_patients} patients, 2 sites -> {out / 'cohort'} "
          f"({time.perf_counter() - t0:.0f}s)")
    progress = not (a.no_progress or a.quiet)
    res = finetune(out / "cohort" / "meds", out=out / "cdai_rnn", target="cdai", model="rnn", preset="small",
                   seed=a.seed, train={"epochs": a.epochs, "progress": progress}, n_bootstrap=a.n_bootstrap,
                   overwrite=True)  # the demo rewrites its own directory each run
    print(f"[2/3] fine-tuned the RNN CDAI forecaster -> {res.artifact} ({time.perf_counter() - t0:.0f}s)")
    import pandas as pd

    truth = pd.read_parquet(out / "cohort" / "meds" / "truth" / "cdai_next.parquet")
    ho = res.predictions["held_out"].merge(truth, on=["subject_id", "prediction_time"], how="left")
    oracle = auroc(ho["y_true"].to_numpy(), ho["true_prob_controlled"].to_numpy())
    print("[3/3] controlled (CDAI <= 10) at the next visit, held-out patients:")
    _print_metrics(res.metrics)
    model_auc = res.metrics["held_out"]["auroc"]["value"]
    print(f"oracle AUROC (the generator's true probabilities) {oracle.value:.3f}; "
          f"model reaches {model_auc / oracle.value:.1%} of it")
    summary = {"held_out": res.metrics["held_out"], "oracle_auroc": oracle.value, "artifact": str(res.artifact)}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "synth": cmd_synth, "finetune": cmd_finetune, "pretrain": cmd_pretrain, "evaluate": cmd_evaluate,
    "explain": cmd_explain, "compare": cmd_compare, "validate": cmd_validate, "labels": cmd_labels, "demo": cmd_demo,
    "score": cmd_score, "retune": cmd_retune,
}


def _setup_logging(a: argparse.Namespace) -> Callable[[], None]:
    """Log levels from -v / -q (training commands default to INFO for ehrseq: the heartbeat); returns undo."""
    pkg = logging.getLogger("ehrseq")
    before = pkg.level
    verbose, quiet = a.verbose or 0, a.quiet
    if quiet:
        level = logging.WARNING
    elif verbose >= 2:
        level = logging.DEBUG
    elif verbose or a.command in TRAINING_COMMANDS:
        level = logging.INFO
    else:
        level = logging.WARNING
    logging.basicConfig(level=logging.INFO if verbose and not quiet else logging.WARNING, datefmt="%H:%M:%S",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pkg.setLevel(level)
    return lambda: pkg.setLevel(before)


def _one_line(e: BaseException) -> str:
    return "; ".join(part.strip() for part in str(e).splitlines() if part.strip())


def main(argv: list[str] | None = None) -> int:
    """Run ``ehrseq`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # argparse would report these under the top-level usage; the subcommand's is the useful one
            sub = subparser(parser, getattr(args, "command", None))
            sub.error(unknown_options_error(sub, extra))
    except SystemExit as e:  # --help, --version (0) or a usage error (2), already printed
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    undo = _setup_logging(args)
    try:
        return int(COMMANDS[args.command](args) or 0)
    except UsageError as e:
        sub = subparser(parser, args.command)
        sub.print_usage(sys.stderr)
        print(f"{sub.prog}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except (EhrseqError, FileNotFoundError) as e:
        print(f"ehrseq {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ehrseq {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `ehrseq explain ... | head`: the reader left; no traceback for that
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's final flush must not fail
        return 0
    finally:
        undo()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
