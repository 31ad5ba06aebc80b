"""The featurizer: fitted on the train split only, JSON round trip, nothing after prediction_time reaches a
feature, truncation keeps the most recent events, and collate pads into a consistent Batch."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from ehrseq import codes
from ehrseq.data.batch import CLS_ID, PAD_ID, SEP_ID, UNK_ID
from ehrseq.data.dataset import TOKEN_KEYS, SequenceDataset, collate
from ehrseq.errors import DataValidationError
from ehrseq.featurize.featurizer import FeatureSet, Featurizer, FeaturizerConfig, build_tokens
from ehrseq.split import ids_in

ONE_SECOND = pd.Timedelta(seconds=1)


@pytest.fixture(scope="module")
def fitted(cohort, splits) -> Featurizer:
    return Featurizer().fit(cohort.events, splits)


def _with_config(f: Featurizer, **changes) -> Featurizer:
    """The fitted featurizer ``f`` with some config options changed (its learned state kept)."""
    d = json.loads(json.dumps(f.to_dict()))
    d["config"].update(changes)
    return Featurizer.from_dict(d)


def _one_row_per_subject(labels: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """A random label row (not always the first or last) for each of ``n`` random subjects."""
    rng = np.random.default_rng(seed)
    picked = labels.groupby("subject_id", sort=True).sample(n=1, random_state=seed)
    return picked.iloc[rng.permutation(len(picked))[:n]].reset_index(drop=True)


def _views(fs: FeatureSet, i: int, max_len: int, max_visits: int = 64) -> dict[str, np.ndarray]:
    """Everything a model can see for label row ``i``: the token view, the step slice and the static row."""
    out = build_tokens(fs, i, max_len, max_visits)
    out["steps"] = fs.step_x[fs.step_start[i]:fs.step_cut[i]]
    out["static_x"] = fs.static_x[i]
    out["static_tokens"] = fs.static_tokens[i]
    out["age_at_pred"] = np.asarray(fs.age_at_pred[i])
    return out


def _assert_views_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray], where: str) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{where}: '{k}' changed")


def _future_events(rows: pd.DataFrame, vocab: list[str], seed: int, *, min_offset: pd.Timedelta) -> pd.DataFrame:
    """Random events strictly after each row's prediction_time for the same subject: just after it, later the
    same day, a new visit (with a CDAI, labs, a baseline lab such as RF, a diagnosis and a never-seen code)."""
    rng = np.random.default_rng(seed)
    known = [c for c in vocab if not c.startswith("[")]
    out = []
    for sid, p in zip(rows["subject_id"], rows["prediction_time"], strict=True):
        p = pd.Timestamp(p)
        end_of_day = p.normalize() + pd.Timedelta(days=1) - ONE_SECOND
        same_day = [p + min_offset]
        if end_of_day > p + min_offset:
            same_day.append(p + min_offset + (end_of_day - p - min_offset) * rng.uniform(0.1, 1.0))
        for t in same_day:
            for c in rng.choice(known, size=3):
                out.append((sid, t, c, rng.uniform(0, 80) if rng.random() < 0.5 else np.nan))
        visit = p + pd.Timedelta(days=int(rng.integers(1, 200)), seconds=int(rng.integers(0, 86_400)))
        out += [
            (sid, visit, codes.VISIT, np.nan),
            (sid, visit, codes.CDAI, rng.uniform(0, 76)),
            (sid, visit, codes.ESR, rng.uniform(1, 120)),
            (sid, visit, codes.RF, rng.uniform(1, 500)),
            (sid, visit, codes.ANTI_CCP, rng.uniform(1, 500)),
            (sid, visit, "ICD10//M06.9", np.nan),
            (sid, visit, "ICD10//NEVER.SEEN", np.nan),
            (sid, visit + pd.Timedelta(days=400), codes.DEATH, np.nan),
        ]
    df = pd.DataFrame(out, columns=["subject_id", "time", "code", "numeric_value"])
    return df.assign(
        subject_id=df["subject_id"].astype("int64"),
        time=df["time"].astype("datetime64[us]"),
        code=df["code"].astype("string"),
        numeric_value=df["numeric_value"].astype("float32"),
        text_value=pd.array([None] * len(df), dtype="string"),
    )


# ---------------------------------------------------------------------------------------------- fitting


def test_fit_sees_only_train_subjects(cohort, splits, labels, fitted):
    held = ids_in(splits, "held_out")
    new_code = "ICD10//ONLY.HELD.OUT"
    extra = cohort.events.loc[cohort.events["subject_id"].isin(held) & (cohort.events["code"] == codes.VISIT)]
    extra = extra.assign(code=pd.array([new_code] * len(extra), dtype="string"))
    assert len(extra) > 20
    events = pd.concat([cohort.events, extra], ignore_index=True)

    refit = Featurizer().fit(events, splits)
    assert new_code not in refit.vocab_
    assert refit.to_dict() == fitted.to_dict()  # held-out events change nothing that is learned

    held_labels = labels.loc[labels["subject_id"].isin(held)]
    before = fitted.transform(cohort.events, held_labels)
    after = refit.transform(events, held_labels)
    n_new = int(extra["subject_id"].isin(held_labels["subject_id"]).sum())  # events of labelled subjects
    assert after.counts["unknown_codes"] == before.counts["unknown_codes"] + n_new
    assert (after.tok_code == UNK_ID).sum() == (before.tok_code == UNK_ID).sum() + n_new


def test_a_code_seen_in_train_subjects_enters_the_vocabulary(cohort, splits):
    """The control for the test above: the same kind of code added to train subjects is learned."""
    train = ids_in(splits, "train")
    extra = cohort.events.loc[cohort.events["subject_id"].isin(train) & (cohort.events["code"] == codes.VISIT)]
    extra = extra.assign(code=pd.array(["ICD10//IN.TRAIN"] * len(extra), dtype="string"))
    refit = Featurizer().fit(pd.concat([cohort.events, extra], ignore_index=True), splits)
    assert "ICD10//IN.TRAIN" in refit.vocab_


def test_min_count_sets_which_codes_enter_the_vocabulary(make_events):
    rows = [(1, f"2020-0{m}-01 00:00:00", "RX//THREE", None) for m in (1, 2, 3)]
    rows += [(1, f"2020-0{m}-01 00:00:00", "RX//TWO", None) for m in (1, 2)]
    rows += [(2, "2020-01-01 00:00:00", "RX//HELD.OUT", None)] * 5
    splits = pd.DataFrame({"subject_id": [1, 2], "split": ["train", "held_out"]})
    f = Featurizer(FeaturizerConfig(min_count=3)).fit(make_events(rows), splits)
    assert "RX//THREE" in f.vocab_
    assert "RX//TWO" not in f.vocab_
    assert "RX//HELD.OUT" not in f.vocab_
    f1 = Featurizer(FeaturizerConfig(min_count=2)).fit(make_events(rows), splits)
    assert "RX//TWO" in f1.vocab_


def test_featurizer_round_trips_through_json(cohort, labels, fitted, tmp_path):
    loaded = Featurizer.from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert loaded.config == fitted.config
    a, b = fitted.transform(cohort.events, labels), loaded.transform(cohort.events, labels)
    for f in dataclasses.fields(FeatureSet):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=f.name)
    pd.testing.assert_frame_equal(a.labels, b.labels)
    assert all(np.array_equal(s, t) for s, t in zip(a.static_tokens, b.static_tokens, strict=True))
    assert a.counts == b.counts
    fitted.save(tmp_path / "featurizer.json")
    assert Featurizer.load(tmp_path / "featurizer.json").to_dict() == fitted.to_dict()


def test_transform_before_fit_is_a_runtime_error(cohort, labels):
    with pytest.raises(RuntimeError, match="not fitted"):
        Featurizer().transform(cohort.events, labels)


def test_null_prediction_time_is_a_data_validation_error(cohort, labels, fitted):
    bad = labels.head(5).copy()
    bad.loc[2, "prediction_time"] = pd.NaT
    with pytest.raises(DataValidationError, match="prediction_time is null") as e:
        fitted.transform(cohort.events, bad)
    assert e.value.subject_ids == [int(bad.loc[2, "subject_id"])]


# ------------------------------------------------------------------------------------ no leakage


@pytest.mark.parametrize("max_len", [256, 24])
def test_events_after_prediction_time_change_no_feature(cohort, labels, fitted, max_len):
    """The key invariant. One label row per subject (so no other row of that subject can legitimately see the
    added events); half of them at a prediction_time between events. Appending random events strictly after
    each row's prediction_time (1 s later, later that day, a new visit with CDAI/labs/RF and a never-seen code,
    a death) leaves every view of that row identical: tokens, step slice, static features."""
    rows = _one_row_per_subject(labels, n=120, seed=1)
    rng = np.random.default_rng(2)
    shift = rng.random(len(rows)) < 0.5
    rows.loc[shift, "prediction_time"] += pd.to_timedelta(rng.integers(1, 40_000, shift.sum()), unit="s")
    future = _future_events(rows, fitted.vocab_, seed=3, min_offset=ONE_SECOND)
    assert (future.merge(rows, on="subject_id").eval("time > prediction_time")).all()

    base = fitted.transform(cohort.events, rows)
    more = fitted.transform(pd.concat([cohort.events, future], ignore_index=True), rows)
    assert more.counts["events"] == base.counts["events"] + len(future)  # the extra events were read
    for key in ("rows", "truncated_rows", "rows_without_history"):
        assert more.counts[key] == base.counts[key]
    for i in range(len(rows)):
        _assert_views_equal(_views(base, i, max_len), _views(more, i, max_len), f"row {i} ({rows.loc[i].tolist()})")


def test_events_at_prediction_time_are_used(cohort, labels, fitted):
    """The control for the leakage test: prediction_time is an inclusive end, so an event at that very time
    (or before) does change the row's view. Without this, an always-empty view would pass the test above."""
    rows = _one_row_per_subject(labels, n=30, seed=4)
    at = rows.assign(code=pd.array(["ICD10//M06.9"] * len(rows), dtype="string"), numeric_value=np.float32("nan"),
                     text_value=pd.array([None] * len(rows), dtype="string")).rename(columns={"prediction_time": "time"})
    at = at[list(cohort.events.columns)].astype(cohort.events.dtypes.to_dict())
    every = _with_config(fitted, repeats="all")  # the added code repeats one of that visit: show every event
    base = every.transform(cohort.events, rows)
    more = every.transform(pd.concat([cohort.events, at], ignore_index=True), rows)
    for i in range(len(rows)):
        a, b = build_tokens(base, i, 256, 64), build_tokens(more, i, 256, 64)
        assert len(b["code_ids"]) == len(a["code_ids"]) + 1
    assert (more.tok_cut - more.tok_start == base.tok_cut - base.tok_start + 1).all()


