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
leaves a half-written artifact; an existing directory is only replaced when it is an artifact (never another
directory, even with ``overwrite``). Loading verifies every hash in the manifest and refuses a tampered
artifact: a manifest path that leaves the directory (``..``, absolute), any symlink or special file inside it,
a file the manifest does not list (``tokenizer/`` included), and weights that are not safetensors (a pickle
renamed ``model.safetensors``, an absurd header) are each one :class:`~ehrseq.errors.ArtifactError`.

``artifact_id`` is a function of what was trained: the hashes of the weights, configs, featurizer and every
other file, the data and split hashes and the versions; of ``metrics.json`` only its content without timing
fields (``seconds``, ``sequences_per_second``, ``*_seconds``: ``metrics_identity``); not the creation time.
The same seed on the same data gives the same id.
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
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ehrseq import __version__
from ehrseq.errors import ArtifactError

FORMAT_VERSION = 1
ID_SCHEME = 2  # 2: metrics.json enters the id without its timings; manifests without id_scheme use scheme 1
WEIGHTS = "model.safetensors"
_NOT_IDENTITY = ("metrics.json",)  # enters the id as metrics_identity (timings removed)
_TIMING_KEYS = frozenset({"created", "seconds", "elapsed", "timings"})
_TIMING_SUFFIXES = ("_seconds", "_per_second", "_secs")
_MAX_HEADER = 100 << 20  # bytes of safetensors JSON header accepted (real ones are a few KiB)
TRAIN_SUBJECTS = "train_subjects.json"
RESERVED = {"config.json", "featurizer.json", "metrics.json", "manifest.json", TRAIN_SUBJECTS, WEIGHTS}


def sha256_file(path: Path) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB chunks."""
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
    provenance (data and split hashes, versions) change the id; the same content saved twice keeps it.
    Scheme 2 (``id_scheme``) takes metrics.json as ``metrics_identity`` (its content without timings, which
    differ run to run) instead of its file hash."""
    body = {k: v for k, v in manifest.items() if k not in ("artifact_id", "created")}
    if manifest.get("id_scheme") == ID_SCHEME and isinstance(body.get("files"), dict):
        body["files"] = {k: v for k, v in body["files"].items() if k not in _NOT_IDENTITY}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _untimed(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if not (k in _TIMING_KEYS or k.endswith(_TIMING_SUFFIXES))}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def metrics_identity(metrics: Any) -> str | None:
    """sha256 of metrics (as read back from metrics.json) without its timing fields; None without metrics."""
    if metrics is None:
        return None
    return hashlib.sha256(json.dumps(_untimed(metrics), sort_keys=True).encode()).hexdigest()


def is_artifact_dir(path: str | Path) -> bool:
    """Whether ``path`` is a directory holding an ehrseq artifact (a regular manifest.json)."""
    m = Path(path) / "manifest.json"
    return m.is_file() and not m.is_symlink()


def check_artifact_out(out: str | Path, *, overwrite: bool = False) -> Path:
    """Before any data is read: refuse an ``out`` that holds something (unless ``overwrite``, and then only an
    artifact is replaced) or that cannot be written. Called at the start of finetune and pretrain."""
    from ehrseq.io.guards import check_output

    return check_output(out, overwrite=overwrite, what="an ehrseq artifact", is_ours=is_artifact_dir)


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
        """The artifact's id, as its manifest records it."""
        return self.manifest["artifact_id"]

    @property
    def tokenizer_dir(self) -> Path | None:
        """The artifact's ``tokenizer/`` folder, or None when it has none."""
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
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_artifact_dir(out))):
        raise ArtifactError(f"{out} exists and is not an ehrseq artifact; refusing to replace it: choose a new or "
                            "empty --out")
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
            "id_scheme": ID_SCHEME,
            "metrics_identity": metrics_identity(json.loads((tmp / "metrics.json").read_text()))
            if metrics is not None else None,
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


def _walk(p: Path) -> tuple[list[str], list[str]]:
    """(regular files, symlinks and special files) under ``p``, as relative POSIX paths; links are not followed."""
    files, odd = [], []
    for root, dirs, names in os.walk(p, followlinks=False):
        r = Path(root)
        for d in list(dirs):
            if (r / d).is_symlink():
                odd.append((r / d).relative_to(p).as_posix())
                dirs.remove(d)
        for n in names:
            f = r / n
            rel = f.relative_to(p).as_posix()
            (files if f.is_file() and not f.is_symlink() else odd).append(rel)
    return sorted(files), sorted(odd)


def _check_names(p: Path, names: Iterable[object]) -> None:
    for name in names:
        parts = PurePosixPath(name).parts if isinstance(name, str) else ()
        if (not isinstance(name, str) or not name or "\\" in name or "\x00" in name or name.startswith("/")
                or ".." in parts or (len(name) > 1 and name[1] == ":")):
            shown = repr(name)[:80]
            raise ArtifactError(f"{p}: manifest.json lists the path {shown}, which leaves the artifact directory "
                                "(absolute or with '..'); refusing to load it")


