"""The layout's two promises: every module imports alone, and imports go one way.

    pipelines.core  <-  phase folders (curation, dedup, scoring, blending, reasoning, demo)  <-  stage files  <-  cli
    sft  <-  rl            (both may use pipelines.core and the phase folders; pipelines never imports them)

Imports are read with `ast` (those inside functions too), so a cycle cannot hide in a lazy import.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipelines", "sft", "rl", "compress")
PHASES = ("curation", "dedup", "scoring", "blending", "reasoning", "rephrasing", "demo")
# A phase may use another phase's helpers only along these edges (acyclic): fuzzy dedup and decontamination write
# curate's rejection rows; quality re-applies curate's filters per bucket; rephrasing generates through
# reasoning's backends, and checks its outputs with curate's language ID and the shared decontamination.
PHASE_USES = {"dedup": {"curation"}, "scoring": {"curation"}, "rephrasing": {"reasoning", "curation", "dedup"}}
# layer -> the layers it may import
ALLOWED = {
    "core": {"core"},
    **{phase: {"core", phase, *PHASE_USES.get(phase, ())} for phase in PHASES},
    "stage": {"core", *PHASES},  # a stage shares code through core or a phase folder, never another stage
    "cli": {"core", "sft"},  # stages are named in core/commands.py and imported when their command runs;
    # the training stages' launcher (sft/launch.py) starts their ranks
    "sft": {"core", *PHASES, "sft"},
    "rl": {"core", *PHASES, "sft", "rl"},
    "compress": {"core", *PHASES, "sft", "compress"},
}


def layer(module: str) -> str:
    """`pipelines.core.config` -> "core", `pipelines.dedup.fuzzy` -> "dedup", `pipelines.mix` -> "stage", `rl.grpo` ->
    "rl"."""
    parts = module.split(".")
    if parts[0] != "pipelines":
        return parts[0]
    if len(parts) == 1:
        return "core"  # the package's own __init__ is plumbing
    if parts[1] in ("core", *PHASES):
        return parts[1]
    return "cli" if parts[1] == "cli" else "stage"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_files() -> list[Path]:
    return sorted(f for pkg in PACKAGES for f in (REPO / pkg).rglob("*.py"))


def imports_of(path: Path) -> set[str]:
    """Modules of this project that `path` imports anywhere (absolute names; `from a import b` counts a and a.b)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def import_graph() -> dict[str, set[str]]:
    return {module_name(f): imports_of(f) for f in project_files()}


def violations(graph: dict[str, set[str]]) -> list[str]:
    """One line per import that goes the wrong way (or from/to a folder the rules do not know)."""
    out = []
    for module, imported in sorted(graph.items()):
        src = layer(module)
        if src not in ALLOWED:
            out.append(f"{module}: layer '{src}' has no rule; add it to ALLOWED in tests/test_layout.py")
            continue
        for target in sorted(imported):
            dst = layer(target)
            if dst not in ALLOWED[src]:
                out.append(f"{module} ({src}) imports {target} ({dst}); {src} may import only {sorted(ALLOWED[src])}")
    return out


def test_imports_go_one_way():
    assert violations(import_graph()) == []


@pytest.mark.parametrize(
    "module, imported",
    [
        ("pipelines.core.recipe", "pipelines.cli"),  # core imports the CLI (the old recipe -> cli edge)
        ("pipelines.core.config", "pipelines.curate"),  # core imports a stage
        ("pipelines.core.artifacts", "pipelines.dedup.fuzzy"),  # core imports a phase
        ("pipelines.curation.chunks", "pipelines.curate"),  # a phase imports a stage
        ("pipelines.curation.filters", "pipelines.scoring.ops"),  # a phase edge that is not declared (a cycle)
        ("pipelines.synth", "pipelines.select"),  # a stage imports another stage
        ("pipelines.cli", "rl.grpo"),  # the CLI imports a stage instead of naming it in core/commands.py
        ("sft.common", "rl.evaluate"),  # sft imports rl (the old cycle)
        ("pipelines.quality", "sft.train"),  # the data stages import a training package
        ("distill.kd", "sft.common"),  # a new top-level package without a rule
    ],
)
def test_a_wrong_way_import_fails(module, imported):
    assert len(violations({module: {imported}})) == 1


