"""The run report: one static HTML page over a recipe's outputs (no server, no scripts), written by `nanoforge run`.

    from pipelines.core.run_report import write_run_report
    write_run_report("runs/demo", [("curate", "runs/demo/curate", "done"), ...])   # -> runs/demo/report.html

Per stage: its status, counts, and links to its manifest, card (README.md) and report.md, with its own plots
(curate's drop reasons and lengths, mix's target vs achieved mixture) and plots drawn here from what the stage
wrote: drop reasons from the manifest's counts, pass rates (traces' `verified`, RL prompts' `pass_rate`), SFT
lengths, training curves from `trainer_state.json` (or `metrics.jsonl`); and across stages, every checkpoint's
eval. Plots go to `report_plots/`; every link is relative, so the folder can be copied or served as it is.
Reading data is bounded: at most `MAX_ROWS` values of one column per plot.
"""

from __future__ import annotations

import html
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipelines.core.artifacts import read_manifest

log = logging.getLogger(__name__)
PLOTS = "report_plots"
MAX_ROWS = 100_000  # values read per plotted column: a histogram needs a sample, never the corpus
DROP_WORDS = ("reject", "drop", "quarantin", "unpaired", "no_pair")
LINKED = ("manifest.json", "README.md", "report.md", "stats.json", "blend.json", "eval.json", "trainer_state.json")


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})
    _plt().close(fig)
    return path


def drop_reasons(counts: dict[str, Any]) -> dict[str, int]:
    """Every per-reason count of dropped rows in a manifest's counts, e.g. {"gopher_short_document": 2, ...}."""
    out: dict[str, int] = {}
    for key, value in counts.items():
        if isinstance(value, dict) and any(w in key for w in DROP_WORDS):
            out |= {
                f"{key}:{r}" if key not in ("rejected", "dropped") else str(r): n
                for r, n in value.items()
                if isinstance(n, int)
            }
        elif isinstance(value, dict):
            out |= {f"{key}/{r}": n for r, n in drop_reasons(value).items()}
    return out


def column_sample(folder: Path, column: str) -> list:
    """Up to MAX_ROWS values of `column` from the Parquet files directly in `folder` (not its subfolders)."""
    import pyarrow.parquet as pq

    values: list = []
    for f in sorted(folder.glob("*.parquet")):
        pf = pq.ParquetFile(f)
        if column not in pf.schema_arrow.names:
            return []
        for batch in pf.iter_batches(columns=[column], batch_size=8192):
            values += batch.column(0).to_pylist()
            if len(values) >= MAX_ROWS:
                return values[:MAX_ROWS]
    return values


def training_log(path: Path) -> list[dict]:
    """The Trainer's log history: `trainer_state.json` (the Trainer's own file), else nanoforge's `metrics.jsonl`."""
    state = path / "trainer_state.json"
    if state.is_file():
        return json.loads(state.read_text()).get("log_history", [])
    metrics = path / "metrics.jsonl"
    if metrics.is_file():
        return [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return []


def stage_plots(name: str, path: Path, manifest: dict, out: Path) -> list[tuple[str, Path]]:
    """(caption, png) for the plots drawn here from one stage's artifact."""
    plt = _plt()
    plots = []
    reasons = drop_reasons(manifest.get("counts", {}))
    if reasons:
        fig, ax = plt.subplots(figsize=(6, 0.3 * len(reasons) + 1.2))
        ax.barh(list(reasons), list(reasons.values()), color="tab:red")
        ax.set_xlabel("rows dropped")
        plots.append(("drop reasons", _save(fig, out / f"{name}-drops.png")))
    verified = manifest.get("counts", {}).get("verified")
    rates = column_sample(path, "pass_rate") + column_sample(path / "rejected", "pass_rate")
    if rates:
        fig, ax = plt.subplots(figsize=(6, 2.5))
        ax.hist(rates, bins=10, range=(0, 1), color="tab:blue")
        ax.set_xlabel("pass rate per prompt")
        ax.set_ylabel("prompts")
        plots.append(("pass rates (kept and dropped prompts)", _save(fig, out / f"{name}-pass-rate.png")))
    elif isinstance(verified, dict) and verified:
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.bar([str(k) for k in verified], list(verified.values()), color="tab:blue")
        ax.set_ylabel("samples")
        total = sum(verified.values())
        ax.set_title(f"verified: pass rate {verified.get('true', 0) / total:.0%}" if total else "verified")
        plots.append(("pass rate (verified samples)", _save(fig, out / f"{name}-verified.png")))
    lengths = column_sample(path, "length") or column_sample(path, "num_generated_tokens")
    if lengths:
        fig, ax = plt.subplots(figsize=(6, 2.5))
        ax.hist([x for x in lengths if x is not None], bins=30, color="tab:green")
        ax.set_xlabel("length per row")
        ax.set_ylabel("rows")
        plots.append(("length histogram", _save(fig, out / f"{name}-lengths.png")))
    history = training_log(path)
    series = {k: [(h["step"], h[k]) for h in history if k in h and "step" in h] for k in ("loss", "reward")}
    series = {k: v for k, v in series.items() if v}
    if series:
        fig, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 2.5), squeeze=False)
        for ax, (key, points) in zip(axes[0], series.items(), strict=True):
            ax.plot(*zip(*points, strict=True), marker=".")
            ax.set_xlabel("step")
            ax.set_ylabel(key)
        plots.append(("training curves", _save(fig, out / f"{name}-training.png")))
    return plots


