"""Build weighted phase blends: shuffled Parquet shards, Megatron `.bin/.idx` (or token-id Parquet), blend.json.

Nemotron-H and Nemotron Nano 2 pretrain in phases over one token budget: phase 1 favours diversity, later phases
upweight high-quality sources (Nemotron-CC's top buckets, math, code), switching at fractions of the budget, with
a cap on how many epochs any source may be repeated. This stage builds such a blend from documents artifacts.

    nanoforge mix --config pipelines/configs/mix_demo.yaml
    # on a cluster:
    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        nanoforge mix --config pipelines/configs/mix_nemotron_h.yaml

`input_paths` are documents artifacts (curate or quality output); a source takes one of them by position
(`input: 0`), optionally a bucket subset of it (`labels: [High, Medium-High]` or `buckets: [18, 19]`, from
`nanoforge quality`), and may set its own `max_epochs`. A phase is `{name, fraction, weights: {source: w}}`; the
fractions of `total_tokens` sum to 1 and weights are by tokens. The plan is in pipelines/blending/plan.py.

Three passes of plain Ray tasks (Ray Data's per-pass machinery cost ~4x the tokenizing here: benchmarks/mix.py),
resumable from `.work/` in the partial directory, and a plan between them:
  1. prepare: a task per input file reads its source's subset, tokenizes (`tokenizers`, batch encode, EOS
     appended; without a tokenizer, tokens are estimated as UTF-8 bytes / 4), writes `.work/prepared/`;
  plan: the driver never sees the documents. Workers sum each source's documents and tokens; the driver turns
     them into cuts of each source's hash-ordered stream (pipelines/blending/plan.py) and finds each cut by
     asking workers for token histograms of a narrowing range of that order until the range holds at most
     GATHER_DOCS documents, read whole (pipelines/blending/search.py): a few passes over (source, key, tokens),
     rows on the driver bounded by the number of cuts (sources x phases), not by the corpus; a cut at an end of an
     epoch (an integer max_epochs' cap, a source taken whole) needs no pass where every document ends with an EOS;
  2. route: a task per prepared file writes every document, once per pick (decided from the cuts by the document
     alone), with its phase P, output bucket B and shuffle key (a hash), into one `.work/staged/` file per prepared
     file, a row group per (chunk of route_rows, P, B); a phase has ~docs_per_shard x 7/8 picks a bucket;
  3. shards: one task per bucket reads its row groups of every staged file (by their statistics), sorts its rows
     by shuffle key and writes `<phase>/part-BBBBB-JJ.parquet` (and `.bin/.idx`), split in equal files where it
     holds more than docs_per_shard, so the output is byte-identical for a seed however the work was split. Where
     the picks fit in a quarter of Ray's object store (`picks_fit`), route also hands them to the writers in memory,
     sorted by bucket: the writers read no staged file (those stay for a resumed run), the same output.
Files written: prepared and staged one per input file, then the output shards; never a file per chunk or per (input
file, bucket) (tests/pipelines/test_mix.py counts them).
Output: the shards, `blend.json` (per phase and source: weight, target and achieved tokens, epochs; Megatron
`--data-path` strings), `report.md` with `mixture.png` (target vs achieved), manifest.
"""

from __future__ import annotations

import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pipelines.blending.ops import (
    ROUTE_ROWS,
    default_eos,
    load_tokenizer,
    prepare_file,
    route_file,
    write_bucket,
    write_kept,
)
from pipelines.blending.plan import Phase, ShortfallError, plan_cuts, token_dtype, write_report
from pipelines.blending.search import resolve_on_workers, totals
from pipelines.core import storage
from pipelines.core.artifacts import Artifact
from pipelines.core.config import ConfigError, parse, to_dict
from pipelines.core.runtime import ray_session
from pipelines.scoring.buckets import label_buckets

