"""Reading raw shards for `curate`: find the files, cut them into chunks below file level, quarantine what is
unreadable.

Formats (by file name): JSONL (`.jsonl`, `.json`, `.ndjson`, optionally `.gz` / `.zst`), Parquet (`.parquet`),
WARC/WET (`.warc`, `.wet`, `.arc`, optionally `.gz`; HTML is turned into text later, in parallel) and plain text
(`.txt`: one file is one document). Paths are local paths, globs, directories or fsspec URLs (`s3://`, `hf://`).

Work is split below file level so one big file does not serialize the job: a reader task streams one *unit*
(a whole JSONL/WARC file, or a group of Parquet row groups) and cuts it into *chunks* of about `chunk_bytes`;
each chunk is one Ray block, filtered by whichever worker is free. Chunk ids are a pure function of the input
and the config (`<file #>-<unit #>-<chunk #>`, zero-padded so they sort in input order), which is what makes
the output deterministic and the run resumable chunk by chunk.

A chunk's payload is a pickled list of items, one per input record, in input order:
  ("line", line_no, bytes)            a JSONL line (1-based line number), parsed by the worker
  ("row", row_no, dict)               a Parquet row (0-based row number in the file)
  ("warc", record_no, headers, bytes) a WARC response/conversion record (0-based record number)
  ("text", 1, bytes)                  a whole `.txt` file
  ("error", line_or_row, message, raw_bytes)   unreadable input: becomes one quarantine row
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import fsspec

from pipelines.core.config import ConfigError

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
WARC_SUFFIXES = (".warc", ".wet", ".arc")
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}


@dataclass
class Unit:
    """One reader task's share of one input file."""

    file_index: int
    unit_index: int
    path: str  # as fsspec understands it
    label: str  # short stable name for derived ids ("shard-00001.jsonl.gz")
    source: str  # the `source` column of this file's documents
    kind: str  # jsonl | parquet | warc | text | broken
    compression: str | None = None
    row_groups: list[int] = field(default_factory=list)  # parquet: which row groups
    first_row: int = 0  # parquet: row number of the first row of the first row group
    error: str = ""  # broken: why the file cannot be read at all

    @property
    def prefix(self) -> str:
        return f"{self.file_index:06d}-{self.unit_index:05d}"


def file_kind(path: str) -> tuple[str, str | None] | None:
    """(kind, compression) from the file name, or None when the format is unknown."""
    name = PurePosixPath(path).name.lower()
    compression = None
    for suffix, comp in COMPRESSIONS.items():
        if name.endswith(suffix):
            name, compression = name[: -len(suffix)], comp
            break
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl", compression
    if name.endswith(WARC_SUFFIXES) or ".warc." in name:  # CommonCrawl's *.warc.wet.gz / *.warc.wat.gz
        return "warc", compression
    if name.endswith(".parquet") and compression is None:
        return "parquet", None
    if name.endswith(".txt"):
        return "text", compression
    return None


def expand_inputs(paths: list[str]) -> list[str]:
    """Every input file, in a stable order: each path as given, globs and directories sorted.

    Raises ConfigError before any work starts when a path matches nothing or names a file of unknown format.
    Inside a directory, files of unknown format are left out (and listed by `skipped_files`).
    """
    if not paths:
        raise ConfigError("no input: set input_paths in the YAML or pass --input_paths PATH [PATH ...]")
    files: list[str] = []
    for path in paths:
        fs, root = fsspec.core.url_to_fs(path)
        if any(ch in path for ch in "*?["):
            found = sorted(p for p in fs.glob(root) if fs.isfile(p))
            if not found:
                raise ConfigError(f"input not found: no file matches {path!r}")
        elif fs.isdir(root):
            found = sorted(p for p in fs.find(root) if file_kind(p) is not None)
            if not found:
                raise ConfigError(f"input not found: directory {path!r} holds no .jsonl/.parquet/.warc/.txt files")
        elif fs.isfile(root):
            found = [root]
        else:
            raise ConfigError(f"input not found: {path!r} does not exist (check input_paths)")
        for p in found:
            if file_kind(p) is None:
                raise ConfigError(
                    f"{p}: cannot tell the format from the name; expected .jsonl/.json/.ndjson[.gz|.zst], .parquet, "
                    ".warc/.wet[.gz] or .txt"
                )
            files.append(fs.unstrip_protocol(p) if "://" in path else p)
    return files


def skipped_files(paths: list[str]) -> list[str]:
    """Files inside input directories that `expand_inputs` leaves out because their format is unknown."""
    out = []
    for path in paths:
        fs, root = fsspec.core.url_to_fs(path)
        if not any(ch in path for ch in "*?[") and fs.isdir(root):
            out += sorted(p for p in fs.find(root) if file_kind(p) is None)
    return out