def test_events_less_than_a_second_after_prediction_time_change_no_feature(cohort, labels, fitted):
    rows = _one_row_per_subject(labels, n=20, seed=5)
    future = _future_events(rows, fitted.vocab_, seed=6, min_offset=pd.Timedelta(milliseconds=500))
    base = fitted.transform(cohort.events, rows)
    more = fitted.transform(pd.concat([cohort.events, future], ignore_index=True), rows)
    for i in range(len(rows)):
        _assert_views_equal(_views(base, i, 256), _views(more, i, 256), f"row {i}")


# -------------------------------------------------------------------------------- token layout


def test_tokens_of_a_hand_built_patient(make_events):
    """[CLS] static [visit 1 codes] [SEP] [visit 2 codes] [SEP]; a visit is a calendar day."""
    ev = make_events(
        [
            (1, None, "SEX//F", None),
            (1, "1960-06-01 00:00:00", codes.BIRTH, None),
            (1, "2020-01-01 10:00:00", codes.VISIT, None),
            (1, "2020-01-01 10:00:00", "RX//A", None),
            (1, "2020-01-01 15:00:00", "RX//B", None),  # later the same day: same visit
            (1, "2020-03-01 10:00:00", codes.VISIT, None),
            (1, "2020-03-01 10:00:00", "RX//C", None),
            (1, "2020-03-01 10:00:01", "RX//AFTER", None),  # after prediction_time
        ]
    )
    f = Featurizer(FeaturizerConfig(min_count=1)).fit(ev, pd.DataFrame({"subject_id": [1], "split": ["train"]}))
    lab = pd.DataFrame({"subject_id": [1], "prediction_time": [pd.Timestamp("2020-03-01 10:00:00")]})
    fs = f.transform(ev, lab)
    tok = build_tokens(fs, 0, max_len=64, max_visits=64)
    ids = f.code_to_id
    assert tok["code_ids"].tolist() == [
        CLS_ID, ids["SEX//F"], ids[codes.VISIT], ids["RX//A"], ids["RX//B"], SEP_ID, ids[codes.VISIT], ids["RX//C"], SEP_ID
    ]
    assert tok["position_ids"].tolist() == [1, 1, 2, 2, 2, 2, 3, 3, 3]
    assert tok["segment_ids"].tolist() == [1, 1, 2, 2, 2, 2, 1, 1, 1]
    # counted back from prediction time, the most recent visit is position 2 whatever the history length
    back = build_tokens(fs, 0, max_len=64, max_visits=64, positions="last")
    assert back["position_ids"].tolist() == [1, 1, 3, 3, 3, 3, 2, 2, 2]
    assert back["code_ids"].tolist() == tok["code_ids"].tolist()
    assert set(tok["age_ids"].tolist()) == {60}  # 59 whole years -> id 59 + 1
    assert fs.step_cut[0] - fs.step_start[0] == 3  # three distinct event times up to prediction_time


