"""Training on the GPU through the stages themselves (`sft/train.py`, `rl/grpo.py`), not a plain loop: tokens/s
and MFU against the measured bf16 matmul rate, ours against TRL's defaults on the same data; GRPO's step split.

    python -m benchmarks.gpu.training sft --model hybrid --variant ours          # bf16 autocast, fp32 master, packing
    python -m benchmarks.gpu.training sft --model hybrid --variant trl_default   # what TRL does unconfigured
    python -m benchmarks.gpu.training grpo --model hybrid --vllm colocate

Length (~400 lines): SFT and GRPO share the data writers, the FLOP count and the step timers; split, each lease
plan would import two harnesses for one measurement.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import math
import random
import shlex
import statistics
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from benchmarks.gpu.common import DATA, DEVICE, MODELS, RESULTS, WORK, load, save, sync
from benchmarks.gpu.generation import write_prompts

BF16 = str(DEVICE == "cuda").lower()  # bf16 autocast on the GPU; a CPU dry run (NF_TINY) trains in float32

# --- SFT -------------------------------------------------------------------------------------------------------------


def write_sft_data(n: int) -> Path:
    """Conversations of log-uniform length (~40-1500 tokens), the shape of reasoning traces, for padding waste."""
    from sft.tokenizer import builtin_corpus

    rng = random.Random(0)
    corpus = builtin_corpus(1)
    path = DATA / "sft.jsonl"
    rows = []
    for _ in range(n):
        words = int(math.exp(rng.uniform(math.log(20), math.log(900))))
        text, answer = [], []
        while sum(len(t.split()) for t in text) < words:
            text.append(rng.choice(corpus))
        q = rng.choice(corpus)
        answer = f"<think>\n{' '.join(text)}\n</think>\nThe answer is {rng.randint(1, 999)}."
        rows.append(
            json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": answer}]})
        )
    DATA.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")
    return path


def write_dpo_data(n: int) -> Path:
    """Preference pairs in the shape `nanoforge select` writes (`prompt` / `chosen` / `rejected` conversations)."""
    from pipelines.demo.text import word_problem

    rng = random.Random(1)
    rows = []
    for _ in range(n):
        q, solution = word_problem(rng)
        wrong = solution.rsplit("####", 1)[0] + f"#### {rng.randint(1000, 9999)}"
        rows.append(
            json.dumps(
                {
                    "prompt": [{"role": "user", "content": q}],
                    "chosen": [{"role": "assistant", "content": f"<think>\n{solution}\n</think>"}],
                    "rejected": [{"role": "assistant", "content": f"<think>\n{wrong}\n</think>"}],
                }
            )
        )
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / "dpo.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def flops_per_token(model, mean_ctx: float) -> float:
    """Training FLOPs per token: 6 x matmul parameters (input embedding excluded, LM head included) + causal
    attention 12 x layers x q-width x mean context. Mamba scan FLOPs are left out (small next to its projections)."""
    cfg = model.config
    emb = model.get_input_embeddings().weight.numel()
    n = sum(p.numel() for p in model.parameters()) - (0 if cfg.tie_word_embeddings else emb)
    if cfg.model_type == "nemotron_h":
        n_attn = cfg.hybrid_override_pattern.count("*")
        q_width = cfg.num_attention_heads * (cfg.head_dim or cfg.hidden_size // cfg.num_attention_heads)
    else:
        n_attn, q_width = cfg.num_hidden_layers, cfg.hidden_size
    return 6 * n + 12 * n_attn * q_width * mean_ctx


def mamba_kernels() -> bool:
    """Whether NemotronH takes the fused kernel path (mamba_ssm + causal_conv1d importable)."""
    try:
        import causal_conv1d  # noqa: F401
        import mamba_ssm  # noqa: F401
    except ImportError:
        return False
    return True


class Profile(TrainerCallback):
    """torch.profiler over training steps first+1 .. first+steps: where a step's time goes, as text tables in
    `results/<label>-profile.txt` (kernels by GPU time, ops by CPU time) plus the GPU-busy share of the wall time,
    which tells a launch- or host-bound step (GPU idle) from a kernel-bound one."""

    def __init__(self, label: str, first: int, steps: int):
        self.label, self.first, self.steps, self.prof = label, first, steps, None

    def on_step_begin(self, args, state, control, **kw):
        import torch

        if state.global_step == self.first and self.prof is None:
            acts = [torch.profiler.ProfilerActivity.CPU] + (
                [torch.profiler.ProfilerActivity.CUDA] if torch.cuda.is_available() else []
            )
            self.prof = torch.profiler.profile(activities=acts, record_shapes=False)
            self.prof.__enter__()
            sync()
            self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        if self.prof is None or state.global_step != self.first + self.steps:
            return
        sync()
        wall = time.perf_counter() - self.t0
        self.prof.__exit__(None, None, None)
        events = self.prof.key_averages()
        gpu_us = sum(e.self_device_time_total for e in events)
        head = f"{self.label}: {self.steps} steps, wall {wall:.3f} s, GPU kernels {gpu_us / 1e6:.3f} s "
        head += f"({gpu_us / 1e6 / wall:.0%} busy)\n\n"
        by_gpu = events.table(sort_by="self_device_time_total", row_limit=40, max_name_column_width=90)
        by_cpu = events.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=90)
        (RESULTS / f"{self.label}-profile.txt").write_text(head + by_gpu + "\n\n" + by_cpu)
        print(head, flush=True)
        self.prof = None


def residual_in_autocast_dtype(module, args, output):
    """Forward hook on the input embeddings: under autocast, hand the decoder a bf16 residual stream. With float32
    master weights the embedding's output is float32, and every residual add and norm after it runs in float32."""
    import torch

    return output.to(torch.get_autocast_dtype("cuda")) if torch.is_autocast_enabled("cuda") else output


