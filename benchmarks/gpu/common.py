"""What every GPU benchmark shares: work folders, the two measured ceilings, random-init models of real
architectures, the decode roofline and the result files.

Runs on the lent GPU machine (no downloads there: models are built in place, prompts are token ids or generated
GSM8K-style problems). Each measurement is one process writing `<work>/results/<name>.json`, so one failure or stall
loses only itself; `benchmarks/gpu/lease.sh` runs a lease's plan, `report.py` turns the results into tables:

    python -m benchmarks.gpu.common env      # copy bandwidth + bf16 matmul rate, versions
    python -m benchmarks.gpu.common build    # models/{dense,hybrid,small} + tokenizer (positions for 8k + 16k)

`NF_TINY=1` shrinks every model so the harness can be dry-run on a CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

WORK = Path(os.environ.get("NF_WORK", "/tmp/nfbench"))
RESULTS = WORK / "results"
MODELS = WORK / "models"
DATA = WORK / "data"
VOCAB = 32768
# Nemotron-H 8B's layer mix (M = Mamba-2, - = MLP, * = attention; ~8% attention) at 30 layers, ~1.0B parameters.
HYBRID_PATTERN = "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-"
ARCH = {
    # Llama-3.2-1B shapes (vocab cut to 32k): 16 layers, GQA 32/8, tied embeddings; 1.04B parameters.
    "dense": dict(
        kind="llama",
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=True,
    ),
    # Nemotron-H shapes scaled to hidden 2048: Mamba-2 d_inner = 2 x hidden, 8 groups, state 128, head_dim 64;
    # attention 16 heads x 128, 8 KV heads; relu^2 MLP 8192; untied embeddings; 1.04B parameters.
    "hybrid": dict(
        kind="nemotron_h",
        hidden_size=2048,
        intermediate_size=8192,
        hybrid_override_pattern=HYBRID_PATTERN,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        mamba_num_heads=64,
        mamba_head_dim=64,
        n_groups=8,
        ssm_state_size=128,
        conv_kernel=4,
        chunk_size=128,
        tie_word_embeddings=False,
    ),
    # ~0.43B Llama for GRPO (policy + colocated vLLM on one GPU).
    "small": dict(
        kind="llama",
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        num_key_value_heads=8,
        tie_word_embeddings=True,
    ),
}
if os.environ.get("NF_TINY"):  # CPU dry run of the harness (no GPU needed): same code paths, toy sizes
    VOCAB = 1024
    for spec in ARCH.values():
        spec.update(hidden_size=64, intermediate_size=128)
        spec.update(
            {"num_hidden_layers": 2}
            if spec["kind"] == "llama"
            else {
                "mamba_num_heads": 8,
                "n_groups": 1,
                "ssm_state_size": 16,
                "mamba_head_dim": 16,
                "head_dim": 16,
                "num_attention_heads": 4,
            }
        )
        spec.update(num_attention_heads=4, num_key_value_heads=2)
DEVICE = "cuda" if not os.environ.get("NF_TINY") else "cpu"


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def process_seconds() -> float:
    """Seconds since this process started, its imports included (Linux /proc): the clock both sides of a stage vs
    raw comparison are read on, so neither leaves out its own start-up."""
    start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22, starttime
    boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line[:5] == "btime")
    return time.time() - (boot + start_ticks / os.sysconf("SC_CLK_TCK"))


def cpu_times() -> dict[int, tuple[int, int, int]]:
    """cpu -> (busy, steal, total) jiffies from /proc/stat (busy excludes idle, iowait and steal)."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            v = [int(x) for x in values]
            idle, steal = v[3] + (v[4] if len(v) > 4 else 0), v[7] if len(v) > 7 else 0
            out[int(name[3:])] = (sum(v[:8]) - idle - steal, steal, sum(v[:8]))
    return out


class HostLoad:
    """What the whole machine's CPUs did over a span, from /proc/stat: cores busy on average, and the share of CPU
    time the hypervisor took (steal). The sixteenth lease's hybrid engines ran 2x apart from one run to the next on
    the same settings; each run now says what its host was doing meanwhile."""

    def __init__(self):
        self.t, self.start = time.monotonic(), cpu_times()

    def read(self) -> dict:
        now, end = time.monotonic(), cpu_times()
        busy, steal, total = (sum(end[c][i] - self.start[c][i] for c in end if c in self.start) for i in range(3))
        return {
            "seconds": round(now - self.t, 1),
            "cores_busy": round(len(end) * busy / total, 2) if total else None,
            "steal": round(steal / total, 4) if total else None,
        }


def save(name: str, result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1, default=str))
    print(f"[result {name}] " + json.dumps(result, default=str)[:1500], flush=True)