def test_token_values_are_standardised_per_code_and_reach_the_model(make_events):
    """value_num carries the value itself (higher CDAI -> higher number), 0 on CLS, static and SEP tokens."""
    import torch

    from ehrseq.models.behrt import BehrtModel, behrt_tiny

    rows = [(s, None, "SEX//F", None) for s in (1, 2, 3)]
    rows += [(s, f"2020-0{k}-01 10:00:00", codes.CDAI, 5.0 + 10 * s + k) for s in (1, 2, 3) for k in (1, 2, 3)]
    ev = make_events(rows)
    f = Featurizer(FeaturizerConfig(min_count=1)).fit(ev, pd.DataFrame({"subject_id": [1, 2, 3], "split": ["train"] * 3}))
    lab = pd.DataFrame({"subject_id": [1, 3], "prediction_time": [pd.Timestamp("2020-03-01 10:00:00")] * 2})
    fs = f.transform(ev, lab)
    low, high = build_tokens(fs, 0, 64, 64), build_tokens(fs, 1, 64, 64)
    is_cdai = low["code_ids"] == f.code_to_id[codes.CDAI]
    assert np.all(low["value_num"][~is_cdai] == 0)
    assert np.all(high["value_num"][is_cdai] > low["value_num"][is_cdai])
    batch = collate([dict(low, steps=fs.step_x[:0], static=fs.static_x[0], subject_id=1),
                     dict(high, steps=fs.step_x[:0], static=fs.static_x[1], subject_id=3)])
    torch.manual_seed(0)
    m = BehrtModel(behrt_tiny(vocab_size=len(f.vocab_), time_vocab_size=f.n_time_bins,
                              value_vocab_size=f.n_value_ids, head="binary")).eval()
    zeroed = dataclasses.replace(batch, value_num=torch.zeros_like(batch.value_num))
    assert not torch.allclose(m(batch).logits, m(zeroed).logits)


