"""The pinned ranges in pyproject.toml hold for the environment the tests run in (so a pin never claims more than
what was tested, and an upgrade that leaves a range fails here first). README: "Updating pinned versions"."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
REQUIREMENTS = [Requirement(r) for r in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]]


@pytest.mark.parametrize("req", [r for r in REQUIREMENTS if r.specifier], ids=str)
def test_installed_version_is_inside_the_pinned_range(req):
    installed = metadata.version(req.name)
    if req.name == "torch":  # the CPU wheel's local tag (2.13.0+cpu) is the same release
        installed = installed.split("+")[0]
    assert req.specifier.contains(installed, prereleases=True), f"{req.name} {installed} is outside {req.specifier}"


def test_the_libraries_tests_depend_on_are_pinned():
    ranged = {r.name.lower().replace("_", "-") for r in REQUIREMENTS if r.specifier}
    assert {"transformers", "datasets", "peft", "spacy", "trl", "huggingface-hub", "accelerate", "pyarrow"} <= ranged
