"""Discrete-time survival heads (LogisticHazard, PMF, DeepHit): ranking, curves, pycox equivalence, artifacts,
determinism, the pycox import shim, and the models wired through the recipe, the scorer, explain and the CLI."""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import MIMIC_COLUMN_MAP

from ehrseq import api
from ehrseq.cli import main
from ehrseq.config import load_config
from ehrseq.errors import ArtifactError, ConfigError, DataValidationError
from ehrseq.evaluate.survival import concordance_index, concordance_td
from ehrseq.models import pycox_compat
from ehrseq.models.deepsurv import DeepSurv
from ehrseq.models.discrete_time import (
    DISCRETE_TIME_MODELS,
    PMF,
    DeepHit,
    DiscreteTimeConfig,
    DiscreteTimeSurvival,
    LogisticHazard,
    dense_grid,
    rank_matrix,
)
from ehrseq.recipes.survival import discrete_time_config, survival_estimator

HEADS = ("logistic_hazard", "pmf", "deephit")
TINY = DiscreteTimeConfig(hidden_sizes=(8,), lr=1e-2, epochs=15, batch_size=64, patience=5, seed=3,
                          num_durations=10)


def _ph_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exponential proportional-hazards data: log-risk = 1.5*x0 - 1.0*x1 (4 features), ~30% censored."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    t_event = rng.exponential(1.0 / np.exp(1.5 * x[:, 0] - 1.0 * x[:, 1]))
    t_cens = rng.exponential(3.0, size=n)
    return x, np.minimum(t_event, t_cens), (t_event <= t_cens).astype(float)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _ph_data(500)


def _fit(head: str, data, config: DiscreteTimeConfig = TINY) -> DiscreteTimeSurvival:
    x, t, e = data
    return DISCRETE_TIME_MODELS[head](config).fit(x[:250], t[:250], e[:250], x[250:350], t[250:350], e[250:350])


@pytest.fixture(scope="module")
def fitted(data) -> dict[str, DiscreteTimeSurvival]:
    return {h: _fit(h, data) for h in HEADS}


# ------------------------------------------------------------------------------------- the models
@pytest.mark.parametrize("head", HEADS)
def test_each_head_ranks_a_planted_risk(fitted, data, head):
    x, t, e = data
    m = fitted[head]
    assert type(m).MODEL_TYPE == head and len(m.cuts_) == 10 and m.cuts_[0] == 0.0
    assert concordance_index(t[350:], e[350:], m.predict_risk(x[350:])) > 0.7
    assert concordance_td(t[350:], e[350:], m.predict_survival(x[350:])) > 0.65  # on the dense default grid


@pytest.mark.parametrize("head", HEADS)
def test_survival_curves_fall_with_time_and_stay_in_0_1(fitted, data, head):
    x = data[0][350:]
    m = fitted[head]
    times = np.random.default_rng(0).uniform(-1.0, 1.5 * m.cuts_[-1], size=200)  # unsorted, past both ends
    s = m.predict_survival(x, times)
    assert s.index.is_monotonic_increasing and s.shape == (200, len(x))
    v = s.to_numpy()
    assert (v >= 0).all() and (v <= 1).all() and (np.diff(v, axis=0) <= 1e-12).all()
    assert (v[s.index < 0] == 1.0).all()
    at_cuts = m.predict_survival_at_cuts(x)
    after = s.index >= m.cuts_[-1]
    np.testing.assert_allclose(v[after], np.broadcast_to(at_cuts[:, -1], (int(after.sum()), len(x))))
    np.testing.assert_allclose(m.predict_survival(x, m.cuts_).to_numpy().T, at_cuts, atol=1e-12)
    risk = m.predict_risk(x)
    assert ((risk >= 0) & (risk <= 1)).all()


def test_pmf_needs_the_dense_grid_for_c_td(fitted, data):
    """Read at the 10 cut points only, PMF's curves tie for most pairs and C-td drops far below Harrell's C."""
    x, t, e = data
    m = fitted["pmf"]
    dense = concordance_td(t[350:], e[350:], m.predict_survival(x[350:]))
    steps = concordance_td(t[350:], e[350:], m.predict_survival(x[350:], m.cuts_))
    assert dense > steps + 0.1


