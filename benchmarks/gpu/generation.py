"""Generation on the GPU: raw vLLM (dense vs hybrid, against the decode roofline), HF `generate`, and the synth
stage end to end against raw `vllm.LLM.generate` on exactly its sample rows.

    python -m benchmarks.gpu.generation vllm_gen --model hybrid --runs 1024x8192x2048 --max_num_seqs 1024
    python -m benchmarks.gpu.generation hf_gen --model dense --batch 64 --prompt_len 512 --new 128
    python -m benchmarks.gpu.generation synth_raw --model dense   # raw vLLM on the synth stage's prompts
    python -m benchmarks.gpu.generation synth --model dense       # our stage (ray.data.llm backend)

CUDA graphs as the stages get them (`pipelines/reasoning/vllm_graphs.py`), unless `--eager true`: breakable graphs for
the dense model (`VLLM_USE_BREAKABLE_CUDAGRAPH=1`, from lease.sh: piecewise graphs, no torch.compile; the full compile
did not start within 6 minutes on the H100), full decode-only graphs for the hybrid. Hybrid figures before
2026-12-02 ran breakable graphs, whose prefill was wrong for its Mamba layers (decode steps ran as captured).

Length (~405 lines): raw vLLM, HF `generate` and the stage-vs-raw pair share the prompts, the engines' settings and
the result format that `report` reads; a lease copies the one module.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import time
from pathlib import Path

from benchmarks.gpu.common import DATA, MODELS, WORK, HostLoad, load, process_seconds, roofline, save, sync, versions

# --- vLLM raw generation ---------------------------------------------------------------------------------------------


def tokens_prompt(ids):
    try:
        from vllm.inputs import TokensPrompt
    except ImportError:
        from vllm.inputs.llm import TokensPrompt
    return TokensPrompt(prompt_token_ids=ids)


def random_prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(10, vocab) for _ in range(length)] for _ in range(n)]


def with_graphs(model_dir: Path, kwargs: dict) -> dict:
    """The stages' CUDA-graph rule for this model: a hybrid gets `hybrid_engine_kwargs` and no breakable graphs."""
    from pipelines.reasoning.vllm_graphs import hybrid_engine_in_this_process

    if json.loads((Path(model_dir) / "config.json").read_text()).get("model_type") != "nemotron_h":
        return kwargs
    return hybrid_engine_in_this_process(kwargs, kwargs.get("max_num_seqs"))


def bench_vllm_gen(a) -> None:
    from vllm import LLM, SamplingParams

    label = a.label or f"vllm_gen-{a.model}"
    extra = json.loads(a.engine or "{}")
    cfg = json.loads((MODELS / a.model / "config.json").read_text())
    kwargs = (
        dict(
            model=str(MODELS / a.model),
            skip_tokenizer_init=True,
            enforce_eager=a.eager,
            seed=0,
            max_num_seqs=a.max_num_seqs,
            gpu_memory_utilization=0.85,
            max_model_len=a.max_model_len,
        )
        | extra
    )
    kwargs = with_graphs(MODELS / a.model, kwargs)
    result = {
        "model": a.model,
        "versions": versions(),
        "engine_kwargs": kwargs,
        "env": {k: v for k, v in os.environ.items() if k.startswith(("VLLM_", "TRITON_"))},
        "runs": [],
    }
    save(label, result | {"status": "starting"})
    if a.profile_run:  # vLLM's torch profiler in the engine: its table (by GPU time) goes to this run's log
        os.environ["VLLM_TORCH_PROFILER_DIR"] = str(WORK / f"profile-{label}")
    t0 = time.perf_counter()
    llm = LLM(**kwargs)
    result["engine_start_s"] = time.perf_counter() - t0
    save(label, result | {"status": "started"})
    t0 = time.perf_counter()
    llm.generate(
        [tokens_prompt(p) for p in random_prompts(8, 64, cfg["vocab_size"], 1)],
        SamplingParams(max_tokens=32, ignore_eos=True, detokenize=False),
        use_tqdm=False,
    )
    result["warmup_s"] = time.perf_counter() - t0
    env = load("env") or {}
    for spec in a.runs.split(","):
        n, plen, gen = map(int, spec.split("x"))
        prompts = [tokens_prompt(p) for p in random_prompts(n, plen, cfg["vocab_size"], 2)]
        sp = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=gen, ignore_eos=True, detokenize=False)
        sync()
        t = time.perf_counter()
        outs = llm.generate(prompts, sp, use_tqdm=False)
        dt = time.perf_counter() - t
        tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        run = {
            "n": n,
            "prompt_len": plen,
            "gen_len": gen,
            "seconds": dt,
            "gen_tokens": tokens,
            "tokens_per_s": tokens / dt,
        }
        if env:
            ssm = 4 if str(extra.get("mamba_ssm_cache_dtype", "auto")) == "float32" else 2
            params = (load("build") or {}).get(a.model, {}).get("params", 0)
            run["roofline"] = roofline(
                a.model, params, n, plen, gen, a.max_num_seqs, env["copy_bandwidth_Bps"], env["bf16_matmul_flops"], ssm
            )
        result["runs"].append(run)
        save(label, result | {"status": "running"})
    if a.profile_run:  # e.g. 1024x1024x64: decode steps at full concurrency, where the roofline gap is
        n, plen, gen = map(int, a.profile_run.split("x"))
        prompts = [tokens_prompt(p) for p in random_prompts(n, plen, cfg["vocab_size"], 3)]
        llm.start_profile()
        t = time.perf_counter()
        llm.generate(prompts, SamplingParams(max_tokens=gen, ignore_eos=True, detokenize=False), use_tqdm=False)
        result["profile_run"] = {"spec": a.profile_run, "seconds": time.perf_counter() - t}
        llm.stop_profile()
    save(label, result | {"status": "ok"})


