"""select: traces -> SFT set, preference set and RL prompts (three sub-artifacts), with a report.

Local:    nanoforge select --config pipelines/configs/select_demo.yaml
Cluster:  RAY_ADDRESS=ray://head:10001 nanoforge select --config pipelines/configs/select_demo.yaml \\
              --traces_path s3://bucket/traces_a s3://bucket/traces_b --output_dir s3://bucket/selected

Plan: read one or more traces artifacts -> group by `prompt_id` (Ray Data groupby; runs of different backends on
the same prompts join, e.g. replayed references with model samples) -> `selection.select_prompt` per prompt ->
write `sft/` (TRL `messages`), `preference/` (`prompt`/`chosen`/`rejected`), `rl_prompts/` (`prompt`/`answer`),
each an artifact with its own manifest; samples and prompts not used go to `<set>/rejected/` with the reason.
Nothing per record reaches the driver: each Ray block of records goes to one `.staged/` file with a row group per
(kind, shard) (S a hash of the prompt id, one shard per ROWS_PER_SHARD samples; the driver gets the (kind, shard)
pairs each block holds), then one Ray task per (kind, shard) reads its row groups, sorts its records and writes the
file (named by its content) and returns its counts and histogram bins, which the driver sums. Every path may be
local or a URL (`s3://`, `gs://`; pipelines/core/storage.py).
With `decontaminate_against`, a trace whose prompt + completion shares an n-gram with an evaluation set is dropped
first (`contaminated:<name>`, the function curate and synth use; counts per set in the manifest and report).
Accounting: samples == sft kept + Σ sft rejected[reason]; prompts == rl kept + Σ rl rejected[reason].
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import zlib
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa

from pipelines.core import storage
from pipelines.core.artifacts import Artifact, read_manifest
from pipelines.core.config import ConfigError, parse, to_dict
from pipelines.reasoning.report import histogram_bins, histograms
from pipelines.reasoning.traces import MESSAGES, write_shard

COLUMNS = [
    "id",
    "prompt_id",
    "messages",
    "answer",
    "verifier",
    "reasoning",
    "num_generated_tokens",
    "truncated",
    "verified",
    "error",
    "source",
]
S = pa.string()
SCHEMAS = {
    "sft": pa.schema(
        [
            ("id", S),
            ("prompt_id", S),
            ("messages", MESSAGES),
            ("variant", S),
            ("thinking_budget", pa.int64()),
            ("reasoning", S),
            ("length", pa.int64()),
            ("traces", S),
            ("source", S),
        ]
    ),
    "sft_rejected": pa.schema(
        [
            ("id", S),
            ("prompt_id", S),
            ("reason", S),
            ("reasoning", S),
            ("verified", pa.bool_()),
            ("length", pa.int64()),
            ("traces", S),
        ]
    ),
    "pair": pa.schema(
        [
            ("prompt_id", S),
            ("prompt", MESSAGES),
            ("chosen", MESSAGES),
            ("rejected", MESSAGES),
            ("pair_type", S),
            ("chosen_id", S),
            ("rejected_id", S),
            ("reasoning", S),
        ]
    ),
    "pairs_missing": pa.schema([("prompt_id", S), ("reasoning", S), ("reason", S)]),
    "rl": pa.schema(
        [("prompt_id", S), ("prompt", MESSAGES), ("answer", S), ("verifier", S), ("pass_rate", pa.float64())]
    ),
    "rl_rejected": pa.schema(
        [
            ("prompt_id", S),
            ("prompt", MESSAGES),
            ("answer", S),
            ("verifier", S),
            ("pass_rate", pa.float64()),
            ("reason", S),
        ]
    ),
}
# kind -> (sub-artifact, subfolder)
WHERE = {
    "sft": ("sft", ""),
    "sft_rejected": ("sft", "rejected"),
    "pair": ("preference", ""),
    "pairs_missing": ("preference", "rejected"),
    "rl": ("rl_prompts", ""),
    "rl_rejected": ("rl_prompts", "rejected"),
}
ROWS_PER_PARTITION = 50_000  # traces per groupby partition
ROWS_PER_SHARD = 50_000  # samples per output shard (a prompt's records all go to one shard of each kind)
LABEL = {"sft": "variant", "pair": "pair_type"}  # the field each kind is counted by (else "reason")
KINDS = {"sft": "sft set", "preference": "preference set", "rl_prompts": "rl prompts"}


@dataclass
class SelectConfig:
    traces_path: list[str] = field(default_factory=list, metadata={"help": "Traces artifacts (joined on prompt_id)."})
    min_pass_rate: float = field(default=0.0, metadata={"help": "SFT: keep prompts solved at least this often."})
    max_pass_rate: float = field(default=1.0, metadata={"help": "SFT: ... and at most this often (e.g. 0.2-0.8)."})
    max_sft_per_prompt: int | None = field(default=None, metadata={"help": "SFT: cap on correct samples per prompt."})
    no_think_ratio: float = field(default=0.1, metadata={"help": "SFT: share made reasoning-free (/no_think)."})
    budget_ratio: float = field(default=0.03, metadata={"help": "SFT: share with thinking cut to a budget."})
    thinking_budgets: list[int] = field(
        default_factory=lambda: [128, 256, 512], metadata={"help": "Budgets (tokens)."}
    )
    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "Counts tokens (else words)."})
    max_pairs_per_prompt: int = field(default=2, metadata={"help": "Preference: correct-vs-incorrect pairs/prompt."})
    pair_truncated: bool = field(default=False, metadata={"help": "Preference: unfinished traces may be rejected."})
    length_pairs: bool = field(default=False, metadata={"help": "Preference: add shortest- vs longest-correct."})
    min_length_ratio: float = field(default=1.5, metadata={"help": "Preference: longest/shortest ratio for that."})
    rl_min_pass_rate: float = field(default=0.0, metadata={"help": "RL: keep prompts with pass rate > this ..."})
    rl_max_pass_rate: float = field(default=1.0, metadata={"help": "RL: ... and < this."})
    seed: int = field(default=0, metadata={"help": "Chooses which samples become variants."})
    decontaminate_against: list[str] = field(
        default_factory=list,
        metadata={"help": "Eval sets NAME=PATH:FIELD: a trace whose prompt + completion shares an n-gram is dropped."},
    )
    decontaminate_ngram: int = field(default=13, metadata={"help": "Word n-gram size for decontamination."})
    output_dir: str = field(default="runs/select", metadata={"help": "Where sft/, preference/, rl_prompts/ go."})
    force: bool = field(default=False, metadata={"help": "Rerun even if the artifact is up to date."})
    address: str | None = field(default=None, metadata={"help": "Ray address (default: embedded local Ray)."})


def build(cfg: SelectConfig, num_shards: int = 1):
    """The Ray Data plan: read traces (tagged with their artifact) -> group by prompt -> JSON records per kind, with
    the output shard of their prompt."""
    import ray

    from pipelines.dedup.decontaminate import build_index, contamination_reasons
    from pipelines.reasoning.backends import load_tokenizer
    from pipelines.reasoning.selection import decontaminate, select_prompt, trace_text

    def tagged(path: str):  # the same sample id can come from two runs: (traces, id) identifies a sample
        ds = ray.data.read_parquet(storage.join(path, "traces")).select_columns(COLUMNS)
        return ds.add_column("traces", lambda batch: pa.array([path] * len(batch)), batch_format="pyarrow")

    parts = [tagged(str(path)) for path in cfg.traces_path]
    ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    tokenizer_path = cfg.tokenizer_name_or_path

    index = build_index(cfg.decontaminate_against, n=cfg.decontaminate_ngram) if cfg.decontaminate_against else None

    def per_prompt(group: pa.Table) -> pa.Table:
        tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else None
        samples, out = group.to_pylist(), []
        if index is not None:
            reasons = contamination_reasons([trace_text(t) for t in samples], index)
            samples, out = decontaminate(samples, reasons, tokenizer)
        out += select_prompt(samples, cfg, tokenizer) if samples else []
        shard = zlib.crc32(str(group["prompt_id"][0]).encode()) % num_shards if len(group) else 0
        return pa.table(
            {"kind": [k for k, _ in out], "record": [json.dumps(r) for _, r in out], "shard": [shard] * len(out)}
        )

    # Few partitions: the default (200 hash-shuffle partitions, each a worker) swamps a laptop for a small set.
    samples = sum((read_manifest(p) or {}).get("counts", {}).get("samples", 0) for p in cfg.traces_path)
    partitions = max(1, min(200, samples // ROWS_PER_PARTITION + 1))
    return ds.groupby("prompt_id", num_partitions=partitions).map_groups(per_prompt, batch_format="pyarrow")


def stage_records(batch: pa.Table, staged: str) -> pa.Table:
    """Ray Data UDF over whole blocks: the block's records into one staged file named by their hash (a retried task
    rewrites the same file), a row group per (kind, shard) (`storage.write_runs`); returns the (kind, shard) pairs
    it holds. One file per block, where a partitioned write wrote one per block, kind and shard."""
    if not len(batch):
        return pa.table({"kind": pa.array([], pa.string()), "shard": pa.array([], pa.int64())})
    name = hashlib.sha1("\n".join(batch["record"].to_pylist()).encode()).hexdigest()[:24]
    storage.makedirs(staged)
    with storage.runs_writer(storage.join(staged, f"{name}.parquet"), batch.schema, ["kind", "shard"]) as writer:
        storage.write_runs(writer, batch, ["kind", "shard"])
    pairs = batch.group_by(["kind", "shard"], use_threads=False).aggregate([])
    return pa.table({"kind": pairs["kind"], "shard": pairs["shard"].cast(pa.int64())})


def write_kind(row: dict, staged: str, folders: dict[str, str | None]) -> dict:
    """One (kind, shard) of select's records: sorted (groups arrive in any order, the files must not) and written
    as one file where the kind has a folder; returns its counts and histogram bins for the driver to sum."""
    kind, shard = row["kind"], int(row["shard"])
    table = storage.read_equal(staged, kind=kind, shard=shard)
    records = sorted((json.loads(r) for r in table["record"].to_pylist()), key=lambda r: json.dumps(r, sort_keys=True))
    if folders.get(kind) is not None and records:
        write_shard(folders[kind], records, SCHEMAS[kind])
    return {"summary": json.dumps(summarize(kind, records))}  # a string: Ray Data would make a struct of each dict


def summarize(kind: str, records: list[dict]) -> dict:
    """What the driver needs of some records of one kind: how many, per label (reason, variant or pair type), and
    their histogram bins."""
    labels = Counter(r[LABEL.get(kind, "reason")] for r in records) if kind not in ("prompt", "rl") else Counter()
    return {"kind": kind, "n": len(records), "labels": labels, "bins": histogram_bins(kind, records)}


def select(cfg: SelectConfig) -> str:
    """Run the stage for a parsed config; returns the output path."""
    import ray

    from pipelines.core.runtime import ray_session

    for path in cfg.traces_path:
        if read_manifest(path) is None:
            raise ConfigError(f"traces_path: {path} is not a complete traces artifact (no manifest.json); run synth")
    art = Artifact(cfg.output_dir, kind="selection", stage="select", config=to_dict(cfg), inputs=cfg.traces_path)
    if art.up_to_date() and not cfg.force:
        print(art.skip_message())
        return art.path
    with art.writing(resume=False) as tmp, ray_session(cfg.address), contextlib.ExitStack() as stack:
        subs, folders = {}, {}
        for name, kind in KINDS.items():
            subs[name] = Artifact(
                storage.join(tmp, name), kind=kind, stage="select", config=art.config, inputs=cfg.traces_path
            )
            sub_tmp = str(stack.enter_context(subs[name].writing(resume=False)))
            for k, (where, folder) in WHERE.items():
                if where == name:
                    folders[k] = storage.join(sub_tmp, folder) if folder else sub_tmp
        samples = sum(read_manifest(p)["counts"].get("samples", 0) for p in cfg.traces_path)
        staged = storage.join(str(tmp), ".staged")
        summaries = []
        if samples:  # no samples at all: nothing to group (Ray cannot group an empty table)
            records = build(cfg, samples // ROWS_PER_SHARD + 1)
            kwargs = {"fn_kwargs": {"staged": staged}, "batch_size": None, "batch_format": "pyarrow"}
            held = records.map_batches(stage_records, **kwargs).iter_batches(batch_format="pyarrow")
            pairs = {(r["kind"], int(r["shard"])) for batch in held for r in batch.to_pylist()}  # blocks x parts
            parts = [{"kind": k, "shard": s} for k, s in sorted(pairs)]
            kwargs = {"staged": staged, "folders": folders}
            written = ray.data.from_items(parts).map(write_kind, fn_kwargs=kwargs).take_all()  # one per shard
            summaries = [json.loads(w["summary"]) for w in written]
        storage.remove(staged)
        counts = tally(summaries)
        for name, sub in subs.items():
            sub.counts = counts[name]
        art.counts = counts
        if cfg.decontaminate_against:
            art.extra["decontamination"] = decontamination_counts(cfg, counts)
        storage.write_text(report(cfg, counts, summaries), storage.join(str(tmp), "report.md"))
    print(
        f"[select] wrote {art.path}: "
        + json.dumps({k: v.get("kept") for k, v in counts.items() if isinstance(v, dict)})
    )
    return art.path


def tally(summaries: list[dict]) -> dict:
    """Counts per set and per reason, from the writers' summaries; the totals must add up (checked here, so a bug
    cannot lose rows silently)."""
    n, labels = Counter(), {}
    for s in summaries:
        n[s["kind"]] += s["n"]
        labels[s["kind"]] = labels.get(s["kind"], Counter()) + Counter(s["labels"])

    def label(kind: str) -> dict:
        return dict(sorted(labels.get(kind, Counter()).items()))

    samples = n["sft"] + n["sft_rejected"]
    counts = {
        "samples": samples,
        "prompts": n["prompt"],
        "sft": {"input": samples, "kept": n["sft"], "variants": label("sft"), "rejected": label("sft_rejected")},
        "preference": {"kept": n["pair"], "pair_types": label("pair"), "no_pair": label("pairs_missing")},
        "rl_prompts": {"input": n["prompt"], "kept": n["rl"], "rejected": label("rl_rejected")},
    }
    for name in ("sft", "rl_prompts"):
        c = counts[name]
        if c["input"] != c["kept"] + sum(c["rejected"].values()):
            raise RuntimeError(f"[select] {name} counts do not add up: {c}")
    return counts


def decontamination_counts(cfg: SelectConfig, counts: dict) -> dict:
    """Per evaluation set: traces dropped (their prompt or completion quoted it) and prompts left with none."""
    from pipelines.dedup.decontaminate import parse_spec

    out = {}
    for spec in cfg.decontaminate_against:
        reason = f"contaminated:{parse_spec(spec)[0]}"
        out[parse_spec(spec)[0]] = {
            "ngram": cfg.decontaminate_ngram,
            "traces_removed": counts["sft"]["rejected"].get(reason, 0),
            "prompts_removed": counts["rl_prompts"]["rejected"].get(reason, 0),
        }
    return out


def report(cfg: SelectConfig, counts: dict, summaries: list[dict]) -> str:
    unit = "tokens" if cfg.tokenizer_name_or_path else "words"
    lines = [
        f"# select report: {cfg.output_dir}",
        "",
        f"Traces: {', '.join(cfg.traces_path)}",
        "",
        "## Counts",
        "",
        "```json",
        json.dumps(counts, indent=2),
        "```",
        "",
    ]
    if cfg.decontaminate_against:
        lines += [
            "## Decontamination",
            "",
            "```json",
            json.dumps(decontamination_counts(cfg, counts), indent=2),
            "```",
            "",
        ]
    bins: dict[str, Counter] = {}
    for s in summaries:
        for name, counter in s["bins"].items():  # JSON made the length bins' keys strings
            counter = Counter({(k if name == "pass_rate" else int(k)): v for k, v in counter.items()})
            bins[name] = bins.get(name, Counter()) + counter
    lines += histograms(bins, unit)
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> SelectConfig:
    cfg = parse(SelectConfig, argv=argv)
    if not cfg.traces_path:
        raise ConfigError("traces_path is required: one or more traces artifacts written by `nanoforge synth`")
    if not 0 <= cfg.no_think_ratio + cfg.budget_ratio <= 1:
        raise ConfigError("no_think_ratio + budget_ratio must be between 0 and 1")
    return cfg


def main(argv: list[str] | None = None) -> int:
    select(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
