"""Importance per input group for the sequence models (RNN, BEHRT) and DeepSurv (the explanation method of
Norgeot et al., extended to every model family and task kind).

The importance of a group is the drop in the task's metric when the group's information is taken away:

- **RNN** (permutation): a group is a set of columns of the step vectors (a numeric code with its missing
  flag, the multi-hot codes of one prefix such as ``RX//*``, the visit gap) or of the static vector (age,
  sex, each baseline lab). Step columns are shuffled across all real steps of the explained rows (each step
  gets another real step's values, so padding never leaks in and a constant column stays constant); static
  columns across rows.
- **DeepSurv** and the discrete-time heads (permutation): the same groups on its tabular input (static features, then the last step
  vector, see :func:`ehrseq.featurize.tabular.tabular_view`), shuffled across rows; the joined sequence
  embeddings, when the artifact has them, are one group.
- **BEHRT** (occlusion): a group is a code prefix (``LAB//*``; the static header tokens such as ``SEX//F``
  are grouped by prefix too and marked ``static``) or ``age``. The group's tokens are replaced by ``[UNK]``
  with their value taken away (value bin "none", standardised value 0), age ids by 0 ("unknown"). Tokens are
  replaced, not removed: removing them would change the sequence length, the visit positions, the SEP tokens
  and the pooled (last) token, and let older events slide into the truncation window, so the drop would mix
  the group's content with a different layout. ``[UNK]`` is a token the model met in training (rare codes).
  Occlusion is deterministic: ``sd`` is 0 and ``n_repeats`` / ``seed`` do not change it.

Metrics by task kind (``attrs["metric"]``): binary AUROC; regression R^2 (scale-free, and the model is
trained on squared error, so a drop is the lost share of explained variance); multiclass macro one-vs-rest
AUROC of the softmax probabilities; multilabel macro AUROC over the labels; survival Harrell's C of the
log-risk. A drop near zero means the model does not use the group (not that the group is unrelated to the
outcome); a group absent from the explained rows has importance 0.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from ehrseq.data.batch import UNK_ID, Batch
from ehrseq.data.dataset import SequenceDataset, collate
from ehrseq.errors import DataValidationError, EhrseqError
from ehrseq.evaluate.metrics import MetricResult, auroc, macro_auroc, r2
from ehrseq.featurize.featurizer import Featurizer
from ehrseq.names import SURVIVAL_MODELS

if TYPE_CHECKING:
    from ehrseq.artifacts import Artifact
    from ehrseq.data.loading import LoadedData

Groups = dict[str, tuple[str, list[int]]]
METRIC_NAMES = {"binary": "AUROC", "regression": "R^2", "multiclass": "macro AUROC (one-vs-rest)",
                "multilabel": "macro AUROC", "survival": "Harrell's C"}
NO_VALUE_ID = 1  # value_ids: 0 = pad, 1 = the token has no value, 2.. = quantile bins
UNKNOWN_AGE_ID = 0


# ------------------------------------------------------------------------------------------ metrics
def task_metric(kind: str, y: np.ndarray, out: np.ndarray) -> MetricResult:
    """The metric of a task ``kind`` (see :data:`METRIC_NAMES`) on the truth ``y`` and raw model output ``out``.

    y: (N, 1) 0/1, value or class index, (N, K) 0/1 for multilabel, (N, 2) [duration, event] for survival.
    out: (N, K) logits (sequence models) or (N,) log-risk (DeepSurv).
    """
    out = np.asarray(out, np.float64)
    if kind in ("binary", "multilabel"):
        p = 1.0 / (1.0 + np.exp(-np.clip(out, -50, 50)))
        return auroc(y[:, 0], p[:, 0]) if kind == "binary" else macro_auroc(y, p)
    if kind == "regression":
        return r2(y[:, 0], out[:, 0])
    if kind == "multiclass":
        e = np.exp(out - out.max(axis=1, keepdims=True))
        onehot = np.eye(out.shape[1])[y[:, 0].astype(np.int64)]
        return macro_auroc(onehot, e / e.sum(axis=1, keepdims=True))
    if kind == "survival":
        from ehrseq.evaluate.survival import concordance_index

        if y[:, 1].sum() == 0:
            return MetricResult(None, "no events (every row is censored)", len(y))
        try:
            return MetricResult(concordance_index(y[:, 0], y[:, 1], out.reshape(-1)), None, len(y))
        except DataValidationError as e:
            return MetricResult(None, str(e), len(y))
    raise EhrseqError(f"explain has no metric for a '{kind}' task; kinds: {', '.join(METRIC_NAMES)}")


def _baseline(kind: str, y: np.ndarray, out: np.ndarray) -> float:
    res = task_metric(kind, y, out)
    if not res.defined:
        raise EhrseqError(f"explain: {METRIC_NAMES[kind]} is undefined on the {len(y)} explained rows "
                          f"({res.undefined}); explain another split (--split) or more rows")
    return float(res.value)


def _frame(rows: list[dict[str, Any]], base: float, kind: str, method: str) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=["group", "kind", "n_columns", "importance", "sd"])
    out = out.sort_values(["importance", "group"], ascending=[False, True], ignore_index=True, kind="stable")
    out.attrs.update(baseline=base, metric=METRIC_NAMES[kind], method=method)
    return out


def _row(name: str, kind: str, n: int, drops: list[float]) -> dict[str, Any]:
    return {"group": name, "kind": kind, "n_columns": n, "importance": float(np.mean(drops)),
            "sd": float(np.std(drops))}


# ------------------------------------------------------------------------------------------- groups
def _prefix(code: str) -> str:
    return code.split("//", 1)[0] + "//*" if "//" in code else code


def input_groups(fz: Featurizer) -> Groups:
    """RNN input groups: name -> ("step" | "static", column indices of the step / static vector)."""
    nn = len(fz.numeric_codes_)
    groups: Groups = {}
    for i, c in enumerate(fz.numeric_codes_):
        groups[c] = ("step", [i, nn + i])
    by_prefix: dict[str, list[int]] = {}
    for j, c in enumerate(fz.step_codes_):
        by_prefix.setdefault(_prefix(c), []).append(2 * nn + j)
    for p, cols in sorted(by_prefix.items()):
        groups[p] = ("step", cols)
    groups["days since previous step"] = ("step", [fz.n_step_features - 1])
    groups["age"] = ("static", [0])
    groups["sex"] = ("static", [1, 2])
    for i, c in enumerate(fz.static_numeric_codes_):
        groups[f"baseline {c}"] = ("static", [3 + 2 * i, 4 + 2 * i])
    return groups


def tabular_groups(fz: Featurizer, n_embedding: int = 0) -> Groups:
    """DeepSurv input groups on :func:`ehrseq.featurize.tabular.tabular_view` columns (static, then the last step
    vector, then ``n_embedding`` sequence-embedding columns as one group)."""
    s = fz.n_static_features
    groups: Groups = {}
    for name, (kind, cols) in input_groups(fz).items():
        groups[name] = ("static", cols) if kind == "static" else ("last step", [s + c for c in cols])
    if n_embedding:
        first = s + fz.n_step_features
        groups["sequence embeddings"] = ("embedding", list(range(first, first + n_embedding)))
    return groups


def token_groups(fz: Featurizer) -> dict[str, list[int]]:
    """BEHRT code groups: prefix (``LAB//*``, or the code when it has no ``//``) -> vocabulary ids."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(fz.vocab_):
        if i > UNK_ID and not (c.startswith("[") and c.endswith("]")):
            groups.setdefault(_prefix(c), []).append(i)
    return dict(sorted(groups.items()))


# --------------------------------------------------------------------------------------------- RNN
def _batches(ds: SequenceDataset, batch_size: int) -> list[Batch]:
    return [collate([ds[i] for i in range(a, min(a + batch_size, len(ds)))]) for a in range(0, len(ds), batch_size)]


@torch.no_grad()
def _outputs(model: torch.nn.Module, batches: list[Batch]) -> np.ndarray:
    model.eval()
    return torch.cat([model(b).logits.float() for b in batches]).numpy()


def _targets(ds: SequenceDataset) -> np.ndarray:
    if ds.targets is None:
        raise EhrseqError("explain needs the truth: the dataset has no targets")
    return ds.targets


def permutation_importance(model: torch.nn.Module, ds: SequenceDataset, fz: Featurizer, *, kind: str = "binary",
                           n_repeats: int = 3, seed: int = 0, batch_size: int = 512) -> pd.DataFrame:
    """Drop in the task's metric per RNN input group when the group's columns are shuffled (step columns across
    all real steps, static columns across rows), sorted by importance (mean and sd over ``n_repeats``)."""
    y = _targets(ds)
    batches = _batches(ds, batch_size)
    masks = [b.visit_mask for b in batches]
    steps = torch.cat([b.visit_x[m] for b, m in zip(batches, masks)])  # (n real steps, F)
    sizes = [int(m.sum()) for m in masks]
    static = torch.cat([b.static_x for b in batches])
    base = _baseline(kind, y, _outputs(model, batches))
    rng = np.random.default_rng(seed)
    rows = []
    for name, (where, cols) in input_groups(fz).items():
        drops = []
        for _ in range(n_repeats):
            if where == "step":
                new = steps.clone()
                new[:, cols] = steps[torch.from_numpy(rng.permutation(len(steps)))][:, cols]
                shuffled = []
                for b, m, part in zip(batches, masks, torch.split(new, sizes)):
                    vx = b.visit_x.clone()
                    vx[m] = part
                    shuffled.append(Batch(**{**b.__dict__, "visit_x": vx}))
            else:
                new = static.clone()
                new[:, cols] = static[torch.from_numpy(rng.permutation(len(static)))][:, cols]
                shuffled = [Batch(**{**b.__dict__, "static_x": part})
                            for b, part in zip(batches, torch.split(new, [len(b) for b in batches]))]
            drops.append(base - float(task_metric(kind, y, _outputs(model, shuffled))))
        rows.append(_row(name, where, len(cols), drops))
    return _frame(rows, base, kind, "shuffled across steps / rows")


# ------------------------------------------------------------------------------------------- BEHRT
_TOKEN_FIELDS = ("code_ids", "age_ids", "segment_ids", "position_ids", "time_ids", "value_ids", "attention_mask",
                 "value_num")


def _sub_batch(b: Batch, rows: torch.Tensor) -> Batch:
    """The rows of ``b`` (a bool mask), token fields cut to the longest of them (the rest is padding)."""
    length = int(b.attention_mask[rows].sum(1).max())
    out = {}
    for k, v in b.__dict__.items():
        if v is not None:
            v = v[rows]
            if k in _TOKEN_FIELDS:
                v = v[:, :length]
        out[k] = v
    return Batch(**out)


def _occlude(b: Batch, m: torch.Tensor) -> Batch:
    vn = None if b.value_num is None else b.value_num.masked_fill(m, 0.0)
    return Batch(**{**b.__dict__, "code_ids": b.code_ids.masked_fill(m, UNK_ID),
                    "value_ids": b.value_ids.masked_fill(m, NO_VALUE_ID), "value_num": vn})


def occlusion_importance(model: torch.nn.Module, ds: SequenceDataset, fz: Featurizer, *, kind: str = "binary",
                         batch_size: int = 256) -> pd.DataFrame:
    """Drop in the task's metric per BEHRT code-prefix group when its tokens become ``[UNK]`` without a value,
    and for ``age`` when every age id becomes 0 (unknown); padding and attention masks are unchanged.

    Rows are batched by length (less padding), and only the rows that hold a group's tokens are run again."""
    items = [ds[i] for i in range(len(ds))]
    order = np.argsort([len(it["code_ids"]) for it in items], kind="stable")
    y = _targets(ds)[order]
    batches = [collate([items[i] for i in order[a:a + batch_size]]) for a in range(0, len(items), batch_size)]
    base_parts = [_outputs(model, [b]) for b in batches]
    base = _baseline(kind, y, np.concatenate(base_parts))
    groups = token_groups(fz)
    lut = torch.full((len(fz.vocab_),), -1, dtype=torch.long)
    for g, ids in enumerate(groups.values()):
        lut[ids] = g
    timed_ids = set(np.unique(ds.fs.tok_code).tolist())
    static_ids = set(np.concatenate([np.zeros(0, np.int64), *ds.fs.static_tokens]).tolist())
    rows = []
    for g, (name, ids) in enumerate(groups.items()):
        parts = []
        for b, part in zip(batches, base_parts):
            m = (lut[b.code_ids] == g) & b.attention_mask.bool()
            hit = m.any(1)
            if bool(hit.any()):
                part = part.copy()
                part[hit.numpy()] = _outputs(model, [_occlude(_sub_batch(b, hit), _sub_batch_mask(b, m, hit))])
            parts.append(part)
        where = "static" if static_ids & set(ids) and not timed_ids & set(ids) else "token"
        rows.append(_row(name, where, len(ids), [base - float(task_metric(kind, y, np.concatenate(parts)))]))
    no_age = [Batch(**{**b.__dict__, "age_ids": b.age_ids.masked_fill(b.attention_mask.bool(), UNKNOWN_AGE_ID)})
              for b in batches]
    rows.append(_row("age", "age", 1, [base - float(task_metric(kind, y, _outputs(model, no_age)))]))
    return _frame(rows, base, kind, "occluded ([UNK] tokens, unknown age)")


def _sub_batch_mask(b: Batch, m: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return m[rows][:, : int(b.attention_mask[rows].sum(1).max())]


# ---------------------------------------------------------------------------------------- DeepSurv
def tabular_permutation_importance(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray,
                                   groups: Groups, *, kind: str = "survival", n_repeats: int = 3,
                                   seed: int = 0) -> pd.DataFrame:
    """Drop in the task's metric per column group of a tabular input ``x`` (N, F) when the group's columns are
    shuffled across rows; ``predict`` maps (N, F) to the model's output (DeepSurv: log-risk)."""
    base = _baseline(kind, y, predict(x))
    rng = np.random.default_rng(seed)
    rows = []
    for name, (where, cols) in groups.items():
        drops = []
        for _ in range(n_repeats):
            xp = x.copy()
            xp[:, cols] = x[rng.permutation(len(x))][:, cols]
            drops.append(base - float(task_metric(kind, y, predict(xp))))
        rows.append(_row(name, where, len(cols), drops))
    return _frame(rows, base, kind, "shuffled across rows")


def _explain_deepsurv(art: Artifact, events: pd.DataFrame, rows: pd.DataFrame, fz: Featurizer, *,
                      n_repeats: int, seed: int) -> pd.DataFrame:
    from ehrseq.featurize.tabular import tabular_view
    from ehrseq.registry import survival_model_class
    from ehrseq.scoring.predict import sequence_embeddings

    x = tabular_view(fz.transform(events, rows))
    n_emb = 0
    source = art.config.get("embeddings_from")
    if source:
        if not Path(source).exists():
            raise EhrseqError(f"{art.path}: joins embeddings of the sequence artifact '{source}', which does not "
                              "exist here; restore that artifact at the same path to explain this model")
        emb = sequence_embeddings(source, events, rows)
        n_emb = emb.shape[1]
        x = np.concatenate([x, emb], axis=1)
    model = survival_model_class(art.config["model_type"]).load(art.path)  # DeepSurv or a discrete-time head
    y = np.stack([rows["duration"].to_numpy(np.float64), rows["event"].to_numpy(np.float64)], axis=1)
    return tabular_permutation_importance(model.predict_risk, x.astype(np.float64), y, tabular_groups(fz, n_emb),
                                          kind="survival", n_repeats=n_repeats, seed=seed)


# ---------------------------------------------------------------------------------------- artifacts
def explain_artifact(artifact: str | Path | Artifact, data: str | Path | LoadedData, *, split: str = "held_out",
                     n_repeats: int = 3, seed: int = 0, labels: Any = None,
                     column_map: dict[str, str] | None = None) -> pd.DataFrame:
    """Importance per input group of an RNN, BEHRT or DeepSurv artifact on one split of ``data`` (a path or
    LoadedData; ``split="all"`` for every subject), at the rows of ``labels`` (a MEDS label file or frame) or
    of the artifact's task rebuilt on ``data``.

    Returns columns group, kind, n_columns, importance (metric drop; mean over ``n_repeats`` shuffles drawn with
    ``seed``), sd; ``attrs``: baseline (the metric on the unchanged input), metric (its name), method.
    """
    from ehrseq.artifacts import Artifact, load_artifact
    from ehrseq.data.loading import LoadedData, load_data, subset_split
    from ehrseq.registry import PRETRAIN_TARGET, make_dataset, model_from_artifact
    from ehrseq.scoring.predict import artifact_task
    from ehrseq.scoring.prediction import rows_to_score
    from ehrseq.tasks.arrays import target_arrays

    art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
    family = art.config.get("model_type")
    if family not in ("rnn", "behrt", *SURVIVAL_MODELS):
        raise EhrseqError(f"{art.path}: explain supports the sequence models (rnn, behrt) and the time-to-event "
                          f"models ({', '.join(SURVIVAL_MODELS)}); this "
                          f"artifact holds a '{family}' model (importance of report text is not implemented)")
    if art.config.get("target") == PRETRAIN_TARGET:
        raise EhrseqError(f"{art.path}: a masked-code pretraining artifact has no task to explain; explain the "
                          "model fine-tuned from it")
    if n_repeats < 1:
        raise EhrseqError(f"--n-repeats must be at least 1, got {n_repeats}")
    d = data if isinstance(data, LoadedData) else load_data(data, column_map=column_map)
    events = subset_split(d, split, art.extras.get("split")).events
    fz = Featurizer.from_dict(art.featurizer)
    spec = artifact_task(art)
    rows, has_truth = rows_to_score(art, spec, events, labels)
    if not has_truth:
        cols = " and ".join(spec.value_columns)
        raise EhrseqError(f"explain needs the truth: pass labels with the task's value column(s) ({cols})")
    if len(rows) == 0:
        raise EhrseqError(f"explain: no label rows for the subjects of split '{split}'")
    if family in SURVIVAL_MODELS:
        return _explain_deepsurv(art, events, rows, fz, n_repeats=n_repeats, seed=seed)
    fs = fz.transform(events, rows)
    ds = make_dataset(fs, target_arrays(spec, fs.labels, art.config.get("label_names")), fz, family)
    model = model_from_artifact(art)
    if family == "behrt":
        return occlusion_importance(model, ds, fz, kind=spec.kind)
    return permutation_importance(model, ds, fz, kind=spec.kind, n_repeats=n_repeats, seed=seed)
