"""synth: prompts -> reasoning traces, generated (or replayed), verified against the gold answer.

Local:    nanoforge synth --config pipelines/configs/synth_demo.yaml
Cluster:  RAY_ADDRESS=ray://head:10001 nanoforge synth --config pipelines/configs/synth_nano2.yaml

Plan, one Ray Data stream: read prompts (local JSONL/Parquet or a Hub dataset, in file order) -> `SamplePlanner`, one
actor fed in order: map to `messages` + gold `answer` by `prompt_format` (reasoning/prompt_formats.py), drop
duplicates and eval-set contamination (reasons recorded), one row per sample (`id = "{prompt_id}:{k}"`, reasoning mode
and sampling parameters per row, `seq` = its place in the run) -> backend (reasoning/backends.py) -> verify
(reasoning/verify.py) -> `TraceWriter` (reasoning/traces.py), a Ray actor that writes each shard of `shard_rows`
consecutive samples once it is complete and keeps the counts. The driver holds neither prompts nor samples: it
starts the stream, reads one small row per batch (shards written so far), and asks the writer for the last shard
and the counts at the end. Same config and seed, same shards, byte for byte (unless `seeded: false`). Prompts may
be read from, and the traces artifact written to, a URL (s3://, gs://; pipelines/core/storage.py).

Resume: shards are written atomically into the artifact's partial directory as results arrive; a rerun with the
same config and inputs skips the ids already there and generates only the missing samples (we do not rely on Ray
Data checkpointing, which needs a read -> ... -> write plan). Rows that fail are written with `error`, not fatal,
counted in the manifest, and generated again when an interrupted run resumes. The counts are cross-checked before
the manifest is written: prompts read = kept + rejected, samples planned = written, samples = kept x samples.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from pipelines.core import storage
from pipelines.core.artifacts import NON_SEMANTIC_FIELDS, Artifact
from pipelines.core.config import ConfigError, check_pinned, parse, to_dict
from pipelines.core.datasets import find_broken_line
from pipelines.core.runtime import read_files
from pipelines.reasoning.prompt_formats import PromptError, fields_for, to_prompt
from pipelines.reasoning.traces import (
    SAMPLE_SCHEMA,
    SEEDED_HELP,
    TraceWriter,
    check_seeded,
    read_shards,
    sample_rows,
    to_trace,
)

log = logging.getLogger(__name__)


@dataclass
class SynthConfig:
    prompts_path: str = field(
        default="", metadata={"help": "Local JSONL/Parquet file, folder or glob, or a Hub dataset id."}
    )
    prompts_split: str = field(default="train", metadata={"help": "Split, for a Hub dataset."})
    prompts_subset: str | None = field(
        default=None, metadata={"help": "Config name, for a Hub dataset (gsm8k: main)."}
    )
    prompt_format: str = field(
        default="gsm8k", metadata={"help": "gsm8k | math | messages (see reasoning/prompt_formats.py)."}
    )
    prompt_field: str | None = field(default=None, metadata={"help": "Rename: the question field (format default)."})
    answer_field: str | None = field(default=None, metadata={"help": "Rename: the gold answer field."})
    solution_field: str | None = field(default=None, metadata={"help": "Rename: the worked solution (replay)."})
    id_field: str | None = field(default=None, metadata={"help": "Field holding a stable prompt id (else a hash)."})
    max_prompts: int | None = field(default=None, metadata={"help": "Use only the first N prompts."})
    source: str | None = field(default=None, metadata={"help": "Source name stored per trace (default: path stem)."})
    backend: str = field(default="transformers", metadata={"help": "vllm | transformers | openai | replay."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "Model (or tokenizer, for replay)."})
    model_revision: str | None = field(
        default=None,
        metadata={"help": "Model revision (commit sha): passed to every loader, recorded in `generator`."},
    )
    num_samples: int = field(default=4, metadata={"help": "Samples per prompt (replay: always 1)."})
    reasoning: str = field(default="on", metadata={"help": "on (/think) | off (/no_think) | mixed (think_ratio on)."})
    think_ratio: float = field(default=0.5, metadata={"help": "Share of samples with reasoning on, when mixed."})
    max_new_tokens: int = field(default=1024, metadata={"help": "Generation budget per sample, in tokens."})
    max_prompt_tokens: int | None = field(default=None, metadata={"help": "Longer prompts fail with an error."})
    temperature: float = field(default=0.6, metadata={"help": "Sampling temperature, reasoning on."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus top_p, reasoning on."})
    no_think_temperature: float = field(default=0.0, metadata={"help": "Temperature, reasoning off (0 = greedy)."})
    no_think_top_p: float = field(default=1.0, metadata={"help": "top_p, reasoning off."})
    seed: int = field(default=0, metadata={"help": "Base seed; each sample's seed derives from it and its id."})
    seeded: bool = field(default=True, metadata={"help": SEEDED_HELP})
    decontaminate_against: list[str] = field(
        default_factory=list, metadata={"help": "Eval sets to drop prompts against: NAME=PATH:FIELD."}
    )
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
    shard_rows: int = field(default=256, metadata={"help": "Traces per shard file (the resume granularity)."})
    output_dir: str = field(default="runs/synth", metadata={"help": "Where the traces artifact goes."})
    force: bool = field(default=False, metadata={"help": "Rerun even if the artifact is up to date."})
    address: str | None = field(default=None, metadata={"help": "Ray address (default: embedded local Ray)."})

    YAML_BOOL_FIELDS: ClassVar[frozenset[str]] = frozenset({"reasoning"})  # a bare `on`/`off`: see parse_args


# Fields that change speed or batching, not which samples exist (a resumed run may change them).
IGNORED = NON_SEMANTIC_FIELDS | {
    "batch_size",
    "num_cpus_per_worker",
    "shard_rows",
    "qps",
    "max_retries",
    "request_timeout_s",
    "api_key_env",
}


def prompt_rows(cfg: SynthConfig):
    """Source rows as a Ray dataset, in file order once executed with `preserve_order` (`ordered`); and the files."""
    import ray

    files = prompt_files(cfg.prompts_path)
    if files:
        parquet = all(f.endswith(".parquet") for f in files)
        lines = all(".jsonl" in f for f in files)
        # No CPU reserved: the model actors may hold every CPU while the prompts stream in (a reader waiting for
        # one would wait forever; runtime.read_files); reading prompts is light.
        ds = read_files(files) if parquet or lines else ray.data.read_json(files, num_cpus=0)
    elif "/" in cfg.prompts_path and not storage.is_remote(cfg.prompts_path) and not Path(cfg.prompts_path).exists():
        import datasets

        hub = datasets.load_dataset(cfg.prompts_path, cfg.prompts_subset, split=cfg.prompts_split)
        ds = ray.data.from_huggingface(hub)
    else:
        raise ConfigError(f"prompts_path: no JSONL/Parquet files at '{cfg.prompts_path}' (nor a Hub dataset id)")
    if cfg.max_prompts:
        ds = ds.limit(cfg.max_prompts)  # in file order: max_prompts picks the same prompts on every (re)run
    return ds, files


@contextlib.contextmanager
def ordered(files: list[str]):
    """Execute Ray Data in plan order (the same samples in the same shards on every run), and name the file and
    line of a prompt row that cannot be read (Arrow's JSON errors name neither)."""
    import ray

    ctx = ray.data.DataContext.get_current()
    keep_order, ctx.execution_options.preserve_order = ctx.execution_options.preserve_order, True
    try:
        yield
    except Exception as e:
        where = find_broken_line(files)
        if where:
            raise ConfigError(f"prompts_path: a row cannot be read: {where}; fix or remove it") from e
        raise
    finally:
        ctx.execution_options.preserve_order = keep_order


def read_prompts(cfg: SynthConfig) -> list[dict]:
    """Every source row as a dict, in file order (tests and benchmarks; the stage streams them)."""
    ds, files = prompt_rows(cfg)
    with ordered(files):
        return ds.take_all()


def prompt_files(path: str) -> list[str]:
    """The JSONL/JSON/Parquet files a prompts path names: a file, a folder (searched below) or a glob, local or a
    URL (s3://, gs://; full URLs back)."""
    keep = (".jsonl", ".json", ".parquet", ".jsonl.gz")
    if storage.is_remote(path):
        fs, _ = storage.filesystem(path)
        found = storage.glob(path) if glob.has_magic(path) else [path]
        below = [f for p in found for f in (storage.glob(storage.join(p, "**")) if fs.isdir(p) else [p])]
        return sorted(f for f in below if f.endswith(keep) and not fs.isdir(f))
    files = sorted(glob.glob(path, recursive=True))
    files = [f for p in files for f in (sorted(Path(p).rglob("*.*")) if Path(p).is_dir() else [Path(p)])]
    return [str(f) for f in files if f.suffix in (".jsonl", ".json", ".parquet") or f.name.endswith(".jsonl.gz")]


class SamplePlanner:
    """Source rows -> sample rows, on one Ray Data actor fed in file order: row numbers, the prompt ids seen (first
    one kept) and `seq` are its state, so nothing per prompt is held by the driver. Each batch maps rows to prompts,
    rejects unusable rows, duplicates and contaminated prompts (reasons to the writer), expands the rest to samples
    (`traces.sample_rows`) and skips those a resumed run already has."""

    def __init__(self, cfg: SynthConfig, num_samples: int, writer=None, done_dir: str | None = None):
        from pipelines.dedup.decontaminate import build_index

        self.cfg, self.num_samples, self.writer = cfg, num_samples, writer
        overrides = dict(prompt=cfg.prompt_field, answer=cfg.answer_field, solution=cfg.solution_field)
        self.fields = fields_for(cfg.prompt_format, overrides)
        self.index = (
            build_index(cfg.decontaminate_against, n=cfg.decontaminate_ngram) if cfg.decontaminate_against else None
        )
        self.row, self.seq, self.seen, self.done = 0, 0, set(), set()
        if writer is not None:  # the writer drops the failed rows of an interrupted run first (generated again)
            import ray

            if ray.get(writer.start_planner.remote()):  # a restart would number from zero again: it refuses
                self.done = set(read_shards(done_dir, ["id"]).column("id").to_pylist())

    def prompts(self, rows: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
        """The next rows (in file order) -> (kept prompts, unusable and duplicate rows, contaminated prompts)."""
        kept, rejected = [], []
        for i, row in enumerate(rows, self.row):
            try:
                prompt = to_prompt(row, self.cfg.prompt_format, self.fields, self.cfg.id_field)
            except (PromptError, KeyError, TypeError) as e:
                rejected.append({"prompt_id": f"row:{i}", "reason": "unusable_row", "detail": str(e)})
                continue
            if prompt["prompt_id"] in self.seen:
                rejected.append({"prompt_id": prompt["prompt_id"], "reason": "duplicate_prompt", "detail": f"row {i}"})
                continue
            self.seen.add(prompt["prompt_id"])
            kept.append(prompt)
        self.row += len(rows)
        if self.index is None:
            return kept, rejected, []
        kept, contaminated = decontaminate_prompts(kept, self.index)
        return kept, rejected, contaminated

    def __call__(self, batch: pa.Table) -> pa.Table:
        import ray

        kept, rejected, contaminated = self.prompts(batch.to_pylist())
        samples = [s for p in kept for s in sample_rows(p, self.cfg, self.num_samples) if s["id"] not in self.done]
        for s in samples:
            s["seq"], self.seq = self.seq, self.seq + 1
        ray.get(self.writer.add_prompts.remote(batch.num_rows, len(kept), rejected, contaminated, len(samples)))
        return pa.Table.from_pylist(samples, schema=SAMPLE_SCHEMA)


def prepare_prompts(rows: list[dict], cfg: SynthConfig) -> tuple[list[dict], list[dict]]:
    """Map rows to prompts; reject unusable rows, duplicate prompts and contaminated ones, each with a reason (the
    stage's own plan, on a list: for benchmarks that feed the same prompts to another engine)."""
    kept, rejected, contaminated = SamplePlanner(cfg, 0).prompts(rows)
    return kept, rejected + contaminated


def decontaminate_prompts(prompts: list[dict], index) -> tuple[list[dict], list[dict]]:
    """Drop prompts sharing a word n-gram with an eval set (dedup/decontaminate.py); reason `contaminated:<name>`."""
    from pipelines.dedup.decontaminate import contamination_reasons

    texts = ["\n".join(m["content"] for m in p["messages"] if m["role"] != "system") for p in prompts]
    reasons = contamination_reasons(texts, index)
    kept = [p for p, r in zip(prompts, reasons, strict=True) if r is None]
    rejected = [
        {"prompt_id": p["prompt_id"], "reason": r, "detail": None} for p, r in zip(prompts, reasons, strict=True) if r
    ]
    return kept, rejected


def synthesize(cfg: SynthConfig) -> Path:
    """Run the stage for a parsed config; returns the traces artifact path."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from pipelines.core.runtime import ray_session
    from pipelines.reasoning.backends import BACKENDS, import_in_background

    if not cfg.source:  # ".../gsm8k/train.jsonl" (a path or a URL) -> "gsm8k/train"; a Hub id as it is
        local = Path(storage.local_path(cfg.prompts_path.split("*")[0].rstrip("/")).split("://")[-1])
        named = storage.is_remote(cfg.prompts_path) or local.exists()
        cfg.source = f"{local.parent.name}/{local.stem}" if named else cfg.prompts_path
    num_samples = 1 if cfg.backend == "replay" else cfg.num_samples
    art = Artifact(
        cfg.output_dir, kind="traces", stage="synth", config=to_dict(cfg), inputs=_inputs(cfg), ignore=IGNORED
    )
    if art.up_to_date() and not cfg.force:
        print(art.skip_message())
        return art.path
    t0 = time.perf_counter()
    imports = import_in_background(cfg.backend)  # while Ray starts
    with art.writing() as tmp, ray_session(cfg.address, worker_logs=cfg.backend == "vllm"):
        traces_dir, rejected_dir = storage.join(tmp, "traces"), storage.join(tmp, "rejected")
        log.info(f"[synth] Ray ready after {time.perf_counter() - t0:.1f} s")
        # The planner and the writer run on this node: a local output (or eval set) is on this node's disk.
        node = ray.get_runtime_context().get_node_id()
        here = NodeAffinitySchedulingStrategy(node, soft=False)
        writer = (
            ray.remote(TraceWriter)
            .options(num_cpus=0, scheduling_strategy=here)
            .remote(str(traces_dir), str(rejected_dir), cfg.shard_rows)
        )
        generator = {"model": cfg.model_name_or_path, "revision": cfg.model_revision, "backend": cfg.backend}
        ds, files = prompt_rows(cfg)
        with ordered(files):  # samples in plan order: the same shards (and bytes) on every run with the same seed
            ds = ds.map_batches(
                SamplePlanner,
                fn_constructor_kwargs=dict(cfg=cfg, num_samples=num_samples, writer=writer, done_dir=str(traces_dir)),
                batch_format="pyarrow",
                # ~batch_size samples out per call: the backend's tasks, and so the shards, finish a batch at a time
                batch_size=max(1, cfg.batch_size // num_samples),
                compute=ray.data.ActorPoolStrategy(size=1),  # one, fed in order: it numbers rows and samples
                num_cpus=0,  # light; never in the way of the model actors
                label_selector={"ray.io/node-id": node},
            )
            waited = time.perf_counter()
            if imports:
                imports.join()
            waited, build = time.perf_counter() - waited, time.perf_counter()
            ds = BACKENDS[cfg.backend](ds, cfg).map_batches(
                functools.partial(write_traces, writer=writer, generator=generator),
                batch_format="pyarrow",
                num_cpus=0,  # as the reader: paced by generation, and the model actors may hold every CPU
            )
            log.info(
                f"[synth] {cfg.backend} pipeline built after {time.perf_counter() - t0:.1f} s "
                f"({waited:.1f} s of it waiting for the backend's imports, "
                f"{time.perf_counter() - build:.1f} s building its stages)"
            )
            shards = 0
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                if not shards and max(batch["shards"].to_pylist(), default=0):
                    log.info(f"[synth] first shard written after {time.perf_counter() - t0:.1f} s")
                shards = max([shards, *batch["shards"].to_pylist()])
        art.counts = ray.get(writer.finish.remote(num_samples))
        resumed = art.counts["samples_resumed"]
        log.info(
            f"[synth] {art.counts['prompts_kept']} prompts x {num_samples}: {resumed} samples resumed, "
            f"{art.counts['samples'] - resumed} generated after {time.perf_counter() - t0:.1f} s"
        )
    print(f"[synth] wrote {art.path}: {art.counts}")
    return art.path


def write_traces(batch: pa.Table, writer, generator: dict) -> pa.Table:
    """Generated sample rows -> verified traces, sent with their `seq` to the writer; returns the shards written."""
    import ray

    rows = [(row.pop("seq"), to_trace(row, generator)) for row in batch.to_pylist()]
    return pa.table({"shards": [ray.get(writer.add_traces.remote(rows))]})


def _inputs(cfg: SynthConfig) -> list[str]:
    """Local paths as they are (stat-hashed by lineage); Hub ids as hf:// URLs (hashed by name)."""
    paths = [cfg.prompts_path] + [e.split("=", 1)[-1].rsplit(":", 1)[0] for e in cfg.decontaminate_against]
    return [p if glob.glob(p) or "://" in p else f"hf://datasets/{p}" for p in paths]


def parse_args(argv: list[str] | None = None) -> SynthConfig:
    cfg = parse(SynthConfig, argv=argv)
    if isinstance(cfg.reasoning, bool):  # YAML 1.1 reads a bare `on`/`off` as a boolean
        cfg.reasoning = "on" if cfg.reasoning else "off"
    choices = {
        "backend": ("vllm", "transformers", "openai", "replay"),
        "reasoning": ("on", "off", "mixed"),
        "prompt_format": ("gsm8k", "math", "messages"),
    }
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got '{getattr(cfg, name)}'")
    if not cfg.prompts_path:
        raise ConfigError("prompts_path is required (a JSONL/Parquet file, folder or glob, or a Hub dataset id)")
    if cfg.backend != "replay" and not cfg.model_name_or_path:
        raise ConfigError(f"backend '{cfg.backend}' needs model_name_or_path")
    check_seeded(cfg)
    check_pinned(cfg.model_name_or_path, cfg.model_revision, bool(cfg.engine_kwargs.get("trust_remote_code")))
    return cfg


def main(argv: list[str] | None = None) -> int:
    synthesize(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
