"""An artifact records the subjects that trained it (hashed like every file), and ``--init`` refuses to evaluate
on them unless the overlap is accepted knowingly."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest
import torch

from ehrseq.artifacts import TRAIN_SUBJECTS, load_artifact, save_artifact
from ehrseq.errors import ArtifactError, LeakageError
from ehrseq.provenance import check_init_overlap, training_subjects

CONFIG = {"model_type": "rnn", "target": "cdai", "model": {"hidden": 4}}


def _save(path, train_subjects=None):
    return save_artifact(path, state_dict={"w": torch.zeros(2)}, config=CONFIG, train_subjects=train_subjects)


def _splits(train, tuning, held_out) -> pd.DataFrame:
    rows = [(s, "train") for s in train] + [(s, "tuning") for s in tuning] + [(s, "held_out") for s in held_out]
    return pd.DataFrame(rows, columns=["subject_id", "split"]).astype({"subject_id": "int64"})


def test_train_subjects_round_trip_sorted_and_distinct(tmp_path):
    import numpy as np

    art = load_artifact(_save(tmp_path / "a", np.array([30, 10, 20, 10], dtype=np.int64)))
    assert art.train_subjects == [10, 20, 30]
    assert TRAIN_SUBJECTS in art.manifest["files"]
    assert TRAIN_SUBJECTS.removesuffix(".json") not in art.extras  # not mistaken for extra state


def test_an_artifact_without_train_subjects_still_loads(tmp_path):
    assert load_artifact(_save(tmp_path / "old")).train_subjects is None


def test_edited_train_subjects_are_refused(tmp_path):
    p = _save(tmp_path / "a", [1, 2, 3])
    f = p / TRAIN_SUBJECTS
    f.write_text(json.dumps({"n_subjects": 1, "subject_ids": [1]}))  # hide subjects 2 and 3
    with pytest.raises(ArtifactError, match="train_subjects.json' does not match its hash"):
        load_artifact(p)


def test_recorded_subjects_change_the_artifact_id(tmp_path):
    a = load_artifact(_save(tmp_path / "a", [1, 2])).artifact_id
    b = load_artifact(_save(tmp_path / "b", [1, 3])).artifact_id
    assert a != b


def test_overlap_with_tuning_or_held_out_is_refused_with_counts_ids_and_the_fix(tmp_path):
    art = load_artifact(_save(tmp_path / "init", list(range(1, 11))))  # trained on 1..10
    splits = _splits(train=[1, 2, 3, 20], tuning=[4, 5, 21], held_out=[6, 7, 8, 22])
    with pytest.raises(LeakageError) as e:
        check_init_overlap(art, splits, allow=False)
    msg = str(e.value)
    assert "5 subject(s) that this run evaluates (2 in tuning, 3 in held_out)" in msg
    assert "tuning: 4, 5; held_out: 6, 7, 8" in msg
    assert "--allow-init-overlap" in msg and "subject_splits" in msg


def test_an_accepted_overlap_is_described_for_the_metrics(tmp_path):
    art = _save(tmp_path / "init", list(range(1, 11)))  # a path works too
    info = check_init_overlap(art, _splits([1, 2], [3, 30], [31]), allow=True)
    assert info == {"checked": True, "allowed": True, "init_artifact": str(art), "n_init_train_subjects": 10,
                    "overlap": {"tuning": 1}, "first_subject_ids": {"tuning": [3]}}


def test_no_overlap_is_none_even_when_the_train_split_is_shared(tmp_path):
    art = load_artifact(_save(tmp_path / "init", [1, 2, 3]))
    assert check_init_overlap(art, _splits([1, 2, 3, 4], [5], [6]), allow=False) is None


def test_an_artifact_without_records_is_reported_unchecked(tmp_path, caplog):
    art = load_artifact(_save(tmp_path / "old"))
    with caplog.at_level(logging.WARNING, logger="ehrseq.provenance"):
        info = check_init_overlap(art, _splits([1], [2], [3]), allow=False)
    assert info["checked"] is False and "records no train subjects" in info["reason"]
    assert "could not be checked" in caplog.text


def test_training_subjects_include_those_that_trained_the_init_artifact(tmp_path, caplog):
    splits = _splits([5, 6], [7], [8])
    assert training_subjects(splits) == [5, 6]
    assert training_subjects(splits, _save(tmp_path / "init", [1, 5])) == [1, 5, 6]
    with caplog.at_level(logging.WARNING, logger="ehrseq.provenance"):
        assert training_subjects(splits, _save(tmp_path / "old")) == [5, 6]
    assert "records no train subjects" in caplog.text
