"""Long-output generation measured in decode windows: what an 8k-in / 16k-out wave costs, without running 16k steps.

A full 8k-in / 16k-out wave at the hybrid's concurrency is ~16k decode steps, longer than one device call. A decode
step's time is the weights (fixed) plus each sequence's KV at its context (linear in context) plus its Mamba state
(fixed), so it is close to linear in context. This harness measures it where it matters:

1. one engine at `--max_model_len` (room for the longest workload); vLLM's own "maximum concurrency" figure for
   that length, read from its log, sets how many sequences run at once (`--requests 0`), so each model runs at the
   concurrency its memory allows, not a shared cap;
2. for each context in `--contexts`, that many requests of that prompt length are added to the engine, each free to
   decode until `--max_model_len` (chunked prefill lets early requests decode while later ones still prefill); the
   window opens when the last prefill is done, its `--steps` decode steps are timed one by one (`LLMEngine.step`) at
   the mean context measured then, and the remaining requests are aborted;
3. each workload in `--workloads` (PROMPTxGEN) is projected from those measurements: its measured prefill plus
   GEN decode steps at the step time interpolated linearly over the contexts the wave passes through.

`--passes 2` measures every window again in reverse order (the ninth lease's windows were not monotonic in context:
40.6 ms at 1k, 22.2 ms at 8k): a window's step time is then the mean of its passes, both are kept, and each window
records the GPU's SM clock, power and temperature when it closes, so that order, context and clocks can be told
apart.

    python -m benchmarks.gpu.windows --model hybrid --engine '{"mamba_ssm_cache_dtype": "float32"}'

Results go to `results/<label>.json` with every window's step times, the projections and the roofline of each.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

from benchmarks.gpu.common import MODELS, WORK, load, roofline, save, versions
from benchmarks.gpu.generation import tokens_prompt, with_graphs

CONCURRENCY = re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x")


def random_prompts(n: int, length: int, vocab: int, seed: int) -> list:
    import numpy as np

    rows = np.random.default_rng(seed).integers(10, vocab, size=(n, length)).tolist()
    return [tokens_prompt(r) for r in rows]


def log_to_file(path) -> None:
    """vLLM's loggers (its engine-core process included) also write to `path`, where the concurrency line is read."""
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(levelname)s %(asctime)s [%(filename)s:%(lineno)d] %(message)s"}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stdout"},
            "file": {"class": "logging.FileHandler", "formatter": "plain", "filename": str(path)},
        },
        "loggers": {"vllm": {"handlers": ["console", "file"], "level": "INFO", "propagate": False}},
    }
    cfg_path = path.with_suffix(".logging.json")
    cfg_path.write_text(json.dumps(config))
    os.environ["VLLM_CONFIGURE_LOGGING"] = "1"
    os.environ["VLLM_LOGGING_CONFIG_PATH"] = str(cfg_path)


def max_concurrency(log_path) -> float | None:
    found = CONCURRENCY.findall(log_path.read_text()) if log_path.exists() else []
    return float(found[-1][1]) if found else None


