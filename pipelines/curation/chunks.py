"""The batch functions of `curate`'s three Ray Data passes and the work directory that makes them resumable.

Work directory (`<partial>/.work/`, removed when the artifact is complete):
  chunks/<chunk>.parquet      pass 1: every record of one reader chunk, with status (see filters.CHECKPOINT_SCHEMA);
                              its footer holds {"candidates": n, "candidate_bytes": b}; with fuzzy dedup on, also
                              a column `bands` (each kept candidate's LSH band keys) and "minhash": their spec
  units/<unit>.json           pass 1: the reader finished this unit, which has `chunks` chunks
  rejects/<step>/shard=<k>/*.parquet       pass 2: rejections of one global step, one file per output shard
  rejects/<step>.done         pass 2: that step finished
  shards/<NNNNN>.json         pass 3: shard NNNNN's part files are written; its counts

Every file is written whole or not at all (a temporary name and a rename on disk, one PUT on an object store), so a
killed run leaves only whole pieces behind. `work` and `out` are paths or URLs (pipelines/core/storage.py): the workers
write the work files to the artifact's own storage, which the driver and every other node see, never to a node's
local scratch.
"""

from __future__ import annotations

import json
import math
from collections import Counter

import pyarrow as pa

from pipelines.core import storage
from pipelines.curation.filters import CHECKPOINT_SCHEMA, process_chunk
from pipelines.curation.pii import redact_pii
from pipelines.curation.readers import Unit, pack, read_unit, unpack

REJECTION_COLUMNS = pa.schema(
    [
        ("chunk", pa.string()),
        ("row", pa.int32()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("duplicate_of", pa.string()),
    ]
)
DOCUMENT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("url", pa.string()),
        ("metadata", pa.string()),
        ("lang", pa.string()),
        ("lang_score", pa.float64()),
    ]
)
REJECTED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("duplicate_of", pa.string()),
        ("url", pa.string()),
        ("text", pa.string()),
    ]
)
QUARANTINE_SCHEMA = pa.schema(
    [("file", pa.string()), ("line_or_row", pa.int64()), ("error", pa.string()), ("raw", pa.string())]
)
LENGTH_BINS = 25  # histogram of document lengths: bin b holds lengths in [2**b - 1, 2**(b+1) - 1) characters


write_parquet_atomic = storage.write_parquet  # same rows and schema give the same bytes; whole or absent
write_json_atomic = storage.write_json


# --- pass 1: read and filter chunks ----------------------------------------------------------------------------


def chunk_files(work: str) -> list[str]:
    """The chunk checkpoints in `work`, sorted (input order)."""
    return storage.glob(storage.join(work, "chunks", "*.parquet"))


def chunk_name(path: str) -> str:
    return storage.basename(path).removesuffix(".parquet")


def finished_chunks(work: str) -> set[str]:
    return {chunk_name(p) for p in chunk_files(work)}


def unit_finished(unit: Unit, work: str, done: set[str]) -> bool:
    """True when an earlier run read the whole unit and checkpointed all of its chunks."""
    try:
        n = storage.read_json(storage.join(work, "units", f"{unit.prefix}.json"))["chunks"]
    except (OSError, ValueError, KeyError):
        return False
    return all(f"{unit.prefix}-{k:05d}" in done for k in range(n))


def read_chunks(batch: dict, *, settings: dict, done: frozenset[str]):
    """Ray Data generator UDF: one unit (JSON) in, one row per chunk out, each with the chunk's pickled items."""
    work = settings["work"]
    for unit_json in batch["unit"]:
        unit = Unit(**json.loads(unit_json))
        n = 0
        for chunk_id, items in read_unit(
            unit,
            chunk_bytes=settings["chunk_bytes"],
            chunk_rows=settings["chunk_rows"],
            max_line_bytes=settings["max_line_bytes"],
            raw_chars=settings["raw_chars"],
            done=done,
        ):
            n = int(chunk_id.rsplit("-", 1)[1]) + 1
            yield {
                "chunk": [chunk_id],
                "label": [unit.label],
                "path": [unit.path],
                "source": [unit.source],
                "payload": [pack(items)],
            }
        # the reader also passes chunks it skipped, so the count is the highest chunk id seen or already done
        n = max([n, *(int(c.rsplit("-", 1)[1]) + 1 for c in done if c.startswith(unit.prefix + "-"))])
        write_json_atomic({"chunks": n}, storage.join(work, "units", f"{unit.prefix}.json"))


