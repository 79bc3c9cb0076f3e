"""Ray tasks of `nanoforge mix`: prepare (subset + tokenize), search (the plan's histograms), route (copy per
pick), write a bucket of the shuffled output."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.blending.plan import FULL, Cut, phase_of, shuffle_key, stream_priority, write_megatron
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


def work_options(path: str) -> dict:
    """Parquet options of mix's own .work files: no compression on a local disk (snappy took ~2x the write and ~3x
    the read of 50 MB of prepared text and ids here), snappy on an object store (a third fewer bytes to move); no
    dictionary encoding (text and token ids rarely repeat within a page: it halved the write and read CPU of the
    prepared files of benchmarks/mix.py for 40% more bytes)."""
    return {"compression": "snappy" if storage.is_remote(path) else "none", "use_dictionary": False}


def prepare_file(path: str, out: str, source: dict, batch_size: int, **kwargs) -> dict[str, int]:
    """A Ray task: `prepare_batch` on one input file's record batches, streamed into one prepared Parquet file
    `out`; returns the file's {docs, tokens}.

    A plain task per file, of every source at once: a Ray Data pass (map_batches + write_parquet) spent ~4x the
    tokenizing time on its own machinery here (benchmarks/results/mix.md)."""
    fs, p = storage.filesystem(path)
    out_fs, out_path = storage.filesystem(out)
    writer, docs, tokens = None, 0, 0
    with fs.open(p, "rb") as f:
        for records in pq.ParquetFile(f).iter_batches(batch_size=batch_size):
            table = prepare_batch(
                pa.Table.from_batches([records]), source=source["name"], buckets=source["buckets"], **kwargs
            )
            if not len(table):
                continue
            if writer is None:
                writer = pq.ParquetWriter(out_path, table.schema, filesystem=out_fs, **work_options(out))
            writer.write_table(table)
            docs, tokens = docs + len(table), tokens + int(pc.sum(table["num_tokens"]).as_py())
    if writer is not None:  # no rows of this source's subset in the file: no file, as Ray Data wrote none
        writer.close()
    return {"docs": docs, "tokens": tokens}


SEARCH_SCHEMA = pa.schema(
    [
        ("q", pa.int32()),  # index of the request
        ("bin", pa.int64()),  # histogram bin, or -1 for a document read whole
        ("priority", pa.uint64()),  # of the document read whole (0 in a histogram row)
        ("key", pa.uint64()),  # of the document read whole (0 in a histogram row)
        ("count", pa.int64()),
        ("tokens", pa.int64()),
    ]
)


def search_batch(batch: pa.Table, seed: int, requests: list[dict]) -> pa.Table:
    """The plan's questions about one batch of prepared (blend_source, key, num_tokens) rows.

    A request {source, epoch, lo, bits, shift} looks at the source's documents whose priority in that epoch is in
    [lo, lo + 2**bits): with `shift` an int, a histogram of (documents, tokens) over bins of 2**shift priorities (a
    row per non-empty bin; the caller sums batches); with `shift` None, each document (priority, key, tokens)."""
    sources = batch["blend_source"].to_numpy(zero_copy_only=False)
    all_keys, all_tokens = batch["key"].to_numpy(), batch["num_tokens"].to_numpy()
    parts = [SEARCH_SCHEMA.empty_table()]
    for q, r in enumerate(requests):
        mine = sources == r["source"]
        keys, tokens = all_keys[mine], all_tokens[mine]
        priority = stream_priority(keys, seed, r["source"], r["epoch"])
        offset = priority - np.uint64(r["lo"])  # wraps below lo: those fall outside the range
        if r["bits"] < FULL:
            inside = (offset >> np.uint64(r["bits"])) == 0
            keys, tokens, priority, offset = keys[inside], tokens[inside], priority[inside], offset[inside]
        n = len(keys)
        if r["shift"] is None:
            columns = [np.full(n, q), np.full(n, -1), priority, keys, np.ones(n, np.int64), tokens]
        else:
            bins = (offset >> np.uint64(r["shift"])).astype(np.int64) if r["shift"] < FULL else np.zeros(n, np.int64)
            counts = np.bincount(bins)
            sums = np.zeros(len(counts), np.int64)
            np.add.at(sums, bins, tokens)
            nz = np.flatnonzero(counts)
            zero = np.zeros(len(nz), np.uint64)
            columns = [np.full(len(nz), q), nz, zero, zero, counts[nz], sums[nz]]
        parts.append(
            pa.table([pa.array(c, f.type) for c, f in zip(columns, SEARCH_SCHEMA, strict=True)], SEARCH_SCHEMA)
        )
    return pa.concat_tables(parts)


def search_file(path: str, seed: int, requests: list[dict]) -> pa.Table:
    """`search_batch` over one prepared file (its blend_source, key and num_tokens columns)."""
    return search_batch(storage.read_table(path, columns=["blend_source", "key", "num_tokens"]), seed, requests)


def sum_partials(*tables: pa.Table) -> pa.Table:
    """`search_batch` outputs of several blocks as one: histogram rows of a (request, bin) summed, documents read
    whole kept as they are (each is in one block)."""
    table = pa.concat_tables([SEARCH_SCHEMA.empty_table(), *tables])
    hist = table.filter(pc.greater_equal(table["bin"], 0))
    summed = hist.group_by(["q", "bin"], use_threads=False).aggregate([("count", "sum"), ("tokens", "sum")])
    n = len(summed)
    summed = pa.table(
        [summed["q"], summed["bin"], pa.nulls(n, pa.uint64()).fill_null(0), pa.nulls(n, pa.uint64()).fill_null(0)]
        + [summed["count_sum"], summed["tokens_sum"]],
        schema=SEARCH_SCHEMA,
    )
    return pa.concat_tables([summed, table.filter(pc.less(table["bin"], 0))])


def route_batch(batch: pa.Table, seed: int, phases: list[str], buckets: list[int], cuts: dict[str, list]) -> pa.Table:
    """Copies each prepared document once per pick, adding phase, epoch, its shuffle key `order` and the `bucket`
    of the output it falls in (a range of `order`, `buckets[phase]` of them): decided by the document alone, from
    the plan's cuts ({source: [Cut as a dict] per phase}, pipelines/blending/plan.py)."""
    parts = []
    for source in pc.unique(batch["blend_source"]).to_pylist():
        rows = batch.filter(pc.equal(batch["blend_source"], source))
        mine = [Cut(**c) for c in cuts[source]]
        keys = rows["key"].to_numpy()
        for epoch in range(max(c.epoch for c in mine) + 1):
            phase = phase_of(stream_priority(keys, seed, source, epoch), keys, epoch, mine)
            for p in np.unique(phase[phase < len(mine)]):
                take = np.flatnonzero(phase == p)
                order = shuffle_key(keys[take], seed, phases[p], source, epoch)
                bucket = ((order >> np.uint64(32)) * np.uint64(buckets[p])) >> np.uint64(32)  # floor(order / 2^64 * n)
                out = rows.take(pa.array(take)).drop_columns(["epoch"])
                out = out.append_column("phase", pa.array(np.full(len(take), p, np.int32)))
                out = out.append_column("epoch", pa.array(np.full(len(take), epoch, np.int32)))
                out = out.append_column("order", pa.array(order, pa.uint64()))
                parts.append(out.append_column("bucket", pa.array(bucket.astype(np.int64))))
    return pa.concat_tables(parts) if parts else batch.slice(0, 0)