def _read_json(p: Path, name: str) -> Any:
    try:
        return json.loads((p / name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ArtifactError(f"{p}: {name} is not readable JSON ({type(e).__name__}); the artifact is corrupt: "
                            "retrain or restore it") from None


def _read_manifest(p: Path) -> dict[str, Any]:
    mpath = p / "manifest.json"
    if mpath.is_symlink() or (mpath.exists() and not mpath.is_file()):
        raise ArtifactError(f"{p}: manifest.json is a symlink or not a regular file; refusing to load it")
    if not mpath.exists():
        raise ArtifactError(f"{p}: no manifest.json; this is not an ehrseq artifact")
    manifest = _read_json(p, "manifest.json")
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ArtifactError(f"{p}: manifest.json has no valid 'files' mapping (name -> sha256); refusing to load it")
    return manifest


def _load_weights(p: Path) -> dict[str, torch.Tensor]:
    """The safetensors weights; anything else (a pickle, a truncated file, an absurd header) is refused."""
    f = p / WEIGHTS
    if not f.is_file():
        raise ArtifactError(f"{p}: {WEIGHTS} is missing")
    size = f.stat().st_size
    with open(f, "rb") as fh:
        head = fh.read(9)
    n = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    if n < 2 or n > min(size - 8, _MAX_HEADER) or head[8:9] != b"{":
        raise ArtifactError(f"{p}: {WEIGHTS} is not a safetensors file (its header is missing, truncated or "
                            f"claims {n} bytes); ehrseq never reads pickles: retrain or restore the artifact")
    try:
        return load_file(str(f))
    except Exception as e:  # safetensors raises its own error type for a malformed file
        raise ArtifactError(f"{p}: {WEIGHTS} cannot be read as safetensors ({type(e).__name__}); retrain or restore "
                            "the artifact") from None


def check_model_type(path: Path, config: dict[str, Any], expected: str) -> None:
    """Refuse an artifact (its ``config.json`` as read) that holds another model type than ``expected``."""
    if config.get("model_type") != expected:
        raise ArtifactError(f"{path}: artifact holds a '{config.get('model_type')}' model, expected '{expected}'")


def load_artifact(path: str | Path, *, verify: bool = True, expect_model_type: str | None = None) -> Artifact:
    """Load an artifact written by :func:`save_artifact`; only safetensors and JSON are read.

    Symlinks (or special files) inside the directory and manifest paths that leave it are refused even with
    ``verify=False``; ``verify`` checks the id, that every file is listed, and every hash.
    """
    p = Path(path)
    if not p.is_dir():
        raise ArtifactError(f"{p}: not an artifact directory (expected the --out of `ehrseq finetune`)")
    manifest = _read_manifest(p)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{p}: artifact format {manifest.get('format_version')} is not supported by this ehrseq "
            f"(format {FORMAT_VERSION}); retrain or install the ehrseq version that wrote it "
            f"({manifest.get('ehrseq_version')})"
        )
    present, odd = _walk(p)
    if odd:
        raise ArtifactError(f"{p}: holds symlink(s) or special file(s) {odd[:5]}; an artifact holds regular files "
                            "only: refusing to load it")
    _check_names(p, manifest["files"])
    if verify:
        if manifest.get("artifact_id") != _manifest_digest(manifest):
            raise ArtifactError(
                f"{p}: manifest.json does not match its artifact_id (a provenance field such as data_hash was "
                "edited); refusing to load it"
            )
        listed = set(manifest["files"]) | {"manifest.json"}
        unlisted = [f for f in present if f not in listed]
        if unlisted:
            raise ArtifactError(
                f"{p}: file(s) {unlisted[:5]} are not listed in manifest.json (added after saving); refusing to "
                "load a modified artifact"
            )
        for name, want in manifest["files"].items():
            f = p / name
            if not f.is_file():
                raise ArtifactError(f"{p}: file '{name}' listed in manifest.json is missing")
            if sha256_file(f) != want:
                raise ArtifactError(
                    f"{p}: file '{name}' does not match its hash in manifest.json (tampered or corrupted); "
                    "refusing to load it"
                )
        if manifest.get("id_scheme") == ID_SCHEME and "metrics.json" in manifest["files"]:
            if metrics_identity(_read_json(p, "metrics.json")) != manifest.get("metrics_identity"):
                raise ArtifactError(f"{p}: metrics.json does not match the metrics_identity in manifest.json "
                                    "(edited after saving); refusing to load it")
    config = _read_json(p, "config.json") if (p / "config.json").is_file() else None
    if not isinstance(config, dict):
        raise ArtifactError(f"{p}: config.json is missing or not a JSON object; the artifact is corrupt")
    if expect_model_type:
        check_model_type(p, config, expect_model_type)
    featurizer = _read_json(p, "featurizer.json") if (p / "featurizer.json").exists() else None
    metrics = _read_json(p, "metrics.json") if (p / "metrics.json").exists() else None
    extras = {
        Path(name).stem: _read_json(p, name)
        for name in sorted(manifest["files"])
        if name.endswith(".json") and "/" not in name and name not in RESERVED
    }
    state_dict = _load_weights(p)
    train_subjects = None
    if TRAIN_SUBJECTS in manifest["files"] and (p / TRAIN_SUBJECTS).exists():
        record = _read_json(p, TRAIN_SUBJECTS)
        try:
            train_subjects = [int(i) for i in record["subject_ids"]]
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(f"{p}: {TRAIN_SUBJECTS} has no list of integer subject_ids") from None
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
