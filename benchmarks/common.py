"""Shared bits for benchmark scripts: machine description and writing the results file."""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


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


def write_result(name: str, body: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    cmd = "python -m " + " ".join(["benchmarks." + Path(sys.argv[0]).stem, *sys.argv[1:]])
    head = (f"# {name}\n\n- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}\n- command: `{cmd}`\n"
            f"- machine: {machine()}\n\n")
    path = RESULTS / f"{Path(sys.argv[0]).stem}.md"
    path.write_text(head + body.rstrip() + "\n")
    return path
