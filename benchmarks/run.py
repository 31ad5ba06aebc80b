"""Run benchmarks one after another: ``python -m benchmarks.run --all`` or ``--only featurize scoring``.

Each benchmark writes its own table to benchmarks/results/<name>.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

ALL = ("featurize", "sequence_models", "behrt_speed", "memory", "deepsurv_real", "deepsurv_synth", "text_biopsy",
       "text_out_of_style", "scoring", "cli_startup", "kernels", "real_tasks", "token_window")  # the last two read the MIMIC demo at ../shared (or pass --data to each)


def main() -> int:
    ap = argparse.ArgumentParser()
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--all", action="store_true")
    g.add_argument("--only", nargs="+", choices=ALL)
    a = ap.parse_args()
    failed = []
    for name in ALL if a.all else a.only:
        print(f"=== benchmarks.{name}", flush=True)
        if subprocess.call([sys.executable, "-m", f"benchmarks.{name}"]) != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
