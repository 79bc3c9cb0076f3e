"""GPU benchmarks for issue 9: generation (vLLM vs HF, dense vs hybrid), synth stage vs raw vLLM, SFT, GRPO.

Runs on the lent GPU machine (no downloads there: models are random-init real architectures built in place,
prompts are token ids or generated GSM8K-style problems). `benchmarks/gpu/run_gpu.sh` stages the phases; each
sub-benchmark is one process writing `<work>/results/<name>.json`, so one failure or stall loses only itself:

    python benchmarks/gpu/run_gpu.py env                      # copy bandwidth + bf16 matmul rate, versions
    python benchmarks/gpu/run_gpu.py build                    # models/{dense,hybrid,small} + tokenizer
    python benchmarks/gpu/run_gpu.py vllm_gen --model dense --runs 512x512x512,256x128x2048
    python benchmarks/gpu/run_gpu.py hf_gen --model dense --batch 64 --prompt_len 512 --new 128
    python benchmarks/gpu/run_gpu.py synth_raw --model dense  # raw vllm.LLM on exactly the synth stage's prompts
    python benchmarks/gpu/run_gpu.py synth --model dense --batch_size 16   # our stage (ray.data.llm backend)

Length: one file on purpose (~780 lines). It is carried to a machine with no registry as a single script, and every
sub-benchmark shares the model builders, the roofline and the result writer; split, the phases would need a package
on the device.
    python benchmarks/gpu/run_gpu.py sft --model dense --variant ours
    python benchmarks/gpu/run_gpu.py grpo --vllm colocate
    python benchmarks/gpu/run_gpu.py report <results dir>     # markdown table (runs anywhere, no GPU)
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
        kind="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True,
    ),
    # Nemotron-H shapes scaled to hidden 2048: Mamba-2 d_inner = 2 x hidden, 8 groups, state 128, head_dim 64;
    # attention 16 heads x 128, 8 KV heads; relu^2 MLP 8192; untied embeddings; 1.04B parameters.
    "hybrid": dict(
        kind="nemotron_h", hidden_size=2048, intermediate_size=8192, hybrid_override_pattern=HYBRID_PATTERN,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, mamba_num_heads=64, mamba_head_dim=64,
        n_groups=8, ssm_state_size=128, conv_kernel=4, chunk_size=128, tie_word_embeddings=False,
    ),
    # ~0.43B Llama for GRPO (policy + colocated vLLM on one GPU).
    "small": dict(
        kind="llama", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
        num_attention_heads=16, num_key_value_heads=8, tie_word_embeddings=True,
    ),
}  # fmt: skip
if os.environ.get("NF_TINY"):  # CPU dry run of the harness (no GPU needed): same code paths, toy sizes
    VOCAB = 1024
    for spec in ARCH.values():
        spec.update(hidden_size=64, intermediate_size=128)
        spec.update({"num_hidden_layers": 2} if spec["kind"] == "llama" else {"mamba_num_heads": 8, "n_groups": 1,
                    "ssm_state_size": 16, "mamba_head_dim": 16, "head_dim": 16, "num_attention_heads": 4})  # fmt: skip
        spec.update(num_attention_heads=4, num_key_value_heads=2)
DEVICE = "cuda" if not os.environ.get("NF_TINY") else "cpu"


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


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
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    save("env", {
        "gpu": torch.cuda.get_device_name(0), "nvidia_smi": smi, "sms": torch.cuda.get_device_properties(0).multi_processor_count,
        "copy_bandwidth_Bps": bw, "bf16_matmul_flops": statistics.median(rates), "cpus": os.cpu_count(),
        "versions": versions(), "python": sys.version.split()[0],
    })  # fmt: skip


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
    common = dict(vocab_size=len(tok), max_position_embeddings=8192, pad_token_id=tok.pad_token_id,
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
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
        out[name] = {"params": sum(p.numel() for p in model.parameters()), "build_s": time.perf_counter() - t,
                     "architecture": type(model).__name__}  # fmt: skip
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


def roofline(model: str, params: int, n: int, prompt: int, gen: int, conc: int, bw: float, flops: float,
             ssm_bytes: int = 4) -> dict:  # fmt: skip
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


def bench_vllm_gen(a) -> None:
    from vllm import LLM, SamplingParams

    label = a.label or f"vllm_gen-{a.model}"
    extra = json.loads(a.engine or "{}")
    cfg = json.loads((MODELS / a.model / "config.json").read_text())
    kwargs = dict(model=str(MODELS / a.model), skip_tokenizer_init=True, enforce_eager=a.eager, seed=0,
                  max_num_seqs=a.max_num_seqs, gpu_memory_utilization=0.85, max_model_len=a.max_model_len) | extra  # fmt: skip
    result = {"model": a.model, "versions": versions(), "engine_kwargs": kwargs, "env": {k: v for k, v in os.environ.items()
              if k.startswith(("VLLM_", "TRITON_"))}, "runs": []}  # fmt: skip
    save(label, result | {"status": "starting"})
    t0 = time.perf_counter()
    llm = LLM(**kwargs)
    result["engine_start_s"] = time.perf_counter() - t0
    save(label, result | {"status": "started"})
    t0 = time.perf_counter()
    llm.generate([tokens_prompt(p) for p in random_prompts(8, 64, cfg["vocab_size"], 1)],
                 SamplingParams(max_tokens=32, ignore_eos=True, detokenize=False), use_tqdm=False)  # fmt: skip
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
            run["roofline"] = roofline(a.model, params, n, plen, gen, a.max_num_seqs, env["copy_bandwidth_Bps"],
                                       env["bf16_matmul_flops"], ssm)  # fmt: skip
        result["runs"].append(run)
        save(label, result | {"status": "running"})
    save(label, result | {"status": "ok"})


# --- HF generate -------------------------------------------------------------------------------------------------------


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
            run = {"batch": batch, "prompt_len": a.prompt_len, "gen_len": a.new, "seconds": dt, "tokens_per_s": tokens / dt,
                   "max_mem_GiB": torch.cuda.max_memory_allocated() / 2**30}  # fmt: skip
        except torch.OutOfMemoryError as e:
            run = {"batch": batch, "prompt_len": a.prompt_len, "gen_len": a.new, "error": f"OOM: {str(e)[:200]}"}
        torch.cuda.empty_cache()
        result["runs"].append(run)
        save(label, result)


# --- synth stage vs raw vLLM on the same prompts -------------------------------------------------------------------


ENGINE = dict(enforce_eager=True, max_num_seqs=256, gpu_memory_utilization=0.85, max_model_len=2048)


def synth_config(a, out_dir: str) -> Path:
    """A synth YAML for the GSM8K-style prompts (written by `synth_raw`) and a built model."""
    import yaml

    cfg = dict(prompts_path=str(DATA / "prompts.jsonl"), prompt_format="gsm8k", backend="vllm",
               model_name_or_path=str(MODELS / a.model), num_samples=a.samples, reasoning="on",
               max_new_tokens=a.max_new, batch_size=a.batch_size, num_workers=1, engine_kwargs=ENGINE,
               shard_rows=256, output_dir=out_dir, force=True)  # fmt: skip
    path = WORK / f"synth-{a.model}-bs{a.batch_size}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def write_prompts(n: int) -> None:
    from pipelines.demo_text import word_problem

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

    from pipelines.synth import parse_args, prepare_prompts
    from pipelines.traces import sample_rows

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
    result = {"model": a.model, "samples": len(samples), "prompt_tokens_mean": statistics.mean(map(len, ids)),
              "engine_kwargs": ENGINE, "runs": []}  # fmt: skip
    t0 = time.perf_counter()
    llm = LLM(model=cfg.model_name_or_path, seed=0, **ENGINE)
    result["engine_start_s"] = time.perf_counter() - t0
    llm.generate([tokens_prompt(i) for i in ids[:8]], SamplingParams(max_tokens=16), use_tqdm=False)
    for seeded in (True, False):
        params = [SamplingParams(temperature=s["sampling"]["temperature"], top_p=s["sampling"]["top_p"],
                                 max_tokens=s["sampling"]["max_new_tokens"],
                                 seed=s["sampling"]["seed"] if seeded else None) for s in samples]  # fmt: skip
        sync()
        t = time.perf_counter()
        outs = llm.generate([tokens_prompt(i) for i in ids], params, use_tqdm=False)
        dt = time.perf_counter() - t
        tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        result["runs"].append({"seeded": seeded, "seconds": dt, "gen_tokens": tokens, "tokens_per_s": tokens / dt})
        save(label, result)
    result["wall_incl_start_s"] = result["engine_start_s"] + result["runs"][0]["seconds"]
    save(label, result)


def bench_synth(a) -> None:
    """Our synth stage end to end (Ray Data + ray.data.llm vLLM backend + verify + shards). Shard writes are
    timestamped; the engine's readiness is read off its log line, so the generation phase can be timed apart."""
    import pipelines.synth as synth

    label = a.label or f"synth-{a.model}-bs{a.batch_size}"
    if not (DATA / "prompts.jsonl").exists():  # on a fresh machine synth can run before synth_raw (phase F1 did)
        write_prompts(a.prompts)
    if a.no_ray_metrics:  # the fix proposed for pipelines/backends.py, applied here as a shim (see results/gpu.md)
        import functools

        import ray.data.llm as rdl

        rdl.vLLMEngineProcessorConfig = functools.partial(rdl.vLLMEngineProcessorConfig, log_engine_metrics=False)
    out_dir = str(WORK / f"synth_out-bs{a.batch_size}")
    cfg = synth.parse_args(["--config", str(synth_config(a, out_dir))])
    marks = []
    write_shard = synth.write_shard

    def timed_write(folder, rows, *args):
        marks.append((time.time(), folder.name, len(rows)))
        return write_shard(folder, rows, *args)

    synth.write_shard = timed_write
    t0 = time.time()
    result = {"model": a.model, "batch_size": a.batch_size, "engine_kwargs": ENGINE, "t0": t0}
    try:
        path = synth.synthesize(cfg)
        result["wall_s"] = time.time() - t0
        manifest = json.loads((Path(path) / "manifest.json").read_text())
        result["counts"] = manifest.get("counts")
        from pipelines.traces import read_shards

        t = read_shards(Path(path) / "traces", ["num_generated_tokens", "error"]).to_pydict()
        result["gen_tokens"] = sum(n or 0 for n in t["num_generated_tokens"])
        result["errors"] = sum(e is not None for e in t["error"])
        result["shard_marks"] = [(m[0] - t0, m[1], m[2]) for m in marks]
        result["status"] = "ok"
    except Exception as e:  # recorded, the driver goes on
        import traceback

        result |= {
            "status": "failed",
            "error": f"{type(e).__name__}: {e}"[:3000],
            "traceback": traceback.format_exc()[-6000:],
        }
    save(label, result)


