"""The blocks of `nanoforge rephrase` before generation: tasks and prompts, pieces, the piece token budget.

A document with a quality label that the config maps to tasks becomes one unit per task (`{doc id}:{task}`); a
unit whose text does not fit the generator's context is split on paragraph (line) boundaries into pieces
(`{doc id}:{task}:{k}`), each rendered into its task's prompt and generated separately by synth's backends.
rephrasing/filters.py joins the outputs back per unit, in piece order, and keeps or rejects the unit.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core import storage
from pipelines.core.config import ConfigError
from pipelines.reasoning.traces import sample_seed

PROMPTS_DIR = Path(__file__).parent / "prompts"
# Nemotron-CC (arXiv 2412.02595, section 3.2): low-quality documents are rephrased in Wikipedia style (their
# knowledge kept, their noise dropped); high-quality ones feed four tasks that multiply their unique tokens.
NEMOTRON_CC_TASKS = {
    "wikipedia_rephrase": {"prompt": "wikipedia_rephrase.md", "labels": ["Low", "Medium-Low"]},
    "diverse_qa": {"prompt": "diverse_qa.md", "labels": ["High", "Medium-High"]},
    "distill": {"prompt": "distill.md", "labels": ["High", "Medium-High"]},
    "extract_knowledge": {"prompt": "extract_knowledge.md", "labels": ["High", "Medium-High"]},
    "knowledge_list": {"prompt": "knowledge_list.md", "labels": ["High", "Medium-High"]},
}
TASK_NAME = re.compile(r"^[a-z0-9_]+$")

GENERATOR = pa.struct([("model", pa.string()), ("revision", pa.string()), ("backend", pa.string())])
SAMPLING = pa.struct(
    [("temperature", pa.float64()), ("top_p", pa.float64()), ("max_new_tokens", pa.int64()), ("seed", pa.int64())]
)
# What a piece row carries through the backend (backends.py keeps the `piece` column).
PIECE = pa.struct(
    [
        ("source_id", pa.string()),
        ("task", pa.string()),
        ("index", pa.int64()),
        ("count", pa.int64()),
        ("text", pa.string()),  # the source piece, for the copy filter
        ("source", pa.string()),
        ("url", pa.string()),
        ("quality_label", pa.string()),
        ("quality_bucket", pa.int64()),
        ("prompt_hash", pa.string()),
    ]
)
# Generated pieces, written as they arrive (the resume granularity), joined and filtered at the end.
PIECE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),  # "{source_id}:{task}:{k}"
        ("prompt_id", pa.string()),  # "{source_id}:{task}"
        ("piece", PIECE),
        ("sampling", SAMPLING),
        ("completion", pa.string()),
        ("num_generated_tokens", pa.int64()),
        ("truncated", pa.bool_()),
        ("error", pa.string()),
    ]
)
# --- prompts ---------------------------------------------------------------------------------------------------


def load_tasks(tasks: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`{task: {prompt, labels}}` from the config -> `{task: {file, template, sha256, labels}}`; errors say what to
    fix.

    A prompt path is taken as given when it exists, else relative to pipelines/rephrasing/prompts/.
    """
    out = {}
    for task, spec in tasks.items():
        if not TASK_NAME.match(task) or not isinstance(spec, dict) or set(spec) - {"prompt", "labels"}:
            raise ConfigError(f"tasks.{task}: expected {{prompt: FILE, labels: [LABEL, ...]}} under a [a-z0-9_] name")
        path = Path(str(spec.get("prompt", "")))
        path = path if path.is_file() else PROMPTS_DIR / path
        if not path.is_file():
            raise ConfigError(f"tasks.{task}: prompt file {spec.get('prompt')} not found (nor in {PROMPTS_DIR})")
        template = path.read_text()
        if "{{ document }}" not in template:
            raise ConfigError(f"tasks.{task}: {path} must contain '{{{{ document }}}}' where the text goes")
        labels = spec.get("labels") or []
        out[task] = {"file": str(path), "template": template, "sha256": hashlib.sha256(template.encode()).hexdigest()}
        out[task]["labels"] = [str(label) for label in labels]
    return out


