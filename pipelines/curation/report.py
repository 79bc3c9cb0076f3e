"""What `curate` tells people: counts that add up (manifest), stats.json, report.md with a table and a plot."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from pipelines.core import storage
from pipelines.curation.chunks import LENGTH_BINS

STAGE_ORDER = [
    "read",
    "extract",
    "normalize",
    "language",
    "gopher_repetition",
    "gopher_quality",
    "c4_quality",
    "fineweb_quality",
]


def aggregate(shard_stats: list[dict], *, files: list[str], skipped: list[str], resumed: dict) -> dict:
    """Sum the per-shard counts. `counts` is the manifest's: input == kept + sum(rejected) + quarantined."""
    by_stage: dict[str, Counter] = {}
    pii, sources = Counter(), {}
    kept_hist, rejected_hist = [0] * LENGTH_BINS, [0] * LENGTH_BINS
    total = Counter()
    for s in shard_stats:
        total.update(input=s["input"], kept=s["kept"], quarantined=s["quarantined"])
        for key, n in s["rejected"].items():
            stage, reason = key.split("\t")
            by_stage.setdefault(stage, Counter())[reason] += n
        pii.update(s["pii"])
        for name, c in s["sources"].items():
            sources.setdefault(name, Counter()).update(c)
        kept_hist = [a + b for a, b in zip(kept_hist, s["kept_length_hist"], strict=True)]
        rejected_hist = [a + b for a, b in zip(rejected_hist, s["rejected_length_hist"], strict=True)]
    rejected = Counter()
    for reasons in by_stage.values():
        rejected.update(reasons)
    counts = {
        "input": total["input"],
        "kept": total["kept"],
        "rejected": dict(sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0]))),
        "quarantined": total["quarantined"],
    }
    if counts["input"] != counts["kept"] + sum(rejected.values()) + counts["quarantined"]:
        raise AssertionError(f"curate lost documents: {counts}")  # a bug, never a user mistake
    return {
        "counts": counts,
        "rejected_by_stage": {
            stage: dict(sorted(by_stage[stage].items())) for stage in sorted(by_stage, key=_stage_rank)
        },
        "pii_redactions": {k: pii.get(k, 0) for k in ("email", "ip_address", "phone_number")},
        "sources": {name: dict(c) for name, c in sorted(sources.items())},
        "length_histogram": {
            "bin_edges_chars": [2**b - 1 for b in range(LENGTH_BINS + 1)],
            "kept": kept_hist,
            "rejected": rejected_hist,
        },
        "files": len(files),
        "skipped_files": skipped,
        "resumed": resumed,
    }


def _stage_rank(stage: str) -> tuple[int, str]:
    """Per-document stages in pipeline order, then global steps (exact_dedup, ...) in name order."""
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), stage)


def summary_line(stats: dict, seconds: float, path: str | Path) -> str:
    c = stats["counts"]
    n = max(c["input"], 1)
    top = ", ".join(f"{reason} {k}" for reason, k in list(c["rejected"].items())[:3])
    r = stats["resumed"]
    resumed = f" (resumed: {r['chunks_reused']}/{r['chunks']} chunks already done)" if r["chunks_reused"] else ""
    return (
        f"[curate] {c['input']} in -> {c['kept']} kept ({100 * c['kept'] / n:.1f}%), "
        f"{sum(c['rejected'].values())} rejected ({top or 'none'}), {c['quarantined']} quarantined "
        f"in {seconds:.1f}s ({c['input'] / max(seconds, 1e-9):.0f} docs/s){resumed} -> {path}"
    )


def write(out: str | Path, stats: dict) -> None:
    """stats.json, report.png, report.md into `out` (a directory or an object-store prefix)."""
    import fsspec

    storage.write_text(json.dumps(stats, indent=2) + "\n", storage.join(out, "stats.json"))
    with fsspec.open(storage.join(out, "report.png"), "wb") as f:
        plot(stats, f)
    storage.write_text(markdown(stats), storage.join(out, "report.md"))


def markdown(stats: dict) -> str:
    c = stats["counts"]
    n = max(c["input"], 1)
    lines = [
        "# curate report",
        "",
        f"{c['input']} input records from {stats['files']} files: **{c['kept']} kept** ({100 * c['kept'] / n:.1f}%), "
        f"{sum(c['rejected'].values())} rejected, {c['quarantined']} quarantined (see `quarantine/`).",
        "",
        "| stage | reason | documents | % of input |",
        "|---|---|---:|---:|",
    ]
    for stage, reasons in stats["rejected_by_stage"].items():
        for reason, k in sorted(reasons.items(), key=lambda kv: -kv[1]):
            lines.append(f"| {stage} | {reason} | {k} | {100 * k / n:.2f} |")
    lines.append(f"| (unreadable) | quarantined | {c['quarantined']} | {100 * c['quarantined'] / n:.2f} |")
    lines.append(f"| **kept** | | **{c['kept']}** | {100 * c['kept'] / n:.2f} |")
    pii = stats["pii_redactions"]
    lines += [
        "",
        f"PII redacted in kept documents: {pii['email']} emails, {pii['ip_address']} IP addresses, "
        f"{pii['phone_number']} phone numbers.",
        "",
        "| source | input | kept |",
        "|---|---:|---:|",
        *(f"| {name} | {s.get('input', 0)} | {s.get('kept', 0)} |" for name, s in stats["sources"].items()),
        "",
        "![drop reasons and document lengths](report.png)",
        "",
    ]
    if stats["skipped_files"]:
        lines += [
            "Files in input directories left out (unknown format):",
            *(f"- `{f}`" for f in stats["skipped_files"]),
            "",
        ]
    return "\n".join(lines)


def plot(stats: dict, path) -> None:
    """Two panels: documents dropped per reason; kept and rejected document lengths (log2 bins)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reasons = [(f"{stage}: {r}", k) for stage, rs in stats["rejected_by_stage"].items() for r, k in rs.items()]
    reasons.append(("quarantined", stats["counts"]["quarantined"]))
    reasons.sort(key=lambda x: x[1])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, max(3.5, 0.28 * len(reasons) + 1.5)))
    ax1.barh([r for r, _ in reasons], [k for _, k in reasons], color="tab:red")
    ax1.set_xlabel("documents")
    ax1.set_title("why documents were dropped")
    ax1.tick_params(axis="y", labelsize=8)
    hist = stats["length_histogram"]
    edges = hist["bin_edges_chars"]
    ax2.stairs(hist["kept"], [e + 1 for e in edges], label="kept", color="tab:green")
    ax2.stairs(hist["rejected"], [e + 1 for e in edges], label="rejected", color="tab:red")
    used = [i for i, (a, b) in enumerate(zip(hist["kept"], hist["rejected"], strict=True)) if a or b] or [0]
    ax2.set_xscale("log")
    ax2.set_xlim(edges[used[0]] + 1, edges[used[-1] + 1] + 1)
    ax2.set_xlabel("document length (characters)")
    ax2.set_ylabel("documents")
    ax2.set_title("document lengths")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
