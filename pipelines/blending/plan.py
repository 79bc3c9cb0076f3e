"""The pure parts of `nanoforge mix`: the token plan of a phased blend, Megatron `.bin/.idx` files, the report.

Plan. Phase p gets `fraction_p * total_tokens` tokens, split over sources by its weights. Each source is read as
one stream: a seeded permutation of its documents per epoch, epoch after epoch, cut at `max_epochs` of its tokens.
Phases take consecutive stretches of that stream, cut at the document nearest the cumulative target, so a document
repeats only once the source is exhausted (epochs are counted across phases, the upsampling limit of Nemotron-H),
and rounding never drifts: a source's running total is within half a document of its target after every phase
(so within one document in any single phase). A source whose targets need more than `max_epochs` is an error,
or with `on_shortfall: report` it gives what it has and blend.json shows the shortfall. Everything depends only
on the seed, the source and phase names and the token counts.

Megatron indexed dataset (Megatron-LM `megatron/core/datasets/indexed_dataset.py`, the layout datatrove's
`MegatronTokenizedFile` writes): `<prefix>.bin` is the tokens of every document back to back; `<prefix>.idx` is
  b"MMIDIDX\\x00\\x00", version <Q 1, dtype code <B (8 = uint16, 4 = int32), <Q sequence count, <Q document count,
  int32[n] sequence lengths, int64[n] byte offsets, int64[n + 1] document indices (0, 1, ..., n).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np

from pipelines.core import storage

MEGATRON_HEADER = b"MMIDIDX\x00\x00"
MEGATRON_DTYPES = {8: np.uint16, 4: np.int32}  # Megatron's dtype codes for the two token sizes datatrove uses


class ShortfallError(ValueError):
    """A source cannot supply its target tokens within its epoch cap."""


@dataclass
class Phase:
    name: str
    fraction: float  # share of total_tokens
    weights: dict[str, float]  # source -> weight (normalised within the phase)


def _rng(seed: int, *names: str | int) -> np.random.Generator:
    """A generator keyed by names (crc32), so adding a source or phase leaves the others' draws unchanged."""
    return np.random.default_rng([seed, *(zlib.crc32(str(n).encode()) for n in names)])


def phase_targets(phases: list[Phase], sources: list[str], total_tokens: int) -> np.ndarray:
    """Target tokens, shape [phase, source]."""
    targets = np.zeros((len(phases), len(sources)))
    for p, phase in enumerate(phases):
        w = np.array([float(phase.weights.get(s, 0.0)) for s in sources])
        targets[p] = phase.fraction * total_tokens * w / w.sum()
    return targets


def plan_blend(
    tokens: dict[str, np.ndarray],
    phases: list[Phase],
    total_tokens: int,
    max_epochs: dict[str, float],
    seed: int,
    on_shortfall: str = "error",
) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """Pick documents for every phase.

    `tokens[source]`: tokens per document, in a fixed order (the caller sorts by a stable key).
    Returns (picks, stats): picks[source] = {"doc": index into tokens[source], "phase": phase index,
    "epoch": pass over the source}, in stream order; stats holds targets and what was achieved.
    """
    names = list(tokens)
    targets = phase_targets(phases, names, total_tokens)
    available = np.array([tokens[s].sum() for s in names], dtype=float)
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
    picks, achieved = {}, np.zeros_like(targets)
    for i, s in enumerate(names):
        n_tok = np.asarray(tokens[s], dtype=np.int64)
        if need[i] == 0 or n_tok.sum() == 0:
            picks[s] = {k: np.zeros(0, np.int64) for k in ("doc", "phase", "epoch")}
            continue
        epochs = int(np.ceil(min(need[i], limit[i]) / available[i])) + 1  # one more: round up to the nearest doc
        order = np.concatenate([_rng(seed, s, e).permutation(len(n_tok)) for e in range(epochs)])
        epoch = np.repeat(np.arange(epochs), len(n_tok))
        cum = np.concatenate([[0], np.cumsum(n_tok[order])])  # cum[k] = tokens in the first k docs
        m = int(np.searchsorted(cum, limit[i], side="right")) - 1  # most docs within the epoch cap
        cut = []
        for c in np.cumsum(targets[:, i]):
            c = min(c, cum[m])  # a shortfall (on_shortfall: report) gives what the cap allows
            k = int(np.searchsorted(cum[: m + 1], c))  # first k with cum[k] >= c
            if k > 0 and c - cum[k - 1] < cum[k] - c:  # one document fewer is nearer the target
                k -= 1
            cut.append(max(k, cut[-1] if cut else 0))
        bounds = [0, *cut]
        phase = np.concatenate([np.full(bounds[p + 1] - bounds[p], p) for p in range(len(phases))])
        picks[s] = {"doc": order[: bounds[-1]], "phase": phase, "epoch": epoch[: bounds[-1]]}
        achieved[:, i] = np.diff(cum[bounds])
    stats = blend_stats(names, phases, targets, achieved, available, max_epochs, tokens, picks)
    return picks, stats


def blend_stats(names, phases, targets, achieved, available, max_epochs, tokens, picks) -> dict:
    """The numbers blend.json and the report show."""
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
                    "docs": int((picks[s]["phase"] == p).sum()),
                }
                for i, s in enumerate(names)
            },
        }
    for i, s in enumerate(names):
        taken = achieved[:, i].sum()
        used = int(np.count_nonzero(np.bincount(picks[s]["doc"], minlength=len(tokens[s]))))
        out["sources"][s] = {
            "available_tokens": int(available[i]),
            "available_docs": len(tokens[s]),
            "target_tokens": int(round(targets[:, i].sum())),
            "achieved_tokens": int(taken),
            "shortfall_tokens": max(0, int(round(targets[:, i].sum() - max_epochs[s] * available[i]))),
            "epochs": round(taken / available[i], 4) if available[i] else 0.0,
            "max_epochs": max_epochs[s],
            "docs_used": used,
            "docs_unused": len(tokens[s]) - used,
        }
    return out


def shuffle_phase(seed: int, phase: str, n: int) -> np.ndarray:
    """position[i] of the i-th pick of a phase in the shuffled output (a seeded permutation)."""
    position = np.empty(n, dtype=np.int64)
    position[_rng(seed, "shuffle", phase).permutation(n)] = np.arange(n)
    return position


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