# --- SFT --------------------------------------------------------------------------------------------------------------


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


def bench_sft(a) -> None:
    import torch
    from transformers import TrainerCallback

    from sft.train import build_trainer, parse_args

    label = a.label or f"sft-{a.model}-{a.variant}"
    data = DATA / "sft.jsonl"
    if not data.exists():
        write_sft_data(2000)
    argv = ["--model_name_or_path", str(MODELS / a.model), "--dataset_name", str(data),
            "--output_dir", str(WORK / f"sft_out-{label}"), "--max_steps", str(a.steps),
            "--per_device_train_batch_size", str(a.batch), "--max_length", "2048", "--learning_rate", "1e-5",
            "--logging_steps", "5", "--save_strategy", "no", "--report_to", "none", "--assistant_only_loss", "true",
            "--dataloader_num_workers", "2", "--seed", "0"]  # fmt: skip
    if a.variant == "packed":
        argv += ["--packing", "true"]
    if a.variant == "trl_default":  # TRL alone: float32 weights (ModelConfig.dtype's default), bf16 autocast
        argv += ["--dtype", "float32", "--bf16", str(DEVICE == "cuda").lower()]
    else:  # ours, as the Nano 2 recipes (sft/configs/sft_nano2_12b.yaml): pure bf16 weights, no autocast
        argv += ["--dtype", "bfloat16", "--bf16", "false"]
    result = {"model": a.model, "variant": a.variant, "argv": argv}
    script_args, training_args, model_args = parse_args(argv)
    try:
        trainer = build_trainer(script_args, training_args, model_args, WORK / f"sft_out-{label}")
    except Exception as e:
        save(label, result | {"status": "refused_or_failed", "error": f"{type(e).__name__}: {e}"[:2000]})
        return
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

    trainer.add_callback(StepTimer())
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    timed = steps[3:]  # first steps: allocator and kernel warm-up
    secs, real, slots, sq = (sum(s[i] for s in timed) for i in range(4))
    model = trainer.accelerator.unwrap_model(trainer.model)
    mean_ctx = sq / (2 * real)  # mean over tokens of the causal context length
    fpt = flops_per_token(model, mean_ctx)
    peak = (load("env") or {}).get("bf16_matmul_flops")
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    result |= {
        "status": "ok", "steps_timed": len(timed), "seconds": secs, "train_wall_s": wall,
        "tokens_per_s": real / secs, "slot_tokens_per_s": slots / secs, "padding_waste": 1 - real / slots,
        "flops_per_token": fpt, "mfu": fpt * real / secs / peak if peak else None,
        "param_dtype": str(next(model.parameters()).dtype), "padding_free": bool(getattr(trainer, "padding_free", False)),
        "max_mem_GiB": torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else None, "loss_first_last": [losses[:1], losses[-1:]],
        "attn_implementation": model.config._attn_implementation,
    }  # fmt: skip
    save(label, result)


