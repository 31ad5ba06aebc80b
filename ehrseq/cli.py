"""``ehrseq`` command line: parse arguments, build a config, call the API. Nothing else lives here."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from ehrseq import __version__
from ehrseq.errors import EhrseqError

log = logging.getLogger("ehrseq")


def _kv(items: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for it in items or []:
        if "=" not in it:
            raise SystemExit(f"{flag} takes SOURCE=TARGET pairs, got '{it}'")
        k, v = it.split("=", 1)
        out[k] = v
    return out


def _positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return n


def _train_overrides(a: argparse.Namespace) -> dict[str, Any]:
    t: dict[str, Any] = {}
    for k in ("epochs", "batch_size", "lr", "patience"):
        v = getattr(a, k, None)
        if v is not None:
            t[k] = v
    if getattr(a, "no_progress", False):
        t["progress"] = False
    return t


def _common_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="MEDS root, MEDS Parquet file/directory, or EHR-extract directory")
    p.add_argument("--out", required=True, help="artifact directory to write")
    p.add_argument("--config", help="YAML config (see configs/)")
    p.add_argument("--preset", help="model size preset: tiny | small | base (behrt)")
    p.add_argument("--seed", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--patience", type=int)
    p.add_argument("--no-progress", action="store_true", help="no progress bars (batch jobs)")
    _column_map_arg(p)


def _task_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", help="MEDS label file or directory: the task is its rows (see data_schemas/README.md)")
    p.add_argument("--label-kind", choices=["binary", "regression", "multiclass", "survival"],
                   help="read --labels as this kind (default: from the file's value column or its ehrseq metadata)")
    p.add_argument("--task", help="ACES task file (configs/tasks/): its labels are built from --data")


def _column_map_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--column-map", nargs="*", metavar="SRC=MEDS", help="rename source columns, e.g. value=numeric_value")


def _load(a: argparse.Namespace):
    from ehrseq.api import load_data

    return load_data(a.data, column_map=_kv(a.column_map, "--column-map") or None)


def cmd_synth(a: argparse.Namespace) -> int:
    from ehrseq.api import synthesize

    t = time.perf_counter()
    out = synthesize(a.n_patients, out=a.out, n_sites=a.sites, seed=a.seed, extract=not a.no_extract,
                     biopsy_rate=a.biopsy_rate)
    print(f"wrote a synthetic cohort of {a.n_patients} patients at {a.sites} site(s) to {out} "
          f"(meds/, extract/, meds/truth/) in {time.perf_counter() - t:.1f}s")
    return 0


def _split_overrides(a: argparse.Namespace) -> dict[str, Any] | None:
    if a.split is None:
        return None
    s: dict[str, Any] = {"strategy": a.split}
    if a.held_out_sites:
        s["held_out_sites"] = a.held_out_sites
    if a.cutoff:
        s["cutoff"] = a.cutoff
    return s


def cmd_finetune(a: argparse.Namespace) -> int:
    from ehrseq.config import load_config

    cfg = load_config(  # the config is checked before the data is read (and before the slow model imports)
        a.config, target=a.target, model=a.model, preset=a.preset, seed=a.seed,
        train=_train_overrides(a) or None, sites=a.sites, adapt_sites=a.adapt_sites, train_fraction=a.train_fraction,
        split=_split_overrides(a), event_code=a.event, cdai_threshold=a.threshold, n_bootstrap=a.n_bootstrap,
        labels=a.labels, task=a.task, predicates=a.predicates, label_kind=a.label_kind,
        allow_init_overlap=True if a.allow_init_overlap else None,
    )
    from ehrseq.api import finetune
    from ehrseq.evaluate.summary import fmt

    res = finetune(a.data, out=a.out, config=cfg, init=a.init, column_map=_column_map(a))
    _print_metrics(res.metrics, fmt)
    print(f"artifact: {res.artifact}")
    return 0


def _print_metrics(metrics: dict[str, Any], fmt) -> None:
    for split in ("tuning", "held_out", "held_out_adapt_sites"):
        m = metrics.get(split)
        if not isinstance(m, dict):
            continue
        figs = [f"{k}={fmt(v)}" for k, v in m.items() if isinstance(v, dict) and "value" in v]
        figs += [f"{k}: auroc={v['auroc']:.3f} f1={v['f1']:.3f}" for k, v in m.items()
                 if isinstance(v, dict) and isinstance(v.get("auroc"), float)]  # text: per label
        n = m.get("n_rows", m.get("n", m.get("split_sizes", {}).get(split)))
        print(f"{split:9s} n={n}  " + "  ".join(figs))


def cmd_pretrain(a: argparse.Namespace) -> int:
    from ehrseq.config import load_config
    from ehrseq.pretrain import check_pretrain_args, pretrain

    cfg = load_config(a.config, model="behrt", preset=a.preset, seed=a.seed,  # checked before the data is read
                      train=_train_overrides(a) or None)
    check_pretrain_args(a.mask_prob, a.prefixes)
    m = pretrain(_load(a), out=a.out, config=cfg, mask_prob=a.mask_prob, prefixes_per_subject=a.prefixes)
    print(f"best tuning MLM loss {m['train']['best_tuning_mlm_loss']:.4f} at epoch {m['train']['best_epoch']}")
    print(f"artifact: {a.out}")
    return 0


def _column_map(a: argparse.Namespace) -> dict[str, str] | None:
    return _kv(getattr(a, "column_map", None), "--column-map") or None


def cmd_evaluate(a: argparse.Namespace) -> int:
    from ehrseq.evaluate.cli_report import evaluate_artifact

    paths = evaluate_artifact(a.artifact, a.data, a.out, split=a.split, external=a.external,
                              group_by=a.group_by or [], min_group_size=a.min_group_size, n_boot=a.n_boot,
                              plots=not a.no_plots, labels=a.labels, column_map=_column_map(a))
    for k, p in paths.items():
        print(f"{k}: {p}")
    return 0


def cmd_explain(a: argparse.Namespace) -> int:
    from ehrseq.explain import explain_artifact

    imp = explain_artifact(a.artifact, a.data, split=a.split, n_repeats=a.n_repeats, labels=a.labels,
                           column_map=_column_map(a))
    print(f"baseline {imp.attrs.get('metric', 'AUROC')} {imp.attrs['baseline']:.3f}; drop when each input group "
          f"is {imp.attrs.get('method', 'shuffled across patients')}:")
    print(imp.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if a.out:
        imp.to_csv(a.out, index=False)
    return 0


def cmd_labels(a: argparse.Namespace) -> int:
    """``ehrseq labels --task TASK.yaml --data DATA --out DIR``: MEDS labels from an ACES task file."""
    from ehrseq.tasks.aces import extract_labels, load_task_file
    from ehrseq.tasks.label_files import write_task_labels

    load_task_file(a.task, a.predicates)  # a bad task file fails before the data is read
    data = _load(a)
    tl = extract_labels(a.task, data.events, predicates_path=a.predicates)
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
    from ehrseq.io.summary import format_summary, summarize_dataset

    if a.label_kind and not a.labels:
        raise SystemExit("ehrseq validate: error: --label-kind needs --labels")
    s = summarize_dataset(a.data, column_map=_kv(a.column_map, "--column-map") or None, labels=a.labels,
                          label_kind=a.label_kind)
    print(json.dumps(s, indent=2) if a.json else format_summary(s))
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    """The main job: synthetic 2-site cohort -> RNN CDAI forecaster -> metrics next to the oracle."""
    from ehrseq.api import finetune, synthesize
    from ehrseq.evaluate.metrics import auroc
    from ehrseq.evaluate.summary import fmt

    out = Path(a.out)
    t0 = time.perf_counter()
    synthesize(a.n_patients, out=out / "cohort", seed=a.seed)
    print(f"[1/3] synthetic RA cohort: {a.n_patients} patients, 2 sites -> {out / 'cohort'} "
          f"({time.perf_counter() - t0:.0f}s)")
    res = finetune(out / "cohort" / "meds", out=out / "cdai_rnn", target="cdai", model="rnn", preset="small",
                   seed=a.seed, train={"epochs": a.epochs, "progress": not a.no_progress}, n_bootstrap=a.n_bootstrap)
    print(f"[2/3] fine-tuned the RNN CDAI forecaster -> {res.artifact} ({time.perf_counter() - t0:.0f}s)")
    import pandas as pd

    truth = pd.read_parquet(out / "cohort" / "meds" / "truth" / "cdai_next.parquet")
    ho = res.predictions["held_out"].merge(truth, on=["subject_id", "prediction_time"], how="left")
    oracle = auroc(ho["y_true"].to_numpy(), ho["true_prob_controlled"].to_numpy())
    print("[3/3] controlled (CDAI <= 10) at the next visit, held-out patients:")
    _print_metrics(res.metrics, fmt)
    model_auc = res.metrics["held_out"]["auroc"]["value"]
    print(f"oracle AUROC (the generator's true probabilities) {oracle.value:.3f}; "
          f"model reaches {model_auc / oracle.value:.1%} of it")
    summary = {"held_out": res.metrics["held_out"], "oracle_auroc": oracle.value, "artifact": str(res.artifact)}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ehrseq", description="Models of patient records for rheumatology research.")
    p.add_argument("--version", action="version", version=f"ehrseq {__version__}")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write a synthetic 2-site RA cohort (MEDS + EHR extract + truth)")
    s.add_argument("--n-patients", type=int, default=2000)
    s.add_argument("--sites", type=int, default=2)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    s.add_argument("--no-extract", action="store_true", help="skip the CSV extract copy (faster for large N)")
    s.add_argument("--biopsy-rate", type=float, default=0.05,
                   help="share of patients over 55 with a GCA work-up and a temporal artery biopsy report (x2)")
    s.set_defaults(func=cmd_synth)

    f = sub.add_parser("finetune", help="train a model for a target and write an artifact")
    _common_model_args(f)
    f.add_argument("--target", help="built-in target: cdai (default) | cdai_value | next_visit_dx | survival | biopsy")
    _task_args(f)
    f.add_argument("--predicates", help="ACES predicates file for --task (the codes of one dataset)")
    f.add_argument("--allow-init-overlap", action="store_true",
                   help="accept an --init artifact trained on subjects now in tuning/held_out (the report says so)")
    f.add_argument("--model", help="rnn | behrt (sequence targets); deepsurv for survival; text for biopsy")
    f.add_argument("--init", help="artifact to start from (transfer learning or a BEHRT pretraining); "
                                  "for survival: a sequence artifact whose embeddings join the features")
    f.add_argument("--train-fraction", type=float, help="share of train-split patients to use (e.g. 0.1)")
    f.add_argument("--sites", nargs="*", help="restrict to these sites (e.g. B)")
    f.add_argument("--adapt-sites", nargs="*", help="biopsy: self-train towards these sites on their train-split "
                                                    "reports, labels unread (with --sites A --adapt-sites B)")
    f.add_argument("--split", choices=["data", "random", "site", "temporal"], help="split strategy (default: the data's)")
    f.add_argument("--held-out-sites", nargs="*", help="with --split site")
    f.add_argument("--cutoff", help="with --split temporal: first-event date at/after which subjects are held out")
    f.add_argument("--event", help="survival: event code (default EVENT//FLARE)")
    f.add_argument("--threshold", type=float, help="cdai: controlled when CDAI <= this (default 10)")
    f.add_argument("--n-bootstrap", type=int, help="bootstrap resamples for the CIs (default 200)")
    f.set_defaults(func=cmd_finetune)

    pr = sub.add_parser("pretrain", help="masked-code pretraining of BEHRT on the train split")
    _common_model_args(pr)
    pr.add_argument("--mask-prob", type=float, default=0.15)
    pr.add_argument("--prefixes", type=_positive_int, default=1,
                    help="sequences per train patient: the whole history plus k-1 cut at earlier visit days")
    pr.set_defaults(func=cmd_pretrain)

    e = sub.add_parser("evaluate", help="report (JSON, Markdown, HTML) for an artifact on a dataset")
    e.add_argument("--artifact", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--split", default="held_out", help="which split of --data to evaluate (or 'all')")
    e.add_argument("--labels", help="MEDS label file or directory to evaluate at (default: the artifact's task "
                                    "rebuilt on --data; needed for a task that came from a label file)")
    _column_map_arg(e)
    e.add_argument("--external", help="a second site's data, reported side by side")
    e.add_argument("--group-by", nargs="*", help="extra subgroup columns")
    e.add_argument("--min-group-size", type=int, default=30)
    e.add_argument("--n-boot", type=int, default=1000)
    e.add_argument("--no-plots", action="store_true")
    e.set_defaults(func=cmd_evaluate)

    x = sub.add_parser("explain", help="importance per input group (RNN, BEHRT, DeepSurv; every task kind)")
    x.add_argument("--artifact", required=True)
    x.add_argument("--data", required=True)
    x.add_argument("--split", default="held_out")
    x.add_argument("--labels", help="MEDS label file or directory (default: the artifact's task rebuilt on --data)")
    _column_map_arg(x)
    x.add_argument("--n-repeats", type=int, default=3)
    x.add_argument("--out", help="CSV file for the table")
    x.set_defaults(func=cmd_explain)

    v = sub.add_parser("validate", help="what a dataset holds, read as training would (errors exit 2)")
    v.add_argument("--data", required=True, help="MEDS root, MEDS Parquet file/directory, or EHR-extract directory")
    v.add_argument("--labels", help="a MEDS label file or directory: summarised and matched to the data")
    v.add_argument("--label-kind", choices=["binary", "regression", "multiclass", "survival"],
                   help="read --labels as this kind (survival: float_value = days, boolean_value = event)")
    v.add_argument("--column-map", nargs="*", metavar="SRC=MEDS", help="rename source columns, e.g. value=numeric_value")
    v.add_argument("--json", action="store_true", help="print the summary as JSON")
    v.set_defaults(func=cmd_validate)

    lb = sub.add_parser("labels", help="MEDS labels from an ACES task file (configs/tasks/)")
    lb.add_argument("--task", required=True, help="ACES task file, optionally with a time_to_event block")
    lb.add_argument("--predicates", help="ACES predicates file (the codes of one dataset)")
    lb.add_argument("--data", required=True, help="MEDS root, MEDS Parquet file/directory, or EHR-extract directory")
    lb.add_argument("--out", required=True, help="directory to write labels.parquet and task.json")
    _column_map_arg(lb)
    lb.set_defaults(func=cmd_labels)

    d = sub.add_parser("demo", help="the main job end to end: synth -> CDAI forecaster -> metrics vs oracle")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--n-patients", type=int, default=1500)
    d.add_argument("--epochs", type=int, default=6)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--n-bootstrap", type=int, default=200)
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=cmd_demo)

    try:
        from ehrseq.scoring import add_score_args, run_score

        sc = sub.add_parser("score", help="batch-score an extract with an artifact (streaming, resumable)")
        add_score_args(sc)
        sc.set_defaults(func=run_score)
    except ImportError:  # pragma: no cover - scoring is part of the package
        pass
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except EhrseqError as e:
        print(f"ehrseq {args.command}: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"ehrseq {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
