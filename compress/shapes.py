"""NemotronH shapes: parameter counts from a config, the published Nano 2 / Nemotron-H shapes, and the memory
arithmetic behind "128k tokens on one 22 GiB A10G" (Nemotron Nano 2, arXiv 2508.14444, section 4).

A shape is a plain dict with transformers' `NemotronHConfig` names (a loaded config works too); the layer mix is
the Nemotron-H pattern string (M = Mamba-2, * = attention, - = MLP). Everything here is arithmetic on shapes,
no weights are loaded, so the 56B and 12B cases are checked on a laptop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GIB = 1024**3

# Published shapes (config.json of the Hub checkpoints; Megatron-Bridge's Nemotron-H pages). The 47B's layer
# pattern is not reproduced here: the prune stage picks which layers go from the depth scores.
NANO2_12B = dict(
    vocab_size=131072,
    hybrid_override_pattern="M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M-",
    hidden_size=5120,
    intermediate_size=20480,
    num_attention_heads=40,
    num_key_value_heads=8,
    head_dim=128,
    mamba_num_heads=128,
    mamba_head_dim=80,
    n_groups=8,
    ssm_state_size=128,
    conv_kernel=4,
    tie_word_embeddings=False,
)
NANO2_9B = NANO2_12B | dict(
    hybrid_override_pattern="M-M-M-MM-M-M-M*-M-M-M*-M-M-M-M*-M-M-M-M*-M-MM-M-M-M-M-M-",
    hidden_size=4480,
    intermediate_size=15680,
)
NEMOTRON_H_56B = dict(
    vocab_size=131072,
    # 118 layers: 54 Mamba-2, 54 MLP, 10 attention (the published counts), attention spread evenly; the Hub
    # config's exact order differs slightly, which changes no count, parameter or cache size computed here.
    hybrid_override_pattern="".join(
        "M*-" if i % 54 * 10 // 54 != (i + 1) % 54 * 10 // 54 else "M-" for i in range(54)
    ),
    hidden_size=8192,
    intermediate_size=32768,
    num_attention_heads=64,
    num_key_value_heads=8,
    head_dim=128,
    mamba_num_heads=256,
    mamba_head_dim=64,
    n_groups=8,
    ssm_state_size=256,
    conv_kernel=4,
    tie_word_embeddings=False,
)


def get(shape: Mapping[str, Any] | Any, key: str, default: Any = None) -> Any:
    return shape.get(key, default) if isinstance(shape, Mapping) else getattr(shape, key, default)


def pattern(shape) -> str:
    """The layer pattern string of a shape dict or a `NemotronHConfig` (which stores `layers_block_type`)."""
    if get(shape, "hybrid_override_pattern"):
        return get(shape, "hybrid_override_pattern")
    kinds = {"mamba": "M", "linear_attention": "M", "attention": "*", "full_attention": "*", "mlp": "-", "moe": "E"}
    return "".join(kinds[k] for k in get(shape, "layers_block_type"))


def layer_parameters(shape, kind: str) -> int:
    """Parameters of one block of `kind` (M, *, -), its pre-norm included."""
    h = get(shape, "hidden_size")
    if kind == "M":
        heads, p, g, n = (get(shape, k) for k in ("mamba_num_heads", "mamba_head_dim", "n_groups", "ssm_state_size"))
        inner, conv_dim = heads * p, heads * p + 2 * g * n
        in_proj = h * (inner + conv_dim + heads) + (inner + conv_dim + heads) * bool(get(shape, "use_bias"))
        conv = conv_dim * get(shape, "conv_kernel", 4) + conv_dim * bool(get(shape, "use_conv_bias", True))
        out_proj = inner * h + h * bool(get(shape, "use_bias"))
        return h + in_proj + conv + 3 * heads + inner + out_proj  # 3 * heads: dt_bias, A_log, D; inner: gated norm
    if kind == "*":
        q, kv = (
            get(shape, "num_attention_heads") * get(shape, "head_dim"),
            get(shape, "num_key_value_heads") * get(shape, "head_dim"),
        )
        return h + 2 * h * q + 2 * h * kv
    if kind == "-":
        f = get(shape, "intermediate_size")
        return h + 2 * h * f + (f + h) * bool(get(shape, "mlp_bias"))
    raise ValueError(f"layer kind {kind!r}: only M, * and - (no MoE) are counted")


def num_parameters(shape) -> int:
    """Exact parameter count of a `NemotronHForCausalLM` with this shape (embeddings, final norm, head included)."""
    h, v = get(shape, "hidden_size"), get(shape, "vocab_size")
    embeddings = v * h * (1 if get(shape, "tie_word_embeddings") else 2)
    return embeddings + h + sum(layer_parameters(shape, kind) for kind in pattern(shape))


def serving_memory(
    shape, seq_len: int = 131072, batch: int = 1, weight_bytes: int = 2, cache_bytes: int = 2, ssm_state_bytes: int = 4
) -> dict[str, float]:
    """GiB needed to serve `batch` sequences of `seq_len` tokens: weights, KV cache and Mamba state.

    KV cache: 2 (K and V) x kv heads x head_dim x tokens per attention layer. Mamba state per layer and sequence:
    the SSM state (heads x head_dim x state, float32 by default as in `mamba_ssm_cache_dtype`) and the conv state
    (conv_dim x (kernel - 1)); it does not grow with the sequence, which is why the hybrid fits long contexts.
    Activations of the running step come on top: see `fits`' headroom.
    """
    kinds = pattern(shape)
    kv = (
        kinds.count("*")
        * 2
        * get(shape, "num_key_value_heads")
        * get(shape, "head_dim")
        * seq_len
        * batch
        * cache_bytes
    )
    heads, p, g, n = (get(shape, k) for k in ("mamba_num_heads", "mamba_head_dim", "n_groups", "ssm_state_size"))
    conv_dim = heads * p + 2 * g * n
    per_mamba = heads * p * n * ssm_state_bytes + conv_dim * (get(shape, "conv_kernel", 4) - 1) * cache_bytes
    mamba = kinds.count("M") * per_mamba * batch
    weights = num_parameters(shape) * weight_bytes
    return {
        "parameters_b": num_parameters(shape) / 1e9,
        "weights_gib": weights / GIB,
        "kv_cache_gib": kv / GIB,
        "mamba_state_gib": mamba / GIB,
        "total_gib": (weights + kv + mamba) / GIB,
    }


def fits(shape, budget_gib: float = 22.0, headroom_gib: float = 2.0, **kwargs) -> bool:
    """Whether weights + caches leave `headroom_gib` (activations, CUDA context, fragmentation) in `budget_gib`."""
    return serving_memory(shape, **kwargs)["total_gib"] + headroom_gib <= budget_gib
