"""The count-feature baselines of benchmarks/baselines.py: nothing after prediction_time, windows, vocabularies."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not an installed package

from benchmarks.baselines import CountFeaturizer, LinearDesign, fit_gbm, fit_logistic  # noqa: E402
from ehrseq.io import read_meds  # noqa: E402

PT = pd.Timestamp("2020-01-10 12:00")
US = pd.Timedelta(microseconds=1)
MIMIC_COLUMN_MAP = {"value": "numeric_value"}  # as tests/conftest.py: the export calls numeric_value "value"


def _labels(rows: list[tuple[int, pd.Timestamp]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["subject_id", "prediction_time"])
    return df.assign(prediction_time=df["prediction_time"].astype("datetime64[us]"))


@pytest.fixture(scope="module")
def toy(make_events) -> pd.DataFrame:
    return make_events([
        (1, None, "GENDER//F", None), (1, "1980-01-10 12:00", "MEDS_BIRTH", None),
        (1, "2020-01-01", "DX//A", None), (1, "2020-01-09 12:00", "DX//A", None),
        (1, "2020-01-09 11:59:59.999999", "DX//B", None),  # 1 us before the 24 h window
        (1, "2020-01-10 08:00", "LAB//X", 4.0), (1, "2020-01-10 12:00", "LAB//X", 5.0),  # at prediction_time
        (2, None, "GENDER//M", None), (2, "2020-01-05", "DX//B", None), (2, "2020-01-06", "LAB//X", 7.0),
        (3, None, "SEX//U", None), (3, "2020-01-05", "DX//ONLY_HELD_OUT", None),
    ])


def _col(fz: CountFeaturizer, x, name: str) -> np.ndarray:
    return x.to_dense()[:, x.names.index(name)]


def test_counts_windows_last_value_age_sex(toy: pd.DataFrame) -> None:
    fz = CountFeaturizer(top_k=10, n_numeric=5).fit(toy, np.array([1, 2]))
    assert "DX//ONLY_HELD_OUT" not in fz.codes_  # vocabularies come from train subjects only
    assert fz.sex_codes_ == ["GENDER//F", "GENDER//M"]
    x = fz.transform(toy, _labels([(1, PT), (2, PT), (3, PT)]))
    assert _col(fz, x, "count_all:DX//A").tolist() == [2, 0, 0]
    assert _col(fz, x, "count_24h:DX//A").tolist() == [1, 0, 0]  # exactly 24 h before: inside (inclusive)
    assert _col(fz, x, "count_24h:DX//B").tolist() == [0, 0, 0]  # 24 h + 1 us before: outside
    assert _col(fz, x, "count_7d:DX//B").tolist() == [1, 1, 0]
    assert _col(fz, x, "count_all:LAB//X").tolist() == [2, 1, 0]  # the event at prediction_time counts
    last = _col(fz, x, "last_value:LAB//X")
    assert last[:2].tolist() == [5.0, 7.0] and np.isnan(last[2])
    assert _col(fz, x, "age_years")[0] == pytest.approx(40.0, abs=0.01)
    assert np.isnan(_col(fz, x, "age_years")[1])
    assert _col(fz, x, "static:GENDER//F").tolist() == [1, 0, 0]
    assert _col(fz, x, "static:GENDER//M").tolist() == [0, 1, 0]


def test_event_one_microsecond_after_prediction_time_changes_nothing(toy: pd.DataFrame, make_events) -> None:
    fz = CountFeaturizer(top_k=10, n_numeric=5).fit(toy, np.array([1, 2]))
    labels = _labels([(1, PT), (2, PT)])
    before = fz.transform(toy, labels)
    after_rows = [(s, str(PT + US), c, v) for s in (1, 2) for c, v in (("LAB//X", 99.0), ("DX//A", None),
                                                                         ("DX//B", None))]
    later = pd.concat([toy, make_events(after_rows)], ignore_index=True)
    after = fz.transform(later, labels)
    np.testing.assert_array_equal(before.to_dense(), after.to_dense())
    # the control: the same events at prediction_time itself do change the features
    at = pd.concat([toy, make_events([(s, str(PT), c, v) for s, _, c, v in after_rows])], ignore_index=True)
    assert not np.array_equal(fz.transform(at, labels).to_dense(), before.to_dense(), equal_nan=True)


@pytest.fixture(scope="module")
def mimic(mimic_slice: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    ev = read_meds(mimic_slice, column_map=MIMIC_COLUMN_MAP).events
    timed = ev.loc[ev["time"].notna()]
    # three prediction times per subject inside its record (quartiles of its event times)
    q = timed.groupby("subject_id")["time"].quantile([0.25, 0.5, 0.75]).reset_index()
    labels = q.rename(columns={"time": "prediction_time"})[["subject_id", "prediction_time"]]
    return ev, labels.assign(prediction_time=labels["prediction_time"].dt.floor("min").astype("datetime64[us]"))


def test_real_data_future_events_change_nothing(mimic: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ev, all_labels = mimic
    # one row per subject (its median event time): an event after one row's prediction_time may rightly be
    # before a later row's of the same subject
    labels = all_labels.groupby("subject_id").nth(1).reset_index(drop=True)
    ids = np.sort(ev["subject_id"].unique())
    fz = CountFeaturizer(top_k=100, n_numeric=20).fit(ev, ids[: len(ids) // 2])
    before = fz.transform(ev, labels)
    assert before.counts.nnz > 0 and np.isfinite(before.dense[:, :20]).any()
    # every label row gets, 1 us after its prediction_time, one event of each vocabulary code its subject has
    top = ev.loc[ev["code"].isin(fz.codes_[:50] + fz.numeric_codes_)].drop_duplicates(["subject_id", "code"])
    fut = labels.merge(top, on="subject_id")
    fut = fut.assign(time=fut["prediction_time"] + US, numeric_value=fut["numeric_value"] + 1000)
    later = pd.concat([ev, fut[ev.columns]], ignore_index=True).sort_values(["subject_id", "time"])
    assert len(fut) > 100
    after = fz.transform(later, labels)
    np.testing.assert_array_equal(before.to_dense(), after.to_dense())
    assert (before.counts != after.counts).nnz == 0


def test_models_fit_and_design_is_train_scaled(mimic: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ev, labels = mimic
    fz = CountFeaturizer(top_k=50, n_numeric=10).fit(ev, np.sort(ev["subject_id"].unique()))
    x = fz.transform(ev, labels)
    y = (np.arange(len(labels)) % 3 == 0).astype(int)
    design = LinearDesign().fit(x)
    z = design.transform(x, dense=True)
    assert np.isfinite(z).all() and z.shape[1] == x.counts.shape[1] + 2 * x.dense.shape[1]
    model, d = fit_logistic(x, y)
    p = model.predict_proba(d.transform(x))[:, 1]
    assert p.shape == (len(labels),) and 0 < p.min() <= p.max() < 1
    g = fit_gbm(x, y, max_iter=10)
    assert g.predict_proba(x.to_dense()).shape == (len(labels), 2)


def test_coxnet_ranks_by_a_feature_and_gives_curves(mimic: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    pytest.importorskip("sksurv")
    from benchmarks.baselines import CoxnetBaseline

    ev, labels = mimic
    fz = CountFeaturizer(top_k=30, n_numeric=5).fit(ev, np.sort(ev["subject_id"].unique()))
    x = fz.transform(ev, labels)
    age = x.dense[:, fz.dense_names.index("age_years")]
    rng = np.random.default_rng(0)
    duration = np.exp(-(age - np.nanmean(age)) / 10) * rng.exponential(100, len(age)) + 1  # older: earlier
    event = (rng.random(len(age)) < 0.7).astype(int)
    m = CoxnetBaseline(n_alphas=10).fit(x, duration, event, x, duration, event)
    risk = m.predict_risk(x)
    assert np.corrcoef(risk, age)[0, 1] > 0.3
    times = np.linspace(1, 200, 5)
    surv = m.predict_survival(x, times)
    assert surv.shape == (5, len(labels)) and (np.diff(surv.to_numpy(), axis=0) <= 1e-12).all()
