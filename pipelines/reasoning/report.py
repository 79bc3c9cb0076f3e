"""The histograms in select's report.md: pass rate per prompt and reasoning length per sample, as text bars."""

from __future__ import annotations

from collections import Counter

BAR = 40  # characters for the largest bin


def _bars(rows: list[tuple[str, int]], title: str, header: str) -> list[str]:
    peak = max((n for _, n in rows), default=0) or 1
    lines = [f"## {title}", "", f"| {header} | count | |", "|---|---:|---|"]
    lines += [f"| {label} | {n} | {'█' * round(BAR * n / peak)} |" for label, n in rows]
    return [*lines, ""]


def pass_rate_rows(pass_rates: list[float | None]) -> list[tuple[str, int]]:
    """Bins: exactly 0, (0, 0.1], ..., (0.9, 1), exactly 1, and prompts without a verdict."""
    bins = Counter()
    for p in pass_rates:
        if p is None:
            bins["no verdict"] += 1
        elif p in (0, 1):
            bins[f"{p:.0f}"] += 1
        else:
            lo = min(int(p * 10), 9) / 10
            bins[f"({lo:.1f}, {lo + 0.1:.1f}]" if lo < 0.9 else "(0.9, 1)"] += 1
    order = ["0"] + [f"({i / 10:.1f}, {(i + 1) / 10:.1f}]" for i in range(9)] + ["(0.9, 1)", "1", "no verdict"]
    return [(b, bins[b]) for b in order if bins[b]]


def length_rows(lengths: list[int]) -> list[tuple[str, int]]:
    """Power-of-two bins: 0, 1, 2-3, 4-7, ..."""
    bins = Counter(0 if n <= 0 else n.bit_length() for n in lengths)
    return [("0" if b == 0 else f"{2 ** (b - 1)}-{2**b - 1}", bins[b]) for b in sorted(bins)]


def histograms(records: dict[str, list[dict]], unit: str) -> list[str]:
    lines = _bars(pass_rate_rows([r["pass_rate"] for r in records["prompt"]]), "Pass rate per prompt", "pass rate")
    samples = records["sft"] + records["sft_rejected"]
    for name, keep in (("correct", True), ("incorrect", False)):
        lengths = [r["length"] for r in samples if r.get("verified") is keep]
        lines += _bars(length_rows(lengths), f"Reasoning length, {name} samples ({unit})", unit)
    kept = [r["length"] for r in records["sft"]]
    lines += _bars(length_rows(kept), f"Reasoning length in the SFT set before variants ({unit})", unit)
    return lines