SOURCE_KEYS = {"name", "input", "labels", "buckets", "max_epochs"}
PHASE_KEYS = {"name", "fraction", "weights"}
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class MixConfig:
    input_paths: list[str] = field(
        default_factory=list, metadata={"help": "Documents artifacts (dirs with documents/*.parquet)."}
    )
    sources: list[dict] = field(
        default_factory=list,
        metadata={"help": "[{name, input: index into input_paths, labels | buckets, max_epochs}]."},
    )
    phases: list[dict] = field(
        default_factory=list, metadata={"help": "[{name, fraction of total_tokens, weights: {source: weight}}]."}
    )
    total_tokens: int = field(default=0, metadata={"help": "Token budget of the whole blend (all phases)."})
    max_epochs: float = field(
        default=4.0, metadata={"help": "Default cap on passes over a source (upsampling limit)."}
    )
    on_shortfall: str = field(default="error", metadata={"help": "A source too small under its cap: error | report."})
    seed: int = field(default=0, metadata={"help": "Seed of document picks and shuffles."})
    tokenizer: str | None = field(
        default=None, metadata={"help": "HF tokenizer dir or tokenizer.json; none: no token files, estimated counts."}
    )
    eos_token: str | None = field(
        default=None, metadata={"help": "Appended to every document; default the tokenizer's eos_token, '' for none."}
    )
    token_format: str = field(
        default="megatron", metadata={"help": "megatron (.bin/.idx per shard) | parquet (input_ids column)."}
    )
    docs_per_shard: int = field(
        default=100_000, metadata={"help": "Most documents in an output shard (~7/8 of it on average)."}
    )
    text_column: str = field(default="text", metadata={"help": "Column holding the document text."})
    batch_size: int = field(default=1000, metadata={"help": "Documents per Ray Data batch."})
    route_rows: int = field(
        default=ROUTE_ROWS, metadata={"help": "Prepared documents a route task holds at once (bounds its memory)."}
    )
    output_dir: str = field(default="runs/mix", metadata={"help": "Artifact directory to write."})
    force: bool = field(default=False, metadata={"help": "Rerun even if the artifact is up to date."})
    address: str | None = field(default=None, metadata={"help": "Ray address (default: embedded local Ray)."})


def parse_args(argv: list[str] | None = None) -> MixConfig:
    return parse(MixConfig, argv=argv)


def check(cfg: MixConfig) -> tuple[list[dict], list[Phase]]:
    """Sources resolved to {name, path, buckets, max_epochs} and phases, or a ConfigError that says what to fix."""
    if cfg.total_tokens <= 0 or not cfg.sources or not cfg.phases:
        raise ConfigError("set total_tokens > 0, sources and phases (see pipelines/configs/mix_demo.yaml)")
    if cfg.on_shortfall not in ("error", "report") or cfg.token_format not in ("megatron", "parquet"):
        raise ConfigError(
            f"on_shortfall must be error|report, token_format megatron|parquet; got {cfg.on_shortfall}, "
            f"{cfg.token_format}"
        )
    sources = []
    for i, s in enumerate(cfg.sources):
        if not isinstance(s, dict) or not NAME.match(str(s.get("name", ""))) or set(s) - SOURCE_KEYS:
            raise ConfigError(
                f"sources[{i}] = {s}: expected {{name: [A-Za-z0-9_.-]+, input, labels | buckets, max_epochs}}"
            )
        idx = s.get("input", 0)
        if not isinstance(idx, int) or not 0 <= idx < len(cfg.input_paths):
            raise ConfigError(
                f"source {s['name']}: input {idx} is not an index into input_paths ({len(cfg.input_paths)} given)"
            )
        path = cfg.input_paths[idx]
        files = storage.glob(storage.join(path, "documents", "*.parquet"))
        if not files:
            raise ConfigError(f"source {s['name']}: {path} has no documents/*.parquet (expected a documents artifact)")
        try:
            buckets = sorted(
                {b for label in s.get("labels", []) for b in label_buckets(label)} | set(s.get("buckets", []))
            )
        except ValueError as e:
            raise ConfigError(f"source {s['name']}: {e}") from None
        if buckets and "quality_bucket" not in storage.parquet_metadata(files[0]).schema.to_arrow_schema().names:
            raise ConfigError(
                f"source {s['name']} selects quality buckets but {path} has no quality_bucket column; run "
                "`nanoforge quality` first"
            )
        sources.append(
            {
                "name": s["name"],
                "path": str(path),
                "buckets": buckets or None,
                "max_epochs": float(s.get("max_epochs", cfg.max_epochs)),
            }
        )
    names = [s["name"] for s in sources]
    if len(set(names)) != len(names):
        raise ConfigError(f"source names must be unique: {names}")
    phases = []
    for i, p in enumerate(cfg.phases):
        if not isinstance(p, dict) or set(p) - PHASE_KEYS or not NAME.match(str(p.get("name", ""))):
            raise ConfigError(
                f"phases[{i}] = {p}: expected {{name: [A-Za-z0-9_.-]+, fraction, weights: {{source: weight}}}}"
            )
        weights = p.get("weights") or {}
        unknown = sorted(set(weights) - set(names))
        if unknown or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ConfigError(f"phase {p['name']}: weights {weights} must be >= 0, not all 0, over sources {names}")
        phases.append(Phase(p["name"], float(p.get("fraction", 0)), {k: float(v) for k, v in weights.items()}))
    if abs(sum(p.fraction for p in phases) - 1) > 1e-6 or any(p.fraction <= 0 for p in phases):
        raise ConfigError(f"phase fractions {[p.fraction for p in phases]} must be > 0 and sum to 1")
    return sources, phases


