"""Storage is a URL: every path a stage reads or writes may be local, `s3://`, `gs://` (or `hf://` for reading).

    storage.write_json({"chunks": 3}, storage.join(work, "units", "a.json"))   # work: "/runs/x" or "s3://b/x"
    files = storage.glob(storage.join(work, "chunks", "*.parquet"))             # full URLs, sorted

Paths go through fsspec (`s3fs`, `gcsfs` from the `cloud` extra); Parquet through pyarrow with the fsspec
filesystem. Credentials come from where each library looks by itself (AWS_* / GOOGLE_* environment variables,
~/.aws, instance roles, `AWS_ENDPOINT_URL` for an S3-compatible server) and never from a path: `redact` removes
a user:password part or a signed query string before a path is written to a manifest, log or report.

Commit semantics. A local write goes to a temporary name and is renamed, so a reader never sees half a file.
An object store has no rename, but a single PUT (and a multipart upload, on completion) is atomic: an object is
either absent or whole. Artifacts build on that (pipelines/core/artifacts.py): data under the prefix first, the
manifest last as the commit marker.
"""

from __future__ import annotations

import contextlib
import functools
import json
import operator
import os
import re
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def is_remote(path: str | Path) -> bool:
    """True for a URL with a scheme other than file:// (s3://, gs://, hf://, memory://...)."""
    return "://" in str(path) and not str(path).startswith("file://")


def local_path(path: str | Path) -> str:
    return str(path).removeprefix("file://")


