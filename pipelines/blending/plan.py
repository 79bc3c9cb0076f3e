"""The pure parts of `nanoforge mix`: the token plan of a phased blend, Megatron `.bin/.idx` files, the report.

Plan. Phase p gets `fraction_p * total_tokens` tokens, split over sources by its weights. Each source is read as
one stream: its documents in a seeded hash order per epoch (by `stream_priority`, a 64-bit hash of (seed, source,
epoch, document key)), epoch after epoch, cut at `max_epochs` of its tokens. Phases take consecutive stretches
of that stream, cut at the document nearest the cumulative target, so a document repeats only once the source is
exhausted (epochs are counted across phases, the upsampling limit of Nemotron-H), and rounding never drifts: a
source's running total is within half a document of its target after every phase (so within one document in any
single phase). A source whose targets need more than `max_epochs` is an error, or with `on_shortfall: report` it
gives what it has and blend.json shows the shortfall. Everything depends only on the seed, the source and phase
names, the document keys and their token counts.

A cut is a `Cut`: an epoch and a threshold on (priority, key), so whether a document is before it is decided by
the document alone. That is what lets the plan run without the documents on the driver (pipelines/mix.py): the
driver needs each source's document count and token total, and then finds every cut by asking workers for
token histograms of the priorities in a narrowing range, until the range holds few enough documents to look at
(`plan_cuts` with a `resolve` function; `resolve_in_memory` is the reference, `plan_blend` the whole plan in
memory). Workers then pick a document's copies (`assign`) and its output shard (`shuffle_key`) by hashing.
(Before, the stream was a seeded permutation of all documents sorted by key, which needs every key in one place:
the blend for a seed changed with this, its targets, cuts and caps did not.)

Megatron indexed dataset (Megatron-LM `megatron/core/datasets/indexed_dataset.py`, the layout datatrove's
`MegatronTokenizedFile` writes): `<prefix>.bin` is the tokens of every document back to back; `<prefix>.idx` is
  b"MMIDIDX\\x00\\x00", version <Q 1, dtype code <B (8 = uint16, 4 = int32), <Q sequence count, <Q document count,
  int32[n] sequence lengths, int64[n] byte offsets, int64[n + 1] document indices (0, 1, ..., n).
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np

from pipelines.core import storage

MEGATRON_HEADER = b"MMIDIDX\x00\x00"
MEGATRON_DTYPES = {8: np.uint16, 4: np.int32}  # Megatron's dtype codes for the two token sizes datatrove uses
FULL = 64  # bits of a priority: a search range [lo, lo + 2**bits) with bits = FULL is every priority


class ShortfallError(ValueError):
    """A source cannot supply its target tokens within its epoch cap."""


@dataclass
class Phase:
    name: str
    fraction: float  # share of total_tokens
    weights: dict[str, float]  # source -> weight (normalised within the phase)


@dataclass
class Cut:
    """A point in a source's stream: the first `count` documents of `epoch` (in priority order), holding `tokens`.

    A document of that epoch is before the cut iff (priority, key) < (priority, key) of the cut; `priority` None:
    the whole epoch is."""

    epoch: int
    count: int
    tokens: int
    priority: int | None
    key: int = 0

    def position(self, docs: int) -> int:
        return self.epoch * docs + self.count


def _salt(seed: int, *names: str | int) -> np.uint64:
    """A 64-bit salt keyed by names (crc32), so adding a source or phase leaves the others' hashes unchanged."""
    value = np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
    for n in names:
        value = _mix64(np.array([value ^ np.uint64(zlib.crc32(str(n).encode()))], np.uint64))[0]
    return value


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijection of uint64 that spreads every input bit over the output."""
    x = np.asarray(x, np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def stream_priority(keys: np.ndarray, seed: int, source: str, epoch: int) -> np.ndarray:
    """uint64 order of a source's documents in one epoch of its stream (ties broken by key)."""
    return _mix64(np.asarray(keys, np.uint64) ^ _salt(seed, "stream", source, epoch))


