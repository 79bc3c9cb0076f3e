"""`nanoforge <command> [args]`: one entry point that forwards to each stage's own `main(argv)`.

Every command is also `python -m <module>` with the same arguments. Modules are imported only when their
command runs, so `nanoforge --help` stays instant.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from pipelines.core.commands import COMMANDS

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def setup_logging(level: str) -> None:
    """The one logging setup: library code logs through `logging.getLogger(__name__)`; this prints it on stderr."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("urllib3", "filelock", "fsspec", "httpx", "matplotlib"):  # their INFO/DEBUG is not about our run
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.WARNING))


def pop_log_level(argv: list[str]) -> tuple[str, list[str]]:
    """`--log_level LEVEL` (anywhere in argv; default $NANOFORGE_LOG_LEVEL or INFO) and the argv without it."""
    level, rest, i = os.environ.get("NANOFORGE_LOG_LEVEL", "INFO"), [], 0
    while i < len(argv):
        if argv[i] == "--log_level" and i + 1 < len(argv):
            level, i = argv[i + 1], i + 2
        elif argv[i].startswith("--log_level="):
            level, i = argv[i].split("=", 1)[1], i + 1
        else:
            rest, i = [*rest, argv[i]], i + 1
    return level.upper(), rest


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: nanoforge <command> [--config FILE.yaml] [--field value ...] [--log_level DEBUG|INFO|WARNING|ERROR]",
        "",
        "Open data-curation and post-training pipeline (Nemotron-H / Nano 2 recipe).",
        "",
        "commands:",
        *(f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()),
        "",
        "Run `nanoforge <command> --help` for a command's fields. Training stages (sft, dpo, grpo, distill) also take",
        "--num_processes N (ranks through accelerate on this node) and --launcher ray (Ray Train workers).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    level, argv = pop_log_level(list(sys.argv[1:] if argv is None else argv))
    if level not in LOG_LEVELS:
        print(f"nanoforge: --log_level {level!r}: choose one of {', '.join(LOG_LEVELS)}", file=sys.stderr)
        return 2
    setup_logging(level)
    os.environ["NANOFORGE_LOG_LEVEL"] = level  # stages that start more processes (Ray jobs, trl) pass it on
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"nanoforge: unknown command '{name}'\n\n{usage()}", file=sys.stderr)
        return 2
    from pipelines.core.config import ConfigError
    from sft.launch import TRAINING_STAGES, launch, pop_launch_args

    sys.argv = [f"nanoforge {name}", *rest]  # so argparse's usage line names the command
    try:
        if name in TRAINING_STAGES:  # --num_processes N / --launcher ray start the ranks (sft/launch.py)
            try:
                num_processes, launcher, rest = pop_launch_args(rest)
            except ValueError as e:
                raise ConfigError(str(e)) from None
            return launch(TRAINING_STAGES[name], rest, num_processes, launcher)
        module = importlib.import_module(COMMANDS[name][0])
        return module.main(rest) or 0
    except ConfigError as e:  # a mistake in the YAML or flags: a message, not a traceback
        print(f"nanoforge {name}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
