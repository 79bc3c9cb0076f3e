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

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from trl import ModelConfig, SFTConfig, SFTTrainer

from pipelines.core.config import ConfigError, parse
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
from sft.mixture import MixtureSource

CHAT_TEMPLATE = Path(__file__).with_name("chat_template.jinja")


@dataclass
class SFTScriptArgs(ScriptArgs):
    dataset_mixture: list[MixtureSource] = field(
        default_factory=list,
        metadata={
            "help": "Several SFT sets in one run instead of dataset_name: a list of {path, weight} or {path, tokens} "
            "(+ config, split), see sft/mixture.py; as a flag, each source as JSON text."
        },
    )
    mixture_rows: int | None = field(
        default=None, metadata={"help": "Rows in a weighted mixture; default: the most that repeat no source."}
    )


def parse_args(argv: list[str] | None = None) -> tuple[SFTScriptArgs, SFTConfig, ModelConfig]:
    return parse(SFTScriptArgs, SFTConfig, ModelConfig, argv=argv)


def train_set(script_args: SFTScriptArgs, training_args: SFTConfig, model_args: ModelConfig):
    """The training rows: `dataset_name` as it is, or the mixture (conversations longer than max_length left out)."""
    if script_args.dataset_mixture and script_args.dataset_name:
        raise ConfigError("give dataset_name or dataset_mixture, not both (add the set to the mixture)")
    if not script_args.dataset_mixture:
        return load_split(script_args.dataset_name, script_args.dataset_config, script_args.dataset_train_split)
    from transformers import AutoTokenizer

    from sft.mixture import build_mixture

    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    template = Path(training_args.chat_template_path).read_text()

    def count_tokens(row: dict) -> int:  # as TRL renders the row: a `tools` column may hold JSON text
        tools = json.loads(row["tools"]) if isinstance(row.get("tools"), str) else row.get("tools")
        text = tokenizer.apply_chat_template(row["messages"], tools=tools, chat_template=template, tokenize=False)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    mixture, seed, rows = script_args.dataset_mixture, training_args.seed, script_args.mixture_rows
    dataset, counts = build_mixture(mixture, seed, rows, count_tokens, training_args.max_length)
    print(f"[sft] mixture: {counts}")
    return dataset


def build_trainer(
    script_args: SFTScriptArgs, training_args: SFTConfig, model_args: ModelConfig, output_dir
) -> SFTTrainer:
    training_args.output_dir = str(output_dir)
    training_args.model_init_kwargs = model_init_kwargs(training_args, model_args)
    training_args.chat_template_path = training_args.chat_template_path or str(CHAT_TEMPLATE)
    dataset = train_set(script_args, training_args, model_args)
    trainer = SFTTrainer(
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
    mixture = [source["path"] for source in script_args.dataset_mixture]
    inputs = [model_args.model_name_or_path, script_args.dataset_name, *mixture]
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