def filter_chunks(batch: dict, *, settings: dict, bands=None) -> dict:
    """Ray Data UDF: run the per-document blocks over each chunk and checkpoint it; returns (chunk, rows).

    With fuzzy dedup on, curate passes `bands` = `fuzzy.chunk_bands` and `settings["minhash"]` = the MinHash spec
    (plain values): the checkpoint then also holds each kept candidate's LSH band keys (column `bands`) and its
    footer the spec, so fuzzy dedup's global step reads the keys instead of the text, also after a crash.
    (A function passed in: curation does not import dedup, tests/test_layout.py.)"""
    work = settings["work"]
    out = {"chunk": [], "rows": []}
    for chunk, label, path, source, payload in zip(
        batch["chunk"], batch["label"], batch["path"], batch["source"], batch["payload"], strict=True
    ):
        table = process_chunk(str(chunk), unpack(payload), str(label), str(path), str(source), settings)
        kept = table.filter(pa.compute.equal(table["status"], "kept"))
        meta = {
            "candidates": kept.num_rows,
            "candidate_bytes": int(pa.compute.sum(pa.compute.binary_length(kept["text"])).as_py() or 0),
        }
        if bands is not None and settings.get("minhash"):
            table = table.append_column("bands", bands(table, settings["minhash"]))
            meta["minhash"] = settings["minhash"]
        table = table.replace_schema_metadata({"nanoforge": json.dumps(meta)})
        write_parquet_atomic(table, storage.join(work, "chunks", f"{chunk}.parquet"))
        out["chunk"].append(str(chunk))
        out["rows"].append(table.num_rows)
    return out


# --- pass 2: global steps --------------------------------------------------------------------------------------


def mark_duplicates(group: pa.Table) -> pa.Table:
    """Ray Data map_groups UDF over candidates with one text hash: all but the first in input order are duplicates."""
    if group.num_rows < 2:
        return REJECTION_COLUMNS.empty_table()
    group = group.sort_by([("chunk", "ascending"), ("row", "ascending")])
    rest = group.slice(1)
    n = rest.num_rows
    return pa.table(
        {
            "chunk": rest["chunk"],
            "row": rest["row"].cast(pa.int32()),
            "stage": pa.array(["exact_dedup"] * n, pa.string()),
            "reason": pa.array(["exact_duplicate"] * n, pa.string()),
            "duplicate_of": pa.array([group["id"][0].as_py()] * n, pa.string()),
        },
        schema=REJECTION_COLUMNS,
    )


def exact_duplicates_here(chunk_files: list[str]) -> pa.Table:
    """`mark_duplicates` over every candidate, in this process: the same rejections as the Ray groupby, without its
    shuffle. The checkpoints are read in input order (sorted chunk ids, rows in order), so the first row seen with
    a hash is the one the groupby would keep. Holds one dict entry per distinct hash (~200 bytes each)."""
    first: dict[str, str] = {}
    out: dict[str, list] = {"chunk": [], "row": [], "duplicate_of": []}
    for f in chunk_files:
        table = storage.read_table(f, columns=["chunk", "row", "id", "hash", "status"])
        table = table.filter(pa.compute.equal(table["status"], "kept"))
        columns = (table[c].to_pylist() for c in ("chunk", "row", "id", "hash"))
        for chunk, row, doc_id, text_hash in zip(*columns, strict=True):
            if text_hash not in first:
                first[text_hash] = doc_id
                continue
            out["chunk"].append(chunk)
            out["row"].append(row)
            out["duplicate_of"].append(first[text_hash])
    n = len(out["chunk"])
    columns = {**out, "stage": ["exact_dedup"] * n, "reason": ["exact_duplicate"] * n}
    return pa.table([columns[name] for name in REJECTION_COLUMNS.names], schema=REJECTION_COLUMNS)


def with_shard(batch: pa.Table, shard_of: dict[str, int]) -> pa.Table:
    """Ray Data UDF: add the output shard of each rejection's chunk (`shard_of`: the plan, one entry per chunk)."""
    return batch.append_column("shard", pa.array([shard_of[c] for c in batch["chunk"].to_pylist()], pa.int32()))


def write_rejections(ds, target: str, shard_of: dict[str, int], num_shards: int) -> None:
    """A global step's rejections -> `target/shard=<k>/` with one file per output shard: hash-partitioned by shard
    first, so the files grow with the output, never with Ray blocks x chunks. `ds`: a Ray Dataset, or a table of
    `REJECTION_COLUMNS` that a step computed in the driver (written from here, one file per shard)."""
    if isinstance(ds, pa.Table):
        table = with_shard(ds, shard_of)
        for shard in sorted(set(table["shard"].to_pylist())):
            rows = table.filter(pa.compute.equal(table["shard"], shard)).drop_columns(["shard"])
            storage.makedirs(storage.join(target, f"shard={shard}"))
            write_parquet_atomic(rows, storage.join(target, f"shard={shard}", "part-00000.parquet"))
        return
    ds = ds.map_batches(with_shard, batch_format="pyarrow", fn_kwargs={"shard_of": shard_of})
    ds.repartition(max(1, min(num_shards, 64)), keys=["shard"]).write_parquet(target, partition_cols=["shard"])


