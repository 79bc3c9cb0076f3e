"""Minitron-style structured pruning of a NemotronH checkpoint (the 12B -> 9B step of Nemotron Nano 2).

Local:    nanoforge prune --config compress/configs/prune_demo.yaml
Cluster:  nanoforge prune --config compress/configs/prune_nano2_12b_to_9b.yaml   (one node; scoring is forward only)

Importance comes from activations on a calibration set (a blend phase, a documents artifact or any text/messages
rows; see compress/importance.py): MLP channels, Mamba heads and groups, attention heads and embedding channels by
activation magnitude, whole layers by the calibration loss when the layer is skipped. Each axis is cut to an
absolute size (`hidden_size: 4480`), a fraction removed (`mlp_ratio: 0.25`), or, for `target_params`, the
largest common keep fraction of `target_axes` whose model fits the count. The output is a smaller checkpoint
(config shapes updated, safetensors) that loads with `AutoModelForCausalLM`, its tokenizer, `pruning.json` (every
score and every removed index) and a manifest with the shapes, parameter counts, removed layers, the calibration
loss before and after, and the serving memory at 128k tokens (compress/shapes.py). NVIDIA ModelOpt's Minitron
(`mcore_minitron`) prunes Megatron-Core models only, so this is our own implementation for transformers' NemotronH.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.core.artifacts import Artifact
from pipelines.core.config import ConfigError, parse, to_dict
from pipelines.core.datasets import source_id

AXES = ("hidden", "mlp", "mamba_heads", "mamba_groups", "attention_heads", "layers")


@dataclass
class PruneConfig:
    model_name_or_path: str | None = field(default=None, metadata={"help": "Checkpoint folder to prune (NemotronH)."})
    calibration_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Calibration rows: a blend or documents artifact folder, a JSONL/Parquet file, or a Hub id."
        },
    )
    calibration_config: str | None = field(
        default=None, metadata={"help": "Subfolder of the calibration artifact (a blend phase, `documents`)."}
    )
    text_field: str = field(
        default="text", metadata={"help": "Column with the text (`messages` rows use the chat template)."}
    )
    calibration_samples: int = field(default=64, metadata={"help": "Rows scored (seeded shuffle, then the first N)."})
    calibration_max_length: int = field(default=512, metadata={"help": "Tokens per row (truncated)."})
    batch_size: int = field(default=8, metadata={"help": "Rows per forward pass."})
    hidden_size: int | None = field(default=None, metadata={"help": "Embedding channels kept (absolute)."})
    intermediate_size: int | None = field(default=None, metadata={"help": "MLP channels kept per MLP layer."})
    mamba_num_heads: int | None = field(default=None, metadata={"help": "Mamba heads kept per Mamba layer."})
    n_groups: int | None = field(default=None, metadata={"help": "Mamba groups (shared B/C) kept per layer."})
    num_attention_heads: int | None = field(default=None, metadata={"help": "Query heads kept per attention layer."})
    num_layers: int | None = field(default=None, metadata={"help": "Blocks kept (any kind), by depth importance."})
    hidden_ratio: float = field(default=0.0, metadata={"help": "Fraction of embedding channels removed."})
    mlp_ratio: float = field(default=0.0, metadata={"help": "Fraction of MLP channels removed."})
    mamba_heads_ratio: float = field(default=0.0, metadata={"help": "Fraction of Mamba heads removed."})
    mamba_groups_ratio: float = field(default=0.0, metadata={"help": "Fraction of Mamba groups removed."})
    attention_heads_ratio: float = field(default=0.0, metadata={"help": "Fraction of query heads removed."})
    depth_ratio: float = field(default=0.0, metadata={"help": "Fraction of blocks removed."})
    target_params: float | None = field(
        default=None,
        metadata={
            "help": "Parameter count to reach by shrinking `target_axes` by one common fraction (after the "
            "other axes and depth are cut)."
        },
    )
    target_axes: list[str] = field(
        default_factory=lambda: ["hidden", "mlp"],
        metadata={"help": "Axes that `target_params` shrinks: hidden, mlp, mamba_heads, attention_heads."},
    )
    round_to: int = field(default=8, metadata={"help": "Hidden and MLP sizes are rounded to a multiple of this."})
    min_attention_layers: int = field(
        default=1,
        metadata={"help": "Attention blocks depth pruning keeps at least (transformers needs one to generate)."},
    )
    depth_metric: str = field(default="loss", metadata={"help": "loss (LM loss when the block is skipped) | cosine."})
    dtype: str = field(default="float32", metadata={"help": "Dtype for scoring; the checkpoint keeps its own dtype."})
    seed: int = field(default=0, metadata={"help": "Seed of the calibration shuffle."})
    output_dir: str = field(default="runs/pruned", metadata={"help": "Where to write the pruned checkpoint."})
    math_eval_dataset: str | None = field(
        default=None, metadata={"help": "Math set evaluated after pruning (as in the training stages)."}
    )
    math_eval_limit: int | None = field(default=50, metadata={"help": "Problems evaluated (first N); null = all."})
    math_eval_num_samples: int = field(default=1, metadata={"help": "Samples per problem; pass@1 is their mean."})
    math_eval_max_new_tokens: int = field(default=256, metadata={"help": "Token budget per eval completion."})
    force: bool = field(default=False, metadata={"help": "Prune again even if an identical output exists."})


def calibration_texts(cfg: PruneConfig, tokenizer) -> list[str]:
    from pipelines.core.datasets import load_split

    rows = load_split(cfg.calibration_dataset, cfg.calibration_config)
    rows = rows.shuffle(seed=cfg.seed).select(range(min(cfg.calibration_samples, len(rows))))
    if cfg.text_field in rows.column_names:
        return [t for t in rows[cfg.text_field] if t]
    if "messages" in rows.column_names:
        return [tokenizer.apply_chat_template(m, tokenize=False) for m in rows["messages"]]
    raise ConfigError(
        f"{cfg.calibration_dataset}: no `{cfg.text_field}` or `messages` column (has {rows.column_names})"
    )


def write_checkpoint(sd: dict, config, source: Path, out: Path) -> None:
    """Config, safetensors (sharded at 5 GB with an index), generation config and tokenizer files."""
    from huggingface_hub import save_torch_state_dict

    config.save_pretrained(out)
    save_torch_state_dict(sd, out, max_shard_size="5GB")
    for f in source.iterdir():  # tokenizer, chat template, generation config: everything but weights and records
        if f.is_file() and not f.name.startswith(
            ("model", "config.json", "manifest", "eval", "metrics", "README", "pruning", "trainer_state")
        ):
            shutil.copy2(f, out / f.name)


def prune(cfg: PruneConfig, out: Path, art: Artifact) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from compress.importance import calibration_batches, depth_scores, lm_loss, width_scores
    from compress.shapes import num_parameters, serving_memory
    from compress.slicing import choose, fit_params, keep_layers, pruned_config, slice_state_dict, target_shape

    tokenizer = AutoTokenizer.from_pretrained(cfg.model_name_or_path)
    saved_dtype = AutoConfig.from_pretrained(cfg.model_name_or_path).dtype or torch.float32  # what the output keeps
    saved_dtype = getattr(torch, saved_dtype) if isinstance(saved_dtype, str) else saved_dtype
    model = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path, dtype=getattr(torch, cfg.dtype)).eval()
    config = model.config
    if config.model_type != "nemotron_h":
        raise ConfigError(f"{cfg.model_name_or_path}: model_type {config.model_type}; prune handles nemotron_h only")
    texts = calibration_texts(cfg, tokenizer)
    batches = calibration_batches(tokenizer, texts, cfg.calibration_max_length, cfg.batch_size)
    shape = target_shape(cfg, config)
    kinds = list(config.layers_block_type)
    width = width_scores(model, batches)
    depth, layers = None, list(range(len(kinds)))
    if shape["num_layers"] < len(kinds):
        depth = depth_scores(model, batches)
        metric = {"loss": "loss_increase", "cosine": "cosine_distance"}.get(cfg.depth_metric)
        if metric is None:
            raise ConfigError(f"depth_metric: {cfg.depth_metric!r}; choose loss or cosine")
        layers = keep_layers(depth[metric], kinds, shape["num_layers"], cfg.min_attention_layers)
    pattern = "".join({"linear_attention": "M", "full_attention": "*", "mlp": "-"}[kinds[i]] for i in layers)
    if cfg.target_params:
        shape = fit_params(cfg, config, shape, pattern)

    keep = choose(width, layers, shape, config)
    sd = slice_state_dict(model.state_dict(), config, keep)
    new_config = pruned_config(config, shape, layers)
    sd = {k: v.to(saved_dtype) for k, v in sd.items()}  # scoring may have upcast; the checkpoint keeps its dtype
    new_config.dtype = saved_dtype
    write_checkpoint(sd, new_config, Path(cfg.model_name_or_path), out)

    before_loss = depth["base_loss"] if depth else lm_loss(model, batches)
    del model, sd
    pruned = AutoModelForCausalLM.from_pretrained(out, dtype=getattr(torch, cfg.dtype)).eval()  # it loads: checked
    with torch.no_grad():
        after_loss = lm_loss(pruned, batches)
    removed_layers = [
        {"index": i, "kind": kinds[i]}
        | ({k: depth[k][i] for k in ("loss_increase", "cosine_distance")} if depth else {})
        for i in range(len(kinds))
        if i not in layers
    ]
    record = {"shape": shape, "keep": keep.__dict__, "scores": {"width": width, "depth": depth}}
    (out / "pruning.json").write_text(json.dumps(record))
    art.counts = {
        "calibration_rows": len(texts),
        "calibration_tokens": sum(int(b["attention_mask"].sum()) for b in batches),
    }
    art.extra = {
        "parameters": {"before": num_parameters(config), "after": num_parameters(new_config)},
        "shape": {
            "before": {k: v for k, v in dict(config.to_dict(), num_layers=len(kinds)).items() if k in shape},
            "after": shape,
        },
        "layer_pattern": {
            "before": "".join({"linear_attention": "M", "full_attention": "*", "mlp": "-"}[k] for k in kinds),
            "after": pattern,
        },
        "removed_layers": removed_layers,
        "calibration_loss": {"before": before_loss, "after": after_loss},
        "serving_memory_128k": serving_memory(new_config),
        "scores_file": "pruning.json",
    }


def parse_args(argv: list[str] | None = None) -> PruneConfig:
    return parse(PruneConfig, argv=argv)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    if not cfg.model_name_or_path or not cfg.calibration_dataset:
        raise ConfigError("model_name_or_path and calibration_dataset are required")
    inputs = [source_id(cfg.model_name_or_path), source_id(cfg.calibration_dataset)]
    art = Artifact(cfg.output_dir, kind="checkpoint", stage="prune", config=to_dict(cfg), inputs=inputs)
    if art.up_to_date() and not cfg.force:
        print(art.skip_message())
        return 0
    with art.writing(resume=False) as tmp:
        prune(cfg, tmp, art)
        if cfg.math_eval_dataset:
            from sft.evaluate import EvalConfig, evaluate

            result = evaluate(
                EvalConfig(
                    model=str(tmp),
                    dataset=cfg.math_eval_dataset,
                    limit=cfg.math_eval_limit,
                    num_samples=cfg.math_eval_num_samples,
                    max_new_tokens=cfg.math_eval_max_new_tokens,
                )
            )
            art.extra["eval"] = {mode: r["pass@1"] for mode, r in result["modes"].items()}
    p = art.extra["parameters"]
    print(
        f"[prune] wrote {art.path}: {p['before'] / 1e6:.2f}M -> {p['after'] / 1e6:.2f}M parameters, "
        f"calibration loss {art.extra['calibration_loss']['before']:.3f} -> "
        f"{art.extra['calibration_loss']['after']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