# --- HF generate -----------------------------------------------------------------------------------------------------


def bench_hf_gen(a) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    label = a.label or f"hf_gen-{a.model}"
    model = AutoModelForCausalLM.from_pretrained(MODELS / a.model, dtype=torch.bfloat16).cuda().eval()
    vocab = model.config.vocab_size
    result = {"model": a.model, "attn_implementation": model.config._attn_implementation, "runs": []}
    for batch in map(int, a.batch.split(",")):
        ids = torch.tensor(random_prompts(batch, a.prompt_len, vocab, 2), device="cuda")
        kw = dict(attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_p=1.0, pad_token_id=0)
        try:
            with torch.inference_mode():
                model.generate(ids[:, :32], max_new_tokens=4, min_new_tokens=4, **{**kw, "attention_mask": None})
                sync()
                t = time.perf_counter()
                out = model.generate(ids, max_new_tokens=a.new, min_new_tokens=a.new, **kw)
                sync()
            dt = time.perf_counter() - t
            tokens = (out.shape[1] - ids.shape[1]) * batch
            run = {
                "batch": batch,
                "prompt_len": a.prompt_len,
                "gen_len": a.new,
                "seconds": dt,
                "tokens_per_s": tokens / dt,
                "max_mem_GiB": torch.cuda.max_memory_allocated() / 2**30,
            }
        except torch.OutOfMemoryError as e:
            run = {"batch": batch, "prompt_len": a.prompt_len, "gen_len": a.new, "error": f"OOM: {str(e)[:200]}"}
        torch.cuda.empty_cache()
        result["runs"].append(run)
        save(label, result)


# --- synth stage vs raw vLLM on the same prompts -------------------------------------------------------------------


# Both sides of a pair get these (CUDA graphs on). The dense model's 512 running sequences are the pairs' since the
# seventh lease; a hybrid runs the stage's own default for hybrids, 1,024 (`backends.OFFLINE_ENGINE_DEFAULTS`: a
# sequence holds a few MB of Mamba state; issue 16 item 4 asks for the stage on the hybrid with item 3's settings).
ENGINES = {
    "dense": dict(max_num_seqs=512, gpu_memory_utilization=0.85, max_model_len=4096),
    "hybrid": dict(max_num_seqs=1024, gpu_memory_utilization=0.85, max_model_len=4096),
}


def synth_config(a, out_dir: str) -> Path:
    """A synth YAML for the GSM8K-style prompts (written by `synth_raw`) and a built model."""
    import yaml

    cfg = dict(
        prompts_path=str(DATA / "prompts.jsonl"),
        prompt_format="gsm8k",
        backend="vllm",
        model_name_or_path=str(MODELS / a.model),
        num_samples=a.samples,
        reasoning="on",
        max_new_tokens=a.max_new,
        batch_size=a.batch_size,
        num_workers=1,
        engine_kwargs=ENGINES[a.model],
        shard_rows=256,
        output_dir=out_dir,
        force=True,
    )
    path = WORK / f"synth-{a.model}-bs{a.batch_size}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def write_prompts(n: int) -> None:
    from pipelines.demo.text import word_problem

    rng = random.Random(0)
    seen, rows = set(), []
    while len(rows) < n:
        q, ans = word_problem(rng)
        if q not in seen:
            seen.add(q)
            rows.append(json.dumps({"question": q, "answer": ans}))
    DATA.mkdir(parents=True, exist_ok=True)
    (DATA / "prompts.jsonl").write_text("\n".join(rows) + "\n")


