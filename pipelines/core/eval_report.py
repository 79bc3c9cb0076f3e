"""The run report's evaluation section: each checkpoint's `eval.json` (base -> sft -> dpo -> grpo -> merge, in
recipe order) as one comparison table and a plot of pass@1 per benchmark and reasoning mode.

    >>> eval_table([{"checkpoint": "sft", "benchmark": "gsm8k", "mode": "think", "pass@1": 0.25, "maj@4": None}])
    ... # doctest: +NORMALIZE_WHITESPACE
    ['| checkpoint | benchmark | mode | pass@1 | maj@4 |', '|---|---|---|---|---|',
     '| sft | gsm8k | think | 0.250 | - |']

Reads only JSON files (no model, no stage imports), so `nanoforge run` can call it at the end of any recipe.
"""

from __future__ import annotations

import json
import re
from pathlib import Path


def _metric_order(name: str) -> tuple[int, int]:
    kind, k = name.split("@")
    return (0 if kind == "pass" else 1, int(k))


def eval_rows(checkpoints: list[tuple[str, str]]) -> list[dict]:
    """One row per (checkpoint, benchmark, mode) from `<dir>/eval.json`, for (stage name, dir) pairs in order;
    stages without an eval.json are left out. An eval.json from before benchmarks were named counts as its dataset."""
    rows, seen = [], set()
    for name, folder in checkpoints:
        path = Path(folder) / "eval.json"
        if folder in seen or not path.is_file():
            continue
        seen.add(folder)
        result = json.loads(path.read_text())
        benchmarks = result.get("benchmarks") or {Path(result.get("dataset") or "dataset").stem: result}
        for bench, value in benchmarks.items():
            for mode, stats in value.get("modes", {}).items():
                metrics = {k: v for k, v in stats.items() if re.fullmatch(r"(pass|maj)@\d+", k)}
                rows.append({"checkpoint": name, "benchmark": bench, "mode": mode, **metrics})
    return rows


def eval_table(rows: list[dict]) -> list[str]:
    """Markdown lines: a column per metric any row has (pass@k before maj@k, by k); '-' where a row lacks it."""
    metrics = sorted({k for r in rows for k in r if "@" in k}, key=_metric_order)
    head = ["checkpoint", "benchmark", "mode", *metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["checkpoint"], r["benchmark"], r["mode"]]
        cells += [f"{r[m]:.3f}" if r.get(m) is not None else "-" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def eval_plot(rows: list[dict], path: str | Path, metric: str = "pass@1") -> Path:
    """A line per (benchmark, mode): `metric` at each checkpoint, checkpoints in recipe order on the x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    checkpoints = list(dict.fromkeys(r["checkpoint"] for r in rows))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for series in dict.fromkeys((r["benchmark"], r["mode"]) for r in rows):
        points = {r["checkpoint"]: r.get(metric) for r in rows if (r["benchmark"], r["mode"]) == series}
        xs = [i for i, c in enumerate(checkpoints) if points.get(c) is not None]
        ax.plot(xs, [points[checkpoints[i]] for i in xs], marker="o", label=" ".join(series))
    ax.set_xticks(range(len(checkpoints)), checkpoints)
    ax.set_ylabel(metric)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def eval_section(root: str | Path, checkpoints: list[tuple[str, str]]) -> str:
    """The report's markdown section (with `eval.png` written beside report.md), or '' when nothing was evaluated."""
    rows = eval_rows(checkpoints)
    if not rows:
        return ""
    eval_plot(rows, Path(root) / "eval.png")
    return "\n## Evaluation across checkpoints\n\n" + "\n".join(eval_table(rows)) + "\n\n![pass@1](eval.png)\n"
