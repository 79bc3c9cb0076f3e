"""select: traces -> SFT set, preference set and RL prompts (three sub-artifacts), with a report.

Local:    nanoforge select --config pipelines/configs/select_demo.yaml
Cluster:  RAY_ADDRESS=ray://head:10001 nanoforge select --config pipelines/configs/select_demo.yaml \\
              --traces_path s3://bucket/traces_a s3://bucket/traces_b --output_dir s3://bucket/selected

Plan: read one or more traces artifacts -> group by `prompt_id` (Ray Data groupby; runs of different backends on
the same prompts join, e.g. replayed references with model samples) -> `selection.select_prompt` per prompt ->
write `sft/` (TRL `messages`), `preference/` (`prompt`/`chosen`/`rejected`), `rl_prompts/` (`prompt`/`answer`),
each an artifact with its own manifest; samples and prompts not used go to `<set>/rejected/` with the reason.
With `decontaminate_against`, a trace whose prompt + completion shares an n-gram with an evaluation set is dropped
first (`contaminated:<name>`, the function curate and synth use; counts per set in the manifest and report).
Accounting: samples == sft kept + Σ sft rejected[reason]; prompts == rl kept + Σ rl rejected[reason].
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from pipelines.core.artifacts import Artifact, read_manifest
from pipelines.core.config import ConfigError, parse, to_dict
from pipelines.reasoning.report import histograms
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


def build(cfg: SelectConfig):
    """The Ray Data plan: read traces (tagged with their artifact) -> group by prompt -> JSON records per kind."""
    import ray

    from pipelines.dedup.decontaminate import build_index, contamination_reasons
    from pipelines.reasoning.backends import load_tokenizer
    from pipelines.reasoning.selection import decontaminate, select_prompt, trace_text

    def tagged(path: str):  # the same sample id can come from two runs: (traces, id) identifies a sample
        ds = ray.data.read_parquet(str(Path(path) / "traces"), columns=COLUMNS)
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
        return pa.table({"kind": [k for k, _ in out], "record": [json.dumps(r) for _, r in out]})

    # Few partitions: the default (200 hash-shuffle partitions, each a worker) swamps a laptop for a small set.
    samples = sum((read_manifest(p) or {}).get("counts", {}).get("samples", 0) for p in cfg.traces_path)
    partitions = max(1, min(200, samples // ROWS_PER_PARTITION + 1))
    return ds.groupby("prompt_id", num_partitions=partitions).map_groups(per_prompt, batch_format="pyarrow")


def select(cfg: SelectConfig) -> Path:
    """Run the stage for a parsed config; returns the output directory."""
    from pipelines.core.runtime import ray_session

    for path in cfg.traces_path:
        if read_manifest(path) is None and "://" not in path:
            raise ConfigError(f"traces_path: {path} is not a complete traces artifact (no manifest.json); run synth")
    art = Artifact(cfg.output_dir, kind="selection", stage="select", config=to_dict(cfg), inputs=cfg.traces_path)
    if art.up_to_date() and not cfg.force:
        print(art.skip_message())
        return art.path
    with art.writing(resume=False) as tmp, ray_session(cfg.address):
        records: dict[str, list[dict]] = defaultdict(list)
        counted = [(read_manifest(p) or {}).get("counts", {}).get("samples") for p in cfg.traces_path]
        empty = all(n == 0 for n in counted)  # no samples at all: nothing to group (Ray cannot group an empty table)
        for batch in [] if empty else build(cfg).iter_batches(batch_size=4096, batch_format="pyarrow"):
            for kind, record in zip(batch["kind"].to_pylist(), batch["record"].to_pylist(), strict=True):
                records[kind].append(json.loads(record))
        counts = tally(records)
        for name, kind in KINDS.items():
            sub = Artifact(tmp / name, kind=kind, stage="select", config=art.config, inputs=cfg.traces_path)
            with sub.writing(resume=False) as sub_tmp:
                for k, (where, folder) in WHERE.items():
                    if where == name and records[k]:  # sorted: groups arrive in any order, the files must not
                        rows = sorted(records[k], key=lambda r: json.dumps(r, sort_keys=True))
                        write_shard(sub_tmp / folder if folder else sub_tmp, rows, SCHEMAS[k])
                sub.counts = counts[name]
        art.counts = counts
        if cfg.decontaminate_against:
            art.extra["decontamination"] = decontamination_counts(cfg, records)
        (tmp / "report.md").write_text(report(cfg, counts, records))
    print(
        f"[select] wrote {art.path}: "
        + json.dumps({k: v.get("kept") for k, v in counts.items() if isinstance(v, dict)})
    )
    return art.path


def tally(records: dict[str, list[dict]]) -> dict:
    """Counts per set and per reason; the totals must add up (checked here, so a bug cannot lose rows silently)."""
    samples = len(records["sft"]) + len(records["sft_rejected"])
    prompts = len(records["prompt"])
    counts = {
        "samples": samples,
        "prompts": prompts,
        "sft": {
            "input": samples,
            "kept": len(records["sft"]),
            "variants": dict(Counter(r["variant"] for r in records["sft"])),
            "rejected": dict(Counter(r["reason"] for r in records["sft_rejected"])),
        },
        "preference": {
            "kept": len(records["pair"]),
            "pair_types": dict(Counter(r["pair_type"] for r in records["pair"])),
            "no_pair": dict(Counter(r["reason"] for r in records["pairs_missing"])),
        },
        "rl_prompts": {
            "input": prompts,
            "kept": len(records["rl"]),
            "rejected": dict(Counter(r["reason"] for r in records["rl_rejected"])),
        },
    }
    for name in ("sft", "rl_prompts"):
        c = counts[name]
        if c["input"] != c["kept"] + sum(c["rejected"].values()):
            raise RuntimeError(f"[select] {name} counts do not add up: {c}")
    return counts


def decontamination_counts(cfg: SelectConfig, records: dict[str, list[dict]]) -> dict:
    """Per evaluation set: traces dropped (their prompt or completion quoted it) and prompts left with none."""
    from pipelines.dedup.decontaminate import parse_spec

    out = {}
    for spec in cfg.decontaminate_against:
        reason = f"contaminated:{parse_spec(spec)[0]}"
        out[parse_spec(spec)[0]] = {
            "ngram": cfg.decontaminate_ngram,
            "traces_removed": sum(r["reason"] == reason for r in records["sft_rejected"]),
            "prompts_removed": sum(r["reason"] == reason for r in records["rl_rejected"]),
        }
    return out


def report(cfg: SelectConfig, counts: dict, records: dict[str, list[dict]]) -> str:
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
            json.dumps(decontamination_counts(cfg, records), indent=2),
            "```",
            "",
        ]
    lines += histograms(records, unit)
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