def prepare(cfg: MixConfig, sources: list[dict], eos_id: int | None, out: str) -> dict[str, list[int]]:
    """Pass 1: every source's documents (its bucket subset), with a hash key and token counts (and ids): a Ray task
    per input file, of every source at once (a union of per-source passes ran the sources one after the other).
    Returns each source's [documents, tokens], summed from the tasks' counts (the plan's first question)."""
    import ray

    files = [(f, s) for s in sources for f in storage.glob(storage.join(s["path"], "documents", "*.parquet"))]
    for s in sources:
        if not any(mine is s for _, mine in files):
            raise ConfigError(f"source {s['name']}: no Parquet files in {storage.join(s['path'], 'documents')}")
    kwargs = {"batch_size": cfg.batch_size, "text_column": cfg.text_column, "tokenizer": cfg.tokenizer}
    task = ray.remote(prepare_file)
    storage.makedirs(out)
    counts = ray.get(
        [
            task.remote(
                f,
                storage.join(out, f"part-{i:05d}.parquet"),
                {"name": s["name"], "buckets": s["buckets"]},
                eos_id=eos_id,
                **kwargs,
            )
            for i, (f, s) in enumerate(files)
        ]
    )
    sums = {s["name"]: [0, 0] for s in sources}
    for (_, s), c in zip(files, counts, strict=True):
        sums[s["name"]][0] += c["docs"]
        sums[s["name"]][1] += c["tokens"]
    return sums


