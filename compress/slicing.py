"""Which channels, heads, groups and layers a pruned NemotronH keeps, and its state dict sliced to them.

`Keep` lists kept indices of the unpruned model, in their original order (so keeping everything is the identity,
bit for bit). Tensor layouts (transformers' `NemotronHForCausalLM`, h = hidden, H = Mamba heads of P channels in
G groups of N-dim B/C, I = H * P):
  Mamba  in_proj rows  [z: I | x: I | B: G*N | C: G*N | dt: H], conv1d over [x | B | C], dt_bias/A_log/D [H],
         gated norm [I] (normalized per group), out_proj columns [I];
  attention q rows / o_proj columns [nH * head_dim] (k/v kept: every kv head keeps the same number of q heads);
  MLP up rows / down columns [F];
  hidden: embeddings and lm_head columns, every norm, the input columns and output rows of every projection.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Keep:
    hidden: list[int]
    layers: list[int]
    mlp: dict[int, list[int]] = field(default_factory=dict)  # layer -> kept channels
    mamba_heads: dict[int, list[int]] = field(default_factory=dict)  # layer -> kept heads (grouped, in order)
    mamba_groups: dict[int, list[int]] = field(default_factory=dict)  # layer -> kept groups
    attention_heads: dict[int, list[int]] = field(default_factory=dict)  # layer -> kept q heads


def top(scores: list[float], k: int) -> list[int]:
    """Indices of the k highest scores, in index order (ties: the lower index wins)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return sorted(order[:k])


def keep_layers(scores: list[float], kinds: list[str], n: int, min_attention: int) -> list[int]:
    """The `n` highest-scoring blocks, with at least `min_attention` attention blocks among them (transformers'
    NemotronH cache needs one attention layer to generate; long-context recall needs a few)."""
    layers = top(scores, n)
    attention = [i for i in range(len(kinds)) if kinds[i] == "full_attention"]
    wanted = min(min_attention, len(attention), n)
    while sum(kinds[i] == "full_attention" for i in layers) < wanted:
        best_missing = max((i for i in attention if i not in layers), key=lambda i: scores[i])
        worst_other = min((i for i in layers if kinds[i] != "full_attention"), key=lambda i: scores[i])
        layers = sorted(set(layers) - {worst_other} | {best_missing})
    return layers


def grouped_top(scores: list[float], groups: int, keep_groups: int, keep_per_group: int) -> tuple[list, list]:
    """Kept groups (by summed score) and, inside each, its best `keep_per_group` members; members of a group are
    consecutive (head h is in group h // (len(scores) // groups))."""
    size = len(scores) // groups
    group_scores = [sum(scores[g * size : (g + 1) * size]) for g in range(groups)]
    kept_groups = top(group_scores, keep_groups)
    members = [g * size + i for g in kept_groups for i in top(scores[g * size : (g + 1) * size], keep_per_group)]
    return kept_groups, members


def _channels(units: list[int], width: int) -> torch.Tensor:
    return torch.tensor([u * width + c for u in units for c in range(width)], dtype=torch.long)


def slice_state_dict(sd: dict[str, torch.Tensor], config, keep: Keep) -> dict[str, torch.Tensor]:
    """The pruned model's state dict (layers renumbered 0..n-1 in kept order)."""
    h = torch.tensor(keep.hidden, dtype=torch.long)
    out = {
        "model.embeddings.weight": sd["model.embeddings.weight"][:, h],
        "model.norm_f.weight": sd["model.norm_f.weight"][h],
        "lm_head.weight": sd["lm_head.weight"][:, h],
    }
    if config.tie_word_embeddings:
        out.pop("lm_head.weight")
    H, P, G, N = config.mamba_num_heads, config.mamba_head_dim, config.n_groups, config.ssm_state_size
    inner = H * P
    for new, old in enumerate(keep.layers):
        src, dst = f"model.layers.{old}.", f"model.layers.{new}."
        kind = config.layers_block_type[old]
        t = {k[len(src) :]: v for k, v in sd.items() if k.startswith(src)}
        o = {"norm.weight": t["norm.weight"][h]}
        if kind == "mlp":
            f = torch.tensor(keep.mlp[old], dtype=torch.long)
            o["mixer.up_proj.weight"] = t["mixer.up_proj.weight"][f][:, h]
            o["mixer.down_proj.weight"] = t["mixer.down_proj.weight"][h][:, f]
            for b, idx in (("mixer.up_proj.bias", f), ("mixer.down_proj.bias", h)):
                if b in t:
                    o[b] = t[b][idx]
        elif kind == "full_attention":
            q = _channels(keep.attention_heads[old], config.head_dim)
            o["mixer.q_proj.weight"] = t["mixer.q_proj.weight"][q][:, h]
            o["mixer.k_proj.weight"] = t["mixer.k_proj.weight"][:, h]
            o["mixer.v_proj.weight"] = t["mixer.v_proj.weight"][:, h]
            o["mixer.o_proj.weight"] = t["mixer.o_proj.weight"][h][:, q]
        elif kind == "linear_attention":
            heads = torch.tensor(keep.mamba_heads[old], dtype=torch.long)
            x = _channels(keep.mamba_heads[old], P)
            bc = _channels(keep.mamba_groups[old], N)
            conv = torch.cat([x, inner + bc, inner + G * N + bc])  # [x | B | C] inside conv_dim
            rows = torch.cat([x, inner + conv, 2 * inner + 2 * G * N + heads])  # [z | x B C | dt] inside in_proj
            o["mixer.in_proj.weight"] = t["mixer.in_proj.weight"][rows][:, h]
            o["mixer.conv1d.weight"] = t["mixer.conv1d.weight"][conv]
            if "mixer.conv1d.bias" in t:
                o["mixer.conv1d.bias"] = t["mixer.conv1d.bias"][conv]
            for name in ("dt_bias", "A_log", "D"):
                o[f"mixer.{name}"] = t[f"mixer.{name}"][heads]
            o["mixer.norm.weight"] = t["mixer.norm.weight"][x]
            o["mixer.out_proj.weight"] = t["mixer.out_proj.weight"][h][:, x]
            for b, idx in (("mixer.in_proj.bias", rows), ("mixer.out_proj.bias", h)):
                if b in t:
                    o[b] = t[b][idx]
        else:
            raise ValueError(f"layer {old}: block type {kind!r} is not prunable here (MoE blocks are not supported)")
        out.update({dst + k: v.contiguous() for k, v in o.items()})
    return out
