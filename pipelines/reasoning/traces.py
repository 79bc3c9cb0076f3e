"""The traces contract (DESIGN.md) and the pieces `synth` builds it from: sample rows, trace rows, shard files.

A traces artifact is a directory with `manifest.json`, `traces/*.parquet` (TRACE_SCHEMA, one row per sample,
`id = "{prompt_id}:{k}"`) and `rejected/prompts.parquet` (prompts not sampled, with a reason).
"""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core import storage
from pipelines.reasoning.prompt_formats import assistant_content, with_reasoning_flag
from pipelines.reasoning.verifiers import extract_choice, final_text, score
from pipelines.reasoning.verify import extract_answer

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
TRACE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),  # "{prompt_id}:{k}"
        ("prompt_id", pa.string()),
        ("messages", MESSAGES),  # system (/think|/no_think), user..., assistant "<think>…</think>answer"
        ("answer", pa.string()),  # gold answer of the prompt, null when unknown
        ("verifier", pa.string()),  # how `answer` is checked: math | multiple_choice | code | ifeval
        ("reasoning", pa.string()),  # "on" | "off"
        ("generator", pa.struct([("model", pa.string()), ("revision", pa.string()), ("backend", pa.string())])),
        (
            "sampling_params",
            pa.struct(
                [
                    ("temperature", pa.float64()),
                    ("top_p", pa.float64()),
                    ("max_new_tokens", pa.int64()),
                    ("seed", pa.int64()),
                ]
            ),
        ),
        ("num_generated_tokens", pa.int64()),
        ("truncated", pa.bool_()),
        ("predicted_answer", pa.string()),
        ("verified", pa.bool_()),  # null: no gold answer, or the row failed
        ("error", pa.string()),  # null unless generation failed for this row
        ("source", pa.string()),
    ]
)
REJECTED_SCHEMA = pa.schema([("prompt_id", pa.string()), ("reason", pa.string()), ("detail", pa.string())])


def unit(key: str) -> float:
    """A stable pseudo-random number in [0, 1) from a string (no global RNG, same on every worker and rerun)."""
    return zlib.crc32(key.encode()) / 2**32


def sample_rows(prompt: dict[str, Any], cfg, num_samples: int) -> list[dict[str, Any]]:
    """Expand one prompt into `num_samples` rows with their reasoning mode and sampling parameters."""
    rows = []
    for k in range(num_samples):
        sample_id = f"{prompt['prompt_id']}:{k}"
        if cfg.reasoning == "mixed":
            mode = "on" if unit(f"mode:{sample_id}") < cfg.think_ratio else "off"
        else:
            mode = cfg.reasoning
        on = mode == "on"
        rows.append(
            {
                "id": sample_id,
                "prompt_id": prompt["prompt_id"],
                "messages": with_reasoning_flag(prompt["messages"], mode),
                "answer": prompt["answer"],
                "verifier": prompt.get("verifier") or "math",
                "solution": prompt["solution"] if cfg.backend == "replay" else None,
                "reasoning": mode,
                "source": cfg.source,
                "sampling": {
                    "temperature": float(cfg.temperature if on else cfg.no_think_temperature),
                    "top_p": float(cfg.top_p if on else cfg.no_think_top_p),
                    "max_new_tokens": int(cfg.max_new_tokens),
                    "seed": (cfg.seed * 1_000_003 + zlib.crc32(sample_id.encode())) % 2**31,
                },
            }
        )
    return rows


def to_trace(row: dict[str, Any], generator: dict[str, Any]) -> dict[str, Any]:
    """A generated sample row -> a trace row: assistant turn in `<think>…</think>answer` form, verified."""
    error = row.get("error")
    content = (
        None if error or row.get("completion") is None else assistant_content(row["completion"], row["reasoning"])
    )
    messages = list(row["messages"]) + ([{"role": "assistant", "content": content}] if content is not None else [])
    verifier = row.get("verifier") or "math"
    points = None if content is None else score(content, row.get("answer"), verifier)
    return {
        "id": row["id"],
        "prompt_id": row["prompt_id"],
        "messages": messages,
        "answer": row.get("answer"),
        "verifier": verifier,
        "reasoning": row["reasoning"],
        "generator": generator,
        "sampling_params": None if generator["backend"] == "replay" else row["sampling"],
        "num_generated_tokens": row.get("num_generated_tokens"),
        "truncated": bool(row.get("truncated")),
        "predicted_answer": None if content is None else predicted_answer(content, verifier),
        "verified": None if points is None else points == 1.0,  # every test passed / constraint followed
        "error": error or (None if content is not None else "no completion"),
        "source": row.get("source"),
    }


def predicted_answer(content: str, verifier: str) -> str | None:
    """What the sample answered, for inspection: the math answer or the chosen letter (None for code and ifeval)."""
    if verifier == "math":
        return extract_answer(content)
    if verifier == "multiple_choice":
        return extract_choice(final_text(content) or "")
    return None


def write_shard(folder: str | Path, rows: list[dict[str, Any]] | pa.Table, schema: pa.Schema = TRACE_SCHEMA):
    """Write rows as one Parquet file, whole or absent (pipelines/core/storage.py), in a local folder or under a
    URL prefix; returns its path (a Path for a local folder, else the URL).

    The name is a hash of the file's bytes: the same rows give the same file under the same name on every run
    (byte-identical artifacts), and shards written by a resumed run never collide with earlier ones.
    """
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table.cast(schema), sink)
    data = sink.getvalue().to_pybytes()
    path = storage.join(folder, f"shard-{hashlib.sha256(data).hexdigest()[:16]}.parquet")
    storage.makedirs(folder)
    storage.write_bytes(data, path)
    return path if storage.is_remote(path) else Path(path)


def drop_failed(folder: str | Path) -> int:
    """Rewrite every shard in `folder` (a local folder or a URL prefix) without its failed rows (`error` set), so a
    resume generates them again."""
    import pyarrow.compute as pc

    dropped = 0
    for f in storage.glob(storage.join(folder, "*.parquet")):
        table = storage.read_table(f)
        failed = pc.sum(pc.is_valid(table["error"])).as_py() or 0
        if failed:  # rewritten under its name: a rename locally, one PUT on an object store
            sink = pa.BufferOutputStream()
            pq.write_table(table.filter(pc.is_null(table["error"])), sink)
            storage.write_bytes(sink.getvalue().to_pybytes(), f)
            dropped += failed
    return dropped


def read_shards(folder: str | Path, columns: list[str] | None = None) -> pa.Table:
    files = storage.glob(storage.join(folder, "*.parquet"))
    if not files:
        return TRACE_SCHEMA.empty_table().select(columns) if columns else TRACE_SCHEMA.empty_table()
    return pa.concat_tables(storage.read_table(f, columns=columns) for f in files)