def filesystem(path: str | Path) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for `path` and the path inside it (no scheme)."""
    return fsspec.core.url_to_fs(str(path))


def join(base: str | Path, *parts: str) -> str:
    """`base/part/...` for a URL or a local path (str, so one code path serves both)."""
    if not is_remote(base):
        return os.path.join(local_path(base), *parts)
    return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])


def basename(path: str | Path) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def exists(path: str | Path) -> bool:
    fs, p = filesystem(path)
    return fs.exists(p)


def makedirs(path: str | Path) -> None:
    """A local directory; nothing on an object store (prefixes exist by their objects)."""
    if not is_remote(path):
        os.makedirs(local_path(path), exist_ok=True)


def glob(pattern: str | Path) -> list[str]:
    """Sorted matches as full paths or URLs (same form as `pattern`)."""
    fs, p = filesystem(pattern)
    found = sorted(fs.glob(p))
    return [fs.unstrip_protocol(f) for f in found] if is_remote(pattern) else found


def remove(path: str | Path) -> None:
    """Delete a file or everything under a directory/prefix; a missing path is fine."""
    fs, p = filesystem(path)
    if fs.exists(p):
        fs.rm(p, recursive=True)


def count_files(path: str | Path) -> int:
    """Files (objects) under a directory or prefix; 0 for a missing path."""
    fs, p = filesystem(path)
    return len(fs.find(p)) if fs.exists(p) else 0


def read_text(path: str | Path) -> str:
    with fsspec.open(str(path), "r") as f:
        return f.read()


def read_json(path: str | Path) -> Any:
    return json.loads(read_text(path))


def write_text(text: str, path: str | Path) -> None:
    """Whole or absent: a temporary name and a rename locally, one PUT on an object store."""
    write_bytes(text.encode(), path)


def write_bytes(data: bytes, path: str | Path) -> None:
    """Whole or absent, as `write_text`."""
    if is_remote(path):
        with fsspec.open(str(path), "wb") as f:
            f.write(data)
        return
    path = local_path(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}")
    Path(tmp).write_bytes(data)
    os.replace(tmp, path)


def write_json(value: Any, path: str | Path, **dumps: Any) -> None:
    write_text(json.dumps(value, **({"sort_keys": True} | dumps)), path)


def write_parquet(table: pa.Table, path: str | Path) -> None:
    """Same rows and schema give the same bytes (fixed writer options, no timestamps); whole or absent."""
    opts = {"compression": "zstd", "row_group_size": 10_000, "write_statistics": False}
    if is_remote(path):
        fs, p = filesystem(path)
        pq.write_table(table, p, filesystem=fs, **opts)
        return
    path = local_path(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, **opts)
    os.replace(tmp, path)


def read_table(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    fs, p = filesystem(path)
    with _naming(path):
        return pq.read_table(p, columns=columns, filesystem=fs)


@contextlib.contextmanager
def _naming(path: str | Path):
    """Arrow's errors on a file that is not Parquet (or is cut short) name no file: a ConfigError (a ValueError, as
    ArrowInvalid is, so handlers of either still catch it) that names it."""
    from pipelines.core.config import ConfigError

    try:
        yield
    except pa.ArrowInvalid as e:
        raise ConfigError(f"{redact(path)}: not a readable Parquet file ({e})") from e


def read_json_lines(path: str | Path) -> pa.Table:
    """A JSON-lines file (`.gz`, `.zst`... by its extension) as a table, as Ray Data's reader reads it: Arrow with the
    whole file as one block (no line straddles a block), pandas where Arrow refuses the text (a lone surrogate escape,
    which pandas drops)."""
    import io

    import pyarrow.json as pj

    fs, p = filesystem(path)
    with fs.open(p, "rb", compression="infer") as f:
        data = f.read()
    if not data.strip():
        return pa.table({})
    try:
        return pj.read_json(io.BytesIO(data), read_options=pj.ReadOptions(block_size=len(data) + 1))
    except pa.ArrowInvalid:
        import pandas as pd

        return pa.Table.from_pandas(pd.read_json(io.BytesIO(data), lines=True), preserve_index=False)


def runs_writer(path: str | Path, schema: pa.Schema, by: list[str], **options: Any) -> pq.ParquetWriter:
    """A Parquet writer for `write_runs`: statistics on the `by` columns only (those `read_equal` prunes row groups
    by), so a footer holds ~100 bytes a row group, not the min/max of every text column."""
    fs, p = filesystem(path)
    return pq.ParquetWriter(p, schema, filesystem=fs, write_statistics=list(by), **options)


def write_runs(writer: pq.ParquetWriter, table: pa.Table, by: list[str]) -> None:
    """`table` sorted by the (integer or string) columns `by`, a row group per run of equal values, so that a
    reader of one value (`read_equal`) reads only its row groups. One file per writer thus stands for the folder per
    value of a partitioned write, whose files multiply as writers x values (x chunks, where a writer writes in
    chunks)."""
    table = table.take(pc.sort_indices(table, [(c, "ascending") for c in by]))
    change = np.zeros(max(len(table) - 1, 0), bool)
    for c in by:
        values = table[c].to_numpy()
        change |= values[1:] != values[:-1]
    starts = [0, *(np.flatnonzero(change) + 1)]
    for start, end in zip(starts, [*starts[1:], len(table)], strict=True):
        writer.write_table(table.slice(start, end - start), row_group_size=end - start)


def read_equal(root: str | Path, **equal: int | str) -> pa.Table:
    """The rows whose columns equal `equal` (e.g. phase=1, bucket=3) from every Parquet file under `root`, reading
    only the row groups whose statistics may hold them (files written by `write_runs`). A column may also come from
    hive folders (`phase=1/bucket=3/`, a partitioned write's layout). An empty table when none match."""
    import pyarrow.dataset as ds

    fs, p = filesystem(root)
    if not fs.exists(p):
        return pa.table({})
    where = [ds.field(k) == v for k, v in equal.items()]
    data = ds.dataset(p, filesystem=fs, format="parquet", partitioning="hive")
    return data.to_table(filter=functools.reduce(operator.and_, where))


def parquet_metadata(path: str | Path) -> pq.FileMetaData:
    """The footer of one Parquet file (row count, key-value metadata) without reading its data."""
    fs, p = filesystem(path)
    with fs.open(p, "rb") as f, _naming(path):
        return pq.read_metadata(f)


def parquet_metadata_many(paths: list[str], threads: int = 32) -> list[pq.FileMetaData]:
    """Footers of many files, in order, read by a thread pool: on an object store each is a round trip or two."""
    from concurrent.futures import ThreadPoolExecutor

    if len(paths) < 2:
        return [parquet_metadata(p) for p in paths]
    with ThreadPoolExecutor(min(threads, len(paths))) as pool:
        return list(pool.map(parquet_metadata, paths))


_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")
_SECRET_QUERY = re.compile(r"\?.*$")


def redact(path: str | Path) -> str:
    """`path` without credentials a user may have put in it (`s3://KEY:SECRET@bucket/x`, `https://...?X-Amz-...`)."""
    text = _USERINFO.sub(r"\1", str(path))
    return _SECRET_QUERY.sub("", text) if is_remote(text) else text