@pytest.mark.parametrize("head", HEADS)
def test_curves_are_pycox_const_pdf_interpolation(fitted, data, head):
    """Between cut points S is exactly pycox's interpolate(sub=10) ("const_pdf") on its own sub-grid."""
    from pycox.models.interpolation import InterpolateLogisticHazard, InterpolatePMF
    from pycox.models.utils import make_subgrid

    m = fitted[head]
    x = data[0][350:380]
    s = torch.from_numpy(m.predict_survival_at_cuts(x))
    pmf = torch.cat([1.0 - s[:, :1], s[:, :-1] - s[:, 1:]], dim=1)

    class AtCuts:  # what pycox's interpolation asks of a model: its predictions at the cut points
        def predict_surv(self, *_a, **_k):
            return s

        def predict_pmf(self, *_a, **_k):
            return pmf

    interp = (InterpolateLogisticHazard if head == "logistic_hazard" else InterpolatePMF)(AtCuts(), sub=10)
    ref = interp.predict_surv(torch.zeros(len(x), 1), numpy=True)
    grid = np.asarray(make_subgrid(m.cuts_, 10), dtype=np.float64)
    np.testing.assert_allclose(dense_grid(m.cuts_), grid, rtol=1e-12)
    np.testing.assert_allclose(m.predict_survival(x, grid).to_numpy().T, ref, atol=1e-6)


def test_survival_at_cuts_is_pycox_read_of_the_outputs(fitted, data):
    """LogisticHazard: S = prod(1 - sigmoid(phi)); PMF and DeepHit: S = 1 - cumsum(softmax([phi, 0])[:-1]),
    as pycox's predict_surv computes them."""
    from pycox.models.utils import pad_col

    x = data[0][350:380]
    for head, m in fitted.items():
        with torch.no_grad():
            phi = m.net_(m._to_tensor(x)).logits
        if head == "logistic_hazard":
            ref = (1 - phi.sigmoid()).add(1e-7).log().cumsum(1).exp()
        else:
            ref = 1 - pad_col(phi).softmax(1)[:, :-1].cumsum(1)
        np.testing.assert_allclose(m.predict_survival_at_cuts(x), ref.numpy(), atol=1e-5)


@pytest.mark.parametrize("head", HEADS)
def test_the_output_bias_starts_at_the_kaplan_meier_curve_of_the_cut_labels(fitted, data, head):
    from ehrseq.evaluate.survival import kaplan_meier
    from ehrseq.models.discrete_time import _discrete_hazards

    m = fitted[head]
    x, t, e = data
    idx, ev = pc_labels(m.cuts_, t[:250], e[:250])
    rows = m._rows(x[:250], idx, ev)
    logits = m._base_logits(_discrete_hazards(rows, len(m.cuts_)))
    start = m._survival_at_cuts(logits[None].double())[0]
    km = kaplan_meier(m.cuts_[idx], ev)["survival"]
    want = km.reindex(m.cuts_).ffill().fillna(1.0).to_numpy()
    np.testing.assert_allclose(start.numpy(), want, atol=2e-3)
    untrained = DISCRETE_TIME_MODELS[head](DiscreteTimeConfig(**{**TINY.__dict__, "epochs": 0})).fit(
        x[:250], t[:250], e[:250])
    np.testing.assert_allclose(untrained.net_.head.bias.detach().numpy(), logits.numpy(), rtol=1e-6)