def bench_sft(a) -> None:
    import torch

    from sft.train import build_trainer, parse_args

    label = a.label or f"sft-{a.model}-{a.variant}"
    faulthandler.dump_traceback_later(a.stack_every, repeat=True)  # a stalled step shows where it waits, in the log
    data = DATA / "sft.jsonl"
    if not data.exists():
        write_sft_data(2000)
    argv = [
        "--model_name_or_path",
        str(MODELS / a.model),
        "--dataset_name",
        str(data),
        "--output_dir",
        str(WORK / f"sft_out-{label}"),
        "--max_steps",
        str(a.steps),
        "--per_device_train_batch_size",
        str(a.batch),
        "--max_length",
        "2048",
        "--learning_rate",
        "1e-5",
        "--logging_steps",
        "5",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--assistant_only_loss",
        "true",
        "--dataloader_num_workers",
        "2",
        "--seed",
        "0",
    ]
    if a.variant == "trl_default":  # TRL unconfigured: float32 weights + bf16 autocast, activation checkpointing
        argv += ["--dtype", "float32", "--bf16", BF16, "--gradient_checkpointing", "true"]
    else:  # ours (the recipes): float32 master weights + bf16 autocast, packed padding-free rows, no recompute
        argv += ["--dtype", "float32", "--bf16", BF16, "--gradient_checkpointing", "false"]
        argv += ["--packing", "true", "--padding_free", "true"] if a.variant == "ours" else []
    argv += shlex.split(a.extra)  # e.g. "--attn_implementation flex_attention"; a repeated flag's last value wins
    result = {"model": a.model, "variant": a.variant, "argv": argv}
    script_args, training_args, model_args = parse_args(argv)
    try:
        trainer = build_trainer(script_args, training_args, model_args, WORK / f"sft_out-{label}")
    except Exception as e:
        save(label, result | {"status": "refused_or_failed", "error": f"{type(e).__name__}: {e}"[:2000]})
        return
    if a.residual == "autocast":  # experiment: the residual stream in bf16 (Megatron's default), not float32
        trainer.model.get_input_embeddings().register_forward_hook(residual_in_autocast_dtype)
        result["residual"] = "autocast"
    counts = {"real": 0, "slots": 0, "seq_sq": 0}
    compute_loss = trainer.compute_loss

    def counting(model, inputs, *args, **kwargs):
        ids = inputs["input_ids"]
        if "attention_mask" in inputs and inputs.get("position_ids") is None:
            lens = inputs["attention_mask"].sum(-1).tolist()
        else:  # padding-free: sequence boundaries where position_ids restart
            pos = inputs["position_ids"].flatten()
            starts = (pos == 0).nonzero().flatten().tolist() + [pos.numel()]
            lens = [e - s for s, e in zip(starts, starts[1:], strict=False) if e > s]
        counts["real"] += sum(lens)
        counts["slots"] += ids.numel()
        counts["seq_sq"] += sum(x * x for x in lens)
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = counting
    steps = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            sync()
            self.t, self.c = time.perf_counter(), dict(counts)

        def on_step_end(self, args, state, control, **kw):
            sync()
            steps.append((time.perf_counter() - self.t, *(counts[k] - self.c[k] for k in ("real", "slots", "seq_sq"))))
            print(f"[step {state.global_step}] {steps[-1][0]:.2f} s, {steps[-1][1]} tokens", flush=True)

    trainer.add_callback(StepTimer())
    if a.profile:
        trainer.add_callback(Profile(label, first=a.steps - 2, steps=2))  # the last two steps, left out of the timing
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    timed = steps[3 : len(steps) - 2 * a.profile]  # first steps: allocator and kernel warm-up; profiled steps
    secs, real, slots, sq = (sum(s[i] for s in timed) for i in range(4))
    model = trainer.accelerator.unwrap_model(trainer.model)
    mean_ctx = sq / (2 * real)  # mean over tokens of the causal context length
    fpt = flops_per_token(model, mean_ctx)
    peak = (load("env") or {}).get("bf16_matmul_flops")
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    result |= {
        "status": "ok",
        "steps_timed": len(timed),
        "seconds": secs,
        "train_wall_s": wall,
        "tokens_per_s": real / secs,
        "slot_tokens_per_s": slots / secs,
        "padding_waste": 1 - real / slots,
        "flops_per_token": fpt,
        "mfu": fpt * real / secs / peak if peak else None,
        "param_dtype": str(next(model.parameters()).dtype),
        "padding_free": bool(getattr(trainer, "padding_free", False)),
        "max_mem_GiB": torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else None,
        "loss_first_last": [losses[:1], losses[-1:]],
        "attn_implementation": model.config._attn_implementation,
        "use_cache": model.config.use_cache,
        "mamba_kernels": mamba_kernels(),
    }
    save(label, result)


