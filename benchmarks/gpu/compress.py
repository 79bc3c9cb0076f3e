"""Prune at the real 12B -> 9B shapes on one GPU: a random-init NemotronH with Nemotron Nano 2 12B's shapes, Minitron
scores on random tokens, the 9B's sizes cut, written as sharded safetensors and reloaded with transformers.

    python -m benchmarks.gpu.compress --out $OUT/compress.json

What it checks is the path at scale (62 layers, 128 Mamba heads in 8 groups, 40 query heads on 8 kv heads, a 131k
vocabulary, 5 GB shards) and what it costs; the scores of random weights on random tokens mean nothing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time


def main() -> None:
    import torch
    from huggingface_hub import save_torch_state_dict
    from transformers import AutoModelForCausalLM, NemotronHConfig

    from compress.importance import depth_scores, width_scores
    from compress.shapes import NANO2_9B, NANO2_12B, num_parameters, serving_memory
    from compress.slicing import choose, keep_layers, pruned_config, slice_state_dict

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--length", type=int, default=1024)
    a = ap.parse_args()
    times, t = {}, time.perf_counter()
    config = NemotronHConfig(**NANO2_12B)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    times["build_s"] = time.perf_counter() - t
    ids = torch.randint(0, config.vocab_size, (a.batch, a.length), device="cuda")
    batches = [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}]
    t = time.perf_counter()
    width = width_scores(model, batches)
    torch.cuda.synchronize()
    times["width_scores_s"] = time.perf_counter() - t
    t = time.perf_counter()
    depth = depth_scores(model, batches)
    torch.cuda.synchronize()
    times["depth_scores_s"] = time.perf_counter() - t
    kinds = list(config.layers_block_type)
    layers = keep_layers(depth["loss_increase"], kinds, 56, min_attention=1)
    shape = {k: NANO2_9B[k] for k in ("hidden_size", "intermediate_size", "n_groups", "mamba_num_heads")}
    shape |= {"num_attention_heads": 40, "num_layers": 56}
    t = time.perf_counter()
    sd = slice_state_dict(model.state_dict(), config, choose(width, layers, shape, config))
    new_config = pruned_config(config, shape, layers)
    del model
    torch.cuda.empty_cache()
    with tempfile.TemporaryDirectory() as tmp:
        new_config.save_pretrained(tmp)
        save_torch_state_dict({k: v.cpu() for k, v in sd.items()}, tmp, max_shard_size="5GB")
        del sd
        times["slice_and_write_s"] = time.perf_counter() - t
        t = time.perf_counter()
        pruned = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.bfloat16, device_map="cuda").eval()
        times["reload_s"] = time.perf_counter() - t
        with torch.no_grad():
            loss = pruned(input_ids=ids, labels=ids, use_cache=False).loss.item()
        n = sum(p.numel() for p in pruned.parameters())
    result = {
        "device": torch.cuda.get_device_name(),
        "calibration_tokens": a.batch * a.length,
        "parameters": {"before": num_parameters(config), "after": n, "after_formula": num_parameters(new_config)},
        "pattern_after": "".join(
            {"linear_attention": "M", "full_attention": "*", "mlp": "-"}[k] for k in new_config.layers_block_type
        ),
        "pruned_loss_on_random_tokens": loss,
        "serving_memory_128k": serving_memory(new_config),
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30,
        **times,
    }
    print(json.dumps(result, indent=1))
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
