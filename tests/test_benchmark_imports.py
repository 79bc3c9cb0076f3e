"""The benchmarks import our modules inside functions (so `--help` stays fast), where only a run would notice a moved
module: `benchmarks.scale` imported `pipelines.runtime` for a whole session after it moved to `pipelines.core`."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("pipelines", "sft", "rl", "compress", "benchmarks")


def imports_of_ours() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted((REPO / "benchmarks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(OURS):
                found += [(str(path.relative_to(REPO)), node.module, alias.name) for alias in node.names]
    return found


@pytest.mark.timeout(120)
def test_every_name_the_benchmarks_import_from_our_modules_exists():
    missing = []
    for where, module, name in imports_of_ours():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            missing.append(f"{where}: {module} ({e})")
            continue
        if not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ModuleNotFoundError:
                missing.append(f"{where}: {module}.{name}")
    assert not missing, "\n".join(missing)
