"""Ray Data operators of `nanoforge mix`: prepare (subset + tokenize), route (copy per pick), write a shard."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.blending.plan import write_megatron
from pipelines.core import storage
from pipelines.core.config import ConfigError

# Columns of the output shards (a fixed schema, so shards are byte-identical whatever batches they came from).
SHARD_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),  # the document's own source (curate), not the blend source
        ("url", pa.string()),
        ("metadata", pa.string()),  # JSON
        ("quality_label", pa.string()),
        ("blend_source", pa.string()),  # the mix source it was drawn for
        ("epoch", pa.int32()),  # 0 = first pass over that source
        ("num_tokens", pa.int64()),
    ]
)
TOKENS = pa.field("input_ids", pa.list_(pa.int32()))


@functools.lru_cache(maxsize=2)
def load_tokenizer(path: str):
    """A `tokenizers.Tokenizer` from a tokenizer.json or an HF tokenizer directory holding one."""
    from tokenizers import Tokenizer

    p = Path(path)
    file = p / "tokenizer.json" if p.is_dir() else p
    if not file.is_file():
        raise ConfigError(f"tokenizer {path}: no tokenizer.json (give an HF tokenizer directory or the file itself)")
    return Tokenizer.from_file(str(file))


def default_eos(path: str) -> str | None:
    """The eos_token of an HF tokenizer directory (tokenizer_config.json), else None."""
    config = Path(path) / "tokenizer_config.json"
    if not config.is_file():
        return None
    eos = json.loads(config.read_text()).get("eos_token")
    return eos.get("content") if isinstance(eos, dict) else eos


def doc_keys(ids: pa.Array) -> np.ndarray:
    """uint64 hash of each id (pandas' fixed-key SipHash: the same in every process and run)."""
    return pd.util.hash_array(np.asarray(ids.to_pylist(), dtype=object), categorize=False)


def prepare_batch(
    batch: pa.Table,
    source: str,
    buckets: list[int] | None,
    text_column: str,
    tokenizer: str | None,
    eos_id: int | None,
) -> pa.Table:
    """The source's rows (its bucket subset) in SHARD_SCHEMA + `key`, with token counts (and ids if tokenizing)."""
    if buckets is not None:
        batch = batch.filter(pc.is_in(batch["quality_bucket"], pa.array(buckets).cast(batch["quality_bucket"].type)))
    n = len(batch)

    def text_col(name: str) -> pa.Array:
        if name not in batch.column_names:
            return pa.nulls(n, pa.string())
        col = batch[name]
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            return col.cast(pa.string())
        return pa.array([None if v is None else json.dumps(v, sort_keys=True) for v in col.to_pylist()], pa.string())

    text = pc.fill_null(batch[text_column].cast(pa.string()), "")
    columns = {
        "id": batch["id"].cast(pa.string()),
        "text": text,
        "source": text_col("source"),
        "url": text_col("url"),
        "metadata": text_col("metadata"),
        "quality_label": text_col("quality_label"),
        "blend_source": pa.array([source] * n, pa.string()),
        "epoch": pa.array(np.zeros(n, np.int32)),
    }
    if tokenizer:
        # encode_batch_fast: the same ids as encode_batch, without the character offsets nothing here uses
        encoded = load_tokenizer(tokenizer).encode_batch_fast(text.to_pylist(), add_special_tokens=False)
        tail = [eos_id] if eos_id is not None else []
        flat: list[int] = []
        lengths = np.empty(n, np.int64)
        for i, e in enumerate(encoded):
            ids = e.ids
            flat += ids
            flat += tail
            lengths[i] = len(ids) + len(tail)
        values = np.array(flat, np.int32)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        columns["num_tokens"] = pa.array(lengths)
        columns[TOKENS.name] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
    else:
        columns["num_tokens"] = pc.divide(pc.add(pc.binary_length(text).cast(pa.int64()), 3), 4)  # ceil(bytes / 4)
    table = pa.table(columns)
    return table.append_column("key", pa.array(doc_keys(table["id"]), pa.uint64()))


def prepare_files(batch: dict, sources: list[dict], batch_size: int, **kwargs) -> Iterator[pa.Table]:
    """Ray Data UDF over (file, source index) rows: `prepare_batch` on each file's record batches, streamed out.

    One task per file of every source at once: a `union` of per-source datasets ran the sources one after the
    other on the 2-core machine (benchmarks/mix.py)."""
    for path, index in zip(batch["file"], batch["source"], strict=True):
        source = sources[int(index)]
        fs, p = storage.filesystem(path)
        with fs.open(p, "rb") as f:
            for records in pq.ParquetFile(f).iter_batches(batch_size=batch_size):
                table = pa.Table.from_batches([records])
                yield prepare_batch(table, source=source["name"], buckets=source["buckets"], **kwargs)


def route_batch(batch: pa.Table, selection: dict[str, dict[str, np.ndarray]]) -> pa.Table:
    """Copies each prepared document once per pick, adding phase, shard, position and epoch.

    `selection`: {source: {key, phase, shard, position, epoch}}, each sorted by key (numpy arrays; Ray Data ships
    the function's arguments through the object store once, not with every task).
    """
    parts = []
    for source in pc.unique(batch["blend_source"]).to_pylist():
        rows = batch.filter(pc.equal(batch["blend_source"], source))
        sel = selection[source]
        keys = rows["key"].to_numpy()
        lo = np.searchsorted(sel["key"], keys, side="left")
        counts = np.searchsorted(sel["key"], keys, side="right") - lo
        take = np.repeat(np.arange(len(rows)), counts)
        # index of each copy in the selection: lo of its row + its rank among that row's copies
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        picked = np.repeat(lo, counts) + within
        out = rows.take(pa.array(take)).drop_columns(["epoch"])
        for name in ("phase", "shard", "position", "epoch"):
            out = out.append_column(name, pa.array(sel[name][picked]))
        parts.append(out)
    return pa.concat_tables(parts) if parts else batch.slice(0, 0)


def write_shard(row: dict, staged: str, out: str, phases: list[str], token_format: str | None, dtype: str) -> dict:
    """Sort one shard's staged rows by shuffled position; write `<phase>/part-KKKKK.parquet` (+ `.bin/.idx`)."""
    phase, shard = int(row["phase"]), int(row["shard"])
    table = storage.read_table(storage.join(staged, f"phase={phase}", f"shard={shard}"))
    table = table.take(pc.sort_indices(table["position"]))
    rel = f"{phases[phase]}/part-{shard:05d}"
    storage.makedirs(storage.join(out, phases[phase]))
    schema = SHARD_SCHEMA.append(TOKENS) if token_format == "parquet" else SHARD_SCHEMA
    fs, path = storage.filesystem(storage.join(out, f"{rel}.parquet"))
    pq.write_table(table.select(schema.names).cast(schema), path, filesystem=fs)
    if token_format == "megatron":
        ids = table[TOKENS.name].combine_chunks()
        lengths = pc.list_value_length(ids).to_numpy()
        write_megatron(storage.join(out, rel), lengths, ids.flatten().to_numpy(), getattr(np, dtype))
    tokens = int(pc.sum(table["num_tokens"]).as_py() or 0)
    return {"phase": phase, "shard": shard, "file": f"{rel}.parquet", "docs": len(table), "tokens": tokens}