def load(name: str) -> dict | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in [
        "torch",
        "vllm",
        "transformers",
        "trl",
        "ray",
        "datasets",
        "flashinfer-python",
        "triton",
        "accelerate",
    ]:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def cuda_time(fn, reps: int = 20, warmup: int = 3) -> float:
    """Median seconds of `fn()` timed with CUDA events."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times)


# --- env: the two ceilings ------------------------------------------------------------------------------------------


def bench_env(a) -> None:
    import subprocess

    import torch

    n = 2**30  # 2 GiB bf16 buffers, far over L2
    src = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    t_copy = cuda_time(lambda: dst.copy_(src))
    bw = 2 * n * 2 / t_copy  # bytes read + written
    rates = []
    for _ in range(2):  # fresh random operands each round
        x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        y = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        rates.append(2 * 8192**3 / cuda_time(lambda x=x, y=y: x @ y))
    smi = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm", "--format=csv,noheader"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    save(
        "env",
        {
            "gpu": torch.cuda.get_device_name(0),
            "nvidia_smi": smi,
            "sms": torch.cuda.get_device_properties(0).multi_processor_count,
            "copy_bandwidth_Bps": bw,
            "bf16_matmul_flops": statistics.median(rates),
            "cpus": os.cpu_count(),
            "versions": versions(),
            "python": sys.version.split()[0],
        },
    )


# --- build: tokenizer + random-init models ------------------------------------------------------------------------


def build_tokenizer(vocab: int):
    """Our byte-level BPE + Nano 2 specials + chat template (sft/tokenizer.py), trained to exactly `vocab` entries
    on the built-in corpus plus pseudo-words (enough distinct pairs for 32k merges)."""
    from sft.tokenizer import THINK_TOKENS, builtin_corpus, train_tokenizer

    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    pool = ["".join(rng.choices(letters, k=rng.randint(3, 10))) for _ in range(60000)]
    words = [" ".join(rng.choices(pool, k=60)) for _ in range(5000)]
    tok = train_tokenizer(builtin_corpus(0) + words, vocab - len(THINK_TOKENS))
    return tok


def model_config(name: str, tok):
    from transformers import LlamaConfig, NemotronHConfig

    spec = dict(ARCH[name])
    kind = spec.pop("kind")
    common = dict(
        vocab_size=len(tok),
        max_position_embeddings=32768,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    if kind == "llama":
        return LlamaConfig(rope_theta=500000.0, **common, **spec)
    return NemotronHConfig(**common, **spec)


def bench_build(a) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    t0 = time.perf_counter()
    tok = build_tokenizer(VOCAB)
    t_tok = time.perf_counter() - t0
    out = {"vocab": len(tok), "tokenizer_s": t_tok}
    for name in a.which.split(","):
        t = time.perf_counter()
        cfg = model_config(name, tok)
        torch.manual_seed(0)
        with torch.device(DEVICE):
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
        model.generation_config.eos_token_id = tok.eos_token_id
        model.save_pretrained(MODELS / name)
        tok.save_pretrained(MODELS / name)
        out[name] = {
            "params": sum(p.numel() for p in model.parameters()),
            "build_s": time.perf_counter() - t,
            "architecture": type(model).__name__,
        }
        del model
        torch.cuda.empty_cache()
    save("build", out)


# --- roofline --------------------------------------------------------------------------------------------------------


def decode_bytes(cfg: dict, ssm_bytes: int = 4) -> dict:
    """Bytes a decode step must move: weights once per step, KV per token of context, Mamba state per sequence
    (read + written). `cfg` is the model's config.json."""
    h, v = cfg["hidden_size"], cfg["vocab_size"]
    if cfg["model_type"] == "nemotron_h":
        kinds = cfg.get("hybrid_override_pattern") or "".join(
            {"mamba": "M", "linear_attention": "M", "attention": "*", "full_attention": "*", "mlp": "-"}[t]
            for t in cfg["layers_block_type"]
        )
        n_attn, n_mamba = kinds.count("*"), kinds.count("M")
        head_dim = cfg.get("head_dim") or h // cfg["num_attention_heads"]
        d_inner = cfg["mamba_num_heads"] * cfg["mamba_head_dim"]
        conv_dim = d_inner + 2 * cfg["n_groups"] * cfg["ssm_state_size"]
        state = n_mamba * (d_inner * cfg["ssm_state_size"] * ssm_bytes + conv_dim * (cfg["conv_kernel"] - 1) * 2)
    else:
        n_attn, head_dim, state = cfg["num_hidden_layers"], h // cfg["num_attention_heads"], 0
    kv_per_token = n_attn * 2 * cfg["num_key_value_heads"] * head_dim * 2
    return {"kv_per_token": kv_per_token, "state_per_seq": state, "n_attn": n_attn, "embed": v * h}


def roofline(
    model: str, params: int, n: int, prompt: int, gen: int, conc: int, bw: float, flops: float, ssm_bytes: int = 4
) -> dict:
    """Upper bound on generated tokens/s: prefill at the matmul rate, then decode steps that each read the weights
    once and every running sequence's KV (mean context) and Mamba state (read + write) at the copy bandwidth."""
    cfg = json.loads((MODELS / model / "config.json").read_text())
    d = decode_bytes(cfg, ssm_bytes)
    weights = 2 * (params - (0 if cfg.get("tie_word_embeddings") else d["embed"]))  # input embedding: rows only
    b = min(n, conc)
    step_bytes = weights + b * (d["kv_per_token"] * (prompt + gen / 2) + 2 * d["state_per_seq"])
    decode_s = math.ceil(n / b) * gen * step_bytes / bw
    prefill_s = 2 * params * n * prompt / flops
    return {"tokens_per_s": n * gen / (decode_s + prefill_s), "step_bytes": step_bytes, "concurrency": b, **d}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("env")
    s = sub.add_parser("build")
    s.add_argument("--which", default="dense,hybrid,small")
    a = p.parse_args(argv)
    {"env": bench_env, "build": bench_build}[a.cmd](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
