"""Shared bits for benchmark scripts: machine description and writing the results file."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def old_package(ref: str) -> Iterator[str | None]:
    """A temporary directory holding the ``ehrseq`` package of git ``ref`` (``git archive``), for timing the old
    code against the tree in one run; None when git cannot give it (e.g. no repository)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            tar = subprocess.run(["git", "-C", str(REPO), "archive", ref, "ehrseq"], check=True, capture_output=True)
            subprocess.run(["tar", "-x", "-C", tmp], input=tar.stdout, check=True)
        except (subprocess.CalledProcessError, OSError) as e:
            print(f"no baseline from {ref}: {e}", file=sys.stderr)
            yield None
            return
        yield tmp


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}"


def write_result(name: str, body: str, stem: str | None = None) -> Path:
    """Write ``body`` under a header (title ``name``, date, command, machine) to ``results/<stem>.md`` (default:
    the running benchmark's module name); returns the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    cmd = "python -m " + " ".join(["benchmarks." + Path(sys.argv[0]).stem, *sys.argv[1:]])
    head = (f"# {name}\n\n- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}\n- command: `{cmd}`\n"
            f"- machine: {machine()}\n\n")
    path = RESULTS / f"{stem or Path(sys.argv[0]).stem}.md"
    path.write_text(head + body.rstrip() + "\n")
    return path
