"""Minitron-style importance scores of a NemotronH model from its activations on a calibration set.

Width (Minitron, arXiv 2407.14679; the hybrid axes as in Nemotron-H's MiniPuzzle and Nano 2's compression):
  - MLP channels: mean |relu2(up(x))| per channel, the input of down_proj;
  - Mamba heads: mean L2 norm per head of the gated, normalized scan output (the input of out_proj);
  - attention heads: mean L2 norm per head of the attention output (the input of o_proj);
  - embedding channels: mean |x| per hidden channel of every RMSNorm output (each block's pre-norm and the final
    norm), summed over the norms.
Depth: per block, the calibration LM loss with that block skipped (the residual stream passes it unchanged) minus
the full model's loss, and 1 - cosine(block input, block output) averaged over tokens (cheap, recorded too).

Scores are float32 lists, averaged over the calibration tokens (padding excluded), so they do not depend on
how the calibration set is batched.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict

import torch
from torch import nn


def calibration_batches(tokenizer, texts: list[str], max_length: int, batch_size: int) -> list[dict]:
    """Tokenized, right-padded batches (input_ids, attention_mask) of the calibration texts."""
    batches = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[i : i + batch_size], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
        batches.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    return batches


def _mask(batch: dict, x: torch.Tensor) -> torch.Tensor:
    return batch["attention_mask"].to(x.device, x.dtype).reshape(*x.shape[:2], 1)


@torch.no_grad()
def width_scores(model, batches: list[dict]) -> dict:
    """Per-axis activation scores: {"mlp": {layer: [F]}, "mamba": {layer: [H]}, "attention": {layer: [nH]},
    "hidden": [h]} (layer = block index in the unpruned model)."""
    cfg = model.config
    sums: dict = defaultdict(lambda: 0.0)
    current: dict = {}
    hooks = []

    def add(key, value):
        sums[key] = sums[key] + value.double()

    def on_input(key, heads: int | None):
        def hook(module, args):
            x = args[0].float()
            m = _mask(current, x)
            if heads is None:  # channels
                add(key, (x.abs() * m).sum((0, 1)))
            else:  # per-head L2 norm over the head's channels
                add(key, (x.reshape(*x.shape[:2], heads, -1).norm(dim=-1) * m).sum((0, 1)))

        return hook

    def on_norm_output(module, args, out):
        add("hidden", (out.float().abs() * _mask(current, out)).sum((0, 1)))

    for i, block in enumerate(model.model.layers):
        mixer = block.mixer
        hooks.append(block.norm.register_forward_hook(on_norm_output))
        if block.block_type == "mlp":
            hooks.append(mixer.down_proj.register_forward_pre_hook(on_input(("mlp", i), None)))
        elif block.block_type == "linear_attention":
            hooks.append(mixer.out_proj.register_forward_pre_hook(on_input(("mamba", i), cfg.mamba_num_heads)))
        elif block.block_type == "full_attention":
            hooks.append(mixer.o_proj.register_forward_pre_hook(on_input(("attention", i), cfg.num_attention_heads)))
    hooks.append(model.model.norm_f.register_forward_hook(on_norm_output))
    tokens = 0
    try:
        for batch in batches:
            current.clear()
            current.update(batch)
            model(**batch, use_cache=False)
            tokens += int(batch["attention_mask"].sum())
    finally:
        for h in hooks:
            h.remove()
    scores: dict = {"mlp": {}, "mamba": {}, "attention": {}}
    for key, total in sums.items():
        mean = (total / max(tokens, 1)).float().tolist()
        if key == "hidden":
            scores["hidden"] = mean
        else:
            scores[key[0]][key[1]] = mean
    return scores


@torch.no_grad()
def lm_loss(model, batches: list[dict]) -> float:
    """Token-weighted mean next-token loss over the calibration batches (padding excluded)."""
    total, count = 0.0, 0
    for batch in batches:
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        n = int((labels[:, 1:] != -100).sum())
        total += model(**batch, labels=labels, use_cache=False).loss.item() * n
        count += n
    return total / max(count, 1)


@contextlib.contextmanager
def _without_block(model, index: int):
    layers = model.model.layers
    model.model.layers = nn.ModuleList([b for i, b in enumerate(layers) if i != index])
    try:
        yield
    finally:
        model.model.layers = layers


@torch.no_grad()
def depth_scores(model, batches: list[dict]) -> dict:
    """{"base_loss", "loss_increase": [per block], "cosine_distance": [per block]} on the calibration set."""
    n = len(model.model.layers)
    cos_sum, tokens, hooks = [0.0] * n, 0, []
    current: dict = {}

    def on_block(i):
        def hook(module, args, out):
            m = current["attention_mask"].to(out.device).bool()
            c = nn.functional.cosine_similarity(args[0].float(), out.float(), dim=-1)
            cos_sum[i] += float((1 - c)[m].sum())

        return hook

    for i, block in enumerate(model.model.layers):
        hooks.append(block.register_forward_hook(on_block(i)))
    try:
        base, count = 0.0, 0
        for batch in batches:
            current.update(batch)
            labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
            k = int((labels[:, 1:] != -100).sum())
            base += model(**batch, labels=labels, use_cache=False).loss.item() * k
            count += k
            tokens += int(batch["attention_mask"].sum())
        base /= max(count, 1)
    finally:
        for h in hooks:
            h.remove()
    increase = []
    for i in range(n):
        with _without_block(model, i):
            increase.append(lm_loss(model, batches) - base)
    return {"base_loss": base, "loss_increase": increase, "cosine_distance": [c / max(tokens, 1) for c in cos_sum]}
