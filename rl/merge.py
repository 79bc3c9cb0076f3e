"""Linear interpolation of two checkpoints: `(1 - alpha) * w1 + alpha * w2`, tensor by tensor, over safetensors.

Local:    nanoforge merge --models runs/demo/grpo runs/demo/dpo --alpha 0.5 --output_dir runs/demo/merged
Cluster:  nanoforge merge --config rl/configs/merge_nano2_12b.yaml

Nemotron Nano 2 merges a reasoning-strong and a chat-strong checkpoint of the same base near alpha = 0.5. Both
checkpoints must have the same tensor names and shapes. Tensors are interpolated in float32 with `torch.lerp`,
which is exact at both ends (alpha = 0 gives w1 and alpha = 1 gives w2 bit for bit), and stored in w1's dtype and
shard layout. Config, tokenizer and chat template come from the first model.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pipelines.core.artifacts import Artifact
from pipelines.core.config import ConfigError, parse, to_dict


@dataclass
class MergeConfig:
    models: list[str] = field(default_factory=list, metadata={"help": "Two checkpoint folders: w1 then w2."})
    alpha: float = field(default=0.5, metadata={"help": "Weight of the second model: (1 - alpha) * w1 + alpha * w2."})
    output_dir: str = field(default="runs/merged", metadata={"help": "Where to write the merged checkpoint."})
    math_eval_dataset: str | None = field(
        default=None, metadata={"help": "Math set evaluated after merging (as in the training stages)."}
    )
    math_eval_limit: int | None = field(default=50, metadata={"help": "Problems evaluated (first N); null = all."})
    math_eval_num_samples: int = field(default=1, metadata={"help": "Samples per problem; pass@1 is their mean."})
    math_eval_max_new_tokens: int = field(default=256, metadata={"help": "Token budget per eval completion."})
    force: bool = field(default=False, metadata={"help": "Merge again even if an identical output exists."})


def shards(model_dir: Path) -> dict[str, str]:
    """Tensor name -> safetensors file name in `model_dir` (sharded or single file)."""
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        for name, file in weight_map.items():  # the merge writes out/<file>: a path must not leave the artifact
            parts = PurePosixPath(file).parts
            if not file or PurePosixPath(file).is_absolute() or "\\" in file or ".." in parts or ":" in file:
                raise ConfigError(
                    f"{index}: tensor {name} maps to {file!r}; a weight-map file name must be relative to the "
                    "checkpoint folder, without '..' (refused: it would read or write outside the checkpoint)"
                )
        return weight_map
    if not (model_dir / "model.safetensors").exists():
        raise ConfigError(f"{model_dir}: no model.safetensors or model.safetensors.index.json (safetensors only)")
    from safetensors import safe_open

    with safe_open(model_dir / "model.safetensors", "pt") as f:
        return {name: "model.safetensors" for name in f.keys()}


def merge(w1: Path, w2: Path, alpha: float, out: Path) -> int:
    """Write the interpolated weights of `w1` and `w2` into `out`; returns the number of tensors."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    map1, map2 = shards(w1), shards(w2)
    if set(map1) != set(map2):
        diff = sorted(set(map1) ^ set(map2))
        raise ConfigError(f"{w1} and {w2} have different tensors ({len(diff)}, e.g. {diff[:3]}); same model only")
    with contextlib.ExitStack() as stack:
        second = {file: stack.enter_context(safe_open(w2 / file, "pt")) for file in set(map2.values())}
        for file in sorted(set(map1.values())):  # one output shard at a time: memory stays one shard
            merged = {}
            with safe_open(w1 / file, "pt") as f1:
                for name in f1.keys():
                    a, b = f1.get_tensor(name), second[map2[name]].get_tensor(name)
                    if a.shape != b.shape:
                        raise ConfigError(f"tensor {name}: shape {tuple(a.shape)} in {w1}, {tuple(b.shape)} in {w2}")
                    merged[name] = torch.lerp(a.float(), b.float(), alpha).to(a.dtype)
                save_file(merged, out / file, metadata=f1.metadata())
    return len(map1)


def parse_args(argv: list[str] | None = None) -> MergeConfig:
    return parse(MergeConfig, argv=argv)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    if len(cfg.models) != 2:
        raise ConfigError(f"merge needs exactly two models (--models W1 W2), got {len(cfg.models)}")
    w1, w2 = (Path(m) for m in cfg.models)
    for m in (w1, w2):
        if not m.is_dir():
            raise ConfigError(f"model folder not found: {m}")
    art = Artifact(cfg.output_dir, kind="checkpoint", stage="merge", config=to_dict(cfg), inputs=[w1, w2])
    if art.up_to_date() and not cfg.force:
        print(art.skip_message())
        return 0
    with art.writing(resume=False) as tmp:
        for f in w1.iterdir():  # config, tokenizer, chat template: everything but the weights and w1's own records
            if f.is_file() and not f.name.startswith(("model", "manifest", "eval", "metrics", "README")):
                shutil.copy2(f, tmp / f.name)
        if (w1 / "model.safetensors.index.json").exists():
            shutil.copy2(w1 / "model.safetensors.index.json", tmp)
        art.counts = {"tensors": merge(w1, w2, cfg.alpha, tmp)}
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
    print(f"[merge] wrote {art.path}: (1 - {cfg.alpha}) * {w1} + {cfg.alpha} * {w2}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
