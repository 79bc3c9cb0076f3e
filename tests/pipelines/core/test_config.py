"""Strict configs: every shipped YAML parses with its command's dataclasses; unknown keys fail by name."""

from __future__ import annotations

import importlib
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipelines.cli import COMMANDS
from pipelines.cli import main as cli_main
from pipelines.core.config import ConfigError, parse
from sft.launch import TRAINING_STAGES, pop_launch_args

REPO = Path(__file__).resolve().parents[3]


def shipped_yamls() -> list[Path]:
    """The YAML files git would ship (tracked or not ignored): a benchmark's scratch configs under ignored folders
    are not ours to check."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.yaml"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        listed = [str(p.relative_to(REPO)) for p in REPO.rglob("*.yaml")]
    return sorted(
        REPO / p for p in listed if (REPO / p).is_file() and not any(part.startswith(".") for part in Path(p).parts)
    )


YAMLS = shipped_yamls()


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


@dataclass
class Nullable:
    language: str | None = field(default="en", metadata={"help": "a language, or null for all"})
    name: str = field(default="a", metadata={"help": "a name"})


@pytest.mark.timeout(60)
def test_null_on_the_command_line_is_none_where_the_field_takes_none():
    assert parse(Nullable, argv=["--language", "null", "--name", "null"]) == Nullable(language=None, name="null")
    assert parse(Nullable, argv=["--language=None"]).language is None
    assert parse(Nullable, argv=["--language", "nullish"]).language == "nullish"


def test_unknown_yaml_key_names_key_and_file(tmp_path):
    cfg = tmp_path / "toy.yaml"
    cfg.write_text("name: b\nstesp: 3\n")
    with pytest.raises(ConfigError, match=r"toy\.yaml: unknown key 'stesp' \(did you mean 'steps'\?\)"):
        parse(Toy, argv=["--config", str(cfg)])


def test_a_key_set_twice_names_both_lines(tmp_path):
    """PyYAML keeps the last of two equal keys silently; a config that says a thing twice is refused instead (the
    shipped dpo_nano2_12b.yaml had one, checked by test_every_shipped_yaml_parses_strictly below)."""
    cfg = tmp_path / "toy.yaml"
    cfg.write_text("name: b\nsteps: 3\nnested:\n  a: 1\n  a: 2\n")
    with pytest.raises(ConfigError, match=r"toy\.yaml: line 5: 'a' is already set on line 4; keep one"):
        parse(Toy, argv=["--config", str(cfg)])
    cfg.write_text("name: b\nsteps: 3\nname: c\n")
    with pytest.raises(ConfigError, match=r"line 3: 'name' is already set on line 1"):
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
def test_every_shipped_yaml_parses_strictly(path, monkeypatch):
    # The GPU recipes ask for bf16 autocast, which TrainingArguments refuses where no GPU supports it: parse them
    # as the GPU machine they are written for (every other check still runs).
    monkeypatch.setattr("transformers.training_args.is_torch_bf16_gpu_available", lambda *a, **k: True)
    command, *args = yaml_command(path)
    assert command in COMMANDS, f"{path}: unknown command {command}"
    module = importlib.import_module(COMMANDS[command][0])
    if command in TRAINING_STAGES:  # --num_processes / --launcher belong to the launcher (sft/launch.py)
        args = pop_launch_args(args)[2]
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
    from pipelines.core.runtime import progress_enabled

    monkeypatch.delenv("NANOFORGE_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    assert progress_enabled()
    monkeypatch.setenv("CI", "true")
    assert not progress_enabled()
    monkeypatch.setenv("NANOFORGE_PROGRESS", "1")  # asked for explicitly
    assert progress_enabled()


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("paths: en\n", r"field 'paths' expects list\[str\], got str 'en' \(a list: write \[en\]"),
        ("steps: three\n", r"field 'steps' expects int, got str 'three'"),
        ("steps: 2.5\n", r"field 'steps' expects int, got float 2.5"),
        ("name: on\n", r"field 'name' expects str, got bool True \(YAML read it as a number or boolean: quote it"),
        ("paths: [a, 3]\n", r"field 'paths' expects list\[str\], got list \['a', 3\]"),
    ],
)
def test_a_yaml_value_of_the_wrong_type_names_field_file_and_expected_type(tmp_path, yaml_text, message):
    cfg = tmp_path / "toy.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError, match=r"toy\.yaml: " + message):
        parse(Toy, argv=["--config", str(cfg)])


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_checks_its_config_field_types(command, tmp_path, monkeypatch):
    """Generic over every config dataclass a command parses (ours and TRL's): a scalar for a list field fails."""
    import dataclasses
    import typing

    import pipelines.core.config as config_module

    module = importlib.import_module(COMMANDS[command][0])
    seen: list[type] = []
    real = config_module.check_types
    monkeypatch.setattr(config_module, "check_types", lambda c, dcs, src: (seen.extend(dcs), real(c, dcs, src)))
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    try:  # only which dataclasses get checked matters here; required fields may be missing
        module.parse_args(["--config", str(empty)])
    except (ConfigError, SystemExit, ValueError):
        pass
    monkeypatch.setattr(config_module, "check_types", real)
    if not seen:
        pytest.skip(f"{command} takes no --config")
    checked = []
    for dc in seen:  # per dataclass: a list field given a scalar, else an int field given text, else a bool one
        hints = typing.get_type_hints(dc)
        for kind, bad_value in ((list, "7"), (int, "seven"), (bool, "maybe")):
            field_name = next((f.name for f in dataclasses.fields(dc) if _only(hints[f.name], kind)), None)
            if field_name:
                (tmp_path / "bad.yaml").write_text(f"{field_name}: {bad_value}\n")
                with pytest.raises(ConfigError, match=rf"bad\.yaml: field '{field_name}' expects .*{kind.__name__}"):
                    module.parse_args(["--config", str(tmp_path / "bad.yaml")])
                checked.append(field_name)
                break
    assert checked, f"{command}: no list, int or bool field to check"


def _only(hint, kind) -> bool:
    """The hint is `kind` (or `kind[...]`), optionally `| None`."""
    import types
    import typing

    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    arms = [a for a in typing.get_args(hint) if a is not type(None)] if union else [hint]
    return len(arms) == 1 and kind in (arms[0], typing.get_origin(arms[0]))


def test_curate_languages_scalar_is_an_error_not_a_set_of_letters(tmp_path):
    """The issue's case: `languages: en` used to become {'e', 'n'} and reject every document as wrong_language."""
    from pipelines import curate

    cfg = tmp_path / "curate.yaml"
    cfg.write_text("languages: en\n")
    with pytest.raises(
        ConfigError, match=r"curate\.yaml: field 'languages' expects list\[str\], got str 'en' \(a list: write \[en\]"
    ):
        curate.parse_args(["--config", str(cfg), "--input_paths", str(cfg)])


@pytest.mark.timeout(300)
def test_every_command_prints_its_help(capsys):
    """`nanoforge <command> --help` lists the command's fields and exits 0 (a '%' in one help text once made
    argparse fail for a whole stage)."""
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            cli_main([name, "--help"])
        out = capsys.readouterr().out
        assert exit_.value.code == 0, f"{name} --help: exit {exit_.value.code}"
        assert out.startswith("usage: nanoforge " + name) and "--" in out, f"{name} --help printed {out[:200]!r}"
