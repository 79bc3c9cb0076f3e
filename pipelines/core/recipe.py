"""Recipes: an ordered list of stages, each a nanoforge command with its YAML and overrides.

    # What the recipe produces (line 1), and the command that runs it (line 2):
    # nanoforge run pipelines/recipes/demo.yaml
    output_dir: runs/demo            # each stage writes to <output_dir>/<stage name>
    stages:
      - name: data
        command: demo-data
      - name: curate
        command: curate
        config: pipelines/configs/curate_demo.yaml      # relative to the recipe's repository root
        args: {input_paths: ["{data}/web/*.jsonl.gz"]}  # flags on top of the YAML; {stage} is that stage's output,
                                                        # {root} the recipe's output root
        resources: {num_cpus: 2}                        # for `nanoforge submit` (one Ray job per stage)
      - name: eval
        command: eval
        output: false                                   # writes into another stage's artifact: no --output_dir
        args: {model: "{sft}"}

`run` executes the stages in this process on the embedded Ray; `submit` sends each one as a Ray job.
Both build the same argv for a stage, so a stage behaves the same either way.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
from pathlib import Path
from typing import Any

from pipelines.core.commands import COMMANDS
from pipelines.core.config import ConfigError, load_yaml

RECIPE_KEYS = {"output_dir", "stages", "description"}
STAGE_KEYS = {"name", "command", "config", "args", "resources", "runtime_env", "output"}
REF = re.compile(r"\{([A-Za-z0-9_\-]+)\}")


@dataclasses.dataclass
class Stage:
    name: str
    command: str
    module: str
    argv: list[str]  # what follows `nanoforge <command>` / `python -m <module>`
    output_dir: str  # this stage's artifact (the recipe's root for a stage with `output: false`)
    root: str  # the recipe's output root
    needs: list[str]  # names of earlier stages whose outputs this one reads
    resources: dict[str, Any]
    runtime_env: dict[str, Any]


def to_flags(args: dict[str, Any]) -> list[str]:
    """{"max_steps": 5, "input_paths": [a, b], "force": True} -> ["--max_steps", "5", "--input_paths", a, b, ...]."""
    flags: list[str] = []
    for key, value in args.items():
        flags.append(f"--{key}")
        if isinstance(value, list):
            flags.extend(str(v) for v in value)
        elif isinstance(value, dict):
            flags.append(json.dumps(value))
        elif isinstance(value, bool):
            flags.append(str(value).lower())
        else:
            flags.append(str(value))
    return flags


def load_recipe(path: str | Path, output_dir: str | None = None, config_root: str | Path | None = None) -> list[Stage]:
    """Parse and check a recipe: keys, commands, stage references, and each stage's YAML path.

    `config_root` is where relative `config:` paths resolve (default: the repository holding the recipe, i.e. the
    first parent with a pyproject.toml, else the recipe's folder).
    """
    path = Path(path)
    recipe = load_yaml(path)
    for key in recipe:
        if key not in RECIPE_KEYS:
            raise ConfigError(f"{path}: unknown recipe key '{key}' (expected one of {sorted(RECIPE_KEYS)})")
    if config_root is None:
        parents = path.resolve().parents
        config_root = next((p for p in parents if (p / "pyproject.toml").exists()), path.resolve().parent)
    out = Path(output_dir or recipe.get("output_dir") or f"runs/{path.stem}")
    stages: list[Stage] = []
    outputs: dict[str, str] = {"root": str(out)}  # `{root}` is the recipe's output root
    for i, raw in enumerate(recipe.get("stages") or []):
        where = f"{path}: stage {i + 1}"
        if not isinstance(raw, dict) or "name" not in raw or "command" not in raw:
            raise ConfigError(f"{where}: each stage needs at least `name` and `command`")
        for key in raw:
            if key not in STAGE_KEYS:
                raise ConfigError(f"{where} ({raw['name']}): unknown key '{key}' (expected {sorted(STAGE_KEYS)})")
        name, command = str(raw["name"]), str(raw["command"])
        if name in outputs:
            raise ConfigError(f"{where}: stage name '{name}' is used twice (or is the reserved name 'root')")
        if command not in COMMANDS:
            raise ConfigError(f"{where} ({name}): unknown command '{command}'; known: {', '.join(COMMANDS)}")
        argv: list[str] = []
        if raw.get("config"):
            config = Path(raw["config"])
            config = config if config.is_absolute() else Path(config_root) / config
            if not config.is_file():
                raise ConfigError(f"{where} ({name}): config file not found: {config}")
            argv += ["--config", str(config)]
        needs: list[str] = []
        argv += to_flags(
            {k: _resolve(v, outputs, needs, f"{where} ({name})") for k, v in (raw.get("args") or {}).items()}
        )
        if raw.get("output", True):  # `output: false`: a stage with no artifact of its own (eval, publish)
            outputs[name] = str(out / name)
            argv += ["--output_dir", outputs[name]]
        else:
            outputs[name] = str(out)
        stages.append(
            Stage(
                name=name,
                command=command,
                module=COMMANDS[command][0],
                argv=argv,
                output_dir=outputs[name],
                root=str(out),
                needs=sorted(set(needs)),
                resources=dict(raw.get("resources") or {}),
                runtime_env=dict(raw.get("runtime_env") or {}),
            )
        )
    if not stages:
        raise ConfigError(f"{path}: the recipe has no stages")
    return stages


def _resolve(value: Any, outputs: dict[str, str], needs: list[str], where: str) -> Any:
    """Replace `{stage}` references by that stage's output directory, recording the dependency."""
    if isinstance(value, list):
        return [_resolve(v, outputs, needs, where) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        ref = m.group(1)
        if ref not in outputs:
            raise ConfigError(f"{where}: '{{{ref}}}' does not name an earlier stage")
        needs.append(ref)
        return outputs[ref]

    return REF.sub(sub, value)


def check_stages(recipe: str | Path, stages: list[Stage]) -> list[Stage]:
    """Parse every stage's arguments strictly with its own command, so a typo fails before any stage runs."""
    for stage in stages:
        try:
            importlib.import_module(stage.module).parse_args(stage.argv)
        except (ConfigError, ValueError, SystemExit) as e:
            raise ConfigError(f"{recipe}: stage '{stage.name}' ({stage.command}): {e}") from None
    return stages


def select_stages(stages: list[Stage], from_stage: str | None, only: str | None) -> list[Stage]:
    names = [s.name for s in stages]
    for flag, value in (("--from", from_stage), ("--only", only)):
        if value and value not in names:
            raise ConfigError(f"{flag} {value}: no such stage; stages are {', '.join(names)}")
    if only:
        return [s for s in stages if s.name == only]
    if from_stage:
        return stages[names.index(from_stage) :]
    return stages