# --- GRPO ------------------------------------------------------------------------------------------------------------


def bench_grpo(a) -> None:
    from rl.grpo import build_trainer, parse_args

    label = a.label or f"grpo-{a.model}-{a.vllm}"
    if not (DATA / "prompts.jsonl").exists():
        write_prompts(512)
    use_vllm = a.vllm != "none"
    # CUDA graphs without the full compile: breakable ones for a dense policy (VLLM_USE_BREAKABLE_CUDAGRAPH in
    # lease.sh); a hybrid gets float32 Mamba state and full decode-only graphs from rl/grpo.py itself (vllm_graphs)
    argv = [
        "--model_name_or_path",
        str(MODELS / a.model),
        "--dataset_name",
        str(DATA / "prompts.jsonl"),
        "--output_dir",
        str(WORK / f"grpo_out-{label}"),
        "--max_steps",
        str(a.steps),
        "--bf16",
        str(DEVICE == "cuda").lower(),
        "--dtype",
        "float32",
        "--gradient_checkpointing",
        "false",
        "--per_device_train_batch_size",
        "16",
        "--num_generations",
        "8",
        "--max_completion_length",
        str(a.max_new),
        "--learning_rate",
        "1e-6",
        "--logging_steps",
        "1",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--use_vllm",
        str(use_vllm).lower(),
        "--vllm_mode",
        "colocate",
        "--vllm_gpu_memory_utilization",
        "0.3",
        "--seed",
        "0",
    ]
    result = {"vllm": a.vllm, "argv": argv}
    save(label, result | {"status": "starting"})
    t0 = time.perf_counter()
    script_args, training_args, model_args = parse_args(argv)
    trainer = build_trainer(script_args, training_args, model_args, WORK / f"grpo_out-{label}")
    result["init_s"] = time.perf_counter() - t0
    spans = {"generate": 0.0, "sync_weights": 0.0, "score": 0.0, "generate_and_score": 0.0}
    per_step = []

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            sync()
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                sync()
                spans[name] += time.perf_counter() - t

        return wrapper

    trainer._generate = timed("generate", trainer._generate)  # tokenize, weight sync, rollouts, decode
    if use_vllm:
        vgen = trainer.vllm_generation
        vgen.sync_weights = timed("sync_weights", vgen.sync_weights)
    trainer._calculate_rewards = timed("score", trainer._calculate_rewards)
    trainer._generate_and_score_completions = timed("generate_and_score", trainer._generate_and_score_completions)

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            sync()
            self.t, self.s = time.perf_counter(), dict(spans)

        def on_step_end(self, args, state, control, **kw):
            sync()
            d = {k: spans[k] - self.s[k] for k in spans}
            total = time.perf_counter() - self.t
            per_step.append(
                {
                    "total": total,
                    "generate": d["generate"],
                    "sync_weights": d["sync_weights"],
                    "score": d["score"],
                    "other_prep": d["generate_and_score"] - d["generate"] - d["score"],
                    "train": total - d["generate_and_score"],
                }
            )

    trainer.add_callback(StepTimer())
    trainer.train()
    timed_steps = per_step[1:] or per_step
    result |= {
        "status": "ok",
        "steps": per_step,
        "mean_step": {k: statistics.mean(s[k] for s in timed_steps) for k in per_step[0]},
        "completion_tokens_per_step": 16 * a.max_new,
        "log": trainer.state.log_history[-2:],
    }
    save(label, result)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sft")
    s.add_argument("--model", default="dense")
    s.add_argument("--variant", default="ours", choices=["ours", "unpacked", "trl_default"])
    s.add_argument("--steps", type=int, default=25)
    s.add_argument("--batch", type=int, default=8)
    s.add_argument("--label", default="")
    s.add_argument("--extra", default="", help="more sft flags, e.g. '--attn_implementation flex_attention'")
    s.add_argument("--profile", action="store_true", help="profile the last 2 steps: results/<label>-profile.txt")
    s.add_argument("--stack_every", type=int, default=90, help="dump every thread's stack to the log every N s")
    s.add_argument("--residual", default="float32", choices=["float32", "autocast"], help="residual stream dtype")
    s = sub.add_parser("grpo")
    s.add_argument("--model", default="small")
    s.add_argument("--vllm", default="colocate", choices=["colocate", "none"])
    s.add_argument("--max_new", type=int, default=256)
    s.add_argument("--steps", type=int, default=5)
    s.add_argument("--label", default="")
    a = p.parse_args(argv)
    {"sft": bench_sft, "grpo": bench_grpo}[a.cmd](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
