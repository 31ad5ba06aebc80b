"""The Python API: a few calls that do what the CLI does.

    from ehrseq import api
    api.synthesize(2000, out="runs/cohort")                       # MEDS + extract + truth
    res = api.finetune("runs/cohort/meds", target="cdai", out="runs/cdai_rnn")
    print(res.metrics["held_out"]["auroc"])
    preds = api.predict("runs/cdai_rnn", "runs/cohort/meds")       # subject_id, prediction_time, ...
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ehrseq import codes
from ehrseq.artifacts import Artifact, load_artifact, save_artifact
from ehrseq.config import FinetuneConfig, config_to_dict, load_config
from ehrseq.data.dataset import SequenceDataset
from ehrseq.errors import ArtifactError, DataValidationError, TargetError
from ehrseq.featurize.featurizer import FeatureSet, Featurizer
from ehrseq.labels import TASK_OF_TARGET, make_labels
from ehrseq.pretrain import PRETRAIN_TARGET
from ehrseq.split import PatientSplitter, assert_disjoint, ids_in, subjects_table
from ehrseq.utils import frame_hash, seed_everything

log = logging.getLogger(__name__)
SEQUENCE_MODELS = ("rnn", "behrt")


# --------------------------------------------------------------------------- data
@dataclass
class LoadedData:
    events: pd.DataFrame
    splits: pd.DataFrame | None
    report_labels: pd.DataFrame | None
    source: str


def load_data(path: str | Path, *, column_map: dict[str, str] | None = None) -> LoadedData:
    """Read a MEDS root, a MEDS Parquet file/directory, or an EHR-extract directory."""
    from ehrseq.io import read_extract, read_meds, read_subject_splits

    p = Path(path)
    if not p.exists():
        raise DataValidationError("path does not exist", file=str(p), hint="pass a MEDS root or an EHR-extract directory")
    if p.is_dir() and any((p / f"patients.{ext}").exists() for ext in ("csv", "parquet")):
        res = read_extract(p)
        return LoadedData(res.events, None, getattr(res, "report_labels", None), "extract")
    res = read_meds(p, column_map=column_map)
    splits = None
    if (p / "metadata" / "subject_splits.parquet").exists():
        splits = read_subject_splits(p)
    labels = None
    if (p / "truth" / "biopsy_labels.parquet").exists():
        labels = pd.read_parquet(p / "truth" / "biopsy_labels.parquet")
    return LoadedData(res.events, splits, labels, "meds")


def synthesize(n_patients: int = 2000, *, out: str | Path, n_sites: int = 2, seed: int = 0, extract: bool = True,
               biopsy_rate: float = 0.05) -> Path:
    """Write a synthetic cohort: ``out/meds`` (MEDS root with a random patient split), ``out/extract`` (CSV
    tables), ``out/truth`` (the probabilities the generator used)."""
    from ehrseq.io import write_extract, write_meds, write_subject_splits
    from ehrseq.synth.cohort import generate_cohort

    out = Path(out)
    c = generate_cohort(n_patients, n_sites=n_sites, seed=seed, biopsy_rate=biopsy_rate)
    root = write_meds(c.events, out / "meds", dataset_name="ehrseq-synthetic-ra", overwrite=True)
    write_subject_splits(PatientSplitter(seed=seed).split(subjects_table(c.events)), root)
    truth = root / "truth"
    truth.mkdir(exist_ok=True)
    c.truth_cdai.to_parquet(truth / "cdai_next.parquet", index=False)
    c.truth_flare.to_parquet(truth / "flare_hazard.parquet", index=False)
    c.biopsy_labels.to_parquet(truth / "biopsy_labels.parquet", index=False)
    c.patients.to_parquet(truth / "patients.parquet", index=False)
    if extract:
        write_extract(c.events, out / "extract", report_labels=c.biopsy_labels)
    return out


def resolve_splits(data: LoadedData, cfg: FinetuneConfig) -> pd.DataFrame:
    s = cfg.split
    if s.strategy == "data":
        if data.splits is not None:
            splits = data.splits
        else:
            log.warning("the data has no subject_splits; making a random patient split (seed %d)", s.seed)
            splits = PatientSplitter(fractions=s.fractions, seed=s.seed).split(subjects_table(data.events))
    else:
        splits = PatientSplitter(
            strategy=s.strategy, fractions=s.fractions, held_out_sites=s.held_out_sites, cutoff=s.cutoff, seed=s.seed
        ).split(subjects_table(data.events))
    assert_disjoint(splits)
    return splits


def _restrict(events: pd.DataFrame, splits: pd.DataFrame, cfg: FinetuneConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep only the configured sites, and a seeded share of the train patients."""
    if cfg.sites:
        subj = subjects_table(events)
        keep = subj.loc[subj["site"].isin(cfg.sites), "subject_id"]
        if keep.empty:
            raise DataValidationError(f"no subjects at site(s) {list(cfg.sites)}", column="SITE//")
        splits = splits.loc[splits["subject_id"].isin(keep)]
    if cfg.train_fraction < 1.0:
        if not 0 < cfg.train_fraction <= 1:
            raise ValueError("train_fraction must be in (0, 1]")
        tr = np.sort(ids_in(splits, "train"))
        rng = np.random.default_rng(cfg.seed)
        n = max(1, int(round(cfg.train_fraction * len(tr))))
        drop = np.setdiff1d(tr, rng.choice(tr, size=n, replace=False))
        splits = splits.loc[~splits["subject_id"].isin(drop)]
    events = events.loc[events["subject_id"].isin(splits["subject_id"])]
    return events, splits.reset_index(drop=True)


