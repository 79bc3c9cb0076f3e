"""Which channels, heads, groups and layers a pruned NemotronH keeps, and its state dict sliced to them.

`target_shape` turns the prune config (absolute sizes or fractions removed) into the pruned sizes, `fit_params`
shrinks chosen axes to a parameter count, `top`/`grouped_top`/`keep_layers` pick what stays from the scores.

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

import copy
import math
from dataclasses import dataclass, field

import torch

from pipelines.core.config import ConfigError


def kept(size: int, ratio: float, multiple: int = 1) -> int:
    """Units kept when `ratio` of `size` is removed, rounded to `multiple` (at least one multiple, at most size)."""
    if not 0 <= ratio < 1:
        raise ConfigError(f"a pruning ratio is the fraction removed, in [0, 1); got {ratio}")
    return size if ratio == 0 else min(size, max(multiple, round(size * (1 - ratio) / multiple) * multiple))


def target_shape(cfg, config) -> dict:
    """The pruned sizes per axis, from absolute fields or ratios; checked against the model's constraints."""
    kv = config.num_key_value_heads
    groups = cfg.n_groups or kept(config.n_groups, cfg.mamba_groups_ratio)
    shape = {
        "hidden_size": cfg.hidden_size or kept(config.hidden_size, cfg.hidden_ratio, cfg.round_to),
        "intermediate_size": cfg.intermediate_size or kept(config.intermediate_size, cfg.mlp_ratio, cfg.round_to),
        "n_groups": groups,
        "mamba_num_heads": cfg.mamba_num_heads
        or kept(config.mamba_num_heads // config.n_groups, cfg.mamba_heads_ratio) * groups,
        "num_attention_heads": cfg.num_attention_heads
        or kept(config.num_attention_heads // kv, cfg.attention_heads_ratio) * kv,
        "num_layers": cfg.num_layers or kept(len(config.layers_block_type), cfg.depth_ratio),
    }
    limits = dict(config.to_dict(), num_layers=len(config.layers_block_type))
    for key, value in shape.items():
        if not 0 < value <= limits[key]:
            raise ConfigError(f"{key}: {value} is not in 1..{limits[key]} (the unpruned model's size)")
    if (
        shape["mamba_num_heads"] % groups
        or shape["mamba_num_heads"] // groups > config.mamba_num_heads // config.n_groups
    ):
        raise ConfigError(
            f"mamba_num_heads {shape['mamba_num_heads']} must be a multiple of n_groups {groups} with at "
            f"most {config.mamba_num_heads // config.n_groups} heads per group"
        )
    if shape["num_attention_heads"] % kv:
        raise ConfigError(
            f"num_attention_heads {shape['num_attention_heads']} must be a multiple of num_key_value_heads {kv}"
        )
    return shape


def fit_params(cfg, config, shape: dict, pattern: str) -> dict:
    """Shrink `cfg.target_axes` by the smallest common fraction that brings the parameters to `target_params`."""
    from compress.shapes import num_parameters

    names = {
        "hidden": "hidden_size",
        "mlp": "intermediate_size",
        "mamba_heads": "mamba_num_heads",
        "attention_heads": "num_attention_heads",
    }
    unknown = set(cfg.target_axes) - set(names)
    if unknown:
        raise ConfigError(f"target_axes: {sorted(unknown)} unknown; choose from {sorted(names)}")

    def shrunk(frac: float) -> dict:
        s = dict(shape)
        for axis in cfg.target_axes:
            key = names[axis]
            unit = {
                "hidden_size": cfg.round_to,
                "intermediate_size": cfg.round_to,
                "mamba_num_heads": s["n_groups"],
                "num_attention_heads": config.num_key_value_heads,
            }[key]
            s[key] = max(unit, math.floor(shape[key] * frac / unit) * unit)
        return s

    def count(s: dict) -> int:
        return num_parameters(config.to_dict() | s | {"hybrid_override_pattern": pattern})

    lo, hi = 0.0, 1.0
    if count(shrunk(1.0)) <= cfg.target_params:
        return shape
    for _ in range(40):  # bisection on the keep fraction
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if count(shrunk(mid)) <= cfg.target_params else (lo, mid)
    if count(shrunk(lo)) > cfg.target_params:
        raise ConfigError(f"target_params {cfg.target_params:.3g} is out of reach by shrinking {cfg.target_axes}")
    return shrunk(lo)


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


def choose(width: dict, layers: list[int], shape: dict, config) -> Keep:
    """What stays, from the width scores (compress/importance.py), the kept layers and the target sizes."""
    kinds, kv = config.layers_block_type, config.num_key_value_heads
    keep = Keep(hidden=top(width["hidden"], shape["hidden_size"]), layers=layers)
    for i in layers:
        if kinds[i] == "mlp":
            keep.mlp[i] = top(width["mlp"][i], shape["intermediate_size"])
        elif kinds[i] == "full_attention":
            _, keep.attention_heads[i] = grouped_top(width["attention"][i], kv, kv, shape["num_attention_heads"] // kv)
        else:
            per_group = shape["mamba_num_heads"] // shape["n_groups"]
            keep.mamba_groups[i], keep.mamba_heads[i] = grouped_top(
                width["mamba"][i], config.n_groups, shape["n_groups"], per_group
            )
    return keep


def pruned_config(config, shape: dict, layers: list[int]):
    """A copy of `config` with the pruned sizes and the kept layers' kinds."""
    new = copy.deepcopy(config)
    for key in ("hidden_size", "intermediate_size", "mamba_num_heads", "n_groups", "num_attention_heads"):
        setattr(new, key, shape[key])
    new.layers_block_type = [config.layers_block_type[i] for i in layers]
    return new


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