def test_truncation_keeps_the_cls_token_and_the_most_recent_events(cohort, labels):
    cfg = FeaturizerConfig(max_len=16)
    f = Featurizer(cfg).fit(cohort.events, pd.DataFrame({"subject_id": cohort.patients["subject_id"], "split": "train"}))
    rows = _one_row_per_subject(labels, n=80, seed=7)
    fs = f.transform(cohort.events, rows)
    assert fs.counts["truncated_rows"] > 0
    timed = cohort.events.loc[cohort.events["time"].notna() & (cohort.events["code"] != codes.BIRTH)]
    n_truncated = n_pinned = 0
    for i, (sid, p) in enumerate(zip(rows["subject_id"], rows["prediction_time"], strict=True)):
        view = build_tokens(fs, i, cfg.max_len, cfg.max_visits)
        short = view["code_ids"]
        full = build_tokens(fs, i, 10_000, cfg.max_visits)["code_ids"]
        assert len(short) <= cfg.max_len
        assert short[0] == CLS_ID
        last_code = timed.loc[(timed["subject_id"] == sid) & (timed["time"] <= p), "code"].iloc[-1]
        assert short[-1] == SEP_ID and short[-2] == f.code_to_id.get(last_code, UNK_ID)
        n_head = int((view["position_ids"] == 1).sum())  # CLS, static tokens, pinned baseline labs
        tail = short[n_head:]
        np.testing.assert_array_equal(tail, full[len(full) - len(tail):])  # the most recent events, in order
        pinned = short[1 + len(fs.static_tokens[i]):n_head]
        n_truncated += len(tail) < len(full) - 1 - len(fs.static_tokens[i])
        # a pinned token is a baseline serology code whose first event was cut from the window
        assert set(pinned.tolist()) <= {f.code_to_id[c] for c in (codes.RF, codes.ANTI_CCP)}
        for c in pinned:
            assert c in full and c not in tail
        n_pinned += len(pinned)
    assert fs.counts["truncated_rows"] == n_truncated
    assert n_pinned > 0