def decode_window(llm, prompts: list, steps: int, tag: str, room: int) -> dict:
    """Add every prompt at once, each allowed `room` new tokens, and step the engine until each has its first token
    (prefill); then time the next `steps` steps and abort the rest. Early requests decode while later ones prefill, so
    `mean_context` is the mean context when the window opens. Tokens per step show whether every sequence stayed
    resident (no preemption); `finished_early` counts requests that ran out of room before the window ended."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    engine = llm.llm_engine
    sp = SamplingParams(
        temperature=1.0,
        max_tokens=room,
        ignore_eos=True,
        detokenize=False,
        output_kind=RequestOutputKind.DELTA,
    )
    ids = [f"{tag}-{i}" for i in range(len(prompts))]
    prompt_len = {r: len(p["prompt_token_ids"]) for r, p in zip(ids, prompts, strict=True)}
    for r, p in zip(ids, prompts, strict=True):
        engine.add_request(r, p, sp)
    generated = dict.fromkeys(ids, 0)
    finished: set[str] = set()
    t0 = time.perf_counter()
    prefill_s = mean_context = None
    step_s, per_step = [], []
    last = t0
    while engine.has_unfinished_requests() and len(step_s) < steps:
        outs = engine.step()
        now = time.perf_counter()
        tokens = 0
        for o in outs:
            if o.outputs:
                tokens += len(o.outputs[0].token_ids)
                generated[o.request_id] += len(o.outputs[0].token_ids)
            if o.finished:
                finished.add(o.request_id)
        if prefill_s is None:
            if all(generated.values()):
                prefill_s, last = now - t0, now
                mean_context = statistics.fmean(prompt_len[r] + generated[r] for r in ids)
            continue
        step_s.append(now - last)
        per_step.append(tokens)
        last = now
    unfinished = [r for r in ids if r not in finished]
    if unfinished:
        engine.abort_request(unfinished)
    while engine.has_unfinished_requests():
        engine.step()
    mean = statistics.fmean(step_s) if step_s else float("nan")
    return {
        "requests": len(prompts),
        "prefill_s": prefill_s,
        "mean_context": mean_context,
        "steps": len(step_s),
        "step_s_mean": mean,
        "step_s_median": statistics.median(step_s) if step_s else None,
        "tokens_per_step_min": min(per_step, default=0),
        "tokens_per_step_max": max(per_step, default=0),
        "decode_tokens_per_s": sum(per_step) / sum(step_s) if step_s else None,
        "finished_early": len(finished),
    }


def gpu_state() -> dict:
    """SM clock (MHz), power (W) and temperature (C) now, from nvidia-smi; empty where it does not answer."""
    query = "clocks.sm,power.draw,temperature.gpu"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        values = [float(v) for v in out.splitlines()[0].split(",")]
        return dict(zip(("sm_mhz", "power_w", "temp_c"), values, strict=True))
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return {}


def merge_passes(passes: list[dict[int, dict]]) -> dict[int, dict]:
    """Each context's window from its first pass, its step time the mean over the passes that measured it (each
    pass's mean kept in `step_s_mean_passes`)."""
    merged = {}
    for ctx, first in passes[0].items():
        means = [p[ctx]["step_s_mean"] for p in passes if ctx in p and p[ctx]["steps"]]
        merged[ctx] = first | {"step_s_mean_passes": means}
        if means and first["decode_tokens_per_s"]:  # tokens per step as the first pass measured them
            tokens_per_step = first["decode_tokens_per_s"] * first["step_s_mean"]
            merged[ctx]["step_s_mean"] = statistics.fmean(means)
            merged[ctx]["decode_tokens_per_s"] = tokens_per_step / merged[ctx]["step_s_mean"]
    return merged


def interpolate(points: list[tuple[float, float]], x: float) -> float:
    """Piecewise-linear through (context, step seconds), extended linearly past both ends."""
    pts = sorted(points)
    if len(pts) == 1:
        return pts[0][1]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if x <= x1 or (x1, y1) == pts[-1]:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return pts[-1][1]