def bench_synth_raw(a) -> None:
    """Raw `vllm.LLM.generate` on exactly what the synth stage sends: its sample rows, chat-templated and tokenized
    the way ray.data.llm's ChatTemplate/Tokenize stages do, with the same per-row SamplingParams (seeded)."""
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from pipelines.reasoning.traces import sample_rows
    from pipelines.synth import parse_args, prepare_prompts

    write_prompts(a.prompts)
    cfg = parse_args(["--config", str(synth_config(a, str(WORK / "unused")))])
    cfg.source = "bench"
    rows_in = [json.loads(line) for line in (DATA / "prompts.jsonl").read_text().splitlines()]
    prompts, _ = prepare_prompts(rows_in, cfg)
    samples = [s for p in prompts for s in sample_rows(p, cfg, cfg.num_samples)]
    tok = AutoTokenizer.from_pretrained(cfg.model_name_or_path)
    texts = [tok.apply_chat_template(s["messages"], tokenize=False, add_generation_prompt=True) for s in samples]
    ids = tok(texts)["input_ids"]
    label = a.label or f"synth_raw-{a.model}"
    result = {
        "model": a.model,
        "samples": len(samples),
        "prompt_tokens_mean": statistics.mean(map(len, ids)),
        "engine_kwargs": ENGINES[a.model],
        "runs": [],
        **step_log(),
    }

    def cut_off(signum, frame):  # the step's `timeout`: say so, with the time it ran (vLLM counts no finished rows)
        if result["runs"]:  # the run is done and saved: the engine's shutdown outran the step (fourteenth lease)
            result["cut_off_in_shutdown_s"] = process_seconds()
        else:
            result.update(status="cut off", process_s=process_seconds())
        save(label, result)
        raise SystemExit(f"cut off by signal {signum} after {process_seconds():.0f} s from process start")

    signal.signal(signal.SIGTERM, cut_off)
    t0 = time.perf_counter()
    engine = with_graphs(Path(cfg.model_name_or_path), dict(ENGINES[a.model]))
    result["engine_kwargs"] = engine
    # stats on: vLLM logs running / waiting requests and tokens/s every few seconds, as the stage's engine does
    # (eleventh lease: raw at 4k ran at half the tenth lease's pace, and its log could not say why)
    llm = LLM(model=cfg.model_name_or_path, seed=0, disable_log_stats=False, **engine)
    result["engine_start_s"] = time.perf_counter() - t0
    llm.generate([tokens_prompt(i) for i in ids[:8]], SamplingParams(max_tokens=16), use_tqdm=False)
    for seeded in (True, False) if a.unseeded else (True,):
        params = [
            SamplingParams(
                temperature=s["sampling"]["temperature"],
                top_p=s["sampling"]["top_p"],
                max_tokens=s["sampling"]["max_new_tokens"],
                seed=s["sampling"]["seed"] if seeded else None,
            )
            for s in samples
        ]
        sync()
        t, host = time.perf_counter(), HostLoad()
        outs = llm.generate([tokens_prompt(i) for i in ids], params, use_tqdm=False)
        dt = time.perf_counter() - t
        tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        run = {"seeded": seeded, "seconds": dt, "gen_tokens": tokens, "tokens_per_s": tokens / dt, "host": host.read()}
        result["runs"].append(run)
        result.setdefault("process_s", process_seconds())  # process start -> the seeded run's last output
        save(label, result)
    result["wall_incl_start_s"] = result["engine_start_s"] + result["runs"][0]["seconds"]
    save(label, result)


def keep_sigterm_handler(handler) -> None:
    """Install `handler` for SIGTERM (the step's `timeout`) and keep it there: `ray.init` replaces any SIGTERM
    handler with its own `sys.exit` (fourteenth lease: the stage's cut-off handler never ran, and the cut-off run
    came back with no result). Ours saves the result, then exits as Ray's would."""
    import ray._private.utils as ray_utils

    signal.signal(signal.SIGTERM, handler)
    ray_utils.set_sigterm_handler = lambda _ray_handler: None


def step_log() -> dict:
    """The process's start (epoch seconds) and its step's log (`lease.sh` sets NF_STEP_LOG): `report` reads the
    engine's start off the log against it."""
    return {"process_start": time.time() - process_seconds(), "log": os.environ.get("NF_STEP_LOG")}


def _rows(parquet: Path) -> int:
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(parquet).num_rows
    except Exception:  # a shard still being written
        return 0