def test_one_sep_per_visit_day_in_the_kept_window(cohort, labels, fitted):
    rows = _one_row_per_subject(labels, n=60, seed=8)
    fs = fitted.transform(cohort.events, rows)
    timed = cohort.events.loc[cohort.events["time"].notna() & (cohort.events["code"] != codes.BIRTH)]
    for max_len in (12, 40, 256):
        for i, (sid, p) in enumerate(zip(rows["subject_id"], rows["prediction_time"], strict=True)):
            view = build_tokens(fs, i, max_len, 64)
            tok = view["code_ids"][int((view["position_ids"] == 1).sum()):]
            n_sep = int((tok == SEP_ID).sum())
            kept = len(tok) - n_sep
            hist = timed.loc[(timed["subject_id"] == sid) & (timed["time"] <= p), "time"]
            days = hist.iloc[len(hist) - kept:].dt.normalize().nunique() if kept else 0
            assert n_sep == days, f"row {i}, max_len {max_len}"


# ------------------------------------------------------------------------------------- collate


def test_collate_pads_with_pad_id_and_masks_padding(cohort, labels, fitted):
    rows = _one_row_per_subject(labels, n=6, seed=9)
    fs = fitted.transform(cohort.events, rows)
    ds = SequenceDataset(fs, rows[["boolean_value"]].to_numpy(np.float32), max_len=40, max_steps=8)
    items = [ds[i] for i in range(len(ds))]
    lengths = [len(it["code_ids"]) for it in items]
    assert len(set(lengths)) > 1, "the test needs sequences of different lengths"
    b = collate(items)
    B, L = len(items), max(lengths)
    for k in TOKEN_KEYS:
        assert getattr(b, k).shape == (B, L)
    assert b.attention_mask.shape == (B, L) and b.subject_id.shape == (B,)
    assert b.visit_x.shape == (B, max(len(it["steps"]) for it in items), fitted.n_step_features)
    assert b.visit_mask.shape == b.visit_x.shape[:2]
    assert b.static_x.shape == (B, fitted.n_static_features)
    assert b.labels.shape == (B, 1)
    for r, it in enumerate(items):
        n = lengths[r]
        assert b.code_ids[r, :n].tolist() == it["code_ids"].tolist()
        assert (b.code_ids[r, n:] == PAD_ID).all()
        assert b.attention_mask[r, :n].eq(1).all() and b.attention_mask[r, n:].eq(0).all()
        assert int(b.visit_mask[r].sum()) == len(it["steps"])
    assert b.subject_id.tolist() == rows["subject_id"].tolist()


def test_positions_option_is_checked_and_reaches_the_dataset(cohort, splits, labels):
    with pytest.raises(ValueError, match="positions"):
        FeaturizerConfig(positions="middle")
    f = Featurizer(FeaturizerConfig(positions="last")).fit(cohort.events, splits)
    f2 = Featurizer.from_dict(json.loads(json.dumps(f.to_dict())))
    assert f2.config.positions == "last"
    rows = labels.groupby("subject_id").tail(1).head(10).reset_index(drop=True)
    fs = f2.transform(cohort.events, rows)
    ds = SequenceDataset(fs, max_len=64, positions=f2.config.positions)
    for i in range(len(rows)):
        pos, code = ds[i]["position_ids"], ds[i]["code_ids"]
        last_sep = np.flatnonzero(code == SEP_ID)[-1]
        assert pos[last_sep] == 2  # the most recent visit, closed by the last SEP


def test_featurizers_saved_before_positions_and_pinning_keep_their_token_layout(fitted):
    d = json.loads(json.dumps(fitted.to_dict()))
    for key in ("positions", "pin_static_numeric"):
        del d["config"][key]
    old = Featurizer.from_dict(d)
    assert old.config.positions == "first" and old.config.pin_static_numeric is False
    assert fitted.config.positions == "last" and fitted.config.pin_static_numeric is True  # new defaults