# --- GRPO -------------------------------------------------------------------------------------------------------------


def bench_grpo(a) -> None:
    import functools

    from transformers import TrainerCallback

    from rl.grpo import build_trainer, parse_args

    label = a.label or f"grpo-{a.vllm}"
    if not (DATA / "prompts.jsonl").exists():
        write_prompts(512)
    use_vllm = a.vllm != "none"
    if use_vllm:  # TRL's colocated LLM has no enforce_eager switch; compile-mode start-up outruns this lease
        import trl.generation.vllm_generation as vg

        vg.LLM = functools.partial(vg.LLM, enforce_eager=True)
    argv = ["--model_name_or_path", str(MODELS / "small"), "--dataset_name", str(DATA / "prompts.jsonl"),
            "--output_dir", str(WORK / f"grpo_out-{label}"), "--max_steps", str(a.steps), "--bf16", str(DEVICE == "cuda").lower(),
            "--per_device_train_batch_size", "16", "--num_generations", "8", "--max_completion_length", str(a.max_new),
            "--learning_rate", "1e-6", "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none",
            "--use_vllm", str(use_vllm).lower(), "--vllm_mode", "colocate", "--vllm_gpu_memory_utilization", "0.3",
            "--seed", "0"]  # fmt: skip
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
            per_step.append({"total": total, "generate": d["generate"], "sync_weights": d["sync_weights"],
                             "score": d["score"],
                             "other_prep": d["generate_and_score"] - d["generate"] - d["score"],
                             "train": total - d["generate_and_score"]})  # fmt: skip

    trainer.add_callback(StepTimer())
    trainer.train()
    timed_steps = per_step[1:] or per_step
    result |= {"status": "ok", "steps": per_step,
               "mean_step": {k: statistics.mean(s[k] for s in timed_steps) for k in per_step[0]},
               "completion_tokens_per_step": 16 * a.max_new, "log": trainer.state.log_history[-2:]}  # fmt: skip
    save(label, result)


