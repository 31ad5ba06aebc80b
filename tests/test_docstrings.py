"""Every public function, class and method of ehrseq has a docstring, and no docstring quotes benchmark figures
(they go stale: docstrings point at ``benchmarks/results/`` instead)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import ehrseq

# A metric followed closely by a figure (AUROC 0.84), or a speed ratio (4x faster).
FIGURE = re.compile(r"\b(AUROC|AUPRC|C-index|IBS|Brier)\b[^.\n]{0,30}?\b0\.\d{2,}|\b\d+(\.\d+)?\s?x (faster|slower)\b",
                    re.IGNORECASE)


def _undocumented(obj: object) -> bool:
    doc = (inspect.getdoc(obj) or "").strip() if not inspect.isclass(obj) else (obj.__dict__.get("__doc__") or "")
    # a dataclass without a docstring gets its signature as __doc__
    return not doc.strip() or (inspect.isclass(obj) and doc.startswith(f"{obj.__name__}("))


def _public_missing() -> list[str]:
    missing = []
    for info in pkgutil.walk_packages(ehrseq.__path__, "ehrseq."):
        mod = importlib.import_module(info.name)
        for name, obj in vars(mod).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
                continue
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if _undocumented(obj):
                missing.append(f"{mod.__name__}.{name}")
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if attr.startswith("_"):
                        continue
                    f = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
                    if inspect.isfunction(f) and not (f.__doc__ or "").strip():
                        missing.append(f"{mod.__name__}.{name}.{attr}")
    return missing


def test_every_public_callable_has_a_docstring() -> None:
    missing = _public_missing()
    assert missing == [], f"{len(missing)} public callables without a docstring: {missing}"


def test_no_benchmark_figures_in_docstrings() -> None:
    found = []
    for path in sorted(Path(ehrseq.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                doc = ast.get_docstring(node) or ""
                found += [f"{path.name}:{getattr(node, 'name', '<module>')}: {m.group(0)}" for m in FIGURE.finditer(doc)]
    assert found == [], f"benchmark figures in docstrings (point at benchmarks/results/ instead): {found}"


def test_the_checks_would_catch_a_miss() -> None:
    def no_doc() -> None:
        pass

    assert _undocumented(no_doc)
    assert FIGURE.search("matched it (AUROC 0.843 vs 0.843) at 4x the speed")
    assert FIGURE.search("it is 3.5x faster")
    assert not FIGURE.search("per-label AUROC and AUPRC with bootstrap CIs")