def read_rejections(step_dir: str, shard: int) -> dict[tuple[str, int], tuple[str, str, str | None]]:
    """{(chunk, row): (stage, reason, duplicate_of)} for one output shard from one global step's output."""
    files = storage.glob(storage.join(step_dir, f"shard={shard}", "*.parquet"))
    if not files:
        return {}
    table = pa.concat_tables(
        [storage.read_table(f, columns=["chunk", "row", "stage", "reason", "duplicate_of"]) for f in files]
    )
    return {(r["chunk"], r["row"]): (r["stage"], r["reason"], r["duplicate_of"]) for r in table.to_pylist()}


# --- pass 3: shards --------------------------------------------------------------------------------------------


def footers(chunk_files: list[str]) -> list[dict]:
    """The footer of each checkpoint: its candidates and their bytes (written by `filter_chunks`), the MinHash spec
    of its `bands` column (`minhash`, absent without one) and its rows."""
    metas = storage.parquet_metadata_many(chunk_files)
    return [{**json.loads(m.metadata[b"nanoforge"]), "rows": m.num_rows} for m in metas]


def count_candidates(chunk_files: list[str]) -> int:
    return sum(f["candidates"] for f in footers(chunk_files))


def count_rows(chunk_files: list[str]) -> int:
    """Records in the chunk checkpoints, from their Parquet footers (no data read)."""
    return sum(f["rows"] for f in footers(chunk_files))


def plan_shards(chunk_files: list[str], shard_bytes: int) -> list[list[str]]:
    """Consecutive chunks grouped until their candidate text reaches shard_bytes (from checkpoint footers)."""
    shards: list[list[str]] = [[]]
    size = 0
    for f, footer in zip(chunk_files, footers(chunk_files), strict=True):
        if shards[-1] and size >= shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(chunk_name(f))
        size += footer["candidate_bytes"]
    return shards if shards[0] else []


def _length_bin(n: int) -> int:
    return min(int(math.log2(n + 1)), LENGTH_BINS - 1)


def write_shards(batch: dict, *, settings: dict) -> dict:
    """Ray Data UDF: one shard (index + chunk ids) in; part files written; its counts (JSON) out."""
    work, out = settings["work"], settings["out"]
    results = []
    for index, chunks_json in zip(batch["index"], batch["chunks"], strict=True):
        index = int(index)
        docs, rejected, quarantined = [], [], []
        stats = {"input": 0, "kept": 0, "quarantined": 0, "rejected": Counter(), "pii": Counter(), "sources": {}}
        kept_hist, rejected_hist = [0] * LENGTH_BINS, [0] * LENGTH_BINS
        global_rejects: dict[tuple[str, int], tuple] = {}
        for step in settings["steps"]:  # earlier steps win
            for key, value in read_rejections(storage.join(work, "rejects", step), index).items():
                global_rejects.setdefault(key, value)
        for chunk in json.loads(chunks_json):
            path = storage.join(work, "chunks", f"{chunk}.parquet")
            for r in storage.read_table(path, columns=CHECKPOINT_SCHEMA.names).to_pylist():  # not `bands`
                stats["input"] += 1
                if r["status"] == "quarantined":
                    quarantined.append({k: r[k] for k in QUARANTINE_SCHEMA.names})
                    continue
                src = stats["sources"].setdefault(r["source"], {"input": 0, "kept": 0})
                src["input"] += 1
                if r["status"] == "kept" and (chunk, r["row"]) in global_rejects:
                    stage, reason, dup = global_rejects[(chunk, r["row"])]
                    r.update(status="rejected", stage=stage, reason=reason, duplicate_of=dup)
                    r["text"] = r["text"] if settings["rejected_text"] else None
                if r["status"] == "rejected":
                    stats["rejected"][f"{r['stage']}\t{r['reason']}"] += 1
                    rejected_hist[_length_bin(len(r["text"] or ""))] += 1
                    rejected.append({k: r.get(k) for k in REJECTED_SCHEMA.names})
                    continue
                if settings["pii"]:
                    r["text"], counts = redact_pii(r["text"])
                    stats["pii"].update(counts)
                src["kept"] += 1
                kept_hist[_length_bin(len(r["text"]))] += 1
                docs.append({k: r[k] for k in DOCUMENT_SCHEMA.names})
        name = f"part-{index:05d}.parquet"
        for folder, rows, schema in (
            ("documents", docs, DOCUMENT_SCHEMA),
            ("rejected", rejected, REJECTED_SCHEMA),
            ("quarantine", quarantined, QUARANTINE_SCHEMA),
        ):
            if rows or (folder == "documents" and index == 0):  # documents/ always has a file with the schema
                write_parquet_atomic(pa.Table.from_pylist(rows, schema=schema), storage.join(out, folder, name))
        stats.update(
            kept=len(docs),
            quarantined=len(quarantined),
            kept_length_hist=kept_hist,
            rejected_length_hist=rejected_hist,
        )
        write_json_atomic(stats, storage.join(work, "shards", f"{index:05d}.json"))
        results.append(json.dumps(stats, sort_keys=True))
    return {"stats": results}
