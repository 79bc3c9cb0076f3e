"""Where vLLM's NemotronH parts from transformers' on a taught hybrid (issue 16 item 5), on the lent GPU.

    python3 -m benchmarks.gpu.vllm_parity [--graphs ours|eager|breakable] [--preset small] [--out DIR]

Builds the `small` preset, teaches it the eval test's answers (`tests/sft/test_evaluate.py::memorized_model`), loads
it in vLLM in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`; CUDA graphs as `--graphs` says) and in transformers,
both bfloat16, then prints and writes as JSON (`parity-<graphs>.json`):
- every vLLM parameter against the checkpoint tensor it came from (max |difference|), so a loading fault shows by name;
- the residual stream after each decoder layer on one teacher-forced prompt + answer (vLLM's `hidden + residual`
  against transformers' layer output), so the first layer type that parts shows (not inside a CUDA graph: hooks do
  not run there);
- the prefill's argmax agreement, and 20 greedy tokens from each (the decode steps).

Eighth lease (H200): eager 44 of 44 argmax equal, breakable graphs 10 of 44.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the model object in this process, for hooks
ROOT = Path(__file__).resolve().parents[2]


def test_helpers():
    sys.path.insert(0, str(ROOT / "tests"))  # the test module's own imports (datapaths)
    spec = importlib.util.spec_from_file_location("test_evaluate", ROOT / "tests/sft/test_evaluate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def checkpoint_tensor(hf_state: dict, name: str):
    """The checkpoint tensor(s) a vLLM parameter is loaded from, in vLLM's layout; None where there is no rule."""
    import torch

    name = name.replace("embed_tokens", "embeddings")
    if name.endswith("mixer.A"):
        return -torch.exp(hf_state[name + "_log"].float())
    if name.endswith("qkv_proj.weight"):
        stem = name[: -len("qkv_proj.weight")]
        return torch.cat([hf_state[f"{stem}{p}_proj.weight"] for p in "qkv"])
    return hf_state.get(name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--out", default=os.environ.get("NF_WORK", "/tmp/nfbench") + "/parity")
    ap.add_argument(
        "--graphs",
        choices=("ours", "eager", "breakable"),
        default="ours",
        help="ours: the stages' rule for hybrids (pipelines/reasoning/vllm_graphs.py); eager; breakable: "
        "VLLM_USE_BREAKABLE_CUDAGRAPH=1 (wrong for hybrids on vLLM 0.26)",
    )
    ap.add_argument("--label", help="the report's file name (default parity-<graphs>), e.g. for another runner")
    a = ap.parse_args(argv)
    os.environ["VLLM_USE_BREAKABLE_CUDAGRAPH"] = "1" if a.graphs == "breakable" else "0"  # before vLLM reads it
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import LLM, SamplingParams

    from pipelines.reasoning.prompt_formats import with_reasoning_flag
    from pipelines.reasoning.vllm_graphs import hybrid_engine_kwargs
    from sft import evaluate
    from sft.init_base import build_base

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "test.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"What is {i} plus 1?", "answer": f"#### {i + 1}"}) + "\n" for i in range(8))
    )
    model = out / "memorized"
    if not (model / "config.json").exists():  # one taught model for every --graphs run of a lease
        base = build_base(out / a.preset, preset=a.preset, seed=0)
        test_helpers().memorized_model(base, data, model, "cuda", steps=a.steps)
        torch.cuda.empty_cache()

    tok = AutoTokenizer.from_pretrained(model)
    problem = evaluate.load_problems(evaluate.EvalConfig(model=str(model), dataset=str(data)))[0]
    prompt = tok.apply_chat_template(
        with_reasoning_flag(problem["messages"], "on"), tokenize=False, add_generation_prompt=True
    )
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    ids += tok("done\n</think>\nThe answer is \\boxed{1}.", add_special_tokens=False)["input_ids"]
    n = len(ids)

    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16).to("cuda").eval()
    hf_state = {k: v.detach() for k, v in hf.state_dict().items()}
    hf_layers: list = []
    for layer in hf.model.layers:
        layer.register_forward_hook(
            lambda m, i, o: hf_layers.append((o[0] if isinstance(o, tuple) else o)[0].float().cpu())
        )
    with torch.no_grad():
        hf_logits = hf(torch.tensor([ids], device="cuda"), use_cache=False).logits[0].float().cpu()
    kinds = list(hf.config.layers_block_type)

    engine = {
        "enforce_eager": a.graphs == "eager",
        "enable_prefix_caching": False,
        "gpu_memory_utilization": 0.3,
        "mamba_ssm_cache_dtype": "float32",
    }
    if a.graphs == "ours":
        engine = hybrid_engine_kwargs(engine, max_num_seqs=64)
    llm = LLM(model=str(model), dtype="bfloat16", **engine)
    v_layers: list = []

    def inspect(vm):
        rows = []
        for name, p in vm.named_parameters():
            ref = checkpoint_tensor(hf_state, name)
            if ref is None:
                rows.append((name, list(p.shape), None, "no checkpoint tensor"))
                continue
            ref = ref.to(p.device, torch.float32)
            if ref.numel() != p.numel():
                rows.append((name, list(p.shape), None, f"checkpoint has {list(ref.shape)}"))
                continue
            rows.append((name, list(p.shape), (p.float().flatten() - ref.flatten()).abs().max().item(), ""))
        for layer in vm.model.layers:
            layer.register_forward_hook(lambda m, i, o: v_layers.append((o[0].float() + o[1].float()).cpu()))
        mixer = next(m for m in vm.modules() if type(m).__name__ == "MambaMixer2")
        attrs = {
            k: str(getattr(mixer, k, None))
            for k in (
                "n_groups",
                "ssm_state_size",
                "num_heads",
                "head_dim",
                "chunk_size",
                "activation",
                "use_rms_norm",
            )
        }
        return rows, attrs

    (rows, attrs), *_ = llm.apply_model(inspect)
    v_layers.clear()  # the hooks saw the engine's warm-up passes
    res = llm.generate([{"prompt_token_ids": ids}], SamplingParams(max_tokens=1, prompt_logprobs=1))[0]
    streams = [t for t in v_layers if t.shape[0] >= n][-len(kinds) :]
    per_layer = []
    for i, (kind, h, v) in enumerate(zip(kinds, hf_layers, streams, strict=False)):
        v = v[:n]
        diff = (h - v).abs().max().item()
        per_layer.append({"layer": i, "kind": kind, "max_abs_diff": diff, "hf_max_abs": h.abs().max().item()})
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    greedy = llm.generate([{"prompt_token_ids": prompt_ids}], SamplingParams(max_tokens=20, temperature=0.0))[0]
    with torch.no_grad():
        hf_greedy = hf.generate(torch.tensor([prompt_ids], device="cuda"), max_new_tokens=20, do_sample=False)
    v_top = [next(t for t, lp in res.prompt_logprobs[i].items() if lp.rank == 1) for i in range(1, n)]
    hf_top = hf_logits.argmax(-1).tolist()[: n - 1]
    report = {
        "graphs": a.graphs,
        "engine": engine,
        "hf_config": {
            k: getattr(hf.config, k, None)
            for k in (
                "n_groups",
                "chunk_size",
                "ssm_state_size",
                "mamba_num_heads",
                "mamba_head_dim",
                "head_dim",
                "time_step_limit",
                "residual_in_fp32",
                "layer_norm_epsilon",
                "vocab_size",
            )
        },
        "vllm_mixer": attrs,
        "params_off": [r for r in rows if r[2] is None or r[2] > 1e-2],
        "params_checked": len(rows),
        "per_layer": per_layer,
        "greedy": {"vllm": tok.decode(greedy.outputs[0].token_ids), "hf": tok.decode(hf_greedy[0, len(prompt_ids) :])},
        "argmax_agree": sum(x == y for x, y in zip(v_top, hf_top, strict=False)),
        "tokens": n - 1,
        "vllm_top": v_top,
        "hf_top": hf_top,
    }
    (out / f"{a.label or 'parity-' + a.graphs}.json").write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