def bench_synth(a) -> None:
    """Our synth stage end to end (Ray Data + ray.data.llm vLLM backend + verify + shards). Shard writes are
    timestamped (file modification times); the engine's readiness is read off its log line, so the generation
    phase can be timed apart."""
    import pipelines.synth as synth
    from pipelines.cli import setup_logging

    setup_logging("INFO")  # the stage's own clock in the log: Ray ready, pipeline built, first shard written
    label = a.label or f"synth-{a.model}-bs{a.batch_size}"
    write_prompts(a.prompts)  # the same rows synth_raw wrote for --prompts N (seeded), whichever ran first
    out_dir = str(WORK / f"synth_out-bs{a.batch_size}")
    cfg = synth.parse_args(["--config", str(synth_config(a, out_dir))])
    t0 = time.time()
    result = {"model": a.model, "batch_size": a.batch_size, "engine_kwargs": ENGINES[a.model], "t0": t0}
    result |= {"planned": a.prompts * a.samples, **step_log()}

    def cut_off(signum, frame):  # the step's `timeout`: save how far the stage got before Ray's shutdown can stall
        partial = Path(out_dir).parent / f".{Path(out_dir).name}.partial"  # Artifact.writing's directory
        written = sum(_rows(f) for f in partial.glob("*/*.parquet"))
        result.update(status="cut off", wall_s=time.time() - t0, process_s=process_seconds(), written=written)
        save(label, result)
        raise SystemExit(f"cut off by signal {signum} after {result['wall_s']:.0f} s: {written} samples written")

    keep_sigterm_handler(cut_off)
    host = HostLoad()
    try:
        path = synth.synthesize(cfg)
        result["wall_s"] = time.time() - t0
        result["host"] = host.read()
        result["process_s"] = process_seconds()
        manifest = json.loads((Path(path) / "manifest.json").read_text())
        result["counts"] = manifest.get("counts")
        from pipelines.reasoning.traces import read_shards

        t = read_shards(Path(path) / "traces", ["num_generated_tokens", "error"]).to_pydict()
        result["gen_tokens"] = sum(n or 0 for n in t["num_generated_tokens"])
        result["errors"] = sum(e is not None for e in t["error"])
        import pyarrow.parquet as pq

        # The stage's writer actor writes the shards (on this node): their modification times say when
        shards = [*(Path(path) / "traces").glob("*.parquet"), *(Path(path) / "rejected").glob("*.parquet")]
        result["shard_marks"] = sorted(
            (f.stat().st_mtime - t0, f.parent.name, pq.read_metadata(f).num_rows) for f in shards
        )
        result["status"] = "ok"
    except Exception as e:  # recorded, the driver goes on
        import traceback

        result |= {
            "status": "failed",
            "error": f"{type(e).__name__}: {e}"[:3000],
            "traceback": traceback.format_exc()[-6000:],
        }
    save(label, result)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("vllm_gen")
    s.add_argument("--model", default="dense")
    s.add_argument("--runs", default="512x512x512", help="NxPROMPTxGEN, comma-separated, one engine")
    s.add_argument("--max_num_seqs", type=int, default=256)
    s.add_argument("--max_model_len", type=int, default=4096)
    s.add_argument("--eager", type=lambda x: x.lower() == "true", default=False)
    s.add_argument("--engine", default="", help="extra engine kwargs as JSON")
    s.add_argument("--profile_run", default="", help="NxPROMPTxGEN run under vLLM's torch profiler, after --runs")
    s.add_argument("--label", default="")
    s = sub.add_parser("hf_gen")
    s.add_argument("--model", default="dense")
    s.add_argument("--batch", default="64")
    s.add_argument("--prompt_len", type=int, default=512)
    s.add_argument("--new", type=int, default=128)
    s.add_argument("--label", default="")
    for name in ("synth_raw", "synth"):
        s = sub.add_parser(name)
        s.add_argument("--model", default="dense")
        s.add_argument("--prompts", type=int, default=512)
        s.add_argument("--samples", type=int, default=2)
        s.add_argument("--max_new", type=int, default=512)
        s.add_argument("--batch_size", type=int, default=64)
        s.add_argument("--label", default="")
    sub.choices["synth_raw"].add_argument(
        "--unseeded", type=lambda x: x.lower() == "true", default=True, help="also time an unseeded run (raw only)"
    )
    a = p.parse_args(argv)
    {"vllm_gen": bench_vllm_gen, "hf_gen": bench_hf_gen, "synth_raw": bench_synth_raw, "synth": bench_synth}[a.cmd](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
