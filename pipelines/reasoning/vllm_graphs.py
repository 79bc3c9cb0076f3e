"""Which CUDA graphs a vLLM engine gets: one rule for synth's engines, the eval's and GRPO's colocated rollouts.

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

An `enforce_eager` or a `compilation_config` in the user's engine kwargs wins over these defaults, key by key.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

BREAKABLE = "VLLM_USE_BREAKABLE_CUDAGRAPH"
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
    otherwise; never for a hybrid (see the module docstring)."""
    if hybrid:
        if os.environ.get(BREAKABLE) == "1":
            log.warning("%s=1 ignored for a hybrid: its Mamba layers would replay a captured prefill", BREAKABLE)
        return {BREAKABLE: "0"}
    return {BREAKABLE: os.environ.get(BREAKABLE, "1")}


def hybrid_engine_in_this_process(kwargs: dict, max_num_seqs: int | None = None) -> dict:
    """For an engine built in this process on a hybrid (eval, GRPO's colocated rollouts, the GPU benchmarks):
    `hybrid_engine_kwargs`, and breakable graphs off in this process's environment, with a warning where it had
    asked for them."""
    os.environ[BREAKABLE] = engine_env(hybrid=True)[BREAKABLE]
    return hybrid_engine_kwargs(kwargs, max_num_seqs)