ROUTE_ROWS = 16_384  # prepared documents routed at once (~50 MB of web text and ids here, times their copies)


def route_file(path: str, staged: str, rows: int = ROUTE_ROWS, keep: bool = False, **route_plan) -> int | list:
    """A Ray task: `route_batch` on one prepared file, `rows` documents at a time, its picks written to one staged
    file named after the prepared file: each chunk's picks sorted by (phase, bucket), a row group per (chunk, phase,
    bucket) run (`storage.write_runs`), so a bucket's writer reads only its own row groups; returns the picks.
    `keep`: returns [picks, `by_bucket` of its picks] instead, for a
    writer that takes them from Ray's object store rather than reading them back (the staged file stays for a
    resumed run).

    One file per prepared file, however many chunks and buckets (a file per chunk and bucket was millions of small
    files at 10 TB); plain vectorized chunks, where a Ray Data pass with a partitioned write took ~40x the routing
    time here; the chunk bounds a task's memory whatever the size of its file (unless it keeps its picks)."""
    fs, p = storage.filesystem(path)
    out, by = storage.join(staged, storage.basename(path)), ["phase", "bucket"]
    writer, picks, kept = None, 0, []
    with fs.open(p, "rb") as f:
        for records in pq.ParquetFile(f).iter_batches(batch_size=rows):
            routed = route_batch(pa.Table.from_batches([records]), **route_plan)
            if not len(routed):
                continue
            if writer is None:
                storage.makedirs(staged)
                writer = storage.runs_writer(out, routed.schema, by, **work_options(staged))
            storage.write_runs(writer, routed, by)
            picks += len(routed)
            if keep:
                kept.append(routed)
    if writer is not None:  # no picks in this file: no staged file
        writer.close()
    if not keep:
        return picks
    return [picks, by_bucket(pa.concat_tables(kept) if kept else None, route_plan["buckets"])]


