"""One artifact format for every ehrseq model.

An artifact is a directory::

    model.safetensors   weights (never pickles)
    config.json         {"model_type": ..., "target": ..., "model": {...}, ...}
    featurizer.json     the fitted featurizer (optional for text models)
    metrics.json        evaluation figures (optional)
    <name>.json         any extra JSON state: calibrator.json, baseline_hazard.json, thresholds.json ...
    train_subjects.json the subject ids whose data trained the weights or the vocabulary (optional; see
                        :mod:`ehrseq.provenance`: ``--init`` refuses an artifact whose train subjects are now
                        tuning or held out)
    tokenizer/          tokenizer files for text models (optional)
    manifest.json       format version, package versions, sha256 of every file, data and split hashes

Writing is atomic: files go to a temporary sibling directory that is renamed into place, so a crash never
leaves a half-written artifact. Loading verifies every hash in the manifest and refuses a tampered artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ehrseq import __version__
from ehrseq.errors import ArtifactError

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
TRAIN_SUBJECTS = "train_subjects.json"
RESERVED = {"config.json", "featurizer.json", "metrics.json", "manifest.json", TRAIN_SUBJECTS, WEIGHTS}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _manifest_digest(manifest: dict[str, Any]) -> str:
    """16 hex of sha256 over the manifest but the id and the creation time: file hashes and recorded
    provenance (data and split hashes, versions) change the id; the same content saved twice keeps it."""
    body = {k: v for k, v in manifest.items() if k not in ("artifact_id", "created")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Artifact:
    """A loaded artifact. ``state_dict`` holds CPU tensors."""

    path: Path
    config: dict[str, Any]
    manifest: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    featurizer: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    train_subjects: list[int] | None = None  # None: not recorded (an artifact written before they were)

    @property
    def artifact_id(self) -> str:
        return self.manifest["artifact_id"]

    @property
    def tokenizer_dir(self) -> Path | None:
        p = self.path / "tokenizer"
        return p if p.is_dir() else None


def save_artifact(
    out_dir: str | Path,
    *,
    state_dict: dict[str, torch.Tensor],
    config: dict[str, Any],
    featurizer: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    extras: dict[str, Any] | None = None,
    tokenizer_dir: str | Path | None = None,
    data_hash: str | None = None,
    split_hash: str | None = None,
    overwrite: bool = True,
    train_subjects: Iterable[int] | None = None,
) -> Path:
    """Write an artifact directory atomically and return its path.

    ``extras`` maps a name (e.g. ``"calibrator"``) to JSON-serialisable state written as ``<name>.json``.
    ``train_subjects``: the ids of the subjects whose data trained the model (its weights or its vocabulary),
    written sorted to ``train_subjects.json`` and hashed in the manifest like every file.
    """
    out = Path(out_dir)
    if "model_type" not in config:
        raise ArtifactError("config must name its 'model_type'")
    if out.exists() and not overwrite:
        raise ArtifactError(f"{out} exists; pass overwrite=True or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
        save_file(tensors, str(tmp / WEIGHTS))
        _write_json(tmp / "config.json", config)
        if featurizer is not None:
            _write_json(tmp / "featurizer.json", featurizer)
        if metrics is not None:
            _write_json(tmp / "metrics.json", metrics)
        for name, obj in (extras or {}).items():
            fname = f"{name}.json"
            if fname in RESERVED:
                raise ArtifactError(f"extra name '{name}' clashes with a reserved artifact file")
            _write_json(tmp / fname, obj)
        if tokenizer_dir is not None:
            shutil.copytree(tokenizer_dir, tmp / "tokenizer")
        if train_subjects is not None:
            ids = _subject_ids(train_subjects)
            _write_json(tmp / TRAIN_SUBJECTS, {"n_subjects": len(ids), "subject_ids": ids})
        files = {
            str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()
        }
        manifest = {
            "format_version": FORMAT_VERSION,
            "ehrseq_version": __version__,
            "torch_version": torch.__version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "model_type": config["model_type"],
            "target": config.get("target"),
            "data_hash": data_hash,
            "split_hash": split_hash,
            "files": files,
        }
        manifest["artifact_id"] = _manifest_digest(manifest)
        _write_json(tmp / "manifest.json", manifest)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_artifact(path: str | Path, *, verify: bool = True, expect_model_type: str | None = None) -> Artifact:
    """Load an artifact written by :func:`save_artifact`; only safetensors and JSON are read."""
    p = Path(path)
    if not p.is_dir():
        raise ArtifactError(f"{p}: not an artifact directory (expected the --out of `ehrseq finetune`)")
    mpath = p / "manifest.json"
    if not mpath.exists():
        raise ArtifactError(f"{p}: no manifest.json; this is not an ehrseq artifact")
    manifest = json.loads(mpath.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{p}: artifact format {manifest.get('format_version')} is not supported by this ehrseq "
            f"(format {FORMAT_VERSION}); retrain or install the ehrseq version that wrote it "
            f"({manifest.get('ehrseq_version')})"
        )
    if verify:
        if manifest.get("artifact_id") != _manifest_digest(manifest):
            raise ArtifactError(
                f"{p}: manifest.json does not match its artifact_id (a provenance field such as data_hash was "
                "edited); refusing to load it"
            )
        listed = set(manifest["files"]) | {"manifest.json"}
        unlisted = sorted(str(f.relative_to(p)) for f in p.rglob("*") if f.is_file() and str(f.relative_to(p)) not in listed)
        if unlisted:
            raise ArtifactError(
                f"{p}: file(s) {unlisted[:5]} are not listed in manifest.json (added after saving); refusing to "
                "load a modified artifact"
            )
        for name, want in manifest["files"].items():
            f = p / name
            if not f.exists():
                raise ArtifactError(f"{p}: file '{name}' listed in manifest.json is missing")
            if sha256_file(f) != want:
                raise ArtifactError(
                    f"{p}: file '{name}' does not match its hash in manifest.json (tampered or corrupted); "
                    "refusing to load it"
                )
    config = json.loads((p / "config.json").read_text())
    if expect_model_type and config.get("model_type") != expect_model_type:
        raise ArtifactError(
            f"{p}: artifact holds a '{config.get('model_type')}' model, expected '{expect_model_type}'"
        )
    featurizer = json.loads((p / "featurizer.json").read_text()) if (p / "featurizer.json").exists() else None
    metrics = json.loads((p / "metrics.json").read_text()) if (p / "metrics.json").exists() else None
    extras = {
        Path(name).stem: json.loads((p / name).read_text())
        for name in sorted(manifest["files"])
        if name.endswith(".json") and "/" not in name and name not in RESERVED
    }
    state_dict = load_file(str(p / WEIGHTS))
    train_subjects = None
    if TRAIN_SUBJECTS in manifest["files"] and (p / TRAIN_SUBJECTS).exists():
        train_subjects = [int(i) for i in json.loads((p / TRAIN_SUBJECTS).read_text())["subject_ids"]]
    return Artifact(
        path=p,
        config=config,
        manifest=manifest,
        state_dict=state_dict,
        featurizer=featurizer,
        metrics=metrics,
        extras=extras,
        train_subjects=train_subjects,
    )


def _subject_ids(ids: Iterable[int]) -> list[int]:
    """Sorted distinct subject ids as Python ints (MEDS subject_id is int64)."""
    arr = np.unique(np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids))
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ArtifactError(f"train_subjects must be integer subject ids, got dtype {arr.dtype}")
    return [int(i) for i in arr]
