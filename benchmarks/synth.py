"""Backend overhead: `nanoforge synth --backend transformers` vs a plain `model.generate` loop, same prompts, CPU.

    python -m benchmarks.synth [--preset tiny|small] [--prompts 32 96] [--max_new_tokens 32] [--batch_size 8]

Same model (a random NemotronH base from `sft.init_base`), same GSM8K test prompts rendered with the same chat
template, greedy decoding (`--reasoning off`), so both produce the same tokens (checked). Compared:
  - plain loop, one prompt at a time (what a quick script does);
  - plain loop, batched with left padding, `batch_size` prompts per `generate` (what our actor does inside);
  - synth: the whole stage on an already running local Ray (read prompts, Ray Data actor with model load, verify,
    Parquet shards, manifest), 1 worker with all threads.
The vLLM backend is measured on GPU by benchmarks/gpu. Results: benchmarks/results/synth.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
GSM8K_TEST = REPO.parent / "shared" / "data" / "gsm8k" / "test.jsonl"


def plain_loop(model_dir: Path, prompts: list[list[dict]], max_new_tokens: int, batch_size: int, threads: int):
    """Load, render with the chat template, generate greedily; returns (seconds, load seconds, texts)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    loaded = time.perf_counter()
    eos = set(model.generation_config.eos_token_id)
    texts = []
    for i in range(0, len(prompts), batch_size):
        chunk = [
            tok.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in prompts[i : i + batch_size]
        ]
        enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        for ids in out[:, enc["input_ids"].shape[1] :].tolist():
            stop = next((j for j, t in enumerate(ids) if t in eos), len(ids))
            texts.append(tok.decode(ids[:stop], skip_special_tokens=True))
    end = time.perf_counter()
    return end - start, loaded - start, texts


def compare(work: Path, model_dir: Path, n: int, args, threads: int, single: bool) -> dict:
    """Time the loops and the stage on the first `n` GSM8K test prompts; check they produce the same text."""
    from pipelines.reasoning.prompt_formats import assistant_content, with_reasoning_flag
    from pipelines.synth import parse_args, synthesize

    rows = [json.loads(line) for line in GSM8K_TEST.read_text().splitlines()[:n]]
    prompts = work / f"prompts{n}.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    messages = [with_reasoning_flag([{"role": "user", "content": r["question"].strip()}], "off") for r in rows]
    r = {"n": n}
    if single:
        r["one_s"], _, one_texts = plain_loop(model_dir, messages, args.max_new_tokens, 1, threads)
    batch_runs, synth_runs = [], []
    for rep in range(args.repeats):  # interleaved, best of each: the machine is shared and noisy
        batch_runs.append(plain_loop(model_dir, messages, args.max_new_tokens, args.batch_size, threads))
        argv = [
            "--prompts_path",
            str(prompts),
            "--backend",
            "transformers",
            "--model_name_or_path",
            str(model_dir),
            "--num_samples",
            "1",
            "--reasoning",
            "off",
            "--max_new_tokens",
            str(args.max_new_tokens),
            "--batch_size",
            str(args.batch_size),
            "--num_workers",
            "1",
            "--num_cpus_per_worker",
            str(threads),
            "--output_dir",
            str(work / f"traces{n}_{rep}"),
        ]
        start = time.perf_counter()
        out = synthesize(parse_args(argv))
        synth_runs.append(time.perf_counter() - start)
    r["batch_s"], r["load_s"], batch_texts = min(batch_runs, key=lambda run: run[0])
    r["synth_s"] = min(synth_runs)
    traces = pq.read_table(out / "traces", columns=["messages", "num_generated_tokens"]).to_pylist()
    stored = {t["messages"][1]["content"]: t["messages"][-1]["content"] for t in traces}
    # Compare as stored: the plain loop's text through the same `<think></think>answer` normalisation.
    r["same"] = sum(
        stored[m[-1]["content"]] == assistant_content(b, "off") for m, b in zip(messages, batch_texts, strict=True)
    )
    r["same_one"] = sum(a == b for a, b in zip(one_texts, batch_texts, strict=True)) if single else None
    r["tokens"] = sum(t["num_generated_tokens"] for t in traces)
    return r


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small"])
    parser.add_argument("--prompts", type=int, nargs="+", default=[32, 96], help="workload sizes (prompts)")
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("NANOFORGE_PROGRESS", "0")
    threads = len(os.sched_getaffinity(0))

    from pipelines.core.runtime import init_ray
    from sft.init_base import build_base

    work = Path(tempfile.mkdtemp(prefix="bench_synth_"))
    model_dir = build_base(work / "base", preset=args.preset, seed=0)
    init_ray(num_cpus=threads)  # started before timing: a cluster (or a recipe run) already has it up
    results = [compare(work, model_dir, n, args, threads, single=i == 0) for i, n in enumerate(args.prompts)]

    table = [
        "## synth: transformers backend overhead (CPU)",
        "",
        f"GSM8K test prompts, NemotronH `{args.preset}` random base, greedy, max_new_tokens={args.max_new_tokens}, "
        f"batch {args.batch_size}, {threads} CPU threads. Best of {args.repeats} interleaved runs for the "
        "batched loop and synth. Timings on a shared, loaded 2-core machine: compare ratios.",
        "",
        "| prompts | tokens | 1-prompt loop s | batched loop s | synth (whole stage) s | synth / batched | "
        "synth - batched s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        one = f"{r['one_s']:.1f}" if "one_s" in r else "-"
        table.append(
            f"| {r['n']} | {r['tokens']} | {one} | {r['batch_s']:.1f} | {r['synth_s']:.1f} | "
            f"{r['synth_s'] / r['batch_s']:.2f}x | {r['synth_s'] - r['batch_s']:.1f} |"
        )
    first = results[0]
    table += [
        "",
        "Same output: synth's stored completions equal the batched loop's on "
        + ", ".join(f"{r['same']}/{r['n']}" for r in results)
        + f" prompts; the batched loop equals the one-prompt loop on {first['same_one']}/{first['n']}.",
        "",
        "The loops time only load + generate; synth is the whole stage on a running Ray (prompts read through Ray "
        "Data, an actor process that imports torch and loads the model, verification, Parquet shards, manifest). "
        "Generation inside is the same batched `generate`; the difference (last column) is the stage's cost per run. "
        "The 1-prompt loop shows what batching is worth.",
        "",
        f"Command: `python -m benchmarks.synth --preset {args.preset} --prompts {' '.join(map(str, args.prompts))} "
        f"--max_new_tokens {args.max_new_tokens} --batch_size {args.batch_size} --repeats {args.repeats}`",
        "",
    ]
    text = "\n".join(table)
    print(text)
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "synth.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
