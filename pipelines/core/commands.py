"""Every nanoforge command and the module whose `main(argv)` runs it.

One table for the CLI (`nanoforge <command>`) and for recipes (`run`, `submit`), which name stages by command.
Modules are strings, imported only when their command runs: core imports no stage, and `nanoforge --help`
stays instant.
"""

from __future__ import annotations

# command -> (module, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo-data": ("pipelines.demo_data", "generate the demo web corpus and arithmetic word problems"),
    "demo-posttrain-data": ("pipelines.demo_posttrain", "generate the demo IF RL, tool-calling SFT and code RL sets"),
    "init-base": ("sft.init_base", "build a tiny random hybrid Nemotron-H base checkpoint + tokenizer"),
    "curate": ("pipelines.curate", "read, normalize, language-ID, filter, dedup and PII-redact raw shards"),
    "train-quality-classifier": ("pipelines.train_quality_classifier", "train a fastText quality classifier offline"),
    "quality": ("pipelines.quality", "score documents and assign Nemotron-CC quality buckets"),
    "mix": ("pipelines.mix", "build weighted phase blends, shuffled and tokenized"),
    "rephrase": ("pipelines.rephrase", "rewrite documents per quality label, Nemotron-CC style (synthetic data)"),
    "synth": ("pipelines.synth", "generate and verify reasoning traces (vllm, transformers, openai, replay)"),
    "select": ("pipelines.select", "turn traces into SFT, preference and RL prompt sets"),
    "sft": ("sft.train", "supervised fine-tuning with TRL SFTTrainer"),
    "dpo": ("rl.dpo", "preference optimisation with TRL DPOTrainer"),
    "grpo": ("rl.grpo", "reinforcement learning with TRL GRPOTrainer and verifier rewards"),
    "merge": ("rl.merge", "linearly interpolate two checkpoints"),
    "prune": ("compress.prune", "Minitron-style pruning of a NemotronH checkpoint from calibration activations"),
    "distill": ("compress.distill", "logit distillation teacher -> pruned student with TRL GKDTrainer (lmbda 0)"),
    "eval": ("sft.evaluate", "pass@k / maj@k on benchmarks by name or a math set, with /think and /no_think"),
    "run": ("pipelines.run", "run a recipe of stages end to end (resumes, skips up-to-date stages)"),
    "submit": ("pipelines.submit", "submit a recipe to a Ray cluster, one job per stage"),
    "publish": ("pipelines.publish", "upload an artifact to the Hugging Face Hub with a generated card"),
}

# Training commands: they also take --num_processes N and --launcher accelerate|ray (sft/launch.py), and a recipe
# stage's `resources: {num_workers: N}` submits them as N Ray Train workers.
TRAINING_COMMANDS = ("sft", "dpo", "grpo", "distill")
