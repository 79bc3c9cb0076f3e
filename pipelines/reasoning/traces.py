"""The traces contract (DESIGN.md) and the pieces `synth` builds it from: sample rows, trace rows, shard files.

A traces artifact is a directory with `manifest.json`, `traces/*.parquet` (TRACE_SCHEMA, one row per sample,
`id = "{prompt_id}:{k}"`) and `rejected/prompts.parquet` (prompts not sampled, with a reason).

Sample rows travel through Ray Data with `seq`, their place among the samples a run generates; `TraceWriter` (a Ray
actor) cuts shards of `shard_rows` consecutive `seq` and keeps the stage's ledger, so the driver holds no rows.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core import storage
from pipelines.core.config import ConfigError
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
SAMPLING = TRACE_SCHEMA.field("sampling_params").type
SAMPLE_SCHEMA = pa.schema(  # what `sample_rows` builds, plus `seq`; fixed, so that no block's types are guessed
    [
        ("id", pa.string()),
        ("prompt_id", pa.string()),
        ("messages", MESSAGES),  # the prompt, reasoning flag in the system turn
        ("answer", pa.string()),
        ("verifier", pa.string()),
        ("solution", pa.string()),  # replay only
        ("reasoning", pa.string()),
        ("source", pa.string()),
        ("sampling", SAMPLING),
        ("seq", pa.int64()),  # 0, 1, ... over the samples this run generates, in plan order: shard = seq // shard_rows
    ]
)
log = logging.getLogger(__name__)
REJECTED_SCHEMA = pa.schema([("prompt_id", pa.string()), ("reason", pa.string()), ("detail", pa.string())])


def unit(key: str) -> float:
    """A stable pseudo-random number in [0, 1) from a string (no global RNG, same on every worker and rerun)."""
    return zlib.crc32(key.encode()) / 2**32


SEEDED_HELP = (
    "vllm: send each sample's seed to the engine, so that a rerun writes the same samples. False generates faster "
    "(an H200 with a 1B model: 52k against 37k tokens/s) but a rerun or resume samples anew, and `sampling.seed` is "
    "null. Other backends always seed."
)


def sample_seed(cfg, sample_id: str) -> int | None:
    """A sample's seed, from the run's base seed and the sample's id; None with `seeded: false` (vllm only: per
    request seeds cost vLLM 0.26 ~28% of its tokens/s)."""
    if not getattr(cfg, "seeded", True):
        return None
    return (cfg.seed * 1_000_003 + zlib.crc32(sample_id.encode())) % 2**31


def check_seeded(cfg) -> None:
    """`seeded: false` only where the backend can sample without seeds (vllm); the others always seed."""
    if not cfg.seeded and cfg.backend != "vllm":
        raise ConfigError(f"seeded: false is for the vllm backend; backend '{cfg.backend}' always seeds its samples")


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
                    "seed": sample_seed(cfg, sample_id),
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


class TraceWriter:
    """The stage's writer and ledger, run as a Ray actor whose handle the driver holds: the planner reports each
    batch of prompts (rows read, kept, rejected rows), the stream sends traces with their `seq`, and every shard
    of `shard_rows` consecutive samples is written as soon as it is complete, whatever order rows arrive in (the
    same shards, byte for byte, as cutting the plan in order). `finish` writes the last shard and the rejected
    rows and returns the counts; a shard still incomplete then is an error, never a balanced manifest."""

    def __init__(self, traces_dir: str, rejected_dir: str, shard_rows: int):
        self.traces_dir, self.rejected_dir, self.shard_rows = traces_dir, rejected_dir, shard_rows
        self.pending: dict[int, dict[int, dict]] = {}  # shard number -> seq -> trace row
        self.read = self.kept = self.planned = self.written = self.shards = 0
        self.rejected: list[dict] = []  # unusable rows and duplicates, in row order
        self.contaminated: list[dict] = []  # then prompts dropped by decontamination, in prompt order
        self.planner_started, self.resumed, self.retried = False, 0, 0

    def start_planner(self) -> int:
        """Once per run, before the planner reads the ids done: drop the failed rows of an interrupted run (they
        are generated again); returns the samples kept from it."""
        if self.planner_started:
            raise RuntimeError("[synth] the sample planner restarted: its numbering would start over; run again")
        self.planner_started = True
        self.retried = drop_failed(self.traces_dir)
        files = storage.glob(storage.join(self.traces_dir, "*.parquet"))
        self.resumed = sum(m.num_rows for m in storage.parquet_metadata_many(files))  # footers: no data read
        if self.resumed or self.retried:
            log.info(f"[synth] resuming: {self.resumed} samples done, {self.retried} failed samples will be retried")
        return self.resumed

    def add_prompts(self, read: int, kept: int, rejected: list[dict], contaminated: list[dict], planned: int) -> None:
        self.read, self.kept, self.planned = self.read + read, self.kept + kept, self.planned + planned
        self.rejected += rejected
        self.contaminated += contaminated

    def add_traces(self, rows: list[tuple[int, dict]]) -> int:
        """Take (seq, trace) pairs; write the shards they complete. Returns the shards written so far."""
        for seq, row in rows:
            self.pending.setdefault(seq // self.shard_rows, {})[seq] = row
        for shard in [s for s, got in self.pending.items() if len(got) == self.shard_rows]:
            self._write(shard)
        return self.shards

    def _write(self, shard: int) -> None:
        rows = self.pending.pop(shard)
        write_shard(self.traces_dir, [rows[seq] for seq in sorted(rows)])
        self.written, self.shards = self.written + len(rows), self.shards + 1

    def finish(self, num_samples: int) -> dict:
        """Write what is left (the plan's last shard), an empty shard when there are no traces at all, and the
        rejected rows; returns the manifest's counts once they agree with the plan: prompts read = kept +
        rejected, samples planned = written, samples in shards = resumed + written = kept x num_samples."""
        for shard in sorted(self.pending):
            expected = min(self.shard_rows, self.planned - shard * self.shard_rows)
            if len(self.pending[shard]) != expected:  # rows lost on the way: refuse to commit
                raise RuntimeError(f"[synth] shard {shard} got {len(self.pending[shard])} of its {expected} samples")
            self._write(shard)
        if not storage.glob(storage.join(self.traces_dir, "*.parquet")):  # no prompts: a file with the schema
            write_shard(self.traces_dir, [])
        rejected = self.rejected + self.contaminated
        write_shard(self.rejected_dir, rejected, REJECTED_SCHEMA)
        traces, resumed = count_traces(self.traces_dir), self.resumed
        counts = {
            "prompts_input": self.read,
            "prompts_kept": self.read - len(rejected),
            "prompts_rejected": dict(Counter(r["reason"] for r in rejected)),
            "samples": traces.pop("samples"),
            "samples_resumed": resumed,
            **traces,
        }
        expected = {
            "prompts kept": (counts["prompts_kept"], self.kept),
            "samples written": (self.written, self.planned),
            "samples": (counts["samples"], self.kept * num_samples),
            "samples resumed + written": (resumed + self.written, counts["samples"]),
        }
        wrong = [f"{name}: {got} != {want}" for name, (got, want) in expected.items() if got != want]
        if wrong:
            raise RuntimeError(f"[synth] the traces do not match the plan ({'; '.join(wrong)})")
        return counts


def count_traces(folder: str | Path) -> dict:
    """Samples, errors, truncations, verification and reasoning modes over a folder's shards, one shard at a time."""
    samples = errors = truncated = 0
    verified, reasoning = Counter(), Counter()
    for f in storage.glob(storage.join(folder, "*.parquet")):
        t = storage.read_table(f, columns=["reasoning", "verified", "error", "truncated"]).to_pydict()
        samples += len(t["reasoning"])
        errors += sum(e is not None for e in t["error"])
        truncated += sum(t["truncated"])
        verified.update({True: "true", False: "false", None: "null"}[v] for v in t["verified"])
        reasoning.update(t["reasoning"])
    return {
        "samples": samples,
        "errors": errors,
        "truncated": truncated,
        "verified": {k: verified.get(k, 0) for k in ("true", "false", "null")},
        "reasoning": dict(reasoning),
    }