def render(template: str, document: str) -> str:
    """The user turn: the template with the document in place of `{{ document }}` (no other templating)."""
    return template.replace("{{ document }}", document).strip()


def label_tasks(tasks: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """quality label -> the tasks applied to documents with it, in config order."""
    out: dict[str, list[str]] = {}
    for task, spec in tasks.items():
        for label in spec["labels"]:
            out.setdefault(label, []).append(task)
    return out


# --- splitting -------------------------------------------------------------------------------------------------

_BLOCKS = re.compile(r"(\n+)")
_SENTENCES = re.compile(r"(?<=[.!?])(\s+)")
_WORDS = re.compile(r"(\s+)")


def estimate_tokens(text: str) -> int:
    """Tokens without a tokenizer: UTF-8 bytes / 4 (as mix estimates them)."""
    return -(-len(text.encode()) // 4)


def split_pieces(text: str, budget: int, count: Callable[[str], int] = estimate_tokens) -> list[str]:
    """`text` cut into pieces of at most ~`budget` tokens, on paragraph (line) boundaries where possible.

    Paragraphs are packed greedily in order (by the sum of their token counts); one longer than the budget is
    cut at sentence ends, and a sentence longer than the budget at spaces (one word longer than the budget is a
    piece of its own). Separators stay with the text before them, so the pieces are the text, in order.

        split_pieces("a b\\n\\nc d", budget=2, count=lambda s: len(s.split()))  # -> ["a b", "c d"]
    """
    if count(text) <= budget:
        return [text.strip()]
    pieces, current, used = [], "", 0
    for segment in _segments(text, budget, count, 0):
        n = count(segment)
        if current and used + n > budget:
            pieces.append(current)
            current, used = "", 0
        current, used = current + segment, used + n
    pieces.append(current)
    return [p.strip() for p in pieces if p.strip()]


def _segments(text: str, budget: int, count: Callable[[str], int], level: int) -> list[str]:
    """Paragraphs (level 0), sentences (1) or words (2) of `text`, each with its trailing separator; a segment
    over the budget is split at the next level."""
    parts = (_BLOCKS, _SENTENCES, _WORDS)[level].split(text)
    out = []
    for segment in ("".join(parts[i : i + 2]) for i in range(0, len(parts), 2)):
        if level < 2 and count(segment) > budget:
            out += _segments(segment, budget, count, level + 1)
        elif segment:
            out.append(segment)
    return out


def doc_pieces(row: dict, cfg, tasks: dict, by_label: dict, done: set, budget: int, tokenizer: str | None):
    """Ray Data `flat_map` UDF: a document -> one row per (task, piece) still to generate (`done` ids skipped)."""
    count = _counter(tokenizer)
    doc_id, text, label = str(row["id"]), row["text"] or "", row.get("quality_label")
    rows = []
    for task in by_label.get(label, []):
        pieces = [text.strip()] if cfg.backend == "replay" else split_pieces(text, budget, count)
        for k, piece in enumerate(pieces):
            piece_id = f"{doc_id}:{task}:{k}"
            if piece_id in done:
                continue
            messages = [{"role": "user", "content": render(tasks[task]["template"], piece)}]
            if cfg.system_prompt:
                messages.insert(0, {"role": "system", "content": cfg.system_prompt})
            bucket = row.get("quality_bucket")
            rows.append(
                {
                    "id": piece_id,
                    "prompt_id": f"{doc_id}:{task}",
                    "messages": messages,
                    "reasoning": "off",
                    "answer": None,
                    "solution": cfg.replay.get(f"{doc_id}:{task}") if cfg.backend == "replay" else None,
                    "source": None,
                    "sampling": {
                        "temperature": float(cfg.temperature),
                        "top_p": float(cfg.top_p),
                        "max_new_tokens": int(cfg.max_new_tokens),
                        "seed": sample_seed(cfg, piece_id),
                    },
                    "piece": {
                        "source_id": doc_id,
                        "task": task,
                        "index": k,
                        "count": len(pieces),
                        "text": piece,
                        "source": row.get("source"),
                        "url": row.get("url"),
                        "quality_label": label,
                        "quality_bucket": None if bucket is None else int(bucket),
                        "prompt_hash": tasks[task]["sha256"],
                    },
                }
            )
    return rows


def _counter(tokenizer: str | None) -> Callable[[str], int]:
    if not tokenizer:
        return estimate_tokens
    from pipelines.reasoning.backends import load_tokenizer

    tok = load_tokenizer(tokenizer)
    return lambda s: len(tok(s, add_special_tokens=False)["input_ids"])


def piece_budget(cfg, tasks: dict) -> tuple[int, str | None]:
    """(tokens a source piece may have, tokenizer used to count them): the context less the generation budget and
    the longest prompt around an empty document, capped at max_piece_tokens."""
    tokenizer = cfg.tokenizer_name_or_path or (
        cfg.model_name_or_path if cfg.model_name_or_path and Path(cfg.model_name_or_path).is_dir() else None
    )
    overhead = 0
    for spec in tasks.values():
        messages = [{"role": "user", "content": render(spec["template"], "")}]
        messages = [{"role": "system", "content": cfg.system_prompt}, *messages] if cfg.system_prompt else messages
        if tokenizer:
            from pipelines.reasoning.backends import load_tokenizer

            n = len(load_tokenizer(tokenizer).apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
        else:
            n = sum(estimate_tokens(m["content"]) for m in messages) + 16  # + chat markup
        overhead = max(overhead, n)
    cfg.max_prompt_tokens = cfg.context_tokens - cfg.max_new_tokens  # the backends refuse longer prompts
    budget = min(cfg.max_piece_tokens, cfg.max_prompt_tokens - overhead)
    if budget < 32:
        raise ConfigError(
            f"context_tokens={cfg.context_tokens} leaves {budget} tokens per piece after "
            f"max_new_tokens={cfg.max_new_tokens} and the prompt ({overhead}); raise context_tokens"
        )
    return budget, tokenizer


def load_replay(path: str | None) -> dict[str, str]:
    """replay: `{source_id}:{task}` -> text, from JSONL/Parquet rows or a rephrase artifact's documents/."""
    if not path:
        raise ConfigError("backend replay needs replay_path (rows {source_id, task, text})")
    p = Path(path)
    if (p / "documents").is_dir():
        table = read_folder(p / "documents", ["source_id", "task", "text"])
    elif p.suffix == ".parquet":
        table = pq.read_table(p, columns=["source_id", "task", "text"])
    elif p.is_file():
        rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        table = pa.Table.from_pylist(rows)
    else:
        raise ConfigError(f"replay_path: {path} not found (a JSONL/Parquet file or a rephrase artifact)")
    missing = {"source_id", "task", "text"} - set(table.column_names)
    if missing:
        raise ConfigError(f"replay_path: {path} lacks {sorted(missing)} (rows {{source_id, task, text}})")
    d = table.to_pydict()
    return {f"{s}:{t}": x for s, t, x in zip(d["source_id"], d["task"], d["text"], strict=True)}


def read_folder(folder: str | Path, columns: list[str]) -> pa.Table:
    """All Parquet files under `folder` (recursively; a local folder or a URL prefix) as one table of `columns`;
    empty when there are none."""
    files = [f for f in storage.glob(storage.join(folder, "**")) if f.endswith(".parquet")]
    if not files:
        return pa.table({c: pa.array([], pa.string()) for c in columns})
    return pa.concat_tables(storage.read_table(f, columns=columns) for f in files)
