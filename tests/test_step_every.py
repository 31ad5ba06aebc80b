"""RNN steps merged per hour or day (``featurizer.step_every``): what a merged step holds, that a row whose
prediction_time falls inside an hour / day sees that step only up to prediction_time, and that nothing after it
reaches a step (the leakage tests of tests/test_featurizer.py, on real MIMIC-IV demo patients)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ehrseq.config import load_config
from ehrseq.data.dataset import SequenceDataset
from ehrseq.errors import ConfigError
from ehrseq.featurize.featurizer import Featurizer, FeaturizerConfig

LAB, DX_X, DX_Y = "LAB//A", "DX//X", "DX//Y"
HAND = [(1, "2020-01-01 10:05:00", LAB, 1.0), (1, "2020-01-01 10:05:00", DX_X, None),
        (1, "2020-01-01 10:40:00", LAB, 3.0), (1, "2020-01-01 11:10:00", DX_Y, None),
        (1, "2020-01-02 09:00:00", LAB, 2.0)]


def _hand(make_events, every: str, at: list[str]) -> tuple[Featurizer, np.ndarray, list[np.ndarray]]:
    """The hand-built patient featurized with ``step_every=every`` at prediction times ``at``: (featurizer,
    z of LAB values 1, 2, 3, each row's steps)."""
    ev = make_events(HAND)
    cfg = FeaturizerConfig(min_count=1, numeric_codes=(LAB,), step_every=every)
    f = Featurizer(cfg).fit(ev, pd.DataFrame({"subject_id": [1], "split": ["train"]}))
    rows = pd.DataFrame({"subject_id": 1, "prediction_time": pd.to_datetime(at).astype("datetime64[us]")})
    fs = f.transform(ev, rows)
    z = (np.log1p([1.0, 2.0, 3.0]) - f.num_mean_[0]) / f.num_std_[0]
    return f, z.astype(np.float32), [fs.step_x[fs.step_start[i]:fs.step_cut[i]] for i in range(len(rows))]


def _cols(f: Featurizer) -> dict[str, int]:
    hot = {c: 2 + i for i, c in enumerate(f.step_codes_)}  # one numeric code: [z, missing], then the multi-hot
    return {"z": 0, "missing": 1, **hot, "gap": -1}


@pytest.mark.parametrize(("every", "n_steps"), [("event", 4), ("hour", 3), ("day", 2)])
def test_steps_merge_the_events_of_an_hour_or_a_day(make_events, every, n_steps):
    f, z, (steps,) = _hand(make_events, every, ["2020-01-03 00:00:00"])
    c = _cols(f)
    assert len(steps) == n_steps
    first = steps[0]
    if every == "event":
        assert first[c["z"]] == z[0]
        return
    assert first[c["z"]] == pytest.approx(z[2])  # the hour's (day's) last value of the lab: 3.0 at 10:40
    assert first[c["missing"]] == 0.0
    assert first[c[DX_X]] == 1.0
    assert first[c[DX_Y]] == (1.0 if every == "day" else 0.0)  # 11:10 is the next hour, the same day
    assert steps[-1][c["z"]] == pytest.approx(z[1])  # the next day's value
    if every == "hour":  # log days since the previous step's last event: 11:10 - 10:40
        assert steps[1][c["missing"]] == 1.0
        assert steps[1][c["gap"]] == pytest.approx(np.log1p(30 / 1440) / 5.0)


@pytest.mark.parametrize("every", ["hour", "day"])
def test_a_prediction_time_inside_a_step_sees_it_up_to_that_time(make_events, every):
    """10:20 lies inside the 10 o'clock hour (and the day): the row sees a step of the 10:05 events only;
    at 10:40 (inclusive) it sees the 10:40 value; the stored steps of other rows are untouched."""
    f, z, (at_1020, at_1040, later) = _hand(make_events, every, ["2020-01-01 10:20:00", "2020-01-01 10:40:00",
                                                                 "2020-01-03 00:00:00"])
    c = _cols(f)
    assert len(at_1020) == 1 and len(at_1040) == 1
    assert at_1020[0][c["z"]] == pytest.approx(z[0])
    assert at_1020[0][c[DX_X]] == 1.0
    assert at_1040[0][c["z"]] == pytest.approx(z[2])
    assert later[0][c["z"]] == pytest.approx(z[2])
    if every == "day":
        assert at_1040[0][c[DX_Y]] == 0.0 and later[0][c[DX_Y]] == 1.0  # 11:10 is after 10:40


def test_numeric_codes_are_those_measured_at_enough_merged_steps(make_events):
    """A lab charted once an hour among 30 other event times an hour is at < 5% of event-time steps but at
    every hour step."""
    rows = []
    for h in range(10):
        rows.append((1, f"2020-01-01 {h:02d}:00:00", LAB, float(h)))
        rows += [(1, f"2020-01-01 {h:02d}:{m:02d}:00", DX_X, None) for m in range(1, 31)]
    ev = make_events(rows)
    sp = pd.DataFrame({"subject_id": [1], "split": ["train"]})
    assert Featurizer(FeaturizerConfig(min_count=1)).fit(ev, sp).numeric_codes_ == []
    assert Featurizer(FeaturizerConfig(min_count=1, step_every="hour")).fit(ev, sp).numeric_codes_ == [LAB]


def test_step_every_defaults_to_event_and_round_trips(make_events):
    assert FeaturizerConfig().step_every == "event"
    f, _, _ = _hand(make_events, "hour", ["2020-01-03"])
    d = json.loads(json.dumps(f.to_dict()))
    assert Featurizer.from_dict(d).config.step_every == "hour"
    del d["config"]["step_every"]  # a featurizer saved before the option: event-time steps, as it was trained
    assert Featurizer.from_dict(d).config.step_every == "event"


def test_an_unknown_step_every_is_a_config_error():
    with pytest.raises(ConfigError, match="featurizer.step_every must be one of"):
        load_config(featurizer={"step_every": "week"})


# ------------------------------------------------------------------------------- no leakage, real data
@pytest.fixture(scope="module")
def mimic(mimic_slice):
    """(events, one label row per subject at a random second 1 h to 5 days after an admission)."""
    from ehrseq.io import read_meds

    ev = read_meds(mimic_slice, column_map={"value": "numeric_value"}).events
    adm = ev.loc[ev["code"].astype(str).str.startswith("HOSPITAL_ADMISSION//"), ["subject_id", "time"]]
    rows = adm.drop_duplicates().groupby("subject_id").sample(n=1, random_state=0)
    rng = np.random.default_rng(0)
    rows["prediction_time"] = rows["time"] + pd.to_timedelta(rng.integers(3_600, 5 * 86_400, len(rows)), unit="s")
    return ev, rows[["subject_id", "prediction_time"]].reset_index(drop=True)


def _future(ev: pd.DataFrame, rows: pd.DataFrame, f: Featurizer) -> pd.DataFrame:
    """Events of the step codes and numeric codes 1 s, 20 min and 3 h after each row's prediction_time (the
    same hour, the same day, later), for the same subject."""
    known = f.numeric_codes_ + f.step_codes_
    out = [(s, p + pd.Timedelta(seconds=d), c, 7.0 if c in f.numeric_codes_ else np.nan)
           for s, p in zip(rows["subject_id"], rows["prediction_time"], strict=True)
           for d in (1, 1_200, 10_800) for c in known[:: max(len(known) // 8, 1)]]
    df = pd.DataFrame(out, columns=["subject_id", "time", "code", "numeric_value"])
    return df.astype({"time": "datetime64[us]", "code": ev["code"].dtype, "numeric_value": "float32"})


def _steps(f: Featurizer, ev: pd.DataFrame, rows: pd.DataFrame, max_steps: int) -> list[np.ndarray]:
    ds = SequenceDataset(f.transform(ev, rows), max_steps=max_steps, tokens=False, steps=True)
    return [ds[i]["steps"] for i in range(len(ds))]


@pytest.mark.parametrize("every", ["hour", "day"])
@pytest.mark.parametrize("max_visits", [64, 3])
def test_nothing_after_prediction_time_reaches_a_merged_step(mimic, every, max_visits):
    """Appending events after each row's prediction_time changes no step the model reads; and each row's steps
    equal those built from its events up to prediction_time alone (the open hour / day as it stood then)."""
    ev, rows = mimic
    f = Featurizer(FeaturizerConfig(step_every=every, max_visits=max_visits)).fit(
        ev, pd.DataFrame({"subject_id": ev["subject_id"].unique(), "split": "train"}))
    base = _steps(f, ev, rows, max_visits)
    more = _steps(f, pd.concat([ev, _future(ev, rows, f)], ignore_index=True), rows, max_visits)
    for i in range(len(rows)):
        np.testing.assert_array_equal(base[i], more[i], err_msg=f"row {i}")
    p = ev["subject_id"].map(rows.set_index("subject_id")["prediction_time"])
    upto = ev.loc[ev["time"].isna() | (ev["time"] <= p)]
    alone = _steps(f, upto, rows, max_visits)
    for i in range(len(rows)):
        np.testing.assert_array_equal(base[i], alone[i], err_msg=f"row {i}")
    assert all(len(s) > 0 for s in base)


def test_an_event_at_prediction_time_changes_the_open_step(mimic):
    """The control for the test above: prediction_time is inclusive, so an event at that very time is seen."""
    ev, rows = mimic
    f = Featurizer(FeaturizerConfig(step_every="hour")).fit(
        ev, pd.DataFrame({"subject_id": ev["subject_id"].unique(), "split": "train"}))
    code = f.step_codes_[0]
    at = pd.DataFrame({"subject_id": rows["subject_id"], "time": rows["prediction_time"], "code": code,
                       "numeric_value": np.nan})
    at = at.astype({"time": "datetime64[us]", "code": ev["code"].dtype, "numeric_value": "float32"})
    base = _steps(f, ev, rows, 64)
    more = _steps(f, pd.concat([ev, at], ignore_index=True), rows, 64)
    col = 2 * len(f.numeric_codes_) + f.step_codes_.index(code)
    assert all(m[-1, col] == 1.0 for m in more)
    assert any(b[-1, col] == 0.0 for b in base)