# ------------------------------------------------------------------- real dense data (MIMIC-IV demo slice)


@pytest.fixture(scope="module")
def mimic(mimic_slice):
    """(events, label rows 24 h after each hospital admission, featurizer fitted on all subjects)."""
    from ehrseq.io import read_meds

    ev = read_meds(mimic_slice, column_map={"value": "numeric_value"}).events
    adm = ev.loc[ev["code"].astype(str).str.startswith("HOSPITAL_ADMISSION//"), ["subject_id", "time"]]
    rows = adm.drop_duplicates().assign(prediction_time=lambda d: d["time"] + pd.Timedelta(hours=24))
    rows = rows[["subject_id", "prediction_time"]].sort_values(["subject_id", "prediction_time"]).reset_index(drop=True)
    splits = pd.DataFrame({"subject_id": ev["subject_id"].unique(), "split": "train"})
    return ev, rows, Featurizer().fit(ev, splits)


def test_sex_features_come_from_gender_codes_on_mimic(mimic):
    ev, rows, f = mimic
    fs = f.transform(ev, rows)
    gender = ev.loc[ev["code"].astype(str).str.startswith("GENDER//")].set_index("subject_id")["code"].astype(str)
    female = rows["subject_id"].map(gender).eq("GENDER//F").to_numpy()
    np.testing.assert_array_equal(fs.static_x[:, 1], female.astype(np.float32))
    np.testing.assert_array_equal(fs.static_x[:, 2], (~female).astype(np.float32))
    assert 0 < female.sum() < len(rows)


def test_no_rf_or_anti_ccp_static_feature_on_mimic(mimic, fitted):
    from ehrseq.api import build_model
    from ehrseq.explain import input_groups

    ev, rows, f = mimic
    assert f.static_numeric_codes_ == [] and f.n_static_features == 3
    assert f.transform(ev, rows).static_x.shape == (len(rows), 3)
    rnn = build_model("rnn", "binary", 1, f, "small", {}, None)
    assert rnn.config.n_static_features == 3
    assert not any("LAB//RF" in g or "ANTI_CCP" in g for g in input_groups(f))
    # the control: the synthetic cohort has both in train, so its features (and benchmarks) are unchanged
    assert fitted.static_numeric_codes_ == [codes.RF, codes.ANTI_CCP] and fitted.n_static_features == 7


def test_static_numeric_codes_only_in_held_out_subjects_are_not_features(make_events):
    rows = [(1, "2020-01-01", codes.CDAI, 20.0), (2, "2020-01-01", codes.RF, 80.0), (2, "2020-01-01", codes.CDAI, 9.0)]
    f = Featurizer(FeaturizerConfig(min_count=1)).fit(
        make_events(rows), pd.DataFrame({"subject_id": [1, 2], "split": ["train", "held_out"]}))
    assert f.static_numeric_codes_ == [] and f.n_static_features == 3


def _token_counts(fs: FeatureSet, max_len: int = 10**9) -> np.ndarray:
    from ehrseq.featurize.tokens import token_window

    return np.array([len(token_window(fs, i, max_len)) for i in range(len(fs))])


def test_last_in_visit_shortens_the_mimic_stream_and_reaches_further_back(mimic):
    from ehrseq.featurize.tokens import token_window

    ev, rows, f = mimic
    dense = f.transform(ev, rows)
    every = _with_config(f, repeats="all").transform(ev, rows)
    n_dense, n_every = _token_counts(dense), _token_counts(every)
    assert (n_dense <= n_every).all() and np.median(n_dense) < 0.8 * np.median(n_every)
    reached_earlier = 0
    for i in range(len(rows)):
        a, b = token_window(dense, i, 256), token_window(every, i, 256)
        assert dense.tok_visit[a[0]] <= every.tok_visit[b[0]]  # never covers fewer visit days
        reached_earlier += dense.tok_visit[a[0]] < every.tok_visit[b[0]]
        known = a[dense.tok_code[a] != UNK_ID]  # rare codes share the UNK id
        pairs = dense.tok_visit[known] * 10**6 + dense.tok_code[known]
        assert len(np.unique(pairs)) == len(pairs)  # one token per (visit, code)
    assert reached_earlier > len(rows) // 4
    assert dense.counts["truncated_rows"] <= every.counts["truncated_rows"]


