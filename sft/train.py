"""Supervised fine-tuning with TRL's `SFTTrainer` on conversational `messages`, with our chat template.

Local:    nanoforge sft --config sft/configs/sft_demo.yaml
Cluster:  accelerate launch --num_processes 8 -m sft.train --config sft/configs/sft_nano2_12b.yaml

The loss covers assistant tokens only (`assistant_only_loss`: the template's `{% generation %}` spans, end of
turn included). The model loads in its checkpoint dtype unless `dtype` says otherwise (TRL alone loads float32).
`use_peft: true` trains LoRA adapters, by default on the Mamba in_proj as well as attention and MLP (not on the
Mamba out_proj, which the fused GPU kernel uses without going through the adapter), and the checkpoint holds the
merged weights. Packing and padding-free are checked on the actual model before training and refused when packed
samples would leak state into each other (Mamba without its kernels, attention without a varlen kernel: always
the case on CPU). A killed run resumes from its last `checkpoint-N` on rerun.
"""

from __future__ import annotations

import sys
from pathlib import Path

from trl import ModelConfig, SFTConfig, SFTTrainer

from pipelines.config import parse
from sft.common import (
    MetricsFile,
    ScriptArgs,
    checkpoint_artifact,
    checkpoint_writing,
    last_checkpoint,
    load_split,
    model_init_kwargs,
    peft_config,
    refuse_leaky_packing,
    save_checkpoint,
)

CHAT_TEMPLATE = Path(__file__).with_name("chat_template.jinja")


def parse_args(argv: list[str] | None = None) -> tuple[ScriptArgs, SFTConfig, ModelConfig]:
    return parse(ScriptArgs, SFTConfig, ModelConfig, argv=argv)


def build_trainer(
    script_args: ScriptArgs, training_args: SFTConfig, model_args: ModelConfig, output_dir
) -> SFTTrainer:
    training_args.output_dir = str(output_dir)
    training_args.model_init_kwargs = model_init_kwargs(training_args, model_args)
    training_args.chat_template_path = training_args.chat_template_path or str(CHAT_TEMPLATE)
    dataset = load_split(script_args.dataset_name, script_args.dataset_config, script_args.dataset_train_split)
    trainer = SFTTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=dataset,
        peft_config=peft_config(model_args, training_args.trust_remote_code),
        callbacks=[MetricsFile(Path(output_dir) / "metrics.jsonl")],
    )
    refuse_leaky_packing(trainer)
    return trainer


def main(argv: list[str] | None = None) -> int:
    script_args, training_args, model_args = parse_args(argv)
    inputs = [model_args.model_name_or_path, script_args.dataset_name]
    art = checkpoint_artifact("sft", script_args, training_args, model_args, inputs)
    if art.up_to_date() and not script_args.force:
        print(art.skip_message())
        return 0
    with checkpoint_writing(art) as tmp:
        trainer = build_trainer(script_args, training_args, model_args, tmp)
        trainer.train(resume_from_checkpoint=last_checkpoint(tmp))
        save_checkpoint(trainer, tmp, art, script_args, len(trainer.train_dataset))
    print(f"[sft] wrote {art.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
