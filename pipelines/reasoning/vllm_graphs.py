"""Which CUDA graphs and model runner a vLLM engine gets: one rule for synth's engines, the eval's and GRPO's rollouts.

- **Dense models: breakable graphs** (`VLLM_USE_BREAKABLE_CUDAGRAPH=1`): piecewise graphs without torch.compile, which
  break capture at attention ops and run those eagerly. 1.6-2.0x eager decode on the H100, and a start of ~30 s where
  vLLM's full compile did not start within 6 minutes (benchmarks/results/gpu.md).
- **Hybrids (Nemotron-H): full graphs for decode-only steps, everything else eager**, no torch.compile, breakable
  graphs off. vLLM 0.26's breakable capture breaks only at attention ops, so a Mamba mixer is recorded with the
  capture's batch metadata and replayed with it: a prefill chunk that fits a captured size ran its Mamba layers as
  if each token were a separate one-token decode. On the H200 (2026-12-02, `python -m benchmarks.gpu.vllm_parity`,
  a taught `small` hybrid, bfloat16) vLLM's prefill argmax agreed with transformers' at 10 of 44 tokens with breakable
  graphs, 44 of 44 in eager mode, and the eval scored 0-1/8 against transformers' 7/8. Full decode graphs are the
  mode vLLM's Mamba backend declares (`UNIFORM_BATCH`) and its own hybrid default uses for decode steps; torchtitan's
  RL generator settled on the same mode after breakable graphs corrupted its rollouts (pytorch/torchtitan#3685).
  One known hole: a brand-new request whose prompt is a single token looks like a decode step and is replayed as
  one (vllm-project/vllm#57720, open). Every prompt here is a chat template's output, never one token long.

**Hybrids run on vLLM's V2 model runner** (`VLLM_USE_V2_MODEL_RUNNER=1`; vLLM 0.26 picks V2 for dense models itself
and V1 for hybrids). V1 draws seeded requests' noise one request at a time (1,024 small kernels per decode step at
1,024 sequences), V2 in one kernel from (seed, position). On the H200 (fifteenth lease, the 1B hybrid, 1,024 prompts x
4 x up to 1,024 tokens, seeded) raw vLLM took 257 s on V2 against 416 s on V1, and the V2 engine with the graphs above
agreed with transformers at 44 of 44 prefill argmax tokens and in its 20 greedy ones (`vllm_parity --label
parity-ours-v2`). A caller's `VLLM_USE_V2_MODEL_RUNNER=0` keeps V1. GRPO's colocated rollouts keep vLLM's choice (V1):
TRL swaps weights into that engine and sleeps it, which no lease has tried on V2.

An `enforce_eager` or a `compilation_config` in the user's engine kwargs wins over these defaults, key by key.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

BREAKABLE = "VLLM_USE_BREAKABLE_CUDAGRAPH"
RUNNER = "VLLM_USE_V2_MODEL_RUNNER"
# mode 0 = CompilationMode.NONE: no torch.compile; decode-only batches replay a whole-model graph, the rest is eager.
HYBRID_COMPILATION = {"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"}


def hybrid_engine_kwargs(kwargs: dict, max_num_seqs: int | None = None) -> dict:
    """`kwargs` with a hybrid's defaults: Mamba state in float32 (a bf16 state drifts over long generations), and
    unless `enforce_eager`, `HYBRID_COMPILATION` with every decode batch size up to `max_num_seqs` captured."""
    kwargs = {"mamba_ssm_cache_dtype": "float32", **kwargs}
    if not kwargs.get("enforce_eager"):
        sizes = {"max_cudagraph_capture_size": max_num_seqs} if max_num_seqs else {}
        kwargs["compilation_config"] = HYBRID_COMPILATION | sizes | dict(kwargs.get("compilation_config") or {})
    return kwargs


def engine_env(hybrid: bool) -> dict[str, str]:
    """The environment an engine actor gets: breakable graphs for a dense model unless the caller's environment says
    otherwise; never for a hybrid, which gets the V2 model runner unless the caller's environment says otherwise (see
    the module docstring)."""
    if hybrid:
        if os.environ.get(BREAKABLE) == "1":
            log.warning("%s=1 ignored for a hybrid: its Mamba layers would replay a captured prefill", BREAKABLE)
        return {BREAKABLE: "0", RUNNER: os.environ.get(RUNNER) or "1"}
    return {BREAKABLE: os.environ.get(BREAKABLE, "1")}


def hybrid_engine_in_this_process(kwargs: dict, max_num_seqs: int | None = None, v2_runner: bool = True) -> dict:
    """For an engine built in this process on a hybrid (eval, GRPO's colocated rollouts, the GPU benchmarks):
    `hybrid_engine_kwargs`, and in this process's environment breakable graphs off (with a warning where it had asked
    for them) and, with `v2_runner`, the V2 model runner unless it says `0`. Without it the runner is vLLM's choice."""
    env = engine_env(hybrid=True)
    if not v2_runner:
        del env[RUNNER]
    os.environ.update(env)
    return hybrid_engine_kwargs(kwargs, max_num_seqs)