def test_last_in_visit_shows_the_latest_value_up_to_prediction_time(make_events):
    ev = make_events([
        (1, "2150-01-01 08:00:00", "LAB//HR", 60.0),
        (1, "2150-01-01 12:00:00", "LAB//HR", 90.0),
        (1, "2150-01-01 12:00:00", "LAB//NA", 140.0),
        (1, "2150-01-01 16:00:00", "LAB//HR", 150.0),  # after prediction_time
        (1, "2150-01-02 09:00:00", "LAB//HR", 70.0),
    ] + [(2, f"2150-02-0{d} 10:00:00", "LAB//HR", float(50 + 20 * d)) for d in range(1, 6)])
    f = Featurizer(FeaturizerConfig(min_count=1)).fit(ev, pd.DataFrame({"subject_id": [1, 2], "split": ["train"] * 2}))
    lab = pd.DataFrame({"subject_id": [1], "prediction_time": [pd.Timestamp("2150-01-01 12:00:00")]})
    fs = f.transform(ev, lab)
    tok = build_tokens(fs, 0, 64, 64)
    hr = tok["code_ids"] == f.code_to_id["LAB//HR"]
    assert hr.sum() == 1
    m, sd = f.value_stats_["LAB//HR"]
    assert tok["value_num"][hr][0] == pytest.approx((np.log1p(90.0) - m) / sd, abs=1e-5)  # 12:00, not 08:00
    at_noon = f.transform(ev.loc[ev["time"] <= pd.Timestamp("2150-01-01 12:00:00")], lab)
    _assert_views_equal(build_tokens(at_noon, 0, 64, 64), tok, "event after prediction_time")
    every = build_tokens(_with_config(f, repeats="all").transform(ev, lab), 0, 64, 64)
    assert (every["code_ids"] == f.code_to_id["LAB//HR"]).sum() == 2
    assert fs.step_cut[0] - fs.step_start[0] == 2  # the RNN keeps both event times


def test_last_in_visit_leaves_the_synthetic_stream_unchanged(cohort, labels, fitted):
    assert fitted.config.repeats == "last_in_visit"  # the default
    rows = _one_row_per_subject(labels, n=150, seed=11)
    a = fitted.transform(cohort.events, rows)
    b = _with_config(fitted, repeats="all").transform(cohort.events, rows)
    assert a.counts == b.counts
    assert (a.tok_next == np.iinfo(np.int64).max).all()  # no code repeats within a day
    for i in range(len(rows)):
        for max_len in (24, 256):
            _assert_views_equal(build_tokens(a, i, max_len, 64, "last"), build_tokens(b, i, max_len, 64, "last"),
                                f"row {i}, max_len {max_len}")


def test_featurizer_saved_before_repeats_and_fitted_static_codes_featurizes_as_before(mimic):
    """An artifact written before the options existed: every event is a token, its stored static numeric
    codes (RF, anti-CCP even on data without them) keep the static width its RNN was trained with, and sex
    is read from SEX// codes only (its model saw zeros for MIMIC's GENDER// patients)."""
    ev, rows, f = mimic
    assert f.sex_prefixes_ == ["GENDER//"]
    d = json.loads(json.dumps(f.to_dict()))
    del d["config"]["repeats"], d["sex_prefixes"]
    d.update(static_numeric_codes=[codes.RF, codes.ANTI_CCP], static_mean=[0.0, 0.0], static_std=[1.0, 1.0])
    old = Featurizer.from_dict(d)
    assert old.config.repeats == "all" and old.n_static_features == 7
    fs = old.transform(ev, rows)
    assert fs.tok_next is None and fs.static_x.shape == (len(rows), 7)
    assert (fs.static_x[:, [4, 6]] == 1).all()  # missing flags: no RF / anti-CCP value
    assert (fs.static_x[:, 1:3] == 0).all()
    ref = _with_config(f, repeats="all").transform(ev, rows)
    for i in range(len(rows)):
        _assert_views_equal(build_tokens(fs, i, 256, 64), build_tokens(ref, i, 256, 64), f"row {i}")
    with pytest.raises(ValueError, match="repeats"):
        FeaturizerConfig(repeats="first")
