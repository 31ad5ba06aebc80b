"""Artifacts: a save/load round trip, refusal of anything tampered with, safetensors and JSON only, and an
overwrite that cannot leave a half-written or lost artifact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ehrseq.artifacts import RESERVED, WEIGHTS, load_artifact, save_artifact
from ehrseq.errors import ArtifactError

CONFIG = {"model_type": "rnn", "target": "cdai", "model": {"hidden": 8, "layers": [1, 2]}}
FEATURIZER = {"format": "ehrseq.featurizer/1", "vocab": ["[PAD]", "RX//A"], "config": {"max_len": 16}}
METRICS = {"auroc": 0.81, "n": 120, "ci": [0.75, 0.86]}
EXTRAS = {"calibrator": {"kind": "platt", "a": 1.5, "b": -0.2}, "thresholds": {"flag": 0.3}}


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "encoder.weight": torch.randn(4, 3, generator=g).t(),  # non-contiguous on purpose
        "encoder.bias": torch.randn(4, generator=g, dtype=torch.float64),
        "head.weight": torch.randn(2, 4, generator=g).half(),
        "steps": torch.tensor([3, 1, 4], dtype=torch.int64),
    }


def _save(path: Path, **kw) -> Path:
    args = {"state_dict": _state(), "config": CONFIG, "featurizer": FEATURIZER, "metrics": METRICS, "extras": EXTRAS}
    return save_artifact(path, **{**args, **kw})


def test_save_then_load_gives_back_everything(tmp_path):
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
    art = load_artifact(_save(tmp_path / "art", tokenizer_dir=tok, data_hash="d" * 8, split_hash="s" * 8))
    want = _state()
    assert art.state_dict.keys() == want.keys()
    for k, v in want.items():
        assert art.state_dict[k].dtype == v.dtype, k
        assert torch.equal(art.state_dict[k], v), k
    assert art.config == CONFIG
    assert art.featurizer == FEATURIZER
    assert art.metrics == METRICS
    assert art.extras == EXTRAS
    assert (art.tokenizer_dir / "vocab.txt").read_text() == "[PAD]\n[UNK]\nhello\n"
    assert art.manifest["data_hash"] == "d" * 8 and art.manifest["split_hash"] == "s" * 8
    assert art.manifest["model_type"] == "rnn"


def test_same_content_gives_the_same_artifact_id(tmp_path):
    a = load_artifact(_save(tmp_path / "a")).artifact_id
    b = load_artifact(_save(tmp_path / "b")).artifact_id
    c = load_artifact(_save(tmp_path / "c", metrics={"auroc": 0.5})).artifact_id
    assert a == b != c


def test_optional_parts_load_as_none(tmp_path):
    art = load_artifact(save_artifact(tmp_path / "art", state_dict=_state(), config=CONFIG))
    assert art.featurizer is None and art.metrics is None and art.extras == {} and art.tokenizer_dir is None


@pytest.mark.parametrize(
    "name", [WEIGHTS, "config.json", "featurizer.json", "metrics.json", "calibrator.json", "tokenizer/vocab.txt"]
)
def test_a_tampered_file_is_refused_by_name(tmp_path, name):
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "vocab.txt").write_text("a\nb\n")
    path = _save(tmp_path / "art", tokenizer_dir=tok)
    f = path / name
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01  # flip one bit in the middle
    f.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=name.replace(".", r"\.")):
        load_artifact(path)


def test_an_edited_config_is_refused(tmp_path):
    path = _save(tmp_path / "art")
    cfg = json.loads((path / "config.json").read_text())
    cfg["model_type"] = "behrt"
    (path / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    with pytest.raises(ArtifactError, match=r"config\.json.*tampered"):
        load_artifact(path)
    assert load_artifact(path, verify=False).config["model_type"] == "behrt"  # the check, not the parse, refused it


def test_a_deleted_file_is_refused(tmp_path):
    path = _save(tmp_path / "art")
    (path / "metrics.json").unlink()
    with pytest.raises(ArtifactError, match=r"metrics\.json.*missing"):
        load_artifact(path)


def test_a_json_file_added_after_saving_is_refused(tmp_path):
    path = _save(tmp_path / "art")
    (path / "evil.json").write_text(json.dumps({"a": 100.0}))
    with pytest.raises(ArtifactError, match=r"evil\.json"):
        load_artifact(path)


def test_an_edited_data_hash_in_the_manifest_is_refused(tmp_path):
    path = _save(tmp_path / "a")
    m = json.loads((path / "manifest.json").read_text())
    m["data_hash"] = "0" * 16
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="manifest.json does not match its artifact_id"):
        load_artifact(path)


def test_missing_manifest_is_refused(tmp_path):
    path = _save(tmp_path / "art")
    (path / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        load_artifact(path)


def test_not_a_directory_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="not an artifact directory"):
        load_artifact(tmp_path / "nothing")


def test_unexpected_model_type_is_refused(tmp_path):
    path = _save(tmp_path / "art")
    with pytest.raises(ArtifactError, match="'rnn' model, expected 'behrt'"):
        load_artifact(path, expect_model_type="behrt")


def test_only_safetensors_and_json_are_written(tmp_path):
    path = _save(tmp_path / "art")
    files = sorted(p.name for p in path.rglob("*") if p.is_file())
    assert files == sorted([WEIGHTS, "config.json", "featurizer.json", "metrics.json", "manifest.json",
                            "calibrator.json", "thresholds.json"])
    assert all(p.suffix in {".json", ".safetensors"} for p in path.rglob("*") if p.is_file())


def test_config_without_model_type_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="model_type"):
        save_artifact(tmp_path / "art", state_dict=_state(), config={"target": "cdai"})
    assert not (tmp_path / "art").exists()


def test_overwrite_false_keeps_an_existing_artifact(tmp_path):
    path = _save(tmp_path / "art")
    with pytest.raises(ArtifactError, match="exists"):
        _save(path, metrics={"auroc": 0.1}, overwrite=False)
    assert load_artifact(path).metrics == METRICS


def test_overwrite_replaces_the_previous_artifact(tmp_path):
    path = _save(tmp_path / "art")
    _save(path, metrics={"auroc": 0.6}, extras={})
    art = load_artifact(path)
    assert art.metrics == {"auroc": 0.6}
    assert art.extras == {}  # files of the old artifact do not survive
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


@pytest.mark.parametrize("reserved", sorted(n.removesuffix(".json") for n in RESERVED if n.endswith(".json")))
def test_failed_save_leaves_the_previous_artifact_intact_and_no_temp_dirs(tmp_path, reserved):
    path = _save(tmp_path / "art")
    before = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    with pytest.raises(ArtifactError, match=f"'{reserved}' clashes"):
        _save(path, metrics={"auroc": 0.0}, extras={reserved: {"x": 1}})
    after = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    assert after == before
    assert load_artifact(path).metrics == METRICS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # no .art.* temp or .old directories


@pytest.mark.parametrize("version", [0, 2, None])
def test_an_artifact_of_another_format_version_is_refused_naming_both_versions(tmp_path, version):
    path = _save(tmp_path / "art")
    mpath = path / "manifest.json"
    manifest = json.loads(mpath.read_text())
    if version is None:
        del manifest["format_version"]
    else:
        manifest["format_version"] = version
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=rf"artifact format {version} is not supported by this ehrseq "
                                            r"\(format 1\); retrain or install the ehrseq version that wrote it"):
        load_artifact(path, verify=False)  # refused before any hash is checked or weight read
