"""`nanoforge <command> [args]`: one entry point that forwards to each stage's own `main(argv)`.

Every command is also `python -m <module>` with the same arguments. Modules are imported only when their
command runs, so `nanoforge --help` stays instant.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo-data": ("pipelines.demo_data", "generate the demo web corpus and arithmetic word problems"),
    "init-base": ("sft.init_base", "build a tiny random hybrid Nemotron-H base checkpoint + tokenizer"),
    "curate": ("pipelines.curate", "read, normalize, language-ID, filter, dedup and PII-redact raw shards"),
    "train-quality-classifier": ("pipelines.quality_classifier", "train a fastText quality classifier offline"),
    "quality": ("pipelines.quality", "score documents and assign Nemotron-CC quality buckets"),
    "mix": ("pipelines.mix", "build weighted phase blends, shuffled and tokenized"),
    "synth": ("pipelines.synth", "generate and verify reasoning traces (vllm, transformers, openai, replay)"),
    "select": ("pipelines.select", "turn traces into SFT, preference and RL prompt sets"),
    "sft": ("sft.train", "supervised fine-tuning with TRL SFTTrainer"),
    "dpo": ("rl.dpo", "preference optimisation with TRL DPOTrainer"),
    "grpo": ("rl.grpo", "reinforcement learning with TRL GRPOTrainer and verifier rewards"),
    "merge": ("rl.merge", "linearly interpolate two checkpoints"),
    "prune": ("compress.prune", "Minitron-style pruning of a NemotronH checkpoint from calibration activations"),
    "distill": ("compress.distill", "logit distillation teacher -> pruned student with TRL GKDTrainer (lmbda 0)"),
    "eval": ("rl.evaluate", "pass@1 on a math set with /think and /no_think"),
    "run": ("pipelines.run", "run a recipe of stages end to end (resumes, skips up-to-date stages)"),
    "submit": ("pipelines.submit", "submit a recipe to a Ray cluster, one job per stage"),
    "publish": ("pipelines.publish", "upload an artifact to the Hugging Face Hub with a generated card"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: nanoforge <command> [--config FILE.yaml] [--field value ...]",
        "",
        "Open data-curation and post-training pipeline (Nemotron-H / Nano 2 recipe).",
        "",
        "commands:",
        *(f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()),
        "",
        "Run `nanoforge <command> --help` for a command's fields.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"nanoforge: unknown command '{name}'\n\n{usage()}", file=sys.stderr)
        return 2
    from pipelines.config import ConfigError

    module = importlib.import_module(COMMANDS[name][0])
    sys.argv = [f"nanoforge {name}", *rest]  # so argparse's usage line names the command
    try:
        return module.main(rest) or 0
    except ConfigError as e:  # a mistake in the YAML or flags: a message, not a traceback
        print(f"nanoforge {name}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
