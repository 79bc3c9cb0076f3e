"""Fuzzy dedup at corpus scale: MinHash LSH buckets -> candidate pairs -> connected components across Ray workers.

    dropped = fuzzy_duplicates(docs, parse_spec("fineweb"))   # docs: Ray Dataset of node (uint64), id, text
    # -> Ray Dataset, one row per document to drop: node, cluster (the survivor's node), survivor_id, indexed

No task ever holds the whole corpus, bucket table or graph:
  1. signatures: Ray Data `map_batches` over Arrow batches -> each document's `bands` LSH bucket keys
     (pipelines/dedup/minhash.py); the only pass over the text. In curate it runs in pass 1, per chunk
     (`chunk_bands`: a `bands` column and the spec in the chunk checkpoint), and `curate_step` reads the keys back
     without the text; checkpoints without them, or of another spec, take the pass over the text here.
  2. candidate pairs: rows (bucket, node) hash-partitioned by bucket over P reduce tasks, numpy inside; in a bucket
     every member is linked to the bucket's smallest node (a star: k-1 edges carry all the connectivity of a
     k-clique). Optionally (`jaccard=0.8`) a pair is kept only if the exact Jaccard of its shingle sets reaches it.
  3. connected components: alternating large-star / small-star rounds (Kiveris et al., "Connected Components in
     MapReduce and Beyond", SoCC 2014), each a shuffle of the edges by node over P tasks, until a round changes
     nothing; each component is then a star around its smallest node. A round never emits more edges than it
     got and a task holds one partition, so memory per task is bounded by edges / P, not by the corpus.
  4. survivors: the smallest node of a component is kept, every other member is dropped with that survivor.
     Callers choose what node order means: curate numbers documents in input order (chunk << 32 | row), so the
     first occurrence survives, as in its exact dedup; `hashed_nodes` orders by a hash of the id instead.

The shuffles of steps 2-4 are plain Ray tasks (a map task splits its block into P pieces, reduce task p takes
piece p of every block), not Ray Data `groupby`: a Ray Data hash shuffle starts its aggregator actors anew for
every operation, which cost ~30 s per round on the loaded 2-core dev machine against ~0.05 s for tasks (the
components need 2 shuffles per round). Both spill to disk through the object store the same way.

The driver owns every piece's object ref, so one level costs B x P refs (B blocks; B = P in the components
rounds): ~1.4e8 at 10 TB of Common Crawl (B ~ 1e4, P ~ 1.4e4), more than a driver holds. Above ONE_LEVEL_REFS
(2.5e5: tests and the demo stay one level) a shuffle has two levels: level 1 splits each block into
S = ceil(sqrt(P)) super-partitions (B x S refs); level 2 takes S blocks at a time and splits each of their
super-partitions into its P / S partitions (ceil(B / S) x P refs). That is O(B x sqrt(P) + P) refs in all
(`shuffle_refs`): at 10 TB ~2.4e6 for the buckets and ~3.3e6 per components shuffle (1.96e8 with one level), for
~2B + P tasks instead of B + P. Both levels cut with a stable sort and keep block order, so reduce task p receives
the same rows in the same order and the result is the same bit for bit.
Memory per task stays as with one level: a reduce task holds one partition (rows / P), a map task one block (a
signature block, or in the later shuffles one partition of the previous one: rows / P), a level-2 task S pieces of
~1/S block each (rows are hashed evenly over the super-partitions), i.e. about one block.
Every intermediate lives in the object store, owned by the driver: a driver that dies restarts the step from the
signatures (curate reruns the global step from the band keys in the chunk checkpoints, which are reused; the text
is not read again).

Cross-dataset dedup: `save_index(sigs, dropped, path)` stores one row per (bucket, survivor node) and the ids of
the kept documents; `fuzzy_duplicates(..., index=path)` adds the indexed rows with nodes below every new node (new
nodes are offset by 2**63), so a new document sharing a bucket with an indexed one joins a component whose
smallest node is the indexed document: the new document is dropped, indexed documents are never reported.

Length (~580 lines): the shuffle, the components rounds, the survivors and the saved index are one algorithm over
the same (bucket, node) rows, sharing curate's shuffle helpers; split, each piece would be read without the
invariants stated above. The signatures live apart in minhash.py.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core import storage
from pipelines.dedup.minhash import MinhashParams, band_keys, shingles, signatures, xxh64_spans

NEW = np.uint64(1 << 63)  # offset of new documents' nodes; indexed documents keep theirs (< 2**63)
DROPPED_SCHEMA = pa.schema(
    [("node", pa.uint64()), ("cluster", pa.uint64()), ("survivor_id", pa.string()), ("indexed", pa.bool_())]
)


def hashed_nodes(ids: list[str]) -> np.ndarray:
    """uint64 nodes below 2**63 from string ids, for callers without an input order (collisions ~ n**2 / 2**64)."""
    buf = "\n".join(ids).encode()
    lens = np.fromiter((len(i.encode()) for i in ids), dtype=np.int64, count=len(ids))
    starts = np.concatenate([[0], np.cumsum(lens + 1)[:-1]]).astype(np.int64)
    return xxh64_spans(buf, starts, lens) >> np.uint64(1)


# ---------------------------------------------------------------------------------------------------------------
# signatures (Ray Data, the pass over the text)


def _signature_batch(batch: pa.Table, params: MinhashParams, with_shingles: bool) -> pa.Table:
    """(node, id, text) -> (node + 2**63, id, keys [bands]) for the documents that have at least one n-gram."""
    texts = batch.column("text").to_pylist()
    sigs, valid = signatures(texts, params)
    nodes = batch.column("node").to_numpy().astype(np.uint64)
    if len(nodes) and nodes.max() >= NEW:
        raise ValueError("fuzzy_duplicates: nodes must be below 2**63")
    cols = {
        "node": pa.array(nodes[valid] | NEW, pa.uint64()),
        "id": batch.column("id").filter(pa.array(valid)),
        "keys": pa.FixedSizeListArray.from_arrays(pa.array(band_keys(sigs[valid], params).reshape(-1)), params.bands),
    }
    if with_shingles:  # sorted unique shingle hashes, for the exact Jaccard check
        h, offsets = shingles([t for t, v in zip(texts, valid, strict=True) if v], params)
        sets = [np.unique(h[a:b]) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        ends = np.cumsum([len(s) for s in sets], dtype=np.int64)
        flat = pa.array(np.concatenate(sets) if sets else np.zeros(0, np.uint64), pa.uint64())
        cols["shingles"] = pa.ListArray.from_arrays(pa.array(np.concatenate([[0], ends]), pa.int64()), flat)
    return pa.table(cols)


def signature_table(docs, params: MinhashParams, with_shingles: bool = False):
    """Materialized Ray Dataset (node + 2**63, id, keys[, shingles]) of the documents with at least one n-gram."""
    fn_kwargs = {"params": params, "with_shingles": with_shingles}
    return docs.map_batches(_signature_batch, batch_format="pyarrow", fn_kwargs=fn_kwargs).materialize()


# ---------------------------------------------------------------------------------------------------------------
# a shuffle made of Ray tasks: map tasks split blocks by key % P, reduce task p combines piece p of every block

ONE_LEVEL_REFS = 250_000  # blocks x partitions up to which a shuffle splits every block into P pieces directly


def _two_level(blocks: int, partitions: int) -> tuple[int, int] | None:
    """None for a one-level shuffle, else (width, supers): S = ceil(sqrt(P)) super-partitions of `width`
    consecutive partitions (the last may be narrower), `supers` of them."""
    if blocks * partitions <= ONE_LEVEL_REFS or partitions < 4:
        return None
    width = -(-partitions // (math.isqrt(partitions - 1) + 1))
    return width, -(-partitions // width)


def shuffle_refs(blocks: list[int], partitions: int) -> int:
    """Object refs the driver creates in one shuffle of sources of `blocks` blocks each over `partitions`:
    one level B*P + 2P; two levels B*S + sum(ceil(B_i / S)) * P + 2P, i.e. O(B*sqrt(P) + P)."""
    levels = _two_level(sum(blocks), partitions)
    if levels is None:
        return sum(blocks) * partitions + 2 * partitions
    supers = levels[1]
    return sum(b * supers + -(-b // supers) * partitions for b in blocks) + 2 * partitions


def _cut(cols: dict, piece: np.ndarray, n: int):
    """Rows -> n pieces by piece index, each piece's rows in their input order (a stable sort)."""
    order = np.argsort(piece, kind="stable")
    bounds = np.searchsorted(piece[order], np.arange(n + 1, dtype=piece.dtype))
    pieces = [{k: v[order[a:b]] for k, v in cols.items()} for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return pieces if n > 1 else pieces[0]


def _split(block, to_rows, partitions: int, kwargs: dict, width: int = 1):
    """Map: a block -> ceil(P / width) pieces, piece i the rows of partitions [i * width, (i + 1) * width).
    width > 1 (level 1 of two) keeps each row's partition in a column `_part` for level 2."""
    cols, key = to_rows(block, **kwargs)
    part = key % np.uint64(partitions)
    if width > 1:
        cols = {**cols, "_part": part.astype(np.uint32)}
    return _cut(cols, part // np.uint64(width), -(-partitions // width))


def _regroup(lo: int, n: int, *pieces):
    """Level 2: one super-partition's level-1 pieces of a group of blocks, in block order -> n pieces, one per
    partition lo .. lo + n - 1, rows in block order (so reduce task p gets the rows of one level, in its order)."""
    cols = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
    part = cols.pop("_part")
    return _cut(cols, part - np.uint32(lo), n)


def _combine(reduce_fn, counts: list[int], kwargs: dict, *pieces):
    """Concatenate each source's pieces and reduce them; returns (block, number of changed rows)."""
    sources, at = [], 0
    for n in counts:
        group = pieces[at : at + n]
        at += n
        sources.append({k: np.concatenate([p[k] for p in group]) for k in group[0]} if group else {})
    out = reduce_fn(*sources, **kwargs)
    changed = out.get("changed", ()) if isinstance(out, dict) else ()
    return out, int(np.count_nonzero(changed))


def _listed(refs, n: int) -> list:
    return refs if n > 1 else [refs]


def _pieces(blocks: list, to_rows, rows_kwargs: dict, partitions: int, levels: tuple[int, int] | None) -> list:
    """One source's blocks -> rows of P piece refs (row r, piece p: the rows of partition p), in block order.

    One level: a row per block (B*P refs). Two levels: level 1 splits every block into S super-partitions
    (B*S refs); level 2 takes S blocks at a time and splits each super-partition's pieces of them into its
    partitions, a row per group (ceil(B/S) * P refs). A level-2 task holds ~one block (S pieces of ~1/S block)."""
    import ray

    if levels is None:
        split = ray.remote(_split).options(num_returns=partitions)
        return [_listed(split.remote(b, to_rows, partitions, rows_kwargs), partitions) for b in blocks]
    width, supers = levels
    split = ray.remote(_split).options(num_returns=supers)
    level1 = [_listed(split.remote(b, to_rows, partitions, rows_kwargs, width), supers) for b in blocks]
    regroup, rows = ray.remote(_regroup), []
    for g in range(0, len(level1), supers):
        row = []
        for s in range(supers):
            n = min(width, partitions - s * width)
            refs = regroup.options(num_returns=n).remote(s * width, n, *[p[s] for p in level1[g : g + supers]])
            row += _listed(refs, n)
        rows.append(row)
    return rows


def _shuffle(sources: list[tuple[list, object, dict]], reduce_fn, partitions: int, **kwargs) -> tuple[list, int]:
    """sources: (block refs, to_rows(block) -> (columns, uint64 key), kwargs). Returns (refs of P blocks, changed).

    Reduce task p gets, per source, the rows of partition p in block order whatever the levels, so the result is
    the same bit for bit; the driver creates `shuffle_refs` object refs (two levels above ONE_LEVEL_REFS)."""
    import ray

    levels = _two_level(sum(len(blocks) for blocks, _, _ in sources), partitions)
    combine = ray.remote(_combine).options(num_returns=2)
    pieces = [_pieces(blocks, to_rows, rows_kwargs, partitions, levels) for blocks, to_rows, rows_kwargs in sources]
    counts = [len(rows) for rows in pieces]
    outs = [
        combine.remote(reduce_fn, counts, kwargs, *[row[p] for rows in pieces for row in rows])
        for p in range(partitions)
    ]
    return [o[0] for o in outs], sum(ray.get([o[1] for o in outs]))


# ---------------------------------------------------------------------------------------------------------------
# map and reduce functions (numpy)


def _bucket_rows(block: pa.Table, by: str = "bucket") -> tuple[dict, np.ndarray]:
    """Signature block -> one row per (bucket, node), keyed by bucket (or by node)."""
    keys = block.column("keys")
    bucket = keys.combine_chunks().flatten().to_numpy()  # [docs * bands], a document's bands consecutive
    rows = {"bucket": bucket, "node": np.repeat(block.column("node").to_numpy(), keys.type.list_size)}
    return rows, rows[by]


def _index_rows(block: pa.Table) -> tuple[dict, np.ndarray]:
    bucket = block.column("bucket").to_numpy()
    return {"bucket": bucket, "node": block.column("node").to_numpy()}, bucket


def _edge_rows(block: dict) -> tuple[dict, np.ndarray]:
    """Edges {a, b} -> rows (u, v) in both directions, keyed by u."""
    u = np.concatenate([block["a"], block["b"]])
    v = np.concatenate([block["b"], block["a"]])
    return {"u": u, "v": v}, u


def _smallest_per_run(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort by (key, value); the sorted keys and values and, per row, the smallest value of its key."""
    order = np.lexsort((values, keys))
    keys, values = keys[order], values[order]
    first = np.concatenate([[True], keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, bool)
    return keys, values, values[first][np.cumsum(first) - 1]


def _unique_edges(a: np.ndarray, b: np.ndarray, changed: np.ndarray) -> dict:
    """Drop repeated edges; an edge counts as changed if any of its copies is."""
    order = np.lexsort((b, a))
    a, b, changed = a[order], b[order], changed[order]
    if not len(a):
        return {"a": a, "b": b, "changed": changed}
    first = np.flatnonzero(np.concatenate([[True], (a[1:] != a[:-1]) | (b[1:] != b[:-1])]))
    return {"a": a[first], "b": b[first], "changed": np.logical_or.reduceat(changed, first)}


def _star_edges(rows: dict, indexed: dict | None = None) -> dict:
    """(bucket, node) rows of whole buckets -> edges (a, b): b the smallest node of a bucket that a is in."""
    if indexed:
        rows = {k: np.concatenate([rows[k], indexed[k]]) for k in ("bucket", "node")}
    if not rows:
        return _unique_edges(*(np.zeros(0, np.uint64),) * 2, np.zeros(0, bool))
    _, node, smallest = _smallest_per_run(rows["bucket"], rows["node"])
    keep = node != smallest
    return _unique_edges(node[keep], smallest[keep], np.zeros(keep.sum(), bool))


def _large_star(rows: dict) -> dict:
    """Each node u links its larger neighbors to m(u), the smallest node of u's closed neighborhood."""
    if not rows:
        return _star_edges({})
    u, v, smallest = _smallest_per_run(rows["u"], rows["v"])
    m = np.minimum(u, smallest)
    up = v > u
    return _unique_edges(v[up], m[up], changed=m[up] != u[up])


def _small_star(rows: dict) -> dict:
    """Each node u links itself and its smaller neighbors to the smallest of them."""
    if not rows:
        return _star_edges({})
    down = rows["v"] < rows["u"]
    u, v, m = _smallest_per_run(rows["u"][down], rows["v"][down])
    first = np.concatenate([[True], u[1:] != u[:-1]]) if len(u) else np.zeros(0, bool)
    run = np.cumsum(first) - 1
    several = np.bincount(run)[run] > 1 if len(u) else first  # only a node with 2+ smaller neighbors changes
    return _unique_edges(np.where(v == m, u, v), m, changed=several)


def connected_components(edge_blocks: list, partitions: int, max_rounds: int = 64) -> list:
    """Refs of edge blocks {a, b} -> refs of blocks (a, b): each non-smallest node a with b its component's
    smallest."""
    for _ in range(max_rounds):
        edge_blocks, large = _shuffle([(edge_blocks, _edge_rows, {})], _large_star, partitions)
        edge_blocks, small = _shuffle([(edge_blocks, _edge_rows, {})], _small_star, partitions)
        if not large and not small:
            return edge_blocks
    raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")


def _keyed(block, key: str, cols: tuple[str, ...]) -> tuple[dict, np.ndarray]:
    """Generic map: select columns (Arrow or numpy block), keyed by one of them."""
    get = (lambda c: block.column(c).to_numpy(zero_copy_only=False)) if isinstance(block, pa.Table) else block.get
    out = {c: get(c) for c in cols}
    return out, out[key]


def _lookup(keys: np.ndarray, table_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index into `table_keys` of each key, and whether it is there."""
    if not len(table_keys):
        return np.zeros(len(keys), np.int64), np.zeros(len(keys), bool)
    order = np.argsort(table_keys, kind="stable")
    pos = np.minimum(np.searchsorted(table_keys[order], keys), len(table_keys) - 1)
    return order[pos], table_keys[order][pos] == keys


def _attach_survivor(edges: dict, ids: dict, index_ids: dict | None = None) -> pa.Table:
    """Edges (a = dropped, b = survivor) + ids (node, id) -> DROPPED_SCHEMA rows for new documents."""
    if index_ids:
        ids = {k: np.concatenate([ids.get(k, np.zeros(0, v.dtype)), v]) for k, v in index_ids.items()}
    if not edges:
        return DROPPED_SCHEMA.empty_table()
    new = edges["a"] >= NEW  # only new documents are dropped; indexed ones are never reported
    a, b = edges["a"][new], edges["b"][new]
    at, found = _lookup(b, ids["node"] if ids else np.zeros(0, np.uint64))
    if not found.all():
        raise RuntimeError("fuzzy dedup: a cluster's survivor has no id (does the index belong to these params?)")
    indexed = b < NEW
    cols = [a - NEW, np.where(indexed, b, b - NEW), ids["id"][at] if len(at) else np.zeros(0, object), indexed]
    return pa.Table.from_arrays(
        [pa.array(c, f.type) for c, f in zip(cols, DROPPED_SCHEMA, strict=True)], schema=DROPPED_SCHEMA
    )


def _carry_shingles(edges: dict, sets: dict, threshold: float | None = None) -> dict:
    """Pass 1 (keyed by a): attach a's shingle set. Pass 2 (keyed by b): keep pairs with Jaccard >= threshold."""
    if not edges:
        return {}
    at, found = _lookup(edges["a" if threshold is None else "b"], sets["node"])
    if threshold is None:
        return {"a": edges["a"][found], "b": edges["b"][found], "sa": sets["shingles"][at[found]]}
    keep = np.zeros(len(at), bool)
    for i in np.flatnonzero(found):
        x, y = edges["sa"][i], sets["shingles"][at[i]]
        inter = len(np.intersect1d(x, y, assume_unique=True))
        keep[i] = inter >= threshold * (len(x) + len(y) - inter)
    return {"a": edges["a"][keep], "b": edges["b"][keep]}


# ---------------------------------------------------------------------------------------------------------------
# the pipeline


def _partitions(rows: int, num_partitions: int | None) -> int:
    """At least 2 per CPU, and enough for ~2M rows each (bounded memory per task)."""
    import ray

    cpus = int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    return num_partitions or max(2 * cpus, -(-rows // 2_000_000))


def fuzzy_duplicates(
    docs,
    params: MinhashParams,
    *,
    index: str | Path | None = None,
    jaccard: float | None = None,
    num_partitions: int | None = None,
    sigs=None,
):
    """Ray Dataset (node: uint64 < 2**63, id, text) -> Ray Dataset of the documents to drop (DROPPED_SCHEMA):
    node, cluster (the survivor's node), survivor_id, indexed (the survivor is a document of `index`).

    `sigs`: `signature_table(docs, params)` when the caller keeps it (e.g. to `save_index` afterwards).
    """
    import ray

    table = sigs if sigs is not None else signature_table(docs, params, with_shingles=bool(jaccard))
    parts = _partitions(table.count() * params.bands, num_partitions)
    sigs = table.to_arrow_refs()
    bucket_sources = [(sigs, _bucket_rows, {})]
    id_sources = [(sigs, _keyed, {"key": "node", "cols": ("node", "id")})]
    if index is not None:  # workers read the index files (the driver holds only their refs)
        read = ray.remote(storage.read_table)
        bucket_sources.append(
            ([read.remote(f) for f in storage.glob(storage.join(index, "buckets", "*.parquet"))], _index_rows, {})
        )
        id_sources.append(
            (
                [read.remote(f) for f in storage.glob(storage.join(index, "ids", "*.parquet"))],
                _keyed,
                {"key": "node", "cols": ("node", "id")},
            )
        )
    edges, _ = _shuffle(bucket_sources, _star_edges, parts)
    if jaccard:
        sets = [(sigs, _keyed, {"key": "node", "cols": ("node", "shingles")})]
        edges, _ = _shuffle([(edges, _keyed, {"key": "a", "cols": ("a", "b")}), *sets], _carry_shingles, parts)
        edges, _ = _shuffle(
            [(edges, _keyed, {"key": "b", "cols": ("a", "b", "sa")}), *sets], _carry_shingles, parts, threshold=jaccard
        )
    components = connected_components(edges, parts)
    dropped, _ = _shuffle(
        [(components, _keyed, {"key": "b", "cols": ("a", "b")}), *id_sources], _attach_survivor, parts
    )
    return ray.data.from_arrow_refs(dropped)


def save_index(sigs, dropped, path: str | Path, num_partitions: int | None = None) -> None:
    """Write the LSH index of a run to `path`: `buckets/` (bucket, node) one row per bucket, node the survivor of
    the bucket's cluster; `ids/` (node, id) of the kept documents. Documents dropped as duplicates of an older
    index are left out (that index has them). Nodes are the run's own numbering (< 2**63). `path` may be a URL;
    each partition is written by a worker, nothing passes through the driver."""
    import ray

    path = str(path)
    bands = sigs.schema().base_schema.field("keys").type.list_size
    parts = _partitions(sigs.count() * bands, num_partitions)  # ~2M (bucket, node) rows a task, as in the dedup
    sigs, moved = sigs.to_arrow_refs(), dropped.to_arrow_refs()
    roots, _ = _shuffle(
        [(sigs, _keyed, {"key": "node", "cols": ("node", "id")}), (moved, _moved_rows, {})], _survivor_of, parts
    )
    entries, _ = _shuffle(
        [(sigs, _bucket_rows, {"by": "node"}), (roots, _keyed, {"key": "node", "cols": ("node", "root")})],
        _bucket_entries,
        parts,
    )
    write = ray.remote(_write_index_part)
    writes = []
    for folder, refs in (("buckets", entries), ("ids", roots)):
        storage.remove(storage.join(path, folder))  # a rerun may have another number of partitions
        storage.makedirs(storage.join(path, folder))
        writes += [
            write.remote(block, storage.join(path, folder, f"part-{i:05d}.parquet"), folder)
            for i, block in enumerate(refs)
        ]
    ray.get(writes)


def _write_index_part(block: dict, path: str, folder: str) -> None:
    storage.write_parquet(_one_per_bucket(block) if folder == "buckets" else _kept_ids(block), path)


def _moved_rows(block: pa.Table) -> tuple[dict, np.ndarray]:
    node = block.column("node").to_numpy() | NEW
    cluster = block.column("cluster").to_numpy()
    indexed = block.column("indexed").to_numpy(zero_copy_only=False)
    return {"node": node, "root": np.where(indexed, cluster, cluster | NEW), "indexed": indexed}, node


def _survivor_of(docs: dict, moved: dict) -> dict:
    """Each document of the run -> its survivor (itself if kept); those dropped for an older index left out."""
    if not docs:
        return {}
    at, found = _lookup(docs["node"], moved.get("node", np.zeros(0, np.uint64)))
    root = np.where(found, moved["root"][at] if found.any() else 0, docs["node"])
    indexed = found & (moved["indexed"][at] if found.any() else False)
    return {"node": docs["node"][~indexed], "root": root[~indexed], "id": docs["id"][~indexed]}


def _bucket_entries(rows: dict, roots: dict) -> dict:
    if not rows:
        return {}
    at, found = _lookup(rows["node"], roots.get("node", np.zeros(0, np.uint64)))
    return {"bucket": rows["bucket"][found], "node": roots["root"][at[found]] - NEW}


def _one_per_bucket(block: dict) -> pa.Table:
    if not block:
        return pa.table({"bucket": pa.array([], pa.uint64()), "node": pa.array([], pa.uint64())})
    bucket, node, smallest = _smallest_per_run(block["bucket"], block["node"])
    first = np.concatenate([[True], bucket[1:] != bucket[:-1]]) if len(bucket) else np.zeros(0, bool)
    return pa.table({"bucket": pa.array(bucket[first], pa.uint64()), "node": pa.array(smallest[first], pa.uint64())})


def _kept_ids(block: dict) -> pa.Table:
    """(node, id) of a partition's kept documents, by node: rows arrive in shuffle order, the file must not."""
    kept = block["node"] == block["root"] if block else np.zeros(0, bool)
    node = block["node"][kept] - NEW if block else np.zeros(0, np.uint64)
    ids = np.asarray(block["id"], dtype=object)[kept] if block else np.zeros(0, object)
    order = np.argsort(node, kind="stable")
    return pa.table({"node": pa.array(node[order], pa.uint64()), "id": pa.array(ids[order], pa.string())})


# ---------------------------------------------------------------------------------------------------------------
# curate's global step


def chunk_bands(table: pa.Table, spec: dict) -> pa.Array:
    """A chunk checkpoint's `bands` column (list<uint64>), computed in curate's pass 1: each kept candidate's LSH
    band keys under `spec` (`dataclasses.asdict` of MinhashParams), exactly `_signature_batch`'s `keys` for that
    document; null for the other rows and for a candidate without a single n-gram (it has no signature)."""
    params = MinhashParams(**spec)
    kept = np.flatnonzero(pc.fill_null(pc.equal(table["status"], "kept"), False).to_numpy(zero_copy_only=False))
    sigs, valid = signatures(table["text"].take(pa.array(kept, pa.int64())).to_pylist(), params)
    has = np.zeros(table.num_rows, bool)
    has[kept[valid]] = True
    keys = band_keys(sigs[valid], params).reshape(-1)
    offsets = np.concatenate([[0], np.cumsum(has * params.bands)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(keys, pa.uint64()), mask=pa.array(~has))


def _nodes(batch: pa.Table, chunk_index: dict[str, int]) -> np.ndarray:
    """node = chunk index << 32 | row: input order."""
    chunk = np.array([chunk_index[c] for c in batch["chunk"].to_pylist()], dtype=np.uint64)
    return (chunk << np.uint64(32)) | batch["row"].to_numpy().astype(np.uint64)


def _curate_nodes(batch: pa.Table, chunk_index: dict[str, int]) -> pa.Table:
    """Kept candidates -> (node, id, text) with node = chunk index << 32 | row: input order."""
    batch = batch.filter(pc.equal(batch["status"], "kept"))
    node = _nodes(batch, chunk_index)
    return pa.table({"node": pa.array(node, pa.uint64()), "id": batch["id"], "text": batch["text"]})


def _curate_bands(batch: pa.Table, chunk_index: dict[str, int], bands: int) -> pa.Table:
    """Kept candidates with `bands` from pass 1 -> the rows `signature_table` makes of their text: (node + 2**63,
    id, keys [bands]), the candidates without an n-gram (null bands) left out."""
    batch = batch.filter(pc.and_(pc.equal(batch["status"], "kept"), pc.is_valid(batch["bands"])))
    keys = pc.list_flatten(batch["bands"]).to_numpy().astype(np.uint64)
    return pa.table(
        {
            "node": pa.array(_nodes(batch, chunk_index) | NEW, pa.uint64()),
            "id": batch["id"],
            "keys": pa.FixedSizeListArray.from_arrays(pa.array(keys, pa.uint64()), bands),
        }
    )


def _curate_rejections(batch: pa.Table, chunk_names: list[str]) -> pa.Table:
    from pipelines.curation.chunks import REJECTION_COLUMNS

    node = batch["node"].to_numpy()
    n = len(node)
    return pa.table(
        {
            "chunk": pa.array([chunk_names[i] for i in (node >> np.uint64(32)).tolist()], pa.string()),
            "row": pa.array((node & np.uint64(0xFFFFFFFF)).astype(np.int32)),
            "stage": pa.array(["fuzzy_dedup"] * n, pa.string()),
            "reason": pa.array(["fuzzy_duplicate"] * n, pa.string()),
            "duplicate_of": batch["survivor_id"],
        },
        schema=REJECTION_COLUMNS,
    )


def curate_step(chunk_files: list[str], cfg):
    """curate's global step: near-duplicates among the kept candidates of every chunk, as REJECTION_COLUMNS rows
    (`fuzzy_duplicate`, duplicate_of = the survivor's id, which also names the cluster).

    The first occurrence in input order survives, as in exact dedup. The run's LSH index is saved next to the
    documents (`<output_dir>/lsh_index`); `cfg.fuzzy_dedup_index` names an earlier run's index to dedup against.
    The band keys come from the checkpoints (`chunk_bands`, pass 1) when every one holds them for this spec, and
    the text is not read; otherwise (an older curate's checkpoints, another spec) from the text, the same keys.
    """
    import ray

    from pipelines.curation.chunks import REJECTION_COLUMNS, footers
    from pipelines.dedup.minhash import parse_spec

    if not chunk_files:
        return ray.data.from_arrow(REJECTION_COLUMNS.empty_table())
    params = parse_spec(cfg.fuzzy_dedup)
    names = [storage.basename(f).removesuffix(".parquet") for f in chunk_files]
    index = {c: i for i, c in enumerate(names)}
    if all(f.get("minhash") == dataclasses.asdict(params) for f in footers(chunk_files)):  # pass 1 made the keys
        docs = ray.data.read_parquet(list(chunk_files)).select_columns(["chunk", "row", "id", "status", "bands"])
        fn_kwargs = {"chunk_index": index, "bands": params.bands}
        sigs = docs.map_batches(_curate_bands, batch_format="pyarrow", fn_kwargs=fn_kwargs).materialize()
    else:  # checkpoints of an older curate, or of another spec: the pass over the text
        docs = ray.data.read_parquet(list(chunk_files)).select_columns(["chunk", "row", "id", "text", "status"])
        docs = docs.map_batches(_curate_nodes, batch_format="pyarrow", fn_kwargs={"chunk_index": index})
        sigs = signature_table(docs, params)
    dropped = fuzzy_duplicates(None, params, sigs=sigs, index=getattr(cfg, "fuzzy_dedup_index", "") or None)
    dropped = dropped.materialize()
    out = str(chunk_files[0]).rsplit("/", 3)[0]  # <out>/.work/chunks/<chunk>.parquet
    save_index(sigs, dropped, storage.join(out, "lsh_index"))
    return dropped.map_batches(_curate_rejections, batch_format="pyarrow", fn_kwargs={"chunk_names": names})
