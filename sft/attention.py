"""`attn_implementation: varlen`: attention over packed, padding-free rows with PyTorch's own flash-attention
kernel, so packing pays on the GPU without the flash-attn package.

Without it, a padding-free row (8 samples packed into one row of 16k tokens) goes to SDPA with a 16k x 16k
block-diagonal mask: cuDNN computes every masked block and builds a new execution plan for each new row length.
On the lent H200 that was 71% of a dense 1B SFT step (`benchmarks/RESULTS.md`). Here each sample is its own
segment of a varlen flash call (`cu_seqlens` from the `position_ids` resets, as transformers' flash-attention
path reads them), so the work is the sum of the samples' own causal attention.

Registered with transformers under the name `varlen` (mask and attention); `sft/common.py` picks it for
padding-free training when the config names no attention. Anything that is not a full causal pass over packed or
unpadded rows (a KV cache, a padding mask) goes to transformers' SDPA path unchanged, so generation and padded
batches behave as with `sdpa`. Off the GPU (or in float32) each segment runs through SDPA on its own: slower, and
as leak-free, which is what the CPU tests check.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "varlen"
_FLASH_DTYPES = (torch.float16, torch.bfloat16)


def segments(position_ids: torch.Tensor | None, batch: int, length: int, device) -> tuple[torch.Tensor, int]:
    """(cu_seqlens int32, longest segment) of the flattened (batch x length) rows: a segment starts at each row's
    first token and wherever a position does not follow the one before it (a packed sample's reset to 0)."""
    starts = torch.zeros(batch, length, dtype=torch.bool, device=device)
    starts[:, 0] = True
    if position_ids is not None:
        pos = position_ids.to(device).expand(batch, length)
        starts[:, 1:] = pos[:, 1:] != pos[:, :-1] + 1
    idx = starts.flatten().nonzero().flatten()
    cu = torch.cat([idx, torch.tensor([batch * length], device=device)]).to(torch.int32)
    return cu, int((cu[1:] - cu[:-1]).max())


class _FlashVarlen(torch.autograd.Function):
    """aten's varlen flash forward and backward, causal, one (total, heads, dim) tensor per input."""

    @staticmethod
    def forward(ctx, q, k, v, cu, max_len, scale):
        out, lse, rng, unused, _ = torch.ops.aten._flash_attention_forward(
            q, k, v, cu, cu, max_len, max_len, 0.0, True, False, scale=scale
        )
        ctx.save_for_backward(q, k, v, out, lse, cu, rng, unused)
        ctx.max_len, ctx.scale = max_len, scale
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, out, lse, cu, rng, unused = ctx.saved_tensors
        dq, dk, dv = torch.ops.aten._flash_attention_backward(
            grad.contiguous(), q, k, v, out, lse, cu, cu, ctx.max_len, ctx.max_len, 0.0, True, rng, unused,
            scale=ctx.scale,
        )  # fmt: skip
        return dq, dk, dv, None, None, None


def varlen_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers' attention interface: query (B, H, L, D), key/value (B, Hkv, L, D) -> ((B, L, H, D), None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, length, dim = query.shape
    device = query.device.type
    if torch.is_autocast_enabled(device):  # as SDPA does under autocast; rotary cos/sin in float32 upcast q and k
        query, key, value = (t.to(torch.get_autocast_dtype(device)) for t in (query, key, value))
    if attention_mask is not None or key.shape[2] != length or (dropout and module.training):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    if key.shape[1] != heads:  # grouped-query attention: each KV head serves heads // kv_heads query heads
        key = key.repeat_interleave(heads // key.shape[1], dim=1)
        value = value.repeat_interleave(heads // value.shape[1], dim=1)
    if batch == 1 and kwargs.get("cu_seq_lens_q") is not None:  # TRL's padding-free collator: computed on the CPU
        cu, longest = kwargs["cu_seq_lens_q"].to(query.device, torch.int32), int(kwargs["max_length_q"])
    else:  # from the position_ids resets (one device sync per layer)
        cu, longest = segments(kwargs.get("position_ids"), batch, length, query.device)
    q, k, v = (t.transpose(1, 2).reshape(batch * length, heads, dim) for t in (query, key, value))
    scale = scaling if scaling is not None else dim**-0.5
    if query.is_cuda and query.dtype in _FLASH_DTYPES and dim <= 256:
        out = _FlashVarlen.apply(q.contiguous(), k.contiguous(), v.contiguous(), cu, longest, scale)
    else:  # CPU / float32: the same segments, one SDPA call each
        bounds = cu.tolist()
        out = torch.cat(
            [
                F.scaled_dot_product_attention(
                    q[s:e].transpose(0, 1), k[s:e].transpose(0, 1), v[s:e].transpose(0, 1), is_causal=True, scale=scale
                ).transpose(0, 1)
                for s, e in zip(bounds, bounds[1:], strict=False)
            ]
        )
    return out.reshape(batch, length, heads, dim), None


def varlen_mask(*args, attention_mask=None, **kwargs):
    """No mask at all for a full causal pass over unpadded rows (the attention reads the segments itself);
    otherwise the SDPA mask, for the SDPA fallback above."""
    from transformers.masking_utils import sdpa_mask

    q_length = kwargs.get("q_length", kwargs.get("cache_position", torch.empty(0)).shape[0])
    if attention_mask is None and q_length == kwargs.get("kv_length"):
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def register() -> None:
    """Make `attn_implementation="varlen"` known to transformers (idempotent; every process that loads a model)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, varlen_attention)
    AttentionMaskInterface.register(NAME, varlen_mask)