def plan(
    cfg: MixConfig,
    sources: list[dict],
    phases: list[Phase],
    prepared: str,
    sums: dict | None = None,
    eos: bool = False,
) -> tuple[dict, dict, dict]:
    """(the router's plan, stats, search log) from sums and histograms that workers compute: nothing per document
    reaches the driver beyond GATHER_DOCS rows per cut (pipelines/blending/search.py). `sums`: each source's
    [documents, tokens] as prepare counted them; None: a pass over the prepared files sums them. `eos`: every
    document ends with an EOS token (so holds one at least: a cut at an end of an epoch needs no pass)."""
    log = {"rounds": 0, "max_rows": 0}
    if sums is None:
        sums = totals(prepared, cfg.seed, [s["name"] for s in sources], log)
    epochs = {s["name"]: s["max_epochs"] for s in sources}
    tokens = {s: t for s, (_, t) in sums.items()} if eos else None
    resolve = resolve_on_workers(prepared, cfg.seed, {s: n for s, (n, _) in sums.items()}, log, tokens)
    try:
        cuts, stats = plan_cuts(sums, phases, cfg.total_tokens, epochs, resolve, cfg.on_shortfall)
    except ShortfallError as e:
        raise ConfigError(str(e)) from None
    picks = [sum(r["docs"] for r in stats["phases"][p.name]["sources"].values()) for p in phases]
    route_plan = {
        "seed": cfg.seed,
        "phases": [p.name for p in phases],
        "buckets": [-(-n * 8 // (7 * cfg.docs_per_shard)) for n in picks],  # ~7/8 full: few split buckets
        "cuts": {s: [vars(c) for c in mine] for s, mine in cuts.items()},
    }
    return route_plan, stats, log


def picks_fit(prepared: str, stats: dict, files: int, buckets: int) -> bool:
    """Whether the blend's picks (estimated from the prepared files' bytes) fit in a quarter of Ray's object store,
    and the (prepared file, output bucket) slices number at most KEPT_OBJECTS: then route hands them to the shard
    writers from memory (`route(keep=True)`) rather than the writers reading them back from the staged files."""
    import ray

    fs, path = storage.filesystem(prepared)
    docs = sum(r["available_docs"] for r in stats["sources"].values())
    picks = sum(r["docs"] for phase in stats["phases"].values() for r in phase["sources"].values())
    estimate = fs.du(path) * picks / max(docs, 1)
    room = ray.cluster_resources().get("object_store_memory", 0) / 4
    return 0 < files * buckets <= KEPT_OBJECTS and estimate <= room


KEPT_OBJECTS = 100_000  # most (file, bucket) slices handed over in memory: each writer maps every file's picks


def route(prepared: str, staged: str, route_plan: dict, rows: int = ROUTE_ROWS, keep: bool = False) -> list | None:
    """Pass 2: every prepared document, once per pick, with its phase, bucket and shuffle key, into one staged file
    per prepared file: a Ray task per prepared file, `rows` documents at a time. `keep`: returns, per prepared file, a
    reference to its picks sorted by (phase, bucket), for `write_shards` (the staged files stay for a resumed run:
    one write of the picks, no read). One object per file: an object per (file, bucket) cost more to put than the
    staged files' read; every writer maps them all (shared memory on a node) and slices its bucket."""
    import ray

    task = ray.remote(route_file)
    files = storage.glob(storage.join(prepared, "*.parquet"))
    if not keep:
        ray.get([task.remote(f, staged, rows=rows, **route_plan) for f in files])
        return None
    refs = [task.options(num_returns=2).remote(f, staged, rows=rows, keep=True, **route_plan) for f in files]
    ray.get([r[0] for r in refs])  # the shard writers start as soon as their inputs are ready, not after this
    return [r[1] for r in refs]


def write_shards(cfg: MixConfig, route_plan: dict, staged: str, out: str, tokenizer, kept: list | None = None) -> list:
    """Pass 3: a Ray task per (phase, bucket) writes its files in shuffled order; returns what each wrote. `kept`:
    `route(keep=True)`'s references, the buckets' picks in memory, instead of reading the staged files."""
    import ray

    kwargs = {"staged": str(staged), "out": str(out), "phases": route_plan["phases"]}
    kwargs |= {"docs_per_shard": cfg.docs_per_shard, "token_format": cfg.token_format if tokenizer else None}
    kwargs["dtype"] = token_dtype(tokenizer.get_vocab_size()).__name__ if tokenizer else None
    buckets = [{"phase": p, "bucket": b} for p, n in enumerate(route_plan["buckets"]) for b in range(n)]
    if kept is None:
        task = ray.remote(write_bucket)
        refs = [task.remote(b, **kwargs) for b in buckets]
    else:
        task = ray.remote(write_kept)
        refs = [task.remote(b, k, *kept, **kwargs) for k, b in enumerate(buckets)]
    return [w for written in ray.get(refs) for w in written]


def tokens_note(cfg: MixConfig, eos: str | None) -> str:
    """How the blend counts tokens, for blend.json and the report."""
    return f"tokenizer {cfg.tokenizer}, eos {eos!r} appended" if cfg.tokenizer else "estimated: UTF-8 bytes / 4"


def blend_json(cfg: MixConfig, sources: list[dict], phases: list[Phase], stats: dict, written: list, eos) -> dict:
    tokenized = cfg.tokenizer is not None
    blend = {
        "seed": cfg.seed,
        "total_tokens": cfg.total_tokens,
        "tokens": tokens_note(cfg, eos),
        "token_format": cfg.token_format if tokenized else None,
        "sources": {s["name"]: {**s, **stats["sources"][s["name"]]} for s in sources},
        "phases": stats["phases"],
    }
    for p, phase in enumerate(phases):
        mine = sorted((w for w in written if w["phase"] == p), key=lambda w: w["file"])
        blend["phases"][phase.name]["shards"] = [w["file"] for w in mine]
        if tokenized and cfg.token_format == "megatron":  # Megatron-LM --data-path: "weight prefix weight prefix"
            paths = " ".join(f"{w['tokens']} {w['file'].removesuffix('.parquet')}" for w in mine)
            blend["phases"][phase.name]["megatron_data_path"] = paths
    return blend


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    sources, phases = check(cfg)
    tokenizer, eos, eos_id = None, None, None
    if cfg.tokenizer:  # a bad path or EOS fails before any work
        tokenizer = load_tokenizer(cfg.tokenizer)
        eos = default_eos(cfg.tokenizer) if cfg.eos_token is None else cfg.eos_token or None
        eos_id = tokenizer.token_to_id(eos) if eos else None
        if eos and eos_id is None:
            raise ConfigError(f"eos_token {eos!r} is not in the vocabulary of {cfg.tokenizer}")
    inputs = [*cfg.input_paths, *([cfg.tokenizer] if cfg.tokenizer else [])]
    art = Artifact(cfg.output_dir, kind="blend", stage="mix", config=to_dict(cfg), inputs=inputs)
    if art.up_to_date() and not cfg.force:
        print(art.skip_message())
        return 0
    with art.writing() as tmp, ray_session(cfg.address):
        tmp = str(tmp)
        work = storage.join(tmp, ".work")
        prepared, staged = storage.join(work, "prepared"), storage.join(work, "staged")
        clock = [("start", time.perf_counter())]
        done = storage.join(work, "prepared.done")  # holds the sums: a resumed run plans without a pass for them
        if not storage.exists(done):
            storage.remove(prepared)
            storage.write_text(json.dumps(prepare(cfg, sources, eos_id, prepared)), done)
        clock.append(("prepare", time.perf_counter()))
        route_plan, stats, search_log = plan(
            cfg, sources, phases, prepared, json.loads(storage.read_text(done) or "null"), eos=eos_id is not None
        )
        clock.append(("plan", time.perf_counter()))
        # the report needs the plan alone: drawn while the workers route and write (the driver waits on them)
        header = [f"# Blend: {cfg.total_tokens:,} tokens in {len(phases)} phases (seed {cfg.seed})", ""]
        drawing = ThreadPoolExecutor(1)
        report = drawing.submit(write_report, tmp, stats, [*header, f"Tokens: {tokens_note(cfg, eos)}."])
        kept = None
        if not storage.exists(storage.join(work, "staged.done")):
            storage.remove(staged)
            files = len(storage.glob(storage.join(prepared, "*.parquet")))
            keep = picks_fit(prepared, stats, files, sum(route_plan["buckets"]))
            kept = route(prepared, staged, route_plan, cfg.route_rows, keep=keep)
            storage.makedirs(staged)
            storage.write_text("", storage.join(work, "staged.done"))
        clock.append(("route", time.perf_counter()))
        written = write_shards(cfg, route_plan, staged, tmp, tokenizer, kept)
        del kept  # the picks' objects in Ray's store go with their references
        clock.append(("shards", time.perf_counter()))
        storage.remove(work)
        art.extra["plan_search"] = {"passes": search_log["rounds"], "max_rows_to_driver": search_log["max_rows"]}
        art.extra["seconds"] = {name: round(t - clock[i][1], 2) for i, (name, t) in enumerate(clock[1:])}

        report.result()  # before blend_json adds the shards to the stats it reads
        drawing.shutdown()
        blend = blend_json(cfg, sources, phases, stats, written, eos)
        storage.write_text(json.dumps(blend, indent=2) + "\n", storage.join(tmp, "blend.json"))
        phase_counts = {
            n: {
                "docs": sum(r["docs"] for r in ph["sources"].values()),
                "tokens": ph["achieved_tokens"],
                "shards": len(ph["shards"]),
            }
            for n, ph in blend["phases"].items()
        }
        art.counts = {
            "input_docs": sum(r["available_docs"] for r in stats["sources"].values()),
            "docs_used": {n: r["docs_used"] for n, r in stats["sources"].items()},
            "docs_unused": {n: r["docs_unused"] for n, r in stats["sources"].items()},
            "phases": phase_counts,
            "shortfall_tokens": {
                n: r["shortfall_tokens"] for n, r in stats["sources"].items() if r["shortfall_tokens"]
            },
        }
    print(f"[mix] {art.path}: {json.dumps(art.counts['phases'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