def labels_for(files: list[str]) -> list[str]:
    """Short names for derived ids: the file name, or the path below the common parent when names collide."""
    names = [PurePosixPath(f).name for f in files]
    if len(set(names)) == len(names):
        return names
    common = os.path.commonpath([f.split("://")[-1] for f in files])
    return [os.path.relpath(f.split("://")[-1], common) for f in files]


def plan_units(files: list[str], chunk_bytes: int, text_field: str, source: str = "") -> list[Unit]:
    """Cut every file into reader units. Parquet footers are read here (cheap), so a Parquet file without the
    text column fails before any work starts; a file whose footer cannot be read becomes a `broken` unit."""
    units = []
    for i, (path, label) in enumerate(zip(files, labels_for(files), strict=True)):
        kind, compression = file_kind(path)
        src = source or PurePosixPath(path.split("://")[-1]).parent.name or "default"
        base = dict(file_index=i, path=path, label=label, source=src, kind=kind, compression=compression)
        if kind != "parquet":
            units.append(Unit(unit_index=0, **base))
            continue
        try:
            meta = _parquet_metadata(path)
        except Exception as e:  # noqa: BLE001  (any unreadable footer: quarantine, not crash)
            units.append(
                Unit(unit_index=0, **{**base, "kind": "broken"}, error=f"{path}: not a readable Parquet file: {e}")
            )
            continue
        top = text_field.split(".")[0]
        names = meta.schema.to_arrow_schema().names
        if top not in names:
            raise ConfigError(
                f"{path}: no column {top!r} for text_field={text_field!r}; columns are: {', '.join(names)}"
            )
        if meta.num_rows == 0:
            units.append(Unit(unit_index=0, **{**base, "kind": "broken"}, error=f"{path}: empty file (no rows)"))
            continue
        groups, size, row, first = [], 0, 0, 0
        for g in range(meta.num_row_groups):  # group row groups up to chunk_bytes so tiny groups share a task
            rg = meta.row_group(g)
            if groups and size + rg.total_byte_size > chunk_bytes:
                units.append(Unit(unit_index=_next_index(units, i), row_groups=groups, first_row=first, **base))
                groups, size, first = [], 0, row
            groups.append(g)
            size += rg.total_byte_size
            row += rg.num_rows
        units.append(Unit(unit_index=_next_index(units, i), row_groups=groups, first_row=first, **base))
    return units


def _next_index(units: list[Unit], file_index: int) -> int:
    """Unit indexes restart at 0 for every file."""
    return sum(u.file_index == file_index for u in units)


def _parquet_metadata(path: str):
    import pyarrow.parquet as pq

    with fsspec.open(path, "rb") as f:
        return pq.ParquetFile(f).metadata


def read_unit(
    unit: Unit,
    *,
    chunk_bytes: int,
    chunk_rows: int,
    max_line_bytes: int,
    raw_chars: int,
    done: frozenset[str] = frozenset(),
) -> Iterator[tuple[str, list]]:
    """Yield (chunk_id, items) for every chunk of `unit` whose id is not in `done` (see the module docstring)."""
    reader = {"jsonl": _jsonl_items, "parquet": _parquet_items, "warc": _warc_items, "text": _text_items}
    if unit.kind == "broken":
        items: Iterator[tuple] = iter([("error", 0, unit.error, b"")])
    else:
        items = reader[unit.kind](unit, max_line_bytes=max_line_bytes, raw_chars=raw_chars)
    chunk: list = []
    size, k = 0, 0
    for item in items:
        chunk.append(item)
        size += _item_size(item)
        if size >= chunk_bytes or len(chunk) >= chunk_rows:
            chunk_id = f"{unit.prefix}-{k:05d}"
            if chunk_id not in done:
                yield chunk_id, chunk
            chunk, size, k = [], 0, k + 1
    if chunk or k == 0:  # a unit always has at least one chunk, so its completion can be recorded
        chunk_id = f"{unit.prefix}-{k:05d}"
        if chunk_id not in done:
            yield chunk_id, chunk


def _item_size(item: tuple) -> int:
    if item[0] in ("line", "text"):
        return len(item[2])
    if item[0] == "warc":
        return len(item[3])
    if item[0] == "row":
        return sum(len(v) if isinstance(v, str | bytes) else 8 for v in item[2].values())
    return len(item[3])


def pack(items: list) -> bytes:
    return pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)


def unpack(payload: bytes) -> list:
    return pickle.loads(payload)  # only ever our own reader's output (see `pack`)


def _open(unit: Unit) -> io.BufferedIOBase:
    """The decompressed byte stream of a JSONL/text file."""
    raw = fsspec.open(unit.path, "rb").open()
    if unit.compression == "gzip":
        return gzip.GzipFile(fileobj=raw)
    if unit.compression == "zstd":
        import zstandard

        return io.BufferedReader(
            zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=True)
        )
    return raw


