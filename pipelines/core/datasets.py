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
    if path.is_dir():
        return datasets.load_dataset("parquet", data_files={split: card_files(path, config, split)}, split=split)
    return datasets.load_dataset(name, name=config, split=split)


def card_files(artifact: Path, config: str | None, split: str) -> list[str]:
    """The absolute data files of `config` (the default one when None) and `split` that the artifact's README.md
    card lists. `load_dataset(<folder>)` itself would do this, but it caches by the folder's name and the card's
    configs, so two artifacts named alike (runs/a/select/sft, runs/b/select/sft) shared a cache entry and the second
    read the first one's rows. Cards now carry the artifact's hash in each config (cards._card_data), which keys that
    cache right for TRL's own CLIs too; absolute file names here also cover artifacts written before that.
    """
    import yaml

    card = artifact / "README.md"
    text = card.read_text() if card.is_file() else ""
    meta = yaml.safe_load(text.split("---")[1]) if text.startswith("---") and text.count("---") >= 2 else {}
    configs = (meta or {}).get("configs") or []
    if not configs:
        raise ConfigError(f"{artifact}: no dataset configs in its README.md card (not a nanoforge artifact, or empty)")
    names = [c["config_name"] for c in configs]
    chosen = next((c for c in configs if c["config_name"] == config or (config is None and c.get("default"))), None)
    if chosen is None:
        wanted = f"config {config!r}" if config else "a default config"
        raise ConfigError(f"{artifact}: no {wanted}; its card lists {', '.join(names)} (pass one as the config)")
    patterns = [f["path"] for f in chosen["data_files"] if f.get("split", "train") == split]
    files = sorted(
        str(f.resolve())
        for pattern in patterns
        for p in ([pattern] if isinstance(pattern, str) else pattern)
        for f in artifact.glob(p)
    )
    if not files:
        raise ConfigError(f"{artifact}: config {chosen['config_name']!r} has no '{split}' files")
    return files


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
