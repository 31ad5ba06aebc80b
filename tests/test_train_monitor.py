"""Options for small, imbalanced real cohorts: early stopping on the tuning AUROC (``train.monitor``) and a
class-balanced positive weight (``model_overrides.pos_weight``). Both default to the behaviour before them."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from ehrseq import api
from ehrseq.config import load_config
from ehrseq.errors import ConfigError
from ehrseq.evaluate.metrics import auroc
from ehrseq.labels import cdai_labels
from ehrseq.recipes.sequence import resolve_pos_weight
from ehrseq.split import ids_in
from ehrseq.tasks.spec import TaskSpec
from ehrseq.train.trainer import TrainConfig, train

FAST = {"preset": "tiny", "n_bootstrap": 0}


# ------------------------------------------------------------------------------------ the trainer's monitor
class _Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w * x


def _rows(n: int) -> list[torch.Tensor]:
    return [torch.full((1,), float(i + 1)) for i in range(n)]


def _fit(scores: list[float] | None, **cfg) -> tuple[object, _Scale, list[float]]:
    """Train a one-weight model (loss (w x)^2, so the tuning loss falls every epoch); ``scores`` scripts the
    tuning score of each epoch. Returns the result, the model and the weight after each epoch."""
    model, seen = _Scale(), []

    def score(m: _Scale) -> float:
        seen.append(m.w.item())
        return scores[len(seen) - 1]

    res = train(model, _rows(8), _rows(4), TrainConfig(batch_size=4, lr=0.05, progress=False, **cfg),
                collate_fn=torch.stack, loss_fn=lambda m, b: m(b).pow(2).mean(),
                tuning_score=None if scores is None else score)
    return res, model, seen


def test_auroc_monitor_keeps_the_epoch_with_the_best_tuning_score():
    """A hand-made case: the tuning loss falls every epoch, the tuning score peaks at epoch 2 (epoch 4 only
    ties it). The kept weights are epoch 2's and training stops after two epochs without a better score."""
    res, model, seen = _fit([0.6, 0.9, 0.7, 0.9, 0.5, 0.99], epochs=6, patience=2, monitor="auroc")
    assert res.best_epoch == 2
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4]
    assert [h["tuning_auroc"] for h in res.history] == [0.6, 0.9, 0.7, 0.9]
    assert model.w.item() == seen[1]
    assert res.best_tuning_loss == -0.9
    losses = [h["tuning_loss"] for h in res.history]
    assert losses == sorted(losses, reverse=True)  # the loss alone would have kept the last epoch


def test_loss_monitor_is_the_default_and_follows_the_tuning_loss():
    res, model, _ = _fit(None, epochs=4, patience=2)
    assert TrainConfig().monitor == "loss"
    assert res.best_epoch == 4
    assert "tuning_auroc" not in res.history[0]


def test_a_monitor_without_its_score_and_a_score_without_its_monitor_are_refused():
    with pytest.raises(ConfigError, match="train.monitor: auroc"):
        _fit(None, epochs=1, monitor="auroc")
    with pytest.raises(ValueError, match="tuning_score"):
        _fit([0.5], epochs=1)


def test_an_unknown_monitor_is_a_config_error():
    with pytest.raises(ConfigError, match="train.monitor must be one of"):
        load_config(train={"monitor": "f1"})


# ------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def data(cohort, splits) -> api.LoadedData:
    return api.LoadedData(cohort.events, splits, None, "synthetic")


def test_finetune_with_the_auroc_monitor_keeps_the_best_tuning_auroc_epoch(data):
    res = api.finetune(data, target="cdai", train={"epochs": 4, "patience": 4, "lr": 2e-2, "progress": False,
                                                   "monitor": "auroc"}, **FAST)
    hist = res.metrics["train"]["history"]
    scores = [h["tuning_auroc"] for h in hist]
    assert res.metrics["train"]["monitor"] == "auroc"
    assert res.metrics["train"]["best_epoch"] == 1 + int(np.argmax(scores))
    tune = res.predictions["tuning"]
    # the weights kept are the ones scored: the tuning AUROC of the returned model is the best in the history
    assert auroc(tune["y_true"], tune["y_prob"]).value == pytest.approx(max(scores), abs=1e-6)


