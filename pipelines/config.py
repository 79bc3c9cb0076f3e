"""One config mechanism for every stage: dataclasses parsed by TRL's `TrlParser`.

A run is one YAML file (`--config x.yaml`); every dataclass field is also a `--field_name` flag that overrides
the YAML. Unlike plain `TrlParser`, an unknown YAML key fails with a message that names the key, the file and
the closest known key, before anything runs.

    @dataclass
    class CurateConfig:
        input_paths: list[str] = field(default_factory=list, metadata={"help": "JSONL/Parquet/WARC paths or globs."})

    def parse_args(argv=None) -> CurateConfig:
        return parse(CurateConfig, argv=argv)
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or flag that cannot be used as written; the message says what to change."""


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of field: value at the top level, got {type(data).__name__}")
    return data


def check_keys(config: dict[str, Any], dataclass_types: Sequence[type], source: str | Path) -> None:
    """Fail on keys that no dataclass defines (TrlParser reserves `env` for environment variables)."""
    known = {f.name for dc in dataclass_types for f in dataclasses.fields(dc)} | {"env"}
    for key in config:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            names = ", ".join(dc.__name__ for dc in dataclass_types)
            raise ConfigError(f"{source}: unknown key '{key}'{hint}; {names} has no such field")


def parse(*dataclass_types: type, argv: Sequence[str] | None = None) -> Any:
    """Parse `--config FILE` and `--field value` flags into instances of `dataclass_types`.

    Returns the single instance when one type is given, else a tuple in the order given.
    """
    from trl import TrlParser  # heavy import (torch); only when a stage actually parses

    args = list(sys.argv[1:] if argv is None else argv)
    if "--config" in args:
        i = args.index("--config")
        if i + 1 >= len(args):
            raise ConfigError("--config needs a path to a YAML file")
        path = args[i + 1]
        check_keys(load_yaml(path), dataclass_types, path)
    parser = TrlParser(dataclass_types)
    try:
        out = parser.parse_args_and_config(args)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return out[0] if len(out) == 1 else tuple(out)


def to_dict(*configs: Any) -> dict[str, Any]:
    """Flatten dataclass configs into one JSON-safe dict (for manifests and hashes)."""
    merged: dict[str, Any] = {}
    for cfg in configs:
        items = cfg.to_dict() if hasattr(cfg, "to_dict") else dataclasses.asdict(cfg)
        merged.update(items)
    return _json_safe(merged)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "value"):  # enums
        return _json_safe(value.value)
    return str(value)