def pc_labels(cuts: np.ndarray, t: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pycox's discretisation of (t, e) on fixed cut points."""
    return pycox_compat.LabTransDiscreteTime(cuts).transform(t, e)


def test_rank_matrix_equals_pycox_pair_rank_mat():
    from pycox.models.data import pair_rank_mat

    rng = np.random.default_rng(1)
    idx, ev = rng.integers(0, 5, size=40), rng.integers(0, 2, size=40).astype(np.float32)
    want = pair_rank_mat(idx, ev)
    got = rank_matrix(torch.from_numpy(idx), torch.from_numpy(ev)).numpy()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("head", HEADS)
def test_save_load_round_trip(fitted, data, head, tmp_path):
    m = fitted[head]
    x = data[0][350:]
    path = m.save(tmp_path / head, extra_config={"target": "t"})
    assert not list(path.glob("*.pt")) and not list(path.glob("*.pkl"))
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["model_type"] == head and cfg["model"]["num_durations"] == 10
    assert json.loads((path / "discretization.json").read_text())["cuts"] == m.cuts_.tolist()
    back = DiscreteTimeSurvival.load(path)  # the base class loads whichever head it holds
    assert type(back) is type(m)
    np.testing.assert_allclose(back.predict_risk(x), m.predict_risk(x), rtol=0, atol=1e-6)
    np.testing.assert_allclose(back.predict_survival(x).to_numpy(), m.predict_survival(x).to_numpy(), atol=1e-6)
    other = PMF if head != "pmf" else DeepHit
    with pytest.raises(ArtifactError, match=f"holds a '{head}' model"):
        other.load(path)
    with pytest.raises(ArtifactError):
        DeepSurv.load(path)


@pytest.mark.parametrize("head", ["pmf", "deephit"])
def test_same_seed_same_predictions_whatever_the_row_order(data, head):
    x, t, e = data
    a = _fit(head, data)
    perm = np.random.default_rng(5).permutation(250)
    b = DISCRETE_TIME_MODELS[head](TINY).fit(x[:250][perm], t[:250][perm], e[:250][perm],
                                             x[250:350][::-1], t[250:350][::-1], e[250:350][::-1])
    np.testing.assert_array_equal(a.predict_risk(x[350:]), b.predict_risk(x[350:]))
    c = DISCRETE_TIME_MODELS[head](DiscreteTimeConfig(**{**TINY.__dict__, "seed": 4})).fit(
        x[:250], t[:250], e[:250], x[250:350], t[250:350], e[250:350])
    assert not np.array_equal(a.predict_risk(x[350:]), c.predict_risk(x[350:]))


def test_bad_inputs_are_named():
    x, t, e = _ph_data(60, seed=2)
    with pytest.raises(DataValidationError, match="no events, so a discrete-time survival model"):
        LogisticHazard(TINY).fit(x, t, np.zeros_like(e))
    with pytest.raises(DataValidationError, match="durations must be > 0"):
        PMF(TINY).fit(x, np.where(np.arange(60) == 3, 0.0, t), e)
    m = PMF(DiscreteTimeConfig(hidden_sizes=(4,), epochs=2, num_durations=5)).fit(x, t, e)
    with pytest.raises(DataValidationError, match="X has 3 features, the model was fitted on 4"):
        m.predict_risk(x[:, :3])
    with pytest.raises(ConfigError, match="num_durations must be an integer >= 2"):
        DiscreteTimeConfig(num_durations=1)
    with pytest.raises(ConfigError, match="cut_scheme"):
        DiscreteTimeConfig(cut_scheme="log")


# --------------------------------------------------------------------------------- the pycox shim
def test_pycox_imports_on_a_read_only_install(monkeypatch):
    """pycox's import creates <site-packages>/pycox/datasets/data; on a read-only install a plain import fails,
    the shim's import does not (and leaves the environment as it was)."""
    saved = {k: v for k, v in sys.modules.items() if k == "pycox" or k.startswith("pycox.")}
    pkg = Path(saved["pycox"].__file__).parent
    real_mkdir = pathlib.Path.mkdir

    def read_only_mkdir(self: Path, *args, **kwargs):
        if pkg == Path(self) or pkg in Path(self).parents:
            raise PermissionError(30, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    def purge() -> None:
        for k in [k for k in sys.modules if k == "pycox" or k.startswith("pycox.")]:
            del sys.modules[k]

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only_mkdir)
    monkeypatch.delenv(pycox_compat.DATA_DIR_ENV, raising=False)
    try:
        purge()
        with pytest.raises(PermissionError):
            importlib.import_module("pycox.models.loss")  # what `import pycox` does there
        purge()
        pycox = pycox_compat.import_pycox()
        assert hasattr(pycox.models.loss, "NLLPMFLoss") and pycox_compat.DATA_DIR_ENV not in os.environ
    finally:
        purge()
        sys.modules.update(saved)


# ------------------------------------------------------------------------------------- the wiring
def test_num_durations_comes_from_the_preset_or_model_overrides():
    assert discrete_time_config(load_config(None, model="pmf", preset="tiny")).num_durations == 10
    assert discrete_time_config(load_config(None, model="pmf")).num_durations == 20
    cfg = load_config(None, model="deephit", model_overrides={"num_durations": 7, "alpha": 0.5},
                      train={"epochs": 3})
    est = survival_estimator(cfg)
    assert isinstance(est, DeepHit)
    assert (est.config.num_durations, est.config.alpha, est.config.epochs) == (7, 0.5, 3)
    assert isinstance(survival_estimator(load_config(None, model="rnn")), DeepSurv)
    with pytest.raises(ConfigError, match="alpha applies to deephit only"):
        discrete_time_config(load_config(None, model="pmf", model_overrides={"alpha": 0.5}))
    with pytest.raises(ConfigError, match="train.grad_clip does not apply to the logistic_hazard model"):
        discrete_time_config(load_config(None, model="logistic_hazard", train={"grad_clip": 0.5}))
    with pytest.raises(ConfigError, match="num_durations must be an integer"):
        discrete_time_config(load_config(None, model="pmf", model_overrides={"num_durations": 0}))


@pytest.fixture(scope="module")
def discharge_labels(mimic_slice, tmp_path_factory) -> Path:
    """Days from each admission of the MIMIC slice to discharge, censored at 7 days (a MEDS label file)."""
    from ehrseq.io import read_meds

    ev = read_meds(mimic_slice, column_map=MIMIC_COLUMN_MAP).events
    adm = ev.loc[ev["code"].str.startswith("HOSPITAL_ADMISSION//"), ["subject_id", "time"]].drop_duplicates()
    dis = ev.loc[ev["code"].str.startswith("HOSPITAL_DISCHARGE//"), ["subject_id", "time"]].drop_duplicates()
    m = pd.merge_asof(adm.sort_values("time"), dis.sort_values("time").rename(columns={"time": "discharge"}),
                      left_on="time", right_on="discharge", by="subject_id", direction="forward")
    m = m.dropna(subset=["discharge"]).rename(columns={"time": "prediction_time"})
    los = (m["discharge"] - m["prediction_time"]).dt.total_seconds() / 86400
    out = tmp_path_factory.mktemp("ttl") / "discharge_7d.parquet"
    m[["subject_id", "prediction_time"]].assign(float_value=np.minimum(los, 7.0).clip(lower=0.01),
                                                boolean_value=los <= 7).to_parquet(out, index=False)
    return out


@pytest.fixture(scope="module", params=HEADS)
def artifact(request, mimic_slice, discharge_labels, tmp_path_factory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp(request.param) / "art"
    api.finetune(mimic_slice, labels=discharge_labels, label_kind="survival", column_map=MIMIC_COLUMN_MAP,
                 model=request.param, preset="tiny", out=out, n_bootstrap=20,
                 split={"strategy": "random", "seed": 0}, train={"epochs": 3})
    return request.param, out


def test_the_scorer_writes_risk_and_survival_at_each_horizon(artifact, mimic_slice, discharge_labels, tmp_path):
    from ehrseq.scoring import score

    head, path = artifact
    metrics = json.loads((path / "metrics.json").read_text())
    assert json.loads((path / "config.json").read_text())["model_type"] == head
    assert metrics["held_out"]["harrell_c"]["value"] is not None and "c_td" in metrics["held_out"]
    s = score(path, mimic_slice, tmp_path / "scores", labels=discharge_labels, column_map=MIMIC_COLUMN_MAP,
              horizons=[1, 3.5])
    got = pd.read_parquet(tmp_path / "scores")
    assert s.predictions_written == len(got) == len(pd.read_parquet(discharge_labels))
    assert {"predicted_risk", "predicted_survival_1d", "predicted_survival_3_5d", "float_value"} <= set(got)
    assert got[["predicted_risk", "predicted_survival_1d", "predicted_survival_3_5d"]].notna().all().all()
    assert (got["predicted_survival_3_5d"] <= got["predicted_survival_1d"] + 1e-12).all()
    assert got["predicted_risk"].between(0, 1).all()


def test_explain_treats_a_discrete_head_like_deepsurv(artifact, mimic_slice, discharge_labels):
    from ehrseq.explain import explain_artifact

    _, path = artifact
    imp = explain_artifact(path, mimic_slice, split="all", labels=discharge_labels, column_map=MIMIC_COLUMN_MAP,
                           n_repeats=1)
    assert len(imp) > 0 and imp.attrs["metric"] == "Harrell's C"


def test_cli_finetune_model_pmf_on_a_time_to_event_label_file(mimic_slice, discharge_labels, tmp_path, capsys):
    out = tmp_path / "pmf"
    rc = main(["finetune", "--model", "pmf", "--preset", "tiny", "--labels", str(discharge_labels),
               "--label-kind", "survival", "--data", str(mimic_slice), "--column-map", "value=numeric_value",
               "--split", "random", "--epochs", "3", "--n-bootstrap", "20", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["model_type"], cfg["model"]["num_durations"], cfg["model"]["epochs"]) == ("pmf", 10, 3)
    assert "harrell_c=" in capsys.readouterr().out
    rc = main(["evaluate", "--artifact", str(out), "--data", str(mimic_slice), "--column-map", "value=numeric_value",
               "--labels", str(discharge_labels), "--out", str(tmp_path / "rep"), "--n-boot", "20", "--no-plots"])
    assert rc == 0, capsys.readouterr().err
    assert "discharge_7d" in (tmp_path / "rep" / "report.md").read_text()
