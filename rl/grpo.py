"""Reinforcement learning with TRL's `GRPOTrainer` on math prompts, rewarded by the verifier (`rl/rewards.py`).

Local:    nanoforge grpo --config rl/configs/grpo_demo.yaml
Cluster:  accelerate launch --num_processes 8 -m rl.grpo --config rl/configs/grpo_nano2_12b.yaml

Prompts are `prompt` (messages) + `answer` (+ `verifier`) rows (the `rl_prompts/` set of `nanoforge select`), or a
GSM8K/MATH style file mapped the way `synth` maps it. The `verifier` reward scores each row with the verifier its
`verifier` column names (math, code in a sandbox, IFEval constraints, multiple choice;
`pipelines/reasoning/verifiers.py`). Reasoning is chosen per prompt: a prompt keeps its own `/think` or `/no_think`;
unflagged prompts get `/no_think` with probability `no_think_fraction`, else reasoning on. Rewards are picked by name
(`reward_funcs`) and weighed by TRL's `reward_weights`. Rollouts use vLLM when `use_vllm: true` and a GPU is present
(`vllm_mode: colocate` shares the training GPUs, `server` talks to `trl vllm-serve`), plain `generate` otherwise. A
killed run resumes from its last `checkpoint-N` on rerun.
"""

from __future__ import annotations

import functools
import logging
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

from trl import GRPOConfig, GRPOTrainer, ModelConfig

from pipelines.core.config import ConfigError, parse
from pipelines.core.datasets import load_split
from pipelines.reasoning.prompt_formats import with_reasoning_flag
from rl.rewards import REWARDS
from sft.common import (
    MetricsFile,
    ScriptArgs,
    checkpoint_artifact,
    checkpoint_writing,
    is_hybrid,
    last_checkpoint,
    model_init_kwargs,
    peft_config,
    prepare_trainer,
    save_checkpoint,
)
from sft.evaluate import to_problems

log = logging.getLogger(__name__)


@dataclass
class GRPOScriptArgs(ScriptArgs):
    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy", "think_format", "overlong"],
        metadata={"help": f"Rewards from rl/rewards.py: {', '.join(REWARDS)}; weights go in `reward_weights`."},
    )
    overlong_buffer: int = field(
        default=64, metadata={"help": "Tokens before max_completion_length where the overlong penalty starts."}
    )
    no_think_fraction: float = field(
        default=0.0, metadata={"help": "Share of unflagged prompts trained with /no_think (reasoning off)."}
    )
    vllm_engine_kwargs: dict = field(
        default_factory=dict,
        metadata={
            "help": "Extra `vllm.LLM` kwargs for colocated rollouts (YAML only), e.g. enforce_eager; on "
            "hybrid models mamba_ssm_cache_dtype float32 is added, as in synth and eval."
        },
    )


def reasoning_of(messages: list[dict]) -> str | None:
    """`on`/`off` from the last `/think` or `/no_think` in the system and user turns (as the chat template reads
    it), or None when there is none."""
    found = None
    for m in messages:
        if m["role"] in ("system", "user"):
            text = m["content"].replace("</think>", "")
            on, off = text.rfind("/think"), text.rfind("/no_think")
            found = "on" if on > off else "off" if off > on else found
    return found


def rl_prompts(rows, no_think_fraction: float, seed: int):
    """`prompt` (flagged messages), `answer` and `reasoning` columns, and `verifier` when the rows name one; each
    prompt's mode is decided once."""
    from datasets import Dataset

    rng = random.Random(seed)
    out = []
    for p in to_problems(rows, "dataset_name"):
        mode = reasoning_of(p["messages"])
        if mode is None:
            mode = "off" if rng.random() < no_think_fraction else "on"
            p["messages"] = with_reasoning_flag(p["messages"], mode)
        row = {"prompt": p["messages"], "answer": p["answer"], "reasoning": mode}
        out.append(row | ({"verifier": p["verifier"]} if "verifier" in rows.column_names else {}))
    return Dataset.from_list(out)


def rewards(script_args: GRPOScriptArgs, training_args: GRPOConfig) -> list:
    unknown = [name for name in script_args.reward_funcs if name not in REWARDS]
    if unknown:
        raise ConfigError(f"unknown reward_funcs {unknown}; choose from {list(REWARDS)}")
    lengths = dict(
        max_completion_length=training_args.max_completion_length, overlong_buffer=script_args.overlong_buffer
    )
    return [REWARDS[n](**lengths) if n == "overlong" else REWARDS[n] for n in script_args.reward_funcs]


def colocated_engine_kwargs(script_args: GRPOScriptArgs, model_args: ModelConfig) -> dict:
    """Give TRL's colocated `vllm.LLM` our engine kwargs. TRL builds it with a fixed argument list, so its module's
    `LLM` name is bound to a partial; hybrids keep the Mamba state in float32 (bf16 state drifts over long
    rollouts, and the trainer's log-probs are computed in float32 state) and get `vllm_graphs`' CUDA graphs."""
    import trl.generation.vllm_generation as vg

    from pipelines.reasoning.vllm_graphs import hybrid_engine_in_this_process

    kwargs = dict(script_args.vllm_engine_kwargs)
    if is_hybrid(model_args.model_name_or_path):
        kwargs = hybrid_engine_in_this_process(kwargs, v2_runner=False)  # TRL's weight swaps and sleep: V1 tried
    llm = getattr(vg.LLM, "func", vg.LLM)  # a second build in the same process starts from TRL's own class
    vg.LLM = functools.partial(llm, **kwargs) if kwargs else llm
    return kwargs


def parse_args(argv: list[str] | None = None) -> tuple[GRPOScriptArgs, GRPOConfig, ModelConfig]:
    return parse(GRPOScriptArgs, GRPOConfig, ModelConfig, argv=argv)


def build_trainer(
    script_args: GRPOScriptArgs, training_args: GRPOConfig, model_args: ModelConfig, output_dir
) -> GRPOTrainer:
    import torch

    training_args.output_dir = str(output_dir)
    training_args.model_init_kwargs = model_init_kwargs(training_args, model_args)
    if training_args.use_vllm and not torch.cuda.is_available():
        log.warning("[grpo] use_vllm is set but no GPU is present: generating with transformers instead")
        training_args.use_vllm = False
    if training_args.use_vllm and training_args.vllm_mode == "colocate":
        colocated_engine_kwargs(script_args, model_args)
    rows = load_split(script_args.dataset_name, script_args.dataset_config, script_args.dataset_train_split)
    dataset = rl_prompts(rows, script_args.no_think_fraction, training_args.seed)
    trainer = GRPOTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=rewards(script_args, training_args),
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
    art = checkpoint_artifact("grpo", script_args, training_args, model_args, inputs)
    if art.up_to_date() and not script_args.force:
        print(art.skip_message())
        return 0
    with checkpoint_writing(art) as tmp:
        trainer = build_trainer(script_args, training_args, model_args, tmp)
        trainer.train(resume_from_checkpoint=last_checkpoint(tmp))
        save_checkpoint(trainer, tmp, art, script_args, len(trainer.train_dataset))
    print(f"[grpo] wrote {art.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