def test_declared_phase_edges_are_acyclic():
    seen: set[str] = set()

    def visit(phase: str, path: tuple[str, ...]) -> None:
        assert phase not in path, f"phase cycle: {' -> '.join((*path, phase))}"
        seen.add(phase)
        for used in PHASE_USES.get(phase, ()):
            visit(used, (*path, phase))

    for phase in PHASES:
        visit(phase, ())


def test_every_module_imports_alone():
    """Each module imported first, in a fresh state: one interpreter, the project's modules cleared before each."""
    modules = sorted(module_name(f) for f in project_files())
    code = (
        "import importlib, json, sys\n"
        f"failed = []\nfor name in {modules!r}:\n"
        f"    for m in [m for m in sys.modules if m.split('.')[0] in {PACKAGES!r}]:\n"
        "        del sys.modules[m]\n"
        "    try:\n        importlib.import_module(name)\n"
        "    except Exception as e:\n        failed.append(f'{name}: {type(e).__name__}: {e}')\n"
        "print(json.dumps(failed))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def stage_order_problems(command: str, source: str) -> list[str]:
    """A stage file reads top to bottom: docstring (a local and a cluster command) -> config dataclass(es) ->
    helpers -> `main` -> `if __name__ == "__main__"`."""
    tree = ast.parse(source)
    doc = ast.get_docstring(tree) or ""
    problems = []
    if f"nanoforge {command}" not in doc:
        problems.append(f"the docstring has no local command (`nanoforge {command} ...`)")
    if not any(word in doc for word in ("Cluster", "ray job submit", "RAY_ADDRESS", "--address")):
        problems.append(
            "the docstring has no cluster command (a `Cluster:` line, `ray job submit ...` or `--address`)"
        )
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)]
    configs = [
        i
        for i, n in enumerate(defs)
        if isinstance(n, ast.ClassDef) and any("dataclass" in ast.unparse(d) for d in n.decorator_list)
    ]
    functions = [i for i, n in enumerate(defs) if isinstance(n, ast.FunctionDef)]
    # A class the config's fields use may come before it; a training stage may share its config (sft/common.py's
    # ScriptArgs, TRL's configs) and define none.
    if configs and functions and functions[0] < configs[0]:
        problems.append("the config dataclass is not the first definition")
    if not defs or defs[-1].name != "main":
        problems.append("`main` is not the last definition")
    last = tree.body[-1] if tree.body else None
    if not (isinstance(last, ast.If) and "__main__" in ast.unparse(last.test)):
        problems.append('the file does not end with `if __name__ == "__main__"`')
    return problems


def test_every_stage_file_reads_in_one_order():
    from pipelines.core.commands import COMMANDS

    problems = {}
    for command, (module, _) in COMMANDS.items():
        path = REPO / (module.replace(".", "/") + ".py")
        found = stage_order_problems(command, path.read_text())
        if found:
            problems[module] = found
    assert problems == {}


def test_a_stage_file_out_of_order_fails():
    ordered = (
        "from dataclasses import dataclass\n\n@dataclass\nclass C:\n    x: int = 0\n\ndef helper(): ...\n\n"
        'def main(): ...\n\nif __name__ == "__main__":\n    main()\n'
    )
    doc = '"""demo.\n\nLocal: nanoforge demo\nCluster: ray job submit -- nanoforge demo\n"""\n'
    assert stage_order_problems("demo", doc + ordered) == []
    assert len(stage_order_problems("demo", ordered)) == 2  # no docstring commands
    helper_after_main = ordered.replace("def helper(): ...\n\ndef main(): ...", "def main(): ...\n\ndef helper(): ...")
    assert stage_order_problems("demo", doc + helper_after_main) == ["`main` is not the last definition"]
    helper_first = ordered.replace("@dataclass", "def helper0(): ...\n\n@dataclass")
    assert stage_order_problems("demo", doc + helper_first) == ["the config dataclass is not the first definition"]