def by_bucket(routed: pa.Table | None, buckets: list[int]) -> tuple[pa.Table, np.ndarray] | None:
    """`routed` picks sorted by (phase, bucket), and where each (phase, bucket), phase by phase, starts in it."""
    if routed is None:
        return None
    first = np.concatenate([[0], np.cumsum(buckets)])
    flat = first[routed["phase"].to_numpy()] + routed["bucket"].to_numpy()
    order = np.argsort(flat, kind="stable")
    return routed.take(order), np.searchsorted(flat[order], np.arange(first[-1] + 1))


def write_bucket(
    row: dict, staged: str, out: str, phases: list[str], docs_per_shard: int, token_format: str | None, dtype: str
) -> list[dict]:
    """Sort one bucket's staged rows by their shuffle key; write `<phase>/part-BBBBB-JJ.parquet` (+ `.bin/.idx`):
    one file, or as many as keep every file within docs_per_shard documents."""
    phase, bucket = int(row["phase"]), int(row["bucket"])
    table = storage.read_equal(staged, phase=phase, bucket=bucket)
    return write_sorted(table, phase, bucket, out, phases, docs_per_shard, token_format, dtype)


def write_kept(row: dict, k: int, *parts: tuple[pa.Table, np.ndarray] | None, **kwargs) -> list[dict]:
    """`write_bucket` of the k-th (phase, bucket) of the picks as `route_file(keep=True)` returned them (Ray maps
    the tables from its object store), not read back from the staged files: the same files."""
    mine = [t.slice(at[k], at[k + 1] - at[k]) for t, at in (p for p in parts if p is not None) if at[k + 1] > at[k]]
    table = pa.concat_tables(mine) if mine else pa.table({})
    kwargs.pop("staged", None)
    return write_sorted(table, int(row["phase"]), int(row["bucket"]), **kwargs)


def write_sorted(
    table: pa.Table,
    phase: int,
    bucket: int,
    out: str,
    phases: list[str],
    docs_per_shard: int,
    token_format: str | None,
    dtype: str,
) -> list[dict]:
    """One bucket's rows, sorted by their shuffle key, as its output files (`write_bucket`)."""
    if not len(table):  # no pick fell in this range
        return []
    table = table.take(pc.sort_indices(table, [(c, "ascending") for c in ("order", "blend_source", "key", "epoch")]))
    same = [pc.equal(table[c][1:], table[c][:-1]) for c in ("blend_source", "key", "epoch")] if len(table) > 1 else []
    if same and pc.any(pc.and_(pc.and_(same[0], same[1]), same[2])).as_py():
        first = pc.index(pc.and_(pc.and_(same[0], same[1]), same[2]), True).as_py()
        raise ConfigError(
            f"source {table['blend_source'][first]}: document id {table['id'][first]} appears twice in its input; "
            "ids must be unique within a source"
        )
    storage.makedirs(storage.join(out, phases[phase]))
    schema = SHARD_SCHEMA.append(TOKENS) if token_format == "parquet" else SHARD_SCHEMA
    pieces = -(-len(table) // docs_per_shard)
    bounds = [round(j * len(table) / pieces) for j in range(pieces + 1)]  # equal pieces
    written = []
    for j in range(pieces):
        part = table.slice(bounds[j], bounds[j + 1] - bounds[j])
        rel = f"{phases[phase]}/part-{bucket:05d}-{j:02d}"
        fs, path = storage.filesystem(storage.join(out, f"{rel}.parquet"))
        pq.write_table(part.select(schema.names).cast(schema), path, filesystem=fs)
        if token_format == "megatron":
            ids = part[TOKENS.name].combine_chunks()
            lengths = pc.list_value_length(ids).to_numpy()
            write_megatron(storage.join(out, rel), lengths, ids.flatten().to_numpy(), getattr(np, dtype))
        tokens = int(pc.sum(part["num_tokens"]).as_py() or 0)
        written.append({"phase": phase, "file": f"{rel}.parquet", "docs": len(part), "tokens": tokens})
    return written
