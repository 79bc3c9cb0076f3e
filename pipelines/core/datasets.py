"""Dataset loading for the training stages and evaluation: a Hub id, an artifact directory or a JSONL/Parquet file.

An artifact directory is a Hugging Face dataset as written (its README.md card lists the configs), so it loads with
`datasets.load_dataset` like a Hub repository. `find_broken_line` names the file and line a bulk JSON reader
refused (synth's prompts, the training sets).
"""

from __future__ import annotations

import json
from pathlib import Path

import fsspec

from pipelines.core.config import ConfigError

DATA_SUFFIXES = (".parquet", ".jsonl", ".json")


def source_id(name: str) -> str:
    """A lineage input for a local path or a Hub id (Hub content is identified by its name only)."""
    return name if Path(name).exists() else f"hf://{name}"


def looks_local(name: str) -> bool:
    """A path rather than a Hub id (`org/name`): relative/absolute, deeper than one slash, or a data file name."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith(DATA_SUFFIXES)


def load_split(name: str | None, config: str | None = None, split: str = "train"):
    """`datasets.load_dataset(name, config, split=split)`: a Hub id or an artifact directory (its README.md card
    lists the configs: kept rows by default, `rejected` apart), or a local JSONL/Parquet file by its format."""
    import datasets

    if not name:
        raise ConfigError("dataset_name is required (a Hub id, a JSONL/Parquet file or an artifact directory)")
    path = Path(name)
    if path.is_file() and path.suffix in DATA_SUFFIXES:
        builder = "parquet" if path.suffix == ".parquet" else "json"
        try:
            return datasets.load_dataset(builder, data_files=str(path), split=split)
        except Exception as e:
            where = find_broken_line([str(path)]) if builder == "json" else None  # `datasets` names no line
            if where:
                raise ConfigError(f"dataset {name}: a row cannot be read: {where}; fix or remove it") from e
            raise
    if not path.exists() and looks_local(name):
        raise ConfigError(f"dataset not found: {path} (expected a JSONL/Parquet file or an artifact directory)")
    return datasets.load_dataset(name, name=config, split=split)


def find_broken_line(files: list[str]) -> str | None:
    """`<file>:<line>: <what is wrong>` for the first line of the JSONL files among `files` that a JSON reader
    refuses (malformed JSON, invalid UTF-8, a lone surrogate escape, not an object), or None. For an error message
    after a bulk reader (Arrow, `datasets`) failed without naming the file and line."""
    for path in files:
        if ".jsonl" not in path and ".ndjson" not in path:
            continue
        with fsspec.open(path, "rb", compression="infer") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line.decode("utf-8"))
                except UnicodeDecodeError as e:
                    return f"{path}:{n}: invalid UTF-8 at byte {e.start}"
                except ValueError as e:
                    return f"{path}:{n}: malformed JSON: {e}"
                if not isinstance(value, dict):
                    return f"{path}:{n}: expected a JSON object, got {type(value).__name__}"
                try:
                    json.dumps(value, ensure_ascii=False).encode("utf-8")
                except UnicodeEncodeError:
                    return f"{path}:{n}: a lone surrogate escape (\\ud800-\\udfff without its pair) in a string"
    return None
