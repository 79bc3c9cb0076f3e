"""Preference optimisation with TRL's `DPOTrainer` on `prompt` / `chosen` / `rejected` pairs.

Local:    nanoforge dpo --config rl/configs/dpo_demo.yaml
Cluster:  accelerate launch --num_processes 8 -m rl.dpo --config rl/configs/dpo_nano2_12b.yaml

`loss_type` is TRL's: `sigmoid` (DPO), `sigmoid_norm` (length-normalised: log-probs averaged over tokens, so
long answers are not preferred or punished for their length), `apo_zero`, or a list to combine with
`loss_weights`. The reference model is a frozen copy of the starting checkpoint (with `use_peft`, the same
weights with the adapters switched off); `precompute_ref_log_probs: true` computes its log-probs once up front
and frees it. Pairs come from `nanoforge select` (`preference/`): verified-correct vs incorrect samples of the
same prompt, in the chat template's assistant format (`<think>...</think>answer`). A killed run resumes from its
last `checkpoint-N` on rerun.
"""

from __future__ import annotations

import sys
from pathlib import Path

from trl import DPOConfig, DPOTrainer, ModelConfig

from pipelines.core.config import parse
from pipelines.core.datasets import load_split
from sft.common import (
    MetricsFile,
    ScriptArgs,
    checkpoint_artifact,
    checkpoint_writing,
    last_checkpoint,
    model_init_kwargs,
    peft_config,
    prepare_trainer,
    save_checkpoint,
)


def parse_args(argv: list[str] | None = None) -> tuple[ScriptArgs, DPOConfig, ModelConfig]:
    return parse(ScriptArgs, DPOConfig, ModelConfig, argv=argv)


def build_trainer(
    script_args: ScriptArgs, training_args: DPOConfig, model_args: ModelConfig, output_dir
) -> DPOTrainer:
    training_args.output_dir = str(output_dir)
    training_args.model_init_kwargs = model_init_kwargs(training_args, model_args)
    dataset = load_split(script_args.dataset_name, script_args.dataset_config, script_args.dataset_train_split)
    trainer = DPOTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=dataset,
        peft_config=peft_config(model_args, training_args.trust_remote_code),
        callbacks=[MetricsFile(Path(output_dir) / "metrics.jsonl")],
    )
    prepare_trainer(trainer, script_args)
    return trainer


def main(argv: list[str] | None = None) -> int:
    script_args, training_args, model_args = parse_args(argv)
    inputs = [model_args.model_name_or_path, script_args.dataset_name]
    art = checkpoint_artifact("dpo", script_args, training_args, model_args, inputs)
    if art.up_to_date() and not script_args.force:
        print(art.skip_message())
        return 0
    with checkpoint_writing(art) as tmp:
        trainer = build_trainer(script_args, training_args, model_args, tmp)
        trainer.train(resume_from_checkpoint=last_checkpoint(tmp))
        save_checkpoint(trainer, tmp, art, script_args, len(trainer.train_dataset))
    print(f"[dpo] wrote {art.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