def shuffle_key(keys: np.ndarray, seed: int, phase: str, source: str, epoch: int) -> np.ndarray:
    """uint64 position of a pick in its phase's shuffled output (shard = its range, rows sorted by it)."""
    return _mix64(np.asarray(keys, np.uint64) ^ _salt(seed, "shuffle", phase, source, epoch))


def before(priority: np.ndarray, keys: np.ndarray, cut: Cut) -> np.ndarray:
    """Which documents of `cut.epoch` (their priorities and keys) are before the cut."""
    if cut.priority is None:
        return np.ones(len(priority), bool)
    p, k = np.uint64(cut.priority), np.uint64(cut.key)
    return (priority < p) | ((priority == p) & (np.asarray(keys, np.uint64) < k))


def phase_of(priority: np.ndarray, keys: np.ndarray, epoch: int, cuts: list[Cut]) -> np.ndarray:
    """Phase of each document's copy in `epoch` (len(cuts): not picked), from its priority in that epoch and its
    key; `cuts` are the phases' ends, in stream order."""
    phase = np.full(len(keys), len(cuts), np.int32)
    for p in reversed(range(len(cuts))):
        cut = cuts[p]
        if epoch < cut.epoch:
            phase[:] = p
        elif epoch == cut.epoch:
            phase[before(priority, keys, cut)] = p
    return phase


def phase_targets(phases: list[Phase], sources: list[str], total_tokens: int) -> np.ndarray:
    """Target tokens, shape [phase, source]."""
    targets = np.zeros((len(phases), len(sources)))
    for p, phase in enumerate(phases):
        w = np.array([float(phase.weights.get(s, 0.0)) for s in sources])
        targets[p] = phase.fraction * total_tokens * w / w.sum()
    return targets


# A query asks for a cut in one epoch of a source: {"source", "epoch", "r": tokens into the epoch, "rule"}.
# rule "nearest": the cut at the document whose cumulative tokens is nearest r (of the first reaching r and the
# one before it; a tie takes the later); rule "floor": the most documents whose tokens stay <= r.
Resolve = Callable[[list[dict]], list[Cut]]


def cut_in(priority: np.ndarray, keys: np.ndarray, tokens: np.ndarray, query: dict, base=(0, 0), hi=None) -> Cut:
    """The cut `query` asks for among documents that hold it (sorted here), after `base` = (docs, tokens) before
    them; `hi`: the priority that bounds them from above (None: the end of the epoch)."""
    order = np.lexsort((keys, priority))
    priority, keys = np.asarray(priority, np.uint64)[order], np.asarray(keys, np.uint64)[order]
    cum = base[1] + np.cumsum(np.asarray(tokens, np.int64)[order])
    r = query["r"]
    if query["rule"] == "floor":
        j = int(np.searchsorted(cum, r, side="right"))
    else:
        j = int(np.searchsorted(cum, r, side="left"))  # the document whose tokens reach r
        if j < len(cum):
            prev = cum[j - 1] if j else base[1]
            j += 0 if r - prev < cum[j] - r else 1  # without it (nearer) or with it
    done = int(cum[j - 1]) if j else int(base[1])
    if j < len(cum):
        return Cut(query["epoch"], base[0] + j, done, int(priority[j]), int(keys[j]))
    return Cut(query["epoch"], base[0] + j, done, hi, 0)


def resolve_in_memory(keys: dict[str, np.ndarray], tokens: dict[str, np.ndarray], seed: int) -> Resolve:
    """The reference resolver: every document of the source at hand."""

    def resolve(queries: list[dict]) -> list[Cut]:
        out = []
        for q in queries:
            priority = stream_priority(keys[q["source"]], seed, q["source"], q["epoch"])
            out.append(cut_in(priority, keys[q["source"]], tokens[q["source"]], q))
        return out

    return resolve


