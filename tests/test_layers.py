"""The package's imports point down the data path only, and no module imports itself in a circle.

Every ``ehrseq`` import counts, including those inside functions: a function-level import that points up is
still a dependency of the lower layer on the higher one. The layers follow ``shared/DESIGN.md`` (the README's
"Layout" section lists them).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "ehrseq"

# Lower number = lower layer. A module may import its own layer or below; within a layer, no cycles.
LAYERS: list[tuple[int, tuple[str, ...]]] = [
    (0, ("ehrseq", "ehrseq.errors", "ehrseq.utils", "ehrseq.codes", "ehrseq.schemas", "ehrseq.names")),
    (1, ("ehrseq.io", "ehrseq.synth", "ehrseq.artifacts")),  # artifacts: written through io's output guards
    (2, ("ehrseq.split", "ehrseq.labels", "ehrseq.tasks", "ehrseq.data.loading")),
    (3, ("ehrseq.featurize", "ehrseq.data")),
    (4, ("ehrseq.train",)),  # the one training loop: model-agnostic, so estimators' fit() can use it
    (5, ("ehrseq.models",)),
    (6, ("ehrseq.registry", "ehrseq.evaluate")),
    (7, ("ehrseq.config", "ehrseq.provenance", "ehrseq.scoring.predict", "ehrseq.scoring.prediction",
         "ehrseq.scoring.constants", "ehrseq.scoring.schema")),
    (8, ("ehrseq.recipes", "ehrseq.explain", "ehrseq.datacheck")),
    (9, ("ehrseq.api", "ehrseq.scoring", "ehrseq.cli", "ehrseq.cli_parser", "ehrseq.cli_options",
         "ehrseq.cli_examples")),
]


def _modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


MODULES = _modules()


def layer_of(module: str) -> int:
    """The layer of the longest matching prefix (``ehrseq.data.loading`` before ``ehrseq.data``)."""
    best, depth = None, -1
    for level, prefixes in LAYERS:
        for p in prefixes:
            if (module == p or (p != "ehrseq" and module.startswith(p + "."))) and p.count(".") > depth:
                best, depth = level, p.count(".")
    if best is None:
        raise KeyError(module)
    return best


def _target(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rsplit(".", 1)[0] if "." in name else ""
    return name or None


def imports_of(module: str) -> set[str]:
    """Every ehrseq module ``module`` imports, at module level or inside a function."""
    tree = ast.parse(MODULES[module].read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("ehrseq"):
            for alias in node.names:
                t = _target(f"{node.module}.{alias.name}")
                if t is not None:
                    out.add(t)
        elif isinstance(node, ast.Import):
            out.update(t for a in node.names if a.name.startswith("ehrseq") and (t := _target(a.name)))
    out.discard(module)
    return out


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_has_a_layer():
    missing = [m for m in MODULES
               if not any(m == p or (p != "ehrseq" and m.startswith(p + ".")) for _, ps in LAYERS for p in ps)]
    assert not missing, f"give these modules a layer in tests/test_layers.py: {missing}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    up = sorted(t for t in GRAPH[module] if layer_of(t) > layer_of(module))
    assert not up, f"{module} (layer {layer_of(module)}) imports higher layers: " + ", ".join(
        f"{t} ({layer_of(t)})" for t in up)


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for m in sorted(MODULES):
        if m not in index:
            visit(m)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_function_level_imports(tmp_path):
    """The test itself can fail: a function-level import is an edge."""
    assert "ehrseq.api" not in GRAPH["ehrseq.errors"]
    assert any("ehrseq.models" in t for t in GRAPH["ehrseq.registry"])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_are_short_enough_to_read_in_one_sitting(module):
    n = len(MODULES[module].read_text().splitlines())
    assert n <= 450, f"{module} has {n} lines; split it (aim for about 400)"
