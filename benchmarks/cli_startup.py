"""Command-line start-up time against a bare ``python -c pass`` in the same run (the ratio is the figure).

    python -m benchmarks.cli_startup [--repeat 7]

Each command runs as a fresh process, as a user types it; the table gives the median and the best of
``--repeat`` runs. The last row is what ``ehrseq --help`` used to import (torch, pandas and the models,
through ``ehrseq.scoring``) for the old-against-new comparison.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import write_result


def _time(cmd: list[str], repeat: int) -> tuple[float, float]:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        runs.append(time.perf_counter() - t)
    return statistics.median(runs), min(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=7, help="runs per command (default: 7)")
    a = ap.parse_args()
    exe = Path(sys.executable).parent / "ehrseq"  # the console script pip installed next to this python
    ehrseq = [str(exe)] if exe.exists() else [sys.executable, "-m", "ehrseq.cli"]
    rows = [
        ("python -c pass (baseline)", [sys.executable, "-c", "pass"]),
        ("ehrseq --help", [*ehrseq, "--help"]),
        ("ehrseq --version", [*ehrseq, "--version"]),
        ("ehrseq finetune --help", [*ehrseq, "finetune", "--help"]),
        ("python -c 'import ehrseq.scoring' (what --help imported before)",
         [sys.executable, "-c", "import ehrseq.scoring"]),
    ]
    _time(rows[0][1], 2)  # warm the file cache
    timed = [(name, *_time(cmd, a.repeat)) for name, cmd in rows]
    base = timed[0][1]
    lines = ["| command | median s | best s | median / baseline |", "|---|---|---|---|"]
    lines += [f"| `{name}` | {med:.3f} | {best:.3f} | {med / base:.1f}x |" for name, med, best in timed]
    body = (f"Each command is a fresh process, {a.repeat} runs; the baseline is a bare interpreter start in "
            "the same run. Goal (issue 15): `ehrseq --help` under 1 s.\n\n" + "\n".join(lines))
    print(body)
    print(f"wrote {write_result('CLI start-up time', body)}")


if __name__ == "__main__":
    main()