def plan_cuts(
    totals: dict[str, tuple[int, int]],
    phases: list[Phase],
    total_tokens: int,
    max_epochs: dict[str, float],
    resolve: Resolve,
    on_shortfall: str = "error",
) -> tuple[dict[str, list[Cut]], dict]:
    """Every source's phase ends (cuts[source][p]), and the stats, from (documents, tokens) per source.

    `resolve` finds the cuts in the data; all queries go to it at once (a pass over the data per search round)."""
    names = list(totals)
    targets = phase_targets(phases, names, total_tokens)
    docs = np.array([totals[s][0] for s in names], dtype=np.int64)
    available = np.array([totals[s][1] for s in names], dtype=float)
    limit = np.array([max_epochs[s] for s in names]) * available
    need = targets.sum(axis=0)
    short = [i for i in range(len(names)) if need[i] > limit[i] * (1 + 1e-9)]
    if short and on_shortfall == "error":
        lines = [
            f"  {names[i]}: needs {need[i]:,.0f} tokens = {need[i] / max(available[i], 1):.2f} epochs of "
            f"{available[i]:,.0f}, max_epochs {max_epochs[names[i]]}"
            for i in short
        ]
        raise ShortfallError(
            "sources too small for their weights under the epoch cap:\n" + "\n".join(lines) + "\n"
            "Lower their weights or total_tokens, raise max_epochs, add data, or set on_shortfall: report."
        )
    queries, asked = [], []  # asked: (source index, phase index or -1 for the cap)
    for i, s in enumerate(names):
        a = available[i]
        if need[i] == 0 or a == 0:
            continue
        e_cap = int(math.floor(limit[i] / a))
        queries.append({"source": s, "epoch": e_cap, "r": limit[i] - e_cap * a, "rule": "floor"})
        asked.append((i, -1))
        for p, c in enumerate(np.cumsum(targets[:, i])):
            if 0 < c <= limit[i]:  # past the cap the cut is the cap's
                e = max(0, math.ceil(c / a) - 1)  # c in (e * a, (e + 1) * a]
                queries.append({"source": s, "epoch": e, "r": c - e * a, "rule": "nearest"})
                asked.append((i, p))
    found = dict(zip(asked, resolve(queries), strict=True)) if queries else {}
    cuts, achieved, counts = {}, np.zeros_like(targets), np.zeros(targets.shape, np.int64)
    for i, s in enumerate(names):
        n, a = int(docs[i]), int(available[i])
        if (i, -1) not in found:
            cuts[s] = [Cut(0, 0, 0, 0, 0) for _ in phases]  # nothing picked
            continue
        cap = found[(i, -1)]
        cap_cum = cap.epoch * a + cap.tokens
        mine = []
        for p, c in enumerate(np.cumsum(targets[:, i])):
            cut = cap if c >= cap_cum else found.get((i, p), Cut(0, 0, 0, 0, 0))
            if mine and cut.position(n) < mine[-1].position(n):
                cut = mine[-1]
            mine.append(cut)
        cuts[s] = mine
        ends = np.array([0, *(c.epoch * a + c.tokens for c in mine)])
        positions = np.array([0, *(c.position(n) for c in mine)])
        achieved[:, i], counts[:, i] = np.diff(ends), np.diff(positions)
    stats = blend_stats(names, phases, targets, achieved, counts, available, docs, max_epochs)
    return cuts, stats