# ------------------------------------------------------------------------- targets
def target_arrays(target: str, labels: pd.DataFrame, label_names: list[str] | None) -> np.ndarray:
    if target == "cdai":
        return labels["boolean_value"].to_numpy(np.float32)[:, None]
    if target == "cdai_value":
        return labels["float_value"].to_numpy(np.float32)[:, None]
    if target == "next_visit_dx":
        pos = {c: i for i, c in enumerate(label_names or [])}
        y = np.zeros((len(labels), len(pos)), np.float32)
        for r, cs in enumerate(labels["codes"]):
            for c in cs:
                if c in pos:
                    y[r, pos[c]] = 1.0
        return y
    raise TargetError(f"target '{target}' has no array form for sequence models")


def _labels_for(target: str, events: pd.DataFrame, cfg: FinetuneConfig) -> pd.DataFrame:
    kw: dict[str, Any] = {}
    if target == "cdai":
        kw["threshold"] = cfg.cdai_threshold
    if target == "survival":
        kw.update(event_code=cfg.event_code, landmark_visit=cfg.landmark_visit)
    return make_labels(target, events, **kw)


# --------------------------------------------------------------------------- models
def build_model(model: str, head: str, num_labels: int, fz: Featurizer, preset: str, overrides: dict[str, Any],
                pos_weight: float | None) -> torch.nn.Module:
    if model == "rnn":
        from ehrseq.models.rnn_forecaster import RNN_PRESETS, RNNConfig, RNNForecaster

        if preset not in RNN_PRESETS:
            raise ValueError(f"unknown rnn preset '{preset}'; choose {list(RNN_PRESETS)}")
        cfg = RNNConfig(fz.n_step_features, fz.n_static_features, head=head, num_labels=num_labels,
                        pos_weight=pos_weight, **RNN_PRESETS[preset](**overrides))
        return RNNForecaster(cfg)
    if model == "behrt":
        from ehrseq.models.behrt import BehrtModel, behrt_base, behrt_small, behrt_tiny

        presets = {"tiny": behrt_tiny, "small": behrt_small, "base": behrt_base}
        if preset not in presets:
            raise ValueError(f"unknown behrt preset '{preset}'; choose {list(presets)}")
        bc = presets[preset](
            vocab_size=len(fz.vocab_), time_vocab_size=fz.n_time_bins, value_vocab_size=fz.n_value_ids,
            max_visits=fz.config.max_visits + 1, max_position_embeddings=fz.config.max_len + 1,
            age_vocab_size=fz.config.max_age + 1, head=head, num_labels=num_labels, pos_weight=pos_weight,
            **overrides,
        )
        return BehrtModel(bc)
    raise ValueError(f"unknown model '{model}'; sequence models are {SEQUENCE_MODELS}")


