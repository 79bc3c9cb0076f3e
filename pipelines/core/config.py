"""One config mechanism for every stage: dataclasses parsed by TRL's `TrlParser`.

A run is one YAML file (`--config x.yaml`); every dataclass field is also a `--field_name` flag that overrides
the YAML. Unlike plain `TrlParser`, an unknown YAML key fails with a message that names the key, the file and
the closest known key, and a value of the wrong type (`languages: en` where a list is expected) fails naming the
field, the file and the expected type, before anything runs.

    @dataclass
    class CurateConfig:
        input_paths: list[str] = field(default_factory=list, metadata={"help": "JSONL/Parquet/WARC paths or globs."})

    def parse_args(argv=None) -> CurateConfig:
        return parse(CurateConfig, argv=argv)
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or flag that cannot be used as written; the message says what to change."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error: PyYAML keeps the last value
    silently, so the first one, which a reader of the file may take as the setting, would be ignored."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"{self.name}: line {line}: '{key}' is already set on line {seen[key]}; keep one")
            seen[key] = line
        return super().construct_mapping(node, deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file (and the line of a key set twice)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loader = _UniqueKeyLoader(path.read_text())
        loader.name = str(path)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
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


def check_types(config: dict[str, Any], dataclass_types: Sequence[type], source: str | Path) -> None:
    """Fail on a YAML value of the wrong type, naming the field, the file and the expected type.

    TrlParser hands YAML values to the dataclasses unconverted, so `languages: en` for a list field would arrive as
    the string 'en' (and later become {'e', 'n'}). Flags are converted by argparse and need no check. Fields a
    dataclass lists in its `YAML_BOOL_FIELDS` take a YAML boolean (a bare on/off) and convert it themselves.
    """
    for dc in dataclass_types:
        try:
            hints = typing.get_type_hints(dc)
        except Exception:  # a library dataclass whose annotations do not resolve here: nothing to check against
            continue
        for f in dataclasses.fields(dc):
            if f.name not in config or f.name not in hints:
                continue
            value, expected = config[f.name], hints[f.name]
            if isinstance(value, bool) and f.name in getattr(dc, "YAML_BOOL_FIELDS", ()):
                continue
            library = dc.__module__.split(".")[0] in LIBRARY_PACKAGES
            if not _matches(value, expected) and not (library and _library_leniency(value, expected)):
                hint = ""
                if isinstance(value, bool | int | float) and _matches("x", expected):
                    hint = " (YAML read it as a number or boolean: quote it, e.g. 'on' or '0123')"
                elif isinstance(value, str) and _matches([value], expected):
                    hint = f" (a list: write [{value}] or a '- {value}' item)"
                raise ConfigError(
                    f"{source}: field '{f.name}' expects {_type_name(expected)}, got {type(value).__name__} "
                    f"{value!r}{hint}"
                )


# Their dataclasses' hints are looser than what they accept (transformers' `fsdp: str | None` takes `true`): for
# them only the unambiguous mistakes fail, a scalar for a list and text for a number.
LIBRARY_PACKAGES = frozenset({"transformers", "trl", "peft", "accelerate", "datasets"})


def _library_leniency(value: Any, expected: Any) -> bool:
    """True when a library field's mismatch is not one of the unambiguous mistakes."""
    union = typing.get_origin(expected) in (typing.Union, types.UnionType)
    arms = [a for a in typing.get_args(expected) if a is not type(None)] if union else [expected]
    only_lists = all(a in (list, tuple) or typing.get_origin(a) in (list, tuple) for a in arms)
    scalar_for_list = only_lists and value is not None and not isinstance(value, list | dict)
    text_for_number = isinstance(value, str) and (_matches(0, expected) or _matches(0.5, expected))
    return not (scalar_for_list or text_for_number)


def _matches(value: Any, expected: Any) -> bool:
    """Whether a YAML value fits a type hint; hints this does not know (library classes) accept anything."""
    if expected is Any:
        return True
    if expected is None or expected is type(None):
        return value is None
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin in (list, tuple, set, frozenset, Sequence):
        return (
            isinstance(value, list) and all(_matches(v, args[0]) for v in value) if args else isinstance(value, list)
        )
    if origin is dict or expected is dict:
        return isinstance(value, dict)
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected is str:
        return isinstance(value, str)
    if expected in (list, tuple):
        return isinstance(value, list)
    if isinstance(expected, type) and issubclass(expected, enum.Enum):
        return isinstance(value, str) and value in {str(m.value) for m in expected} | set(expected.__members__)
    return True


def _type_name(expected: Any) -> str:
    name = getattr(expected, "__name__", None) if typing.get_origin(expected) is None else None
    return name or str(expected).replace("typing.", "")


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
        config = load_yaml(path)
        check_keys(config, dataclass_types, path)
        check_types(config, dataclass_types, path)
    parser = TrlParser(dataclass_types)
    for action in parser._actions:  # argparse %-formats help: a literal '%' in a field's help broke `--help`
        if action.help and "%" in action.help and "%(" not in action.help and "%%" not in action.help:
            action.help = action.help.replace("%", "%%")
    try:
        out = parser.parse_args_and_config(args)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for obj in out:
        flag_nulls(obj, args)
    return out[0] if len(out) == 1 else tuple(out)


NULLS = frozenset({"null", "none", "~"})


def flag_nulls(obj: Any, args: Sequence[str]) -> None:
    """`--field null` (or None, ~) on the command line means None for a field that takes None, as `field: null`
    does in YAML; argparse would pass the word on as a string (`--language null` filtering for language "null")."""
    given = {}
    for i, arg in enumerate(args):
        if arg.startswith("--") and "=" in arg:
            name, value = arg[2:].split("=", 1)
            given[name] = value
        elif arg.startswith("--") and i + 1 < len(args):
            given[arg[2:]] = args[i + 1]
    try:
        hints = typing.get_type_hints(type(obj))
    except Exception:  # a library dataclass whose annotations do not resolve here
        hints = {}
    for f in dataclasses.fields(obj):
        value = given.get(f.name)
        if value is None or value.lower() not in NULLS or getattr(obj, f.name) != value:
            continue
        if f.name in hints and _matches(None, hints[f.name]):
            setattr(obj, f.name, None)


def check_pinned(model: str | None, revision: str | None, trust_remote_code: bool) -> None:
    """`trust_remote_code` runs Python from the model's Hub repository: allow it only at a pinned commit.

    A local folder is code already on this machine; a Hub id needs `model_revision` set to a 40-hex commit sha
    (a branch or tag like `main` can change under the same name).
    """
    if not trust_remote_code or not model or Path(model).exists():
        return
    if not re.fullmatch(r"[0-9a-f]{40}", revision or ""):
        raise ConfigError(
            f"trust_remote_code runs the Python code in {model}'s repository: pin it with model_revision: "
            f"<commit sha> (40 hex digits, from the repository's history; got {revision!r}), or drop "
            "trust_remote_code if "
            "transformers/vLLM support the architecture natively (NemotronH does)"
        )


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
