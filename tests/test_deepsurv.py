"""DeepSurv: Cox loss golden values, label validation, save/load, determinism, row order, discrimination."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from ehrseq.errors import DataValidationError
from ehrseq.evaluate.survival import concordance_index
from ehrseq.models.deepsurv import DeepSurv, DeepSurvConfig, RiskNet, _event_stratified_batches
from ehrseq.models.losses import cox_ph_loss

TINY = DeepSurvConfig(hidden_sizes=(8,), lr=1e-2, epochs=15, batch_size=64, patience=5, seed=3)


def _ph_data(n: int, seed: int = 0, n_features: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exponential proportional-hazards data: log-risk = 1.0*x0 - 0.7*x1, random censoring (~30%)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_features))
    log_risk = 1.0 * x[:, 0] - 0.7 * x[:, 1]
    t_event = rng.exponential(1.0 / np.exp(log_risk))
    t_cens = rng.exponential(2.5, size=n)
    return x, np.minimum(t_event, t_cens), (t_event <= t_cens).astype(float)


@pytest.fixture(scope="module")
def fitted() -> tuple[DeepSurv, np.ndarray, np.ndarray, np.ndarray]:
    x, t, e = _ph_data(300)
    model = DeepSurv(TINY).fit(x[:200], t[:200], e[:200], x[200:250], t[200:250], e[200:250])
    return model, x[250:], t[250:], e[250:]


# ------------------------------------------------------------------------------------------- loss
def test_cox_loss_matches_hand_computation_with_censoring() -> None:
    f = torch.tensor([0.0, 1.0, -1.0, 0.5])
    t = torch.tensor([1.0, 2.0, 2.0, 4.0])
    e = torch.tensor([1.0, 1.0, 0.0, 1.0])
    ex = math.exp
    # event at t=1: everyone at risk; at t=2: rows 1,2,3 (row 2 censored at 2 is still at risk); t=4: row 3.
    term0 = 0.0 - math.log(ex(0.0) + ex(1.0) + ex(-1.0) + ex(0.5))
    term1 = 1.0 - math.log(ex(1.0) + ex(-1.0) + ex(0.5))
    term3 = 0.5 - math.log(ex(0.5))
    want = -(term0 + term1 + term3) / 3
    assert cox_ph_loss(f, t, e).item() == pytest.approx(want, rel=1e-6)


def test_cox_loss_breslow_ties_put_whole_tied_group_in_risk_set() -> None:
    f = torch.tensor([0.0, 1.0, -1.0, 0.5], dtype=torch.float64)
    t = torch.tensor([1.0, 2.0, 2.0, 4.0], dtype=torch.float64)
    e = torch.ones(4, dtype=torch.float64)
    ex = math.exp
    set_t2 = math.log(ex(1.0) + ex(-1.0) + ex(0.5))  # rows 1 and 2 share this risk set
    want = -(
        (0.0 - math.log(ex(0.0) + ex(1.0) + ex(-1.0) + ex(0.5))) + (1.0 - set_t2) + (-1.0 - set_t2) + 0.0
    ) / 4
    assert cox_ph_loss(f, t, e).item() == pytest.approx(want, rel=1e-12)
    # the result must not depend on the row order inside a tie
    perm = torch.tensor([2, 0, 3, 1])
    assert cox_ph_loss(f[perm], t[perm], e[perm]).item() == pytest.approx(want, rel=1e-12)


def test_cox_loss_equals_pycox_without_ties() -> None:
    pycox_loss = pytest.importorskip("pycox.models.loss").cox_ph_loss
    g = torch.Generator().manual_seed(0)
    f = torch.randn(50, generator=g, dtype=torch.float64)
    t = torch.rand(50, generator=g, dtype=torch.float64) + 0.1
    e = (torch.rand(50, generator=g) < 0.6).double()
    assert cox_ph_loss(f, t, e).item() == pytest.approx(pycox_loss(f, t, e, eps=0.0).item(), rel=1e-10)


def test_cox_loss_gradient_is_finite() -> None:
    f = torch.tensor([0.3, -0.2, 2.0], requires_grad=True)
    loss = cox_ph_loss(f, torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1, 0, 1]))
    loss.backward()
    assert torch.isfinite(f.grad).all()


def test_cox_loss_with_no_events_warns_and_returns_none() -> None:
    with pytest.warns(RuntimeWarning, match="no events"):
        out = cox_ph_loss(torch.zeros(3), torch.tensor([1.0, 2.0, 3.0]), torch.zeros(3))
    assert out is None


# ---------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("durations", "events", "match"),
    [
        ([1.0, -2.0, 3.0, 0.0], [1, 1, 0, 1], r"durations must be > 0.*row index 1, 3.*\(2 rows\)"),
        ([1.0, np.nan, 3.0, 4.0], [1, 1, 0, 1], r"durations are NaN or infinite at row index 1 \(1 row\)"),
        ([1.0, 2.0, 3.0, 4.0], [1, 2, 0, -1], r"events must be 0.*row index 1, 3"),
        ([1.0, 2.0, 3.0, 4.0], [0, 0, 0, 0], r"no events"),
        ([1.0, 2.0, 3.0], [1, 1, 0, 1], r"different lengths \(4, 3, 4\)"),
    ],
)
def test_bad_labels_raise_data_validation_error_with_rows_not_values(durations, events, match) -> None:
    x = np.zeros((4, 2))
    with pytest.raises(DataValidationError, match=match) as info:
        DeepSurv(TINY).fit(x, durations, events)
    assert "-2.0" not in str(info.value)  # messages name rows, never values
    assert info.value.hint


def test_nonfinite_features_raise_with_row_and_column_positions() -> None:
    x = np.zeros((5, 3))
    x[2, 1] = np.nan
    x[4, 0] = np.inf
    with pytest.raises(DataValidationError, match=r"column\(s\) \[0, 1\] at row index 2, 4 \(2 rows\)"):
        DeepSurv(TINY).fit(x, np.arange(1.0, 6.0), [1, 0, 1, 0, 1])


def test_predict_rejects_wrong_feature_count(fitted) -> None:
    model, x, _, _ = fitted
    with pytest.raises(DataValidationError, match="3 features, the model was fitted on 4"):
        model.predict_risk(x[:, :3])


# ------------------------------------------------------------------------------------- behaviour
def test_beats_random_on_proportional_hazards_data(fitted) -> None:
    model, x, t, e = fitted
    assert concordance_index(t, e, model.predict_risk(x)) > 0.6


def test_early_stopping_keeps_history_and_best_epoch(fitted) -> None:
    model = fitted[0]
    assert all("val_loss" in h for h in model.history_)
    best = min(h["val_loss"] for h in model.history_)
    assert model.history_[model.best_epoch_]["val_loss"] == best


def test_survival_frame_shape_index_and_monotonicity(fitted) -> None:
    model, x, _, _ = fitted
    frame = pd.DataFrame(x, index=[f"p{i}" for i in range(len(x))], columns=list("abcd"))
    model_cols = DeepSurv(TINY).fit(frame, *_ph_data(len(x))[1:])
    surv = model_cols.predict_survival(frame, times=[0.0, 0.5, 1.0, 50.0])
    assert surv.shape == (4, len(x)) and list(surv.columns) == list(frame.index)
    assert np.allclose(surv.iloc[0], 1.0)  # before the first event time
    assert (np.diff(surv.to_numpy(), axis=0) <= 0).all()
    default = model.predict_survival(x)
    assert default.index.equals(pd.Index(model.baseline_times_, name="time"))
    assert ((default.to_numpy() > 0) & (default.to_numpy() <= 1)).all()


def test_same_seed_gives_identical_predictions() -> None:
    x, t, e = _ph_data(120, seed=1)
    a = DeepSurv(TINY).fit(x, t, e).predict_risk(x)
    b = DeepSurv(TINY).fit(x, t, e).predict_risk(x)
    assert np.array_equal(a, b)


def test_predictions_invariant_to_row_order_at_fit_and_predict() -> None:
    x, t, e = _ph_data(120, seed=2)
    perm = np.random.default_rng(0).permutation(len(x))
    a = DeepSurv(TINY).fit(x, t, e)
    b = DeepSurv(TINY).fit(x[perm], t[perm], e[perm])
    np.testing.assert_allclose(a.predict_risk(x), b.predict_risk(x), rtol=0, atol=1e-6)
    np.testing.assert_allclose(a.predict_risk(x[perm]), a.predict_risk(x)[perm], rtol=0, atol=1e-6)
    np.testing.assert_allclose(a.baseline_cumhaz_, b.baseline_cumhaz_, rtol=1e-6)


def test_save_load_round_trip_gives_identical_predictions(fitted, tmp_path) -> None:
    model, x, _, _ = fitted
    out = model.save(tmp_path / "ds", extra_config={"target": "time_to_flare"})
    assert (out / "model.safetensors").exists() and (out / "baseline_hazard.json").exists()
    loaded = DeepSurv.load(out)
    assert np.array_equal(loaded.predict_risk(x), model.predict_risk(x))
    pd.testing.assert_frame_equal(loaded.predict_survival(x), model.predict_survival(x))
    assert loaded.config == model.config


def test_risk_net_forward_returns_model_output_with_shapes() -> None:
    net = RiskNet(5, DeepSurvConfig(hidden_sizes=(7, 6))).eval()
    out = net(torch.zeros(3, 5))
    assert out.logits.shape == (3, 1) and out.embeddings.shape == (3, 6)


def test_training_never_hits_an_eventless_batch() -> None:
    x, t, e = _ph_data(100, seed=4)
    e[:] = 0
    e[:3] = 1  # 3 events, batch_size 10 -> would be 10 batches; must collapse to 3
    batches = _event_stratified_batches(e, 10, torch.Generator().manual_seed(0))
    assert len(batches) == 3 and all(e[b.numpy()].sum() >= 1 for b in batches)
    assert sorted(torch.cat(batches).tolist()) == list(range(100))  # every row, once
    m = DeepSurv(DeepSurvConfig(hidden_sizes=(4,), epochs=2, batch_size=10)).fit(x, t, e)
    assert len(m.history_) == 2 and all(np.isfinite(h["train_loss"]) for h in m.history_)