READ_ERRORS = (EOFError, OSError, zlib.error, ValueError)


def _jsonl_items(unit: Unit, *, max_line_bytes: int, raw_chars: int) -> Iterator[tuple]:
    line_no, records = 0, 0
    try:
        with _open(unit) as f:
            while True:
                line = f.readline(max_line_bytes + 1)
                if not line:
                    break
                line_no += 1
                if len(line) > max_line_bytes and not line.endswith(b"\n"):
                    size = len(line) + _skip_line(
                        f
                    )  # the rest of an oversized line is read in 1 MiB pieces, never held
                    msg = (
                        f"{unit.path}:{line_no}: line is {size:,} bytes, over max_line_bytes={max_line_bytes:,}; "
                        "raise max_line_bytes to read it"
                    )
                    records += 1
                    yield ("error", line_no, msg, line[:raw_chars])
                elif line.strip():
                    records += 1
                    yield ("line", line_no, line)
    except READ_ERRORS as e:
        records += 1
        yield (
            "error",
            line_no + 1,
            f"{unit.path}: cannot read past line {line_no} (truncated or corrupt file?): {e}",
            b"",
        )
    if records == 0:
        yield ("error", 0, f"{unit.path}: empty file (no JSON lines)", b"")


def _skip_line(f: io.BufferedIOBase) -> int:
    skipped = 0
    while True:
        part = f.readline(1 << 20)
        skipped += len(part)
        if not part or part.endswith(b"\n"):
            return skipped


def _text_items(unit: Unit, *, max_line_bytes: int, raw_chars: int) -> Iterator[tuple]:
    try:
        with _open(unit) as f:
            data = f.read(max_line_bytes + 1)
            size = len(data) + (len(f.read()) if len(data) > max_line_bytes else 0)
    except READ_ERRORS as e:
        yield ("error", 1, f"{unit.path}: cannot read (truncated or corrupt file?): {e}", b"")
        return
    if size > max_line_bytes:
        yield (
            "error",
            1,
            f"{unit.path}: file is {size:,} bytes, over max_line_bytes={max_line_bytes:,}",
            data[:raw_chars],
        )
    elif not data.strip():
        yield ("error", 0, f"{unit.path}: empty file", b"")
    else:
        yield ("text", 1, data)


def _parquet_items(unit: Unit, *, max_line_bytes: int, raw_chars: int) -> Iterator[tuple]:
    import pyarrow.parquet as pq

    row = unit.first_row
    try:
        with fsspec.open(unit.path, "rb") as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=1024, row_groups=unit.row_groups):
                for record in batch.to_pylist():
                    yield ("row", row, record)
                    row += 1
    except Exception as e:  # noqa: BLE001  (a corrupt row group: quarantine the rest of the unit)
        yield ("error", row, f"{unit.path}: cannot read row group(s) {unit.row_groups} from row {row}: {e}", b"")


def _warc_items(unit: Unit, *, max_line_bytes: int, raw_chars: int) -> Iterator[tuple]:
    """Response records (HTML), `resource` records and WET `conversion` records (text); other record types
    (warcinfo, request, metadata, revisit) hold no document and are not counted as input."""
    from warcio.archiveiterator import ArchiveIterator

    index, documents = -1, 0
    try:
        with fsspec.open(unit.path, "rb") as f:
            for index, record in enumerate(ArchiveIterator(f)):
                if record.rec_type not in ("response", "conversion", "resource"):
                    continue
                headers = {k: v for k, v in record.rec_headers.headers}
                headers["rec_type"] = record.rec_type
                if record.http_headers is not None:
                    headers["http_content_type"] = record.http_headers.get_header("Content-Type") or ""
                content = record.content_stream().read(max_line_bytes + 1)
                documents += 1
                if len(content) > max_line_bytes:
                    msg = f"{unit.path}: record {index} is over max_line_bytes={max_line_bytes:,}"
                    yield ("error", index, msg, content[:raw_chars])
                else:
                    yield ("warc", index, headers, content)
    except Exception as e:  # noqa: BLE001  (warcio raises many kinds on a damaged archive)
        documents += 1
        yield ("error", index + 1, f"{unit.path}: cannot read past record {index} (truncated or corrupt?): {e}", b"")
    if documents == 0 and index < 0:
        yield ("error", 0, f"{unit.path}: empty file (no WARC records)", b"")


def json_default(value):
    """JSON for values Parquet hands back (dates, bytes, numpy scalars) in `metadata`."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def to_json(value) -> str:
    return json.dumps(value, ensure_ascii=False, default=json_default)