def model_config_dict(model: torch.nn.Module) -> dict[str, Any]:
    cfg = model.config
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(vars(cfg))


def model_from_artifact(art: Artifact) -> torch.nn.Module:
    kind = art.config["model_type"]
    mc = dict(art.config["model"])
    if kind == "rnn":
        from ehrseq.models.rnn_forecaster import RNNConfig, RNNForecaster

        m: torch.nn.Module = RNNForecaster(RNNConfig(**mc))
    elif kind == "behrt":
        from ehrseq.models.behrt import BehrtConfig, BehrtModel

        m = BehrtModel(BehrtConfig(**_saved_behrt_config(mc)))
    else:
        raise ArtifactError(f"{art.path}: model_type '{kind}' is not a sequence model")
    missing, unexpected = m.load_state_dict(art.state_dict, strict=False)
    if missing or unexpected:
        raise ArtifactError(f"{art.path}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    m.eval()
    return m


def subsample_rows(labels: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    """At most ``k`` label rows per subject, drawn with a seed, kept in their original order."""
    key = np.random.default_rng(seed).random(len(labels))
    rank = pd.Series(key).groupby(labels["subject_id"].to_numpy()).rank(method="first").to_numpy()
    return labels.loc[rank <= k].reset_index(drop=True)


def make_dataset(fs: FeatureSet, targets: np.ndarray | None, fz: Featurizer, model: str) -> SequenceDataset:
    """A dataset building only the view ``model`` reads: steps for the RNN, tokens for BEHRT."""
    return SequenceDataset(fs, targets, max_len=fz.config.max_len, max_visits=fz.config.max_visits,
                           max_steps=fz.config.max_visits, tokens=model == "behrt", steps=model == "rnn",
                           positions=fz.config.positions)


def _saved_behrt_config(mc: dict[str, Any]) -> dict[str, Any]:
    """BehrtConfig keyword arguments from an artifact's model config (transformers' bookkeeping keys dropped).

    Artifacts written before pooling was an option read the CLS token."""
    return {"pooling": "cls", **{k: v for k, v in mc.items() if k not in ("transformers_version", "architectures")}}


def behrt_from_pretrained(art: Artifact, head: str, num_labels: int,
                          overrides: dict[str, Any] | None = None) -> torch.nn.Module:
    """A BEHRT with a fresh ``head`` whose embeddings and encoder come from an MLM-pretraining artifact.

    ``overrides`` (the fine-tuning config's model_overrides) may change what has no weights: pooling, dropout.
    """
    from ehrseq.models.behrt import BehrtConfig, BehrtModel

    mc = _saved_behrt_config(art.config["model"])
    mc.update(head=head, num_labels=num_labels, pos_weight=None, **(overrides or {}))
    model = BehrtModel(BehrtConfig(**mc))
    body = {k: v for k, v in art.state_dict.items() if k.startswith(("embeddings.", "encoder."))}
    missing, unexpected = model.load_state_dict(body, strict=False)
    if unexpected or any(k.startswith(("embeddings.", "encoder.")) for k in missing):
        raise ArtifactError(f"{art.path}: pretrained weights do not fit this BEHRT configuration")
    return model


# ------------------------------------------------------------------------ finetune
@dataclass
class FinetuneResult:
    artifact: Path | None
    metrics: dict[str, Any]
    predictions: dict[str, pd.DataFrame]
    model: Any = None
    featurizer: Featurizer | None = None


def finetune(
    data: str | Path | LoadedData,
    *,
    out: str | Path | None = None,
    config: FinetuneConfig | str | Path | None = None,
    init: str | Path | None = None,
    **overrides: Any,
) -> FinetuneResult:
    """Fit a model for ``target`` on the train split, early-stop on tuning, evaluate tuning and held_out.

    ``init``: an artifact to start from (transfer learning): its featurizer is reused frozen and its weights
    are the starting point. Overrides are FinetuneConfig fields (target=..., model=..., train_fraction=...).
    """
    cfg = load_config(config, **overrides)
    seed_everything(cfg.seed)
    d = data if isinstance(data, LoadedData) else load_data(data)
    if cfg.target == "biopsy" or cfg.model == "text":
        return _finetune_text(d, cfg, out)
    splits = resolve_splits(d, cfg)
    events, splits = _restrict(d.events, splits, cfg)
    if cfg.target == "survival" or cfg.model == "deepsurv":
        from ehrseq.survival_task import finetune_survival

        return finetune_survival(events, splits, cfg, out, embeddings_from=init)
    if cfg.model not in SEQUENCE_MODELS:
        raise ValueError(f"model '{cfg.model}' cannot do target '{cfg.target}'; use one of {SEQUENCE_MODELS}")
    task = TASK_OF_TARGET.get(cfg.target)
    if task is None:
        raise TargetError(f"unknown target '{cfg.target}'; choose cdai, cdai_value, next_visit_dx, survival, biopsy")
    labels = _labels_for(cfg.target, events, cfg)

    init_art = load_artifact(init) if init else None
    from_pretrain = init_art is not None and init_art.config.get("target") == PRETRAIN_TARGET
    if init_art is not None:
        if not from_pretrain and init_art.config.get("target") != cfg.target:
            raise ArtifactError(f"--init artifact was trained for '{init_art.config.get('target')}', not '{cfg.target}'")
        if init_art.config["model_type"] != cfg.model:
            raise ArtifactError(f"--init artifact holds a '{init_art.config['model_type']}' model, not '{cfg.model}'")
        fz = Featurizer.from_dict(init_art.featurizer)  # frozen: the vocabulary the weights were trained on
        label_names = None if from_pretrain else init_art.config.get("label_names")
    else:
        fz = Featurizer(cfg.featurizer).fit(events, splits)
        label_names = None
    if cfg.target == "next_visit_dx" and label_names is None:
        tr = labels.loc[labels["subject_id"].isin(ids_in(splits, "train")), "codes"].explode().value_counts()
        label_names = sorted(str(c) for c in tr.index[tr >= cfg.min_label_count])
        if not label_names:
            raise TargetError("no diagnosis code occurs often enough at next visits in the train split")

    parts: dict[str, SequenceDataset] = {}
    for name in ("train", "tuning", "held_out"):
        lab = labels.loc[labels["subject_id"].isin(ids_in(splits, name))].reset_index(drop=True)
        if name == "train" and cfg.max_train_rows_per_subject:
            lab = subsample_rows(lab, cfg.max_train_rows_per_subject, cfg.seed)
        fs = fz.transform(events, lab)
        parts[name] = make_dataset(fs, target_arrays(cfg.target, lab, label_names), fz, cfg.model)
    if len(parts["train"]) == 0:
        raise TargetError(f"no '{cfg.target}' label rows in the train split")
    head = {"binary": "binary", "regression": "regression", "multilabel": "multilabel"}[task]
    if from_pretrain:
        model = behrt_from_pretrained(init_art, head, parts["train"].targets.shape[1], dict(cfg.model_overrides))
    elif init_art is not None:
        model = model_from_artifact(init_art)
    else:
        model = build_model(cfg.model, head, parts["train"].targets.shape[1], fz, cfg.preset, dict(cfg.model_overrides), None)
    from ehrseq.train.trainer import train

    torch.manual_seed(cfg.seed)
    result = train(model, parts["train"], parts["tuning"], replace(cfg.train, seed=cfg.seed))
    from ehrseq.evaluate.summary import summarize

    metrics: dict[str, Any] = {"train": {"best_epoch": result.best_epoch, "history": result.history,
                                         "sequences_per_second": result.sequences_per_second}}
    preds = {}
    for name in ("tuning", "held_out"):
        preds[name] = predictions_frame(model, parts[name], head, label_names)
        metrics[name] = summarize(preds[name], head, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
    extras = post_hoc(head, preds, metrics)
    artifact = None
    if out is not None:
        artifact = save_artifact(
            out,
            extras=extras,
            state_dict=model.state_dict(),
            config={
                "model_type": cfg.model, "target": cfg.target, "task": head, "label_names": label_names,
                "model": model_config_dict(model), "finetune": config_to_dict(cfg),
                "init": str(init) if init else None,
            },
            featurizer=fz.to_dict(),
            metrics=metrics,
            data_hash=frame_hash(events, ["subject_id", "time", "code", "numeric_value"]),
            split_hash=frame_hash(splits.sort_values("subject_id")),
        )
    return FinetuneResult(artifact, metrics, preds, model, fz)


def post_hoc(head: str, preds: dict[str, pd.DataFrame], metrics: dict[str, Any]) -> dict[str, Any]:
    """Fit on the tuning split what is stored beside the weights: a temperature calibrator and split-conformal
    sets (binary), conformal intervals (regression); record held-out ECE before/after and coverage."""
    from ehrseq.evaluate.calibration import TemperatureScaler, ece
    from ehrseq.evaluate.conformal import (
        SplitConformalClassifier,
        SplitConformalRegressor,
        interval_coverage,
        set_coverage,
    )

    tune, ho = preds["tuning"], preds["held_out"]
    extras: dict[str, Any] = {}
    if head == "binary" and tune["y_true"].nunique() == 2:
        ts = TemperatureScaler(inputs="prob").fit(tune["y_prob"], tune["y_true"])
        conf = SplitConformalClassifier(alpha=0.1).fit(tune["y_prob"], tune["y_true"])
        extras = {"calibrator": {"kind": "temperature", **ts.to_dict()}, "conformal": conf.to_dict()}
        if len(ho):
            metrics["held_out"]["ece"] = {"value": float(ece(ho["y_true"], ho["y_prob"]))}
            metrics["held_out"]["ece_calibrated"] = {"value": float(ece(ho["y_true"], ts.transform(ho["y_prob"])))}
            cov = set_coverage(conf.predict_sets(ho["y_prob"].to_numpy()), ho["y_true"].astype(int).to_numpy())
            metrics["held_out"]["conformal_90"] = cov
    elif head == "regression" and len(tune):
        conf = SplitConformalRegressor(alpha=0.1).fit(tune["y_pred"], tune["y_true"])
        extras = {"conformal": conf.to_dict()}
        if len(ho):
            lo, hi = conf.predict_interval(ho["y_pred"].to_numpy())
            metrics["held_out"]["conformal_90"] = interval_coverage(lo, hi, ho["y_true"].to_numpy())
    return extras


def predictions_frame(model: torch.nn.Module, ds: SequenceDataset, head: str, label_names: list[str] | None) -> pd.DataFrame:
    from ehrseq.models.heads import to_prediction
    from ehrseq.train.trainer import predict_logits

    logits = predict_logits(model, ds)
    pred = to_prediction(head, torch.from_numpy(logits)).numpy()
    df = ds.fs.labels[["subject_id", "prediction_time"]].copy()
    if head == "multilabel":
        for j, n in enumerate(label_names or []):
            df[f"y_true_{n}"] = ds.targets[:, j] if ds.targets is not None else np.nan
            df[f"y_prob_{n}"] = pred[:, j]
    else:
        if ds.targets is not None:
            df["y_true"] = ds.targets[:, 0]
        df["y_pred" if head == "regression" else "y_prob"] = pred[:, 0]
    return df


def predict(artifact: str | Path | Artifact, data: str | Path | LoadedData, labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """Score ``data`` with a sequence-model artifact. Without ``labels``, predicts at every CDAI measurement
    (cdai targets) or every visit (others)."""
    art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
    d = data if isinstance(data, LoadedData) else load_data(data)
    fz = Featurizer.from_dict(art.featurizer)
    model = model_from_artifact(art)
    target = art.config["target"]
    if labels is None:
        cfg = load_config(None, **{k: v for k, v in art.config["finetune"].items() if k in ("cdai_threshold",)})
        labels = _labels_for(target, d.events, cfg)
    fs = fz.transform(d.events, labels.reset_index(drop=True))
    tgt = None
    try:
        tgt = target_arrays(target, fs.labels, art.config.get("label_names"))
    except (KeyError, TargetError):
        tgt = None
    ds = make_dataset(fs, tgt, fz, art.config["model_type"])
    return predictions_frame(model, ds, art.config["task"], art.config.get("label_names"))


# ------------------------------------------------------------------ text / survival
def biopsy_frame(d: LoadedData) -> pd.DataFrame:
    """Biopsy reports joined with their labels: subject_id, time, report_id, text, site, one column per label."""
    ev = d.events.loc[d.events["code"] == codes.BIOPSY_REPORT, ["subject_id", "time", "text_value"]]
    if ev.empty:
        raise TargetError(f"no '{codes.BIOPSY_REPORT}' events with report text: the biopsy target needs reports")
    if d.report_labels is None:
        raise TargetError("the biopsy target needs report labels (truth/biopsy_labels.parquet, or label columns "
                          "in the extract's reports table)")
    lab = d.report_labels.copy()
    lab["time"] = lab["time"].astype("datetime64[us]")
    ev = ev.assign(time=ev["time"].astype("datetime64[us]"))
    df = ev.merge(lab, on=["subject_id", "time"], how="inner").rename(columns={"text_value": "text"})
    site = subjects_table(d.events).set_index("subject_id")["site"]
    return df.assign(site=df["subject_id"].map(site))


def _finetune_text(d: LoadedData, cfg: FinetuneConfig, out: str | Path | None) -> FinetuneResult:
    from ehrseq.models.text_classifier import TextClassifierConfig, finetune_biopsy

    every = biopsy_frame(d)
    splits = resolve_splits(d, cfg)
    df = every.loc[every["site"].isin(cfg.sites)] if cfg.sites else every
    part = {n: df.loc[df["subject_id"].isin(ids_in(splits, n))].reset_index(drop=True) for n in ("train", "tuning", "held_out")}
    for name, p in part.items():
        if p.empty:
            raise TargetError(f"no labelled biopsy reports in the {name} split; the biopsy target needs reports in "
                              "train, tuning and held_out")
    adapt, also = None, {}
    if cfg.adapt_sites:
        overlap = set(cfg.adapt_sites) & set(cfg.sites)
        if overlap or not cfg.sites:
            raise TargetError(f"adapt_sites {list(cfg.adapt_sites)} must be other sites than the labelled ones: "
                              "set sites (e.g. --sites A --adapt-sites B)")
        new = every.loc[every["site"].isin(cfg.adapt_sites)]
        adapt = new.loc[new["subject_id"].isin(ids_in(splits, "train")), "text"]  # labels are never read
        new_held_out = new.loc[new["subject_id"].isin(ids_in(splits, "held_out"))].reset_index(drop=True)
        if not new_held_out.empty:  # the new site's labelled held-out reports, scored next to held_out
            also["held_out_adapt_sites"] = new_held_out
        if adapt.empty:
            raise TargetError(f"no reports of site(s) {list(cfg.adapt_sites)} in the train split to adapt to")
    preset = cfg.preset if cfg.preset in ("tiny", "small") else "small"
    tcfg = TextClassifierConfig.from_preset(preset, seed=cfg.seed, **dict(cfg.model_overrides))
    metrics = finetune_biopsy(part["train"], part["tuning"], part["held_out"], out, tcfg, adapt_to=adapt,
                              also_evaluate=also)
    extra = {name: metrics.pop(name) for name in also}
    return FinetuneResult(Path(out) if out else None, {"held_out": metrics, **extra}, {})