def project(windows: dict[int, dict], steps: int, prompt: int, gen: int, n: int) -> dict | None:
    """One wave of `n` requests, `prompt` tokens in and `gen` out: the prefill measured at that prompt length plus
    `gen` steps at the interpolated step time (mean over the wave's contexts, 64 points)."""
    if prompt not in windows:
        return None
    points = [(w["mean_context"] + steps / 2, w["step_s_mean"]) for w in windows.values() if w["steps"]]
    contexts = [prompt + gen * (i + 0.5) / 64 for i in range(64)]
    decode_s = gen * statistics.fmean(interpolate(points, c) for c in contexts)
    seconds = windows[prompt]["prefill_s"] + decode_s
    return {"prompt": prompt, "gen": gen, "requests": n, "seconds": seconds, "tokens_per_s": n * gen / seconds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="hybrid")
    p.add_argument("--max_model_len", type=int, default=24832, help="room for the longest workload (8k + 16k)")
    p.add_argument("--requests", type=int, default=0, help="sequences at once; 0: vLLM's concurrency at max_model_len")
    p.add_argument("--max_num_seqs", type=int, default=1024)
    p.add_argument("--contexts", default="1024,8192,16384,22528", help="prompt lengths of the decode windows")
    p.add_argument("--steps", type=int, default=128, help="decode steps timed per window")
    p.add_argument("--workloads", default="1024x8192,1024x16384,8192x8192,8192x16384", help="PROMPTxGEN projected")
    p.add_argument("--engine", default="", help="extra engine kwargs as JSON")
    p.add_argument("--label", default="")
    p.add_argument("--passes", type=int, default=1, help="2: every window again, in reverse order")
    a = p.parse_args(argv)
    label = a.label or f"window-{a.model}"
    log_path = WORK / "logs" / f"{label}.vllm.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_to_file(log_path)
    from vllm import LLM

    extra = json.loads(a.engine or "{}")
    cfg = json.loads((MODELS / a.model / "config.json").read_text())
    kwargs = {
        "model": str(MODELS / a.model),
        "skip_tokenizer_init": True,
        "seed": 0,
        "max_num_seqs": a.max_num_seqs,
        "gpu_memory_utilization": 0.85,
        "max_model_len": a.max_model_len,
    } | extra
    kwargs = with_graphs(MODELS / a.model, kwargs)  # the stages' graph rule: full decode-only graphs for a hybrid
    result = {"model": a.model, "versions": versions(), "engine_kwargs": kwargs, "windows": {}, "projections": []}
    result["env"] = {k: v for k, v in os.environ.items() if k.startswith(("VLLM_", "TRITON_"))}
    t0 = time.perf_counter()
    llm = LLM(**kwargs)
    result["engine_start_s"] = time.perf_counter() - t0
    concurrency = max_concurrency(log_path)
    n = a.requests or min(int(concurrency or 256), a.max_num_seqs)
    result |= {"vllm_max_concurrency": concurrency, "requests": n}
    save(label, result | {"status": "started"})
    decode_window(llm, random_prompts(8, 64, cfg["vocab_size"], 1), 16, "warmup", room=64)
    contexts = [c for c in map(int, a.contexts.split(",")) if a.max_model_len - c - 1 >= a.steps + 256]
    passes: list[dict[int, dict]] = []
    for i in range(a.passes):
        passes.append({})
        for ctx in contexts if i % 2 == 0 else contexts[::-1]:
            prompts = random_prompts(n, ctx, cfg["vocab_size"], ctx)
            window = decode_window(llm, prompts, a.steps, f"p{i}w{ctx}", a.max_model_len - ctx - 1)
            passes[i][ctx] = window | {"gpu": gpu_state()}
            result["windows"] = merge_passes(passes)
            save(label, result | {"passes": passes, "status": "running"})
    result["passes"] = passes
    env = load("env") or {}
    params = (load("build") or {}).get(a.model, {}).get("params", 0)
    ssm = 4 if str(extra.get("mamba_ssm_cache_dtype", "auto")) == "float32" else 2
    for spec in a.workloads.split(","):
        prompt, gen = map(int, spec.split("x"))
        proj = project(result["windows"], a.steps, prompt, gen, n)
        if proj and env and params:
            bw, flops = env["copy_bandwidth_Bps"], env["bf16_matmul_flops"]
            bound = roofline(a.model, params, n, prompt, gen, n, bw, flops, ssm)
            proj["roofline_tokens_per_s"] = bound["tokens_per_s"]
        if proj:
            result["projections"].append(proj)
    save(label, result | {"status": "ok"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
