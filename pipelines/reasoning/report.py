"""The histograms in select's report.md: pass rate per prompt and reasoning length per sample, as text bars."""

from __future__ import annotations

from collections import Counter

BAR = 40  # characters for the largest bin


def _bars(rows: list[tuple[str, int]], title: str, header: str) -> list[str]:
    peak = max((n for _, n in rows), default=0) or 1
    lines = [f"## {title}", "", f"| {header} | count | |", "|---|---:|---|"]
    lines += [f"| {label} | {n} | {'█' * round(BAR * n / peak)} |" for label, n in rows]
    return [*lines, ""]


def pass_rate_bin(p: float | None) -> str:
    """Bins: exactly 0, (0, 0.1], ..., (0.9, 1), exactly 1, and prompts without a verdict."""
    if p is None:
        return "no verdict"
    if p in (0, 1):
        return f"{p:.0f}"
    lo = min(int(p * 10), 9) / 10
    return f"({lo:.1f}, {lo + 0.1:.1f}]" if lo < 0.9 else "(0.9, 1)"


def pass_rate_rows(bins: Counter) -> list[tuple[str, int]]:
    order = ["0"] + [f"({i / 10:.1f}, {(i + 1) / 10:.1f}]" for i in range(9)] + ["(0.9, 1)", "1", "no verdict"]
    return [(b, bins[b]) for b in order if bins[b]]


def length_bin(n: int) -> int:
    """Power-of-two bins: 0, 1, 2-3, 4-7, ... (the bit length)."""
    return 0 if n <= 0 else n.bit_length()


def length_rows(bins: Counter) -> list[tuple[str, int]]:
    return [("0" if b == 0 else f"{2 ** (b - 1)}-{2**b - 1}", bins[b]) for b in sorted(bins) if bins[b]]


def histogram_bins(kind: str, records: list[dict]) -> dict[str, Counter]:
    """The bins one kind of select's records adds to the histograms (summed over the workers that wrote them)."""
    out = {}
    if kind == "prompt":
        out["pass_rate"] = Counter(pass_rate_bin(r["pass_rate"]) for r in records)
    if kind in ("sft", "sft_rejected"):
        for name, keep in (("correct", True), ("incorrect", False)):
            out[name] = Counter(length_bin(r["length"]) for r in records if r.get("verified") is keep)
    if kind == "sft":
        out["kept"] = Counter(length_bin(r["length"]) for r in records)
    return out


def histograms(bins: dict[str, Counter], unit: str) -> list[str]:
    """`bins`: `histogram_bins` summed over every kind."""
    lines = _bars(pass_rate_rows(bins.get("pass_rate", Counter())), "Pass rate per prompt", "pass rate")
    for name in ("correct", "incorrect"):
        rows = length_rows(bins.get(name, Counter()))
        lines += _bars(rows, f"Reasoning length, {name} samples ({unit})", unit)
    kept = length_rows(bins.get("kept", Counter()))
    lines += _bars(kept, f"Reasoning length in the SFT set before variants ({unit})", unit)
    return lines