def assign(keys: np.ndarray, seed: int, source: str, cuts: list[Cut]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pick of these documents: (index into keys, phase, epoch), in stream order."""
    out = []
    for epoch in range(max(c.epoch for c in cuts) + 1):
        priority = stream_priority(keys, seed, source, epoch)
        phase = phase_of(priority, keys, epoch, cuts)
        picked = np.flatnonzero(phase < len(cuts))
        picked = picked[np.lexsort((keys[picked], priority[picked]))]
        out.append((picked, phase[picked], np.full(len(picked), epoch, np.int32)))
    return tuple(np.concatenate(parts) for parts in zip(*out, strict=True))


def plan_blend(
    tokens: dict[str, np.ndarray],
    phases: list[Phase],
    total_tokens: int,
    max_epochs: dict[str, float],
    seed: int,
    on_shortfall: str = "error",
    keys: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """Pick documents for every phase, in memory (the reference of what mix does on workers).

    `tokens[source]`: tokens per document; `keys[source]`: their uint64 keys (default 0, 1, 2, ...).
    Returns (picks, stats): picks[source] = {"doc": index into tokens[source], "phase": phase index,
    "epoch": pass over the source}, in stream order; stats holds targets and what was achieved.
    """
    keys = keys or {s: np.arange(len(t), dtype=np.uint64) for s, t in tokens.items()}
    tokens = {s: np.asarray(t, np.int64) for s, t in tokens.items()}
    totals = {s: (len(t), int(t.sum())) for s, t in tokens.items()}
    resolve = resolve_in_memory(keys, tokens, seed)
    cuts, stats = plan_cuts(totals, phases, total_tokens, max_epochs, resolve, on_shortfall)
    picks = {}
    for s, k in keys.items():
        doc, phase, epoch = assign(k, seed, s, cuts[s])
        picks[s] = {"doc": doc.astype(np.int64), "phase": phase, "epoch": epoch}
    return picks, stats


def blend_stats(names, phases, targets, achieved, counts, available, docs, max_epochs) -> dict:
    """The numbers blend.json and the report show; `counts[p, i]`: documents of source i in phase p."""
    out = {"phases": {}, "sources": {}}
    for p, phase in enumerate(phases):
        total_t, total_a = targets[p].sum(), achieved[p].sum()
        out["phases"][phase.name] = {
            "fraction_of_budget": phase.fraction,
            "target_tokens": int(round(total_t)),
            "achieved_tokens": int(total_a),
            "sources": {
                s: {
                    "weight": float(phase.weights.get(s, 0.0)),
                    "target_tokens": int(round(targets[p, i])),
                    "achieved_tokens": int(achieved[p, i]),
                    "target_fraction": round(targets[p, i] / total_t, 6) if total_t else 0.0,
                    "achieved_fraction": round(achieved[p, i] / total_a, 6) if total_a else 0.0,
                    "docs": int(counts[p, i]),
                }
                for i, s in enumerate(names)
            },
        }
    for i, s in enumerate(names):
        taken = achieved[:, i].sum()
        used = int(min(docs[i], counts[:, i].sum()))  # the stream covers every document before repeating one
        out["sources"][s] = {
            "available_tokens": int(available[i]),
            "available_docs": int(docs[i]),
            "target_tokens": int(round(targets[:, i].sum())),
            "achieved_tokens": int(taken),
            "shortfall_tokens": max(0, int(round(targets[:, i].sum() - max_epochs[s] * available[i]))),
            "epochs": round(taken / available[i], 4) if available[i] else 0.0,
            "max_epochs": max_epochs[s],
            "docs_used": used,
            "docs_unused": int(docs[i]) - used,
        }
    return out


# --- Megatron .bin/.idx --------------------------------------------------------------------------------------------


def token_dtype(vocab_size: int) -> type:
    """uint16 when every id fits (as datatrove and Megatron choose), else int32."""
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32


def write_megatron(prefix: str | Path, lengths: np.ndarray, tokens: np.ndarray, dtype: type) -> None:
    """One sequence per document: `tokens` is every document's ids back to back, `lengths` the count of each."""
    lengths = np.asarray(lengths, dtype=np.int32)
    code = {np.uint16: 8, np.int32: 4}[dtype]
    with fsspec.open(f"{prefix}.bin", "wb") as f:  # a local path or a URL
        f.write(np.asarray(tokens, dtype=dtype).tobytes(order="C"))
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)[:-1]]) * np.dtype(dtype).itemsize
    with fsspec.open(f"{prefix}.idx", "wb") as f:
        f.write(MEGATRON_HEADER)
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", code))
        f.write(struct.pack("<Q", len(lengths)))
        f.write(struct.pack("<Q", len(lengths) + 1))
        f.write(lengths.tobytes(order="C"))
        f.write(offsets.astype(np.int64).tobytes(order="C"))
        f.write(np.arange(len(lengths) + 1, dtype=np.int64).tobytes(order="C"))


