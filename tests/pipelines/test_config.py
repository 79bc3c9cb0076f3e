"""Strict configs: every shipped YAML parses with its command's dataclasses; unknown keys fail by name."""

from __future__ import annotations

import importlib
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipelines.cli import COMMANDS
from pipelines.cli import main as cli_main
from pipelines.config import ConfigError, parse

REPO = Path(__file__).resolve().parents[2]
YAMLS = sorted(
    p
    for p in REPO.rglob("*.yaml")
    if not any(part.startswith(".") or part in {"runs", "node_modules"} for part in p.relative_to(REPO).parts)
)


@dataclass
class Toy:
    name: str = field(default="a", metadata={"help": "a name"})
    steps: int = field(default=1, metadata={"help": "how many"})
    paths: list[str] = field(default_factory=list, metadata={"help": "inputs"})


def test_yaml_then_flags_override(tmp_path):
    cfg = tmp_path / "toy.yaml"
    cfg.write_text("name: b\nsteps: 3\npaths: [x, y]\n")
    out = parse(Toy, argv=["--config", str(cfg), "--steps", "7"])
    assert (out.name, out.steps, out.paths) == ("b", 7, ["x", "y"])


def test_unknown_yaml_key_names_key_and_file(tmp_path):
    cfg = tmp_path / "toy.yaml"
    cfg.write_text("name: b\nstesp: 3\n")
    with pytest.raises(ConfigError, match=r"toy\.yaml: unknown key 'stesp' \(did you mean 'steps'\?\)"):
        parse(Toy, argv=["--config", str(cfg)])


def test_unknown_flag_fails():
    with pytest.raises((ConfigError, SystemExit, ValueError)):
        parse(Toy, argv=["--nope", "1"])


def yaml_command(path: Path) -> list[str]:
    """Line 2 of every shipped YAML is the command that runs it: `# nanoforge <cmd> ...`."""
    lines = path.read_text().splitlines()
    assert len(lines) >= 2 and lines[0].startswith("#"), f"{path}: line 1 must say what the config produces"
    m = re.match(r"#\s*nanoforge\s+(.*)$", lines[1])
    assert m, f"{path}: line 2 must be the command that runs it (# nanoforge <command> ...)"
    return shlex.split(m.group(1))


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_yaml_parses_strictly(path):
    command, *args = yaml_command(path)
    assert command in COMMANDS, f"{path}: unknown command {command}"
    module = importlib.import_module(COMMANDS[command][0])
    args = [str(REPO / a) if a.endswith(".yaml") and not Path(a).is_absolute() else a for a in args]
    module.parse_args(args)


def test_cli_help_lists_commands(capsys):
    assert cli_main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_cli_unknown_command(capsys):
    assert cli_main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_cli_log_level_is_one_setup_and_a_bad_level_is_refused(capsys, monkeypatch):
    import logging

    from pipelines import cli

    monkeypatch.setenv("NANOFORGE_LOG_LEVEL", "INFO")  # main() sets it for the processes a stage starts
    monkeypatch.setattr(logging.getLogger(), "level", logging.getLogger().level)
    argv = ["curate", "--log_level", "debug", "--force", "true"]
    assert cli.pop_log_level(argv) == ("DEBUG", ["curate", "--force", "true"])
    assert cli.pop_log_level(["--log_level=warning", "run"]) == ("WARNING", ["run"])
    assert cli.main(["--log_level", "loud", "run"]) == 2 and "choose one of" in capsys.readouterr().err
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # basicConfig configures only an unconfigured root
    assert cli.main(["--log_level", "WARNING", "--help"]) == 0
    assert logging.getLogger().level == logging.WARNING


def test_ray_progress_is_on_in_a_terminal_and_off_in_ci(monkeypatch):
    from pipelines.runtime import progress_enabled

    monkeypatch.delenv("NANOFORGE_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    assert progress_enabled()
    monkeypatch.setenv("CI", "true")
    assert not progress_enabled()
    monkeypatch.setenv("NANOFORGE_PROGRESS", "1")  # asked for explicitly
    assert progress_enabled()