def eval_plot(evals: dict[str, dict[str, float]], out: Path) -> Path | None:
    """pass@1 per reasoning mode for every checkpoint stage, in run order."""
    if not evals:
        return None
    plt = _plt()
    modes = sorted({m for e in evals.values() for m in e})
    fig, ax = plt.subplots(figsize=(6, 2.8))
    width = 0.8 / len(modes)
    for i, mode in enumerate(modes):
        xs = [j + i * width for j in range(len(evals))]
        ax.bar(xs, [e.get(mode, 0) for e in evals.values()], width=width, label=mode)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(evals))], list(evals))
    ax.set_ylabel("pass@1")
    ax.legend()
    return _save(fig, out / "eval-across-stages.png")


def _rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _table(rows: Iterable[Iterable[Any]], head: Iterable[str]) -> str:
    cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def write_run_report(root: str | Path, stages: list[tuple[str, str, str]], title: str = "nanoforge run") -> Path:
    """Write `<root>/report.html` for `stages` = [(name, artifact path, status), ...]; returns its path."""
    root = Path(root)
    out = root / PLOTS
    sections, summary, evals = [], [], {}
    for name, artifact, status in stages:
        path = Path(artifact)
        manifest = read_manifest(path)
        summary.append([name, status, (manifest or {}).get("kind", ""), _rel(path, root)])
        if manifest is None:
            sections.append(f"<h2 id='{html.escape(name)}'>{html.escape(name)}</h2><p>No complete artifact.</p>")
            continue
        if isinstance(manifest.get("eval"), dict):
            evals[name] = {m: v for m, v in manifest["eval"].items() if isinstance(v, int | float)}
        links = [f for f in LINKED if (path / f).is_file()]
        own = sorted(p for p in path.glob("*.png"))
        try:
            plots = stage_plots(name, path, manifest, out)
        except Exception as e:  # a plot that cannot be drawn must not cost the run its report
            log.warning("run report: no plots for %s (%s: %s)", name, type(e).__name__, e)
            plots = []
        counts = {k: v for k, v in manifest.get("counts", {}).items() if not isinstance(v, dict)}
        parts = [
            f"<h2 id='{html.escape(name)}'>{html.escape(name)} <small>{html.escape(manifest['kind'])}, "
            f"nanoforge {html.escape(manifest['stage'])}</small></h2>",
            "<p>" + " · ".join(f"<a href='{_rel(path / f, root)}'>{f}</a>" for f in links) + "</p>",
            _table(counts.items(), ["count", "value"]) if counts else "",
            f"<p><b>Eval failed</b>: {html.escape(manifest['eval_error'])}</p>" if manifest.get("eval_error") else "",
        ]
        for caption, png in [*((p.stem, p) for p in own), *plots]:
            src = _rel(png, root)
            parts.append(
                f"<figure><a href='{src}'><img src='{src}' alt='{html.escape(caption)}'></a>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        sections.append("\n".join(p for p in parts if p))
    across = ""
    plot = eval_plot(evals, out)
    if plot:
        modes = sorted({m for e in evals.values() for m in e})
        across = (
            f"<h2>Eval across stages</h2><figure><img src='{_rel(plot, root)}' alt='eval across stages'>"
            "<figcaption>pass@1 per reasoning mode</figcaption></figure>"
            + _table([[n, *(e.get(m, "") for m in modes)] for n, e in evals.items()], ["stage", *modes])
        )
    index = "".join(f"<li><a href='#{html.escape(n)}'>{html.escape(n)}</a></li>" for n, *_ in stages)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}} img{{max-width:100%}} \
figure{{display:inline-block}}</style>
</head><body>
<h1>{html.escape(title)}</h1>
{_table(summary, ["stage", "status", "kind", "artifact"])}
<ul>{index}</ul>
{across}
{"".join(f"<section>{s}</section>" for s in sections)}
</body></html>
"""
    report = root / "report.html"
    report.write_text(page)
    return report