def read_megatron(prefix: str | Path) -> list[np.ndarray]:
    """The token ids of every sequence in `<prefix>.bin`, using `<prefix>.idx` (checks the header)."""
    idx = Path(f"{prefix}.idx").read_bytes()
    if idx[:9] != MEGATRON_HEADER or struct.unpack("<Q", idx[9:17])[0] != 1:
        raise ValueError(f"{prefix}.idx: not a Megatron indexed dataset (version 1)")
    dtype = MEGATRON_DTYPES[idx[17]]
    n, _n_docs = struct.unpack("<QQ", idx[18:34])
    lengths = np.frombuffer(idx, np.int32, n, 34)
    offsets = np.frombuffer(idx, np.int64, n, 34 + 4 * n)
    data = np.fromfile(f"{prefix}.bin", dtype=dtype)
    size = np.dtype(dtype).itemsize
    return [data[o // size : o // size + length] for o, length in zip(offsets, lengths, strict=True)]


# --- report --------------------------------------------------------------------------------------------------------


def write_report(out: str | Path, stats: dict, header: list[str]) -> None:
    """`report.md` (a table per phase) and `mixture.png` (target vs achieved share per source, per phase)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = stats["phases"]
    fig, axes = plt.subplots(1, len(phases), figsize=(4.5 * len(phases), 3.6), squeeze=False)
    for ax, (name, phase) in zip(axes[0], phases.items(), strict=True):
        sources = list(phase["sources"])
        x = np.arange(len(sources))
        ax.bar(x - 0.2, [phase["sources"][s]["target_fraction"] for s in sources], 0.4, label="target")
        ax.bar(x + 0.2, [phase["sources"][s]["achieved_fraction"] for s in sources], 0.4, label="achieved")
        ax.set_xticks(x, sources, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{name} ({phase['fraction_of_budget']:.0%} of tokens)", fontsize=10)
        ax.set_ylabel("share of phase tokens")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    with fsspec.open(storage.join(out, "mixture.png"), "wb") as f:  # a directory or an object-store prefix
        fig.savefig(f, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)

    lines = [*header, "", "![target vs achieved mixture](mixture.png)", ""]
    for name, phase in phases.items():
        lines += [
            f"## {name}: {phase['achieved_tokens']:,} of {phase['target_tokens']:,} target tokens "
            f"({phase['fraction_of_budget']:.0%} of the budget)",
            "",
            "| source | weight | target tokens | achieved tokens | target share | achieved share | docs |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for s, r in phase["sources"].items():
            lines.append(
                f"| {s} | {r['weight']:g} | {r['target_tokens']:,} | {r['achieved_tokens']:,} | "
                f"{r['target_fraction']:.2%} | {r['achieved_fraction']:.2%} | {r['docs']:,} |"
            )
        lines.append("")
    lines += ["## Sources", "", "| source | available tokens | used tokens | epochs | max epochs | shortfall |"]
    lines.append("|---|---:|---:|---:|---:|---:|")
    for s, r in stats["sources"].items():
        lines.append(
            f"| {s} | {r['available_tokens']:,} | {r['achieved_tokens']:,} | {r['epochs']:.2f} | "
            f"{r['max_epochs']:g} | {r['shortfall_tokens']:,} |"
        )
    storage.write_text("\n".join(lines) + "\n", storage.join(out, "report.md"))