# --- report ----------------------------------------------------------------------------------------------------------


def report(a) -> None:
    d = Path(a.dir)
    res = {p.stem: json.loads(p.read_text()) for p in sorted(d.glob("*.json"))}
    lines = []
    env = res.get("env", {})
    if env:
        # env runs in phase 0, before the staged wheels are installed: take versions from a result that has vLLM
        vers = next((r["versions"] for r in res.values() if (r.get("versions") or {}).get("vllm")), env["versions"])
        vers = ", ".join(f"{k} {v}" for k, v in vers.items() if v)
        lines += [f"Device: {env['gpu']} ({env['nvidia_smi']}); copy {env['copy_bandwidth_Bps'] / 1e12:.2f} TB/s "
                  f"(read+write), bf16 matmul {env['bf16_matmul_flops'] / 1e12:.0f} TFLOP/s; {vers}", ""]  # fmt: skip
    lines += ["| benchmark | setting | result |", "|---|---|---|"]
    for name, r in res.items():
        try:
            lines += report_lines(name, r, res)
        except (KeyError, TypeError, ValueError) as e:
            lines.append(f"| {name} | | unreadable result ({e!r}) |")
    print("\n".join(lines))


def cell(text: object, limit: int = 300) -> str:
    """One table cell: no ANSI colours (Ray's errors carry them), newlines or pipes."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(text or ""))
    return " ".join(text.replace("|", "/").split())[:limit]


def report_lines(name: str, r: dict, res: dict | None = None) -> list[str]:
    lines = []
    if name in ("env", "build"):
        return lines
    if name.startswith("vllm_gen") or name.startswith("hf_gen") or name.startswith("synth_raw"):
        start = r.get("engine_start_s")
        for run in r.get("runs", []):
            rl = run.get("roofline", {}).get("tokens_per_s")
            setting = ", ".join(f"{k}={run[k]}" for k in ("n", "batch", "prompt_len", "gen_len", "seeded") if k in run)
            val = f"{run['tokens_per_s']:,.0f} tok/s" if "tokens_per_s" in run else cell(run.get("error", "?"))
            val += f" (roofline {rl:,.0f}, {run['tokens_per_s'] / rl:.0%})" if rl and "tokens_per_s" in run else ""
            lines.append(f"| {name} | {setting} | {val}" + (f"; engine start {start:.0f} s" if start else "") + " |")
        if not r.get("runs"):  # stopped before its first run: how far it got
            got = f"; engine started in {start:.0f} s, stopped before the first run ended" if start else ""
            lines.append(f"| {name} | | {r.get('status')}{got} {cell(r.get('error', ''), 200)} |")
    elif name.startswith("synth"):
        if r.get("status") == "ok":
            raw = (res or {}).get(f"synth_raw-{r['model']}", {})
            ratio = ""
            if raw.get("wall_incl_start_s"):  # both include engine start; raw is seeded like the stage
                ratio = f"; raw vLLM {raw['wall_incl_start_s']:.0f} s incl. start, stage / raw {r['wall_s'] / raw['wall_incl_start_s']:.2f}x time"
            lines.append(f"| {name} | batch_size={r['batch_size']} | {r['gen_tokens']:,} tokens in {r['wall_s']:.0f} s wall"
                         f" ({r['gen_tokens'] / r['wall_s']:,.0f} tok/s){ratio} |")  # fmt: skip
        else:
            lines.append(f"| {name} | | {r.get('status')}: {cell(r.get('error', ''))} |")
    elif name.startswith("sft"):
        if r.get("status") == "ok":
            mfu = f"{r['mfu']:.1%}" if r.get("mfu") else "n/a"
            mem = f"{r['max_mem_GiB']:.0f} GiB" if r.get("max_mem_GiB") else ""
            lines.append(f"| {name} | {r['param_dtype']}, padding_free={r['padding_free']} | {r['tokens_per_s']:,.0f} tok/s, "
                         f"MFU {mfu}, padding waste {r['padding_waste']:.0%}, {mem} |")  # fmt: skip
        else:
            lines.append(f"| {name} | | {r.get('status')}: {cell(r.get('error', ''))} |")
    elif name.startswith("grpo"):
        if r.get("status") == "ok":
            m = r["mean_step"]
            lines.append(f"| {name} | | step {m['total']:.2f} s = generate {m['generate']:.2f} + score {m['score']:.3f} "
                         f"+ logprobs {m['other_prep']:.2f} + train {m['train']:.2f} |")  # fmt: skip
        else:
            lines.append(f"| {name} | | {r.get('status')}: {cell(r.get('error', ''))} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("env")
    s = sub.add_parser("build")
    s.add_argument("--which", default="dense,hybrid,small")
    s = sub.add_parser("vllm_gen")
    s.add_argument("--model", default="dense")
    s.add_argument("--runs", default="512x512x512", help="NxPROMPTxGEN, comma-separated, one engine")
    s.add_argument("--max_num_seqs", type=int, default=256)
    s.add_argument("--max_model_len", type=int, default=4096)
    s.add_argument("--eager", type=lambda x: x.lower() == "true", default=True)
    s.add_argument("--engine", default="", help="extra engine kwargs as JSON")
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
        s.add_argument("--batch_size", type=int, default=16)
        s.add_argument("--no_ray_metrics", action="store_true", help="synth: log_engine_metrics=False shim")
        s.add_argument("--label", default="")
    s = sub.add_parser("sft")
    s.add_argument("--model", default="dense")
    s.add_argument("--variant", default="ours", choices=["ours", "packed", "trl_default"])
    s.add_argument("--steps", type=int, default=25)
    s.add_argument("--batch", type=int, default=8)
    s.add_argument("--label", default="")
    s = sub.add_parser("grpo")
    s.add_argument("--vllm", default="colocate", choices=["colocate", "none"])
    s.add_argument("--max_new", type=int, default=256)
    s.add_argument("--steps", type=int, default=5)
    s.add_argument("--label", default="")
    s = sub.add_parser("report")
    s.add_argument("dir", nargs="?", default=str(RESULTS))
    a = p.parse_args(argv)
    fn = {"env": bench_env, "build": bench_build, "vllm_gen": bench_vllm_gen, "hf_gen": bench_hf_gen,
          "synth_raw": bench_synth_raw, "synth": bench_synth, "sft": bench_sft, "grpo": bench_grpo,
          "report": report}[a.cmd]  # fmt: skip
    fn(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