def test_finetune_defaults_are_unweighted_and_stop_on_the_loss(data):
    res = api.finetune(data, target="cdai", train={"epochs": 2, "progress": False}, **FAST)
    assert res.metrics["train"]["monitor"] == "loss"
    assert res.metrics["train"]["pos_weight"] is None
    assert res.model.config.pos_weight is None
    assert "tuning_auroc" not in res.metrics["train"]["history"][0]


def test_balanced_pos_weight_is_negatives_over_positives_on_train(data):
    res = api.finetune(data, target="cdai", train={"epochs": 1, "progress": False},
                       model_overrides={"pos_weight": "balanced"}, **FAST)
    tr = cdai_labels(data.events)
    tr = tr.loc[tr["subject_id"].isin(ids_in(data.splits, "train"))]
    y = tr["boolean_value"].to_numpy(bool)
    assert 0 < y.sum() < len(y)
    expected = (len(y) - y.sum()) / y.sum()
    assert res.metrics["train"]["pos_weight"] == pytest.approx(expected)
    assert res.model.config.pos_weight == pytest.approx(expected)


def test_auroc_monitor_with_one_class_on_tuning_runs_every_epoch_and_keeps_the_last(data, caplog):
    lab = cdai_labels(data.events)
    lab = lab.assign(boolean_value=lab["boolean_value"] & ~lab["subject_id"].isin(ids_in(data.splits, "tuning")))
    with caplog.at_level(logging.WARNING, logger="ehrseq.recipes.sequence"):
        res = api.finetune(data, labels=lab[["subject_id", "prediction_time", "boolean_value"]],
                           train={"epochs": 3, "patience": 1, "progress": False, "monitor": "auroc"}, **FAST)
    assert res.metrics["train"]["monitor"] == "last_epoch"
    assert res.metrics["train"]["best_epoch"] == 3
    assert len(res.metrics["train"]["history"]) == 3
    assert "no early stopping" in caplog.text


# ------------------------------------------------------------------------------------------- pos_weight
class _Rows:
    def __init__(self, y: list[int]) -> None:
        self.targets = np.asarray(y, np.float32).reshape(-1, 1)

    def __len__(self) -> int:
        return len(self.targets)


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("balanced", 3.0), (2, 2.0), (0.5, 0.5)])
def test_pos_weight_values(value, expected):
    assert resolve_pos_weight(value, TaskSpec("t", "binary"), _Rows([1, 0, 0, 0, 1, 0, 0, 0])) == expected


@pytest.mark.parametrize(("value", "kind", "match"), [
    ("balanced", "regression", "regression: remove it"),
    ("balanced", "multilabel", "give one number"),
    (-1.0, "binary", "positive number or 'balanced'"),
    ("even", "binary", "positive number or 'balanced'"),
    (True, "binary", "positive number or 'balanced'"),
])
def test_bad_pos_weight_is_a_config_error(value, kind, match):
    with pytest.raises(ConfigError, match=match):
        resolve_pos_weight(value, TaskSpec("t", kind), _Rows([1, 0]))


def test_auroc_monitor_on_a_regression_task_is_a_config_error(data):
    with pytest.raises(ConfigError, match="for binary tasks; 'cdai_value' is regression"):
        api.finetune(data, target="cdai_value", train={"epochs": 1, "progress": False, "monitor": "auroc"}, **FAST)


def test_auroc_monitor_for_deepsurv_is_refused(data):
    with pytest.raises(ConfigError, match="train.monitor does not apply to the deepsurv model"):
        api.finetune(data, target="survival", model="deepsurv", train={"monitor": "auroc"}, n_bootstrap=0)
