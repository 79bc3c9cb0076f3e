"""Mixing + tokenization throughput: `nanoforge mix` vs datatrove's Megatron tokenizer; sampling vs `datasets`.

    python -m benchmarks.mix [--copies 8] [--cores 2] [--sampling_docs 1000000]

Input: real text from ../shared/data (C4 pages, GSM8K, MATH-500 and Wikipedia articles) copied `--copies` times with
new ids, as three documents artifacts (web, math, wiki; 8 Parquet files each), and a byte-level BPE (8k vocab,
`sft.tokenizer`) trained on it. Compared, each with `--cores` processes and one tokenizer thread per process
(RAYON_NUM_THREADS=1), so tokens/s/core is comparable:
  - `nanoforge mix`: one phase taking every document once (weights = source sizes, total = all tokens): read,
    tokenize, plan, route, shuffle, write Parquet shards + Megatron .bin/.idx (Ray already running);
  - datatrove: `ParquetReader -> MegatronDocumentTokenizer` on the same files with `LocalPipelineExecutor`
    (tokenize and write .bin/.idx per task; no sampling, shuffle or Parquet output);
The token totals must agree (checked). Peak memory per worker: the largest resident set of any worker process
(Ray's workers for mix, datatrove's pool processes) while it runs, sampled every 0.1 s, and mix's driver.
Sampling alone (no text): our token-exact planner + shuffle vs
`datasets.interleave_datasets` (probabilities per document, set from the token weights and mean lengths), on
`--sampling_docs` synthetic documents; the table gives the worst token-share error of each.
Results: benchmarks/results/mix.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # one tokenizer thread per process, in every process
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("NANOFORGE_PROGRESS", "0")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NANOFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "benchmarks" / "results" / "mix.md"


def real_texts() -> dict[str, list[str]]:
    def jsonl(*parts):
        return [json.loads(line) for line in DATA.joinpath(*parts).open()]

    return {
        "web": [r["text"] for r in jsonl("llamafactory_demo", "c4_demo.jsonl")],
        "math": [r["question"] + "\n" + r["answer"] for r in jsonl("gsm8k", "test.jsonl")]
        + [r["problem"] + "\n\n" + r["solution"] for r in jsonl("math500", "test.jsonl")],
        "wiki": [line.strip() for line in DATA.joinpath("llamafactory_demo", "wiki_demo.txt").open() if line.strip()],
    }


def write_artifacts(root: Path, texts: dict[str, list[str]], copies: int, files: int = 8) -> dict[str, Path]:
    out = {}
    for name, docs in texts.items():
        rows = [
            {"id": f"{name}-{c}-{i}", "text": t, "source": name, "url": None, "metadata": "{}"}
            for c in range(copies)
            for i, t in enumerate(docs)
        ]
        table = pa.Table.from_pylist(rows)
        (root / name / "documents").mkdir(parents=True)
        step = -(-len(rows) // files)
        for f in range(files):
            pq.write_table(table.slice(f * step, step), root / name / "documents" / f"part-{f:05d}.parquet")
        (root / name / "manifest.json").write_text(json.dumps({"status": "complete", "hash": name}))
        out[name] = root / name
    return out


@contextmanager
def peak_rss(peaks: dict):
    """Fills `peaks` with the peak RSS (bytes) of this process ("driver") and of the largest worker process in its
    tree ("worker": a Ray worker, or a process started inside the block that is not Ray's own: raylet, GCS,
    agents), sampled every 0.1 s."""
    import psutil

    me, done = psutil.Process(), threading.Event()
    before = {p.pid for p in me.children(recursive=True)}
    peaks |= {"driver": 0, "worker": 0}

    def sample():
        while not done.is_set():
            peaks["driver"] = max(peaks["driver"], me.memory_info().rss)
            for p in me.children(recursive=True):
                try:
                    name, line = p.name(), " ".join(p.cmdline())  # a Ray worker's title: ray::IDLE, ray::<task>
                    ray_worker = (name.startswith("ray::") and not name.endswith("Agent")) or "default_worker" in line
                    if ray_worker or (p.pid not in before and "/ray/" not in line and name != "raylet"):
                        peaks["worker"] = max(peaks["worker"], p.memory_info().rss)
                except psutil.Error:
                    pass
            done.wait(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peaks
    finally:
        done.set()
        thread.join()


def run_nanoforge(root: Path, artifacts: dict[str, Path], tokenizer: Path, sizes: dict[str, int]) -> tuple[float, int]:
    from pipelines import mix

    names = list(artifacts)
    config = {
        "input_paths": [str(artifacts[n]) for n in names],
        "sources": [{"name": n, "input": i} for i, n in enumerate(names)],
        "phases": [{"name": "all", "fraction": 1.0, "weights": {n: sizes[n] for n in names}}],
        "total_tokens": sum(sizes.values()),
        "tokenizer": str(tokenizer),
        "eos_token": "</s>",
        "docs_per_shard": 2_000,
        "max_epochs": 1.0,
    }
    path = root / "mix.yaml"
    path.write_text(json.dumps(config))
    start = time.perf_counter()
    mix.main(["--config", str(path), "--output_dir", str(root / "blend"), "--force"])
    seconds = time.perf_counter() - start
    blend = json.loads((root / "blend" / "blend.json").read_text())
    passes = json.loads((root / "blend" / "manifest.json").read_text())["seconds"]
    return seconds, blend["phases"]["all"]["achieved_tokens"], passes


def run_datatrove(root: Path, artifacts: dict[str, Path], tokenizer: Path, cores: int) -> tuple[float, int]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.tokens.megatron_tokenizer import MegatronDocumentTokenizer

    from pipelines.blending.plan import read_megatron

    shutil.rmtree(root / "datatrove", ignore_errors=True)
    shutil.rmtree(root / "datatrove_logs", ignore_errors=True)
    start = time.perf_counter()
    for name, path in artifacts.items():
        LocalPipelineExecutor(
            pipeline=[
                ParquetReader(str(path / "documents"), glob_pattern="*.parquet", text_key="text", id_key="id"),
                MegatronDocumentTokenizer(
                    str(root / "datatrove" / name),
                    tokenizer_name_or_path=str(tokenizer / "tokenizer.json"),
                    eos_token="</s>",
                ),
            ],
            tasks=cores,
            workers=cores,
            logging_dir=str(root / "datatrove_logs" / name),
        ).run()
    seconds = time.perf_counter() - start
    tokens = sum(sum(len(s) for s in read_megatron(p.with_suffix(""))) for p in (root / "datatrove").rglob("*.idx"))
    return seconds, tokens


def sampling(n_docs: int, seed: int = 0) -> list[dict]:
    """Our planner + shuffle vs datasets.interleave_datasets, on token counts alone."""
    import datasets

    from pipelines.blending.plan import Phase, plan_blend, shuffle_key

    datasets.disable_progress_bars()
    rng = np.random.default_rng(seed)
    # three sources with very different document lengths (web pages, math solutions, books)
    spec = {"web": (0.6, 50, 3000), "math": (0.3, 20, 600), "books": (0.1, 1000, 20000)}
    tokens = {s: rng.integers(lo, hi, int(n_docs * share)) for s, (share, lo, hi) in spec.items()}
    weights = {"web": 0.5, "math": 0.3, "books": 0.2}
    total = int(0.8 * min(tokens[s].sum() / weights[s] for s in tokens))  # every source under one epoch
    rows = []

    start = time.perf_counter()
    picks, stats = plan_blend(tokens, [Phase("p", 1.0, weights)], total, {s: 1.0 for s in tokens}, seed)
    shuffled = [
        shuffle_key(np.arange(len(tokens[s]), dtype=np.uint64)[p["doc"]], seed, "p", s, 0) for s, p in picks.items()
    ]
    order = np.argsort(np.concatenate(shuffled))  # the output order: by shuffle key, as mix's shard writers sort
    ours_s = time.perf_counter() - start
    shares = stats["phases"]["p"]["sources"]
    err = max(abs(shares[s]["achieved_fraction"] - weights[s]) for s in weights)
    rows.append({"method": "nanoforge plan + shuffle (token-exact)", "docs": len(order), "s": ours_s, "err": err})

    dsets = [
        datasets.Dataset.from_dict({"num_tokens": tokens[s], "source": np.full(len(tokens[s]), i)})
        for i, s in enumerate(tokens)
    ]
    mean = np.array([tokens[s].mean() for s in tokens])
    probs = np.array([weights[s] for s in tokens]) / mean
    start = time.perf_counter()
    mixed = datasets.interleave_datasets(
        dsets, probabilities=list(probs / probs.sum()), seed=seed, stopping_strategy="first_exhausted"
    )
    mixed = mixed.select(range(min(len(order), len(mixed))))
    arrow = mixed.with_format("arrow")  # the fast way to read the mixed rows (python lists take ~40x longer)
    got, source = arrow["num_tokens"].to_numpy(), arrow["source"].to_numpy()
    theirs_s = time.perf_counter() - start
    share = np.bincount(source, got, minlength=3) / got.sum()
    err = max(abs(share[i] - weights[s]) for i, s in enumerate(tokens))
    rows.append(
        {"method": "datasets.interleave_datasets (per-doc probabilities)", "docs": len(got), "s": theirs_s, "err": err}
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=8, help="copies of the real text (new ids each)")
    parser.add_argument("--cores", type=int, default=2, help="Ray CPUs and datatrove workers")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each; the best time is reported")
    parser.add_argument("--sampling_docs", type=int, default=1_000_000, help="documents for the sampling comparison")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"needs the real data at {DATA}", file=sys.stderr)
        return 1
    from pipelines.blending.plan import read_megatron
    from pipelines.core.runtime import init_ray
    from sft.tokenizer import train_tokenizer

    texts = real_texts()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        artifacts = write_artifacts(root / "docs", texts, args.copies)
        tokenizer = root / "tokenizer"
        train_tokenizer([t for docs in texts.values() for t in docs], 8192).save_pretrained(tokenizer)
        init_ray(num_cpus=args.cores)
        dt_runs, nf_runs = [], []
        for _ in range(args.repeat):  # alternate the two, keep each one's best: the machine is shared
            load = os.getloadavg()[0]
            with peak_rss({}) as dt_peak:
                seconds, dt_tokens = run_datatrove(root, artifacts, tokenizer, args.cores)
            dt_runs.append({"s": seconds, "load": load, **dt_peak})
            # exact token counts per source, from datatrove's files, so mix takes every document once
            per_source = {
                name: sum(
                    len(x)
                    for p in (root / "datatrove" / name).rglob("*.idx")
                    for x in read_megatron(p.with_suffix(""))
                )
                for name in artifacts
            }
            load = os.getloadavg()[0]
            with peak_rss({}) as nf_peak:
                seconds, nf_tokens, passes = run_nanoforge(root, artifacts, tokenizer, per_source)
            assert nf_tokens == dt_tokens, f"token totals differ: mix {nf_tokens} vs datatrove {dt_tokens}"
            nf_runs.append({"s": seconds, "load": load, "passes": passes, **nf_peak})
        dt, nf = min(dt_runs, key=lambda r: r["s"]), min(nf_runs, key=lambda r: r["s"])
        dt_s, nf_s, passes = dt["s"], nf["s"], nf["passes"]
        docs = sum(len(v) for v in texts.values()) * args.copies
        mb = sum(len(t.encode()) for v in texts.values() for t in v) * args.copies / 1e6
    sample_rows = sampling(args.sampling_docs)

    command = (
        f"python -m benchmarks.mix --copies {args.copies} --cores {args.cores} --repeat {args.repeat} "
        f"--sampling_docs {args.sampling_docs}"
    )
    runs = "; ".join(
        f"run {i + 1}: datatrove {d['s']:.1f} s, mix {n['s']:.1f} s ({d['s'] / n['s']:.2f}x; mix passes "
        + " / ".join(f"{v:.1f}" for v in n["passes"].values())
        + f"; load average {d['load']:.1f} / {n['load']:.1f})"
        for i, (d, n) in enumerate(zip(dt_runs, nf_runs, strict=True))
    )
    lines = [
        "## mix: blend + tokenize throughput (CPU)",
        "",
        f"{docs:,} documents ({mb:.1f} MB: C4, GSM8K, MATH-500, Wikipedia x{args.copies}), byte-level BPE 8k vocab, "
        f"{args.cores} processes with one tokenizer thread each; {dt_tokens:,} tokens (EOS included) in both. "
        f"Best of {args.repeat} alternating runs each, on a shared, loaded 2-core machine: compare ratios.",
        "",
        "| method | does | wall s | tokens/s/core | vs datatrove | peak RSS per worker |",
        "|---|---|---:|---:|---:|---:|",
        f"| datatrove `ParquetReader -> MegatronDocumentTokenizer` | tokenize, write .bin/.idx | {dt_s:.1f} "
        f"| {dt_tokens / dt_s / args.cores:,.0f} | 1.00x | {dt['worker'] / 1e6:,.0f} MB |",
        "| `nanoforge mix` (Ray running) | tokenize, plan, route, shuffle, write Parquet + .bin/.idx | "
        f"{nf_s:.1f} | {nf_tokens / nf_s / args.cores:,.0f} | {dt_s / nf_s:.2f}x | {nf['worker'] / 1e6:,.0f} MB "
        f"(driver {nf['driver'] / 1e6:,.0f} MB) |",
        "| of which pass 1 (`prepare`) | read, tokenize, write Parquet with token ids | "
        f"{passes['prepare']:.1f} | {nf_tokens / passes['prepare'] / args.cores:,.0f} | "
        f"{dt_s / passes['prepare']:.2f}x | |",
        "",
        "mix passes (s): " + ", ".join(f"{k} {v:.1f}" for k, v in passes.items()) + ". A blend reads its sources "
        "twice (tokenize and count, then route the picks) and rewrites them once more in shuffled order; datatrove "
        "tokenizes in input order and does not sample, shuffle or write the Parquet shards. Each run (mix passes "
        f"prepare / plan / route / shards; the first run starts Ray's workers): {runs}.",
        "",
        f"Sampling alone ({sample_rows[0]['docs']:,} of {args.sampling_docs:,} synthetic documents, 3 sources with "
        "very different lengths, target token shares 50/30/20%):",
        "",
        "| method | docs picked | s | docs/s | worst token-share error |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {r['method']} | {r['docs']:,} | {r['s']:.2f} | {r['docs'] / r['s']:,.0f} | {r['err']:.2%} |"
            for r in sample_rows
        ),
        "",
        f"Command: `{command}`",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
