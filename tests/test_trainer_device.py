"""Device placement in the shared trainer (``train.device`` / ``--device``) and its non-finite-loss error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ehrseq.cli_parser import build_parser
from ehrseq.config import load_config
from ehrseq.errors import ConfigError, EhrseqError
from ehrseq.models.deepsurv import DeepSurv, DeepSurvConfig
from ehrseq.registry import family_train_overrides
from ehrseq.train.trainer import TrainConfig, resolve_device, to_device, train


class _Line(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def _data(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    return x, x @ torch.tensor([[1.0], [-2.0], [0.5]])


def _fit(device: str, **kw: object) -> tuple[object, _Line]:
    x, y = _data()
    rows = list(range(len(x)))
    torch.manual_seed(0)
    model = _Line()
    res = train(model, rows, None, TrainConfig(epochs=30, batch_size=8, lr=0.05, progress=False, device=device, **kw),
                collate_fn=torch.tensor, loss_fn=lambda m, i: ((m(x[i].to(m.lin.weight.device))
                                                               - y[i].to(m.lin.weight.device)) ** 2).mean())
    return res, model


def test_training_on_the_cpu_learns_and_leaves_the_model_on_the_cpu() -> None:
    res, model = _fit("cpu")
    losses = [r["train_loss"] for r in res.history]
    assert losses[-1] < losses[0] / 10
    assert model.lin.weight.device.type == "cpu"
    again = _fit("cpu")[1]
    assert torch.equal(again.lin.weight, model.lin.weight)  # same seed, same weights


def test_cuda_without_cuda_is_a_config_error_naming_the_knob(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"train\.device: cuda is not available.*--device"):
        _fit("cuda")
    with pytest.raises(ConfigError, match=r"train\.device: cuda:1"):
        resolve_device("cuda:1")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"train\.device"):  # DeepSurv trains on the same trainer
        DeepSurv(DeepSurvConfig(hidden_sizes=(4,), epochs=1, device="cuda")).fit(
            np.random.default_rng(0).normal(size=(20, 2)), np.arange(1, 21), np.tile([0, 1], 10))


def test_a_misspelt_device_is_refused_in_the_config_and_on_the_command_line(capsys: pytest.CaptureFixture) -> None:
    assert TrainConfig().device == "auto"
    assert load_config(train={"device": "cuda:0"}).train.device == "cuda:0"
    with pytest.raises(ConfigError, match=r"train\.device must be auto, cpu, cuda or cuda:N"):
        load_config(train={"device": "gpu"})
    parser = build_parser()
    args = parser.parse_args(["finetune", "--data", "d", "--out", "o", "--device", "cuda:1"])
    assert args.device == "cuda:1"
    with pytest.raises(SystemExit):
        parser.parse_args(["finetune", "--data", "d", "--out", "o", "--device", "gpu"])
    assert "auto, cpu, cuda or cuda:N" in capsys.readouterr().err
    finetune = parser._subparsers._group_actions[0].choices["finetune"]  # noqa: SLF001
    assert "else auto)" in finetune.format_help().replace("\n", " ")  # the help quotes TrainConfig's default


def test_families_with_their_own_config_take_the_device_knob() -> None:
    for family in ("deepsurv", "text", "logistic_hazard"):
        assert family_train_overrides(family, TrainConfig(device="cpu"), ("device",), {}) == {"device": "cpu"}


def test_batches_move_whole_dicts_and_objects_with_to() -> None:
    moved = to_device({"a": torch.zeros(2), "b": 3}, torch.device("cpu"))
    assert moved["b"] == 3 and moved["a"].device.type == "cpu"

    class _Box:
        def to(self, device: torch.device) -> str:
            return f"moved to {device}"

    assert to_device(_Box(), torch.device("cpu")) == "moved to cpu"


def test_a_non_finite_loss_stops_training_with_a_clear_error() -> None:
    model = _Line()
    before = model.lin.weight.detach().clone()
    with pytest.raises(EhrseqError, match=r"training loss became nan at epoch 1; lower the learning rate"):
        train(model, list(range(8)), None, TrainConfig(epochs=2, batch_size=4, progress=False, device="cpu"),
              collate_fn=torch.tensor, loss_fn=lambda m, i: m(torch.full((len(i), 3), float("nan"))).mean())
    assert torch.equal(model.lin.weight, before)  # the step that saw the NaN loss was not taken
