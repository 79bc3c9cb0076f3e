"""Shared fixtures: real local Ray, the real data in ../shared/data, and a tiny hybrid base checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from datapaths import SHARED_DATA, shared_data  # noqa: F401  (re-exported for tests)

os.environ.setdefault("NANOFORGE_PROGRESS", "0")  # no progress bars in test logs
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may load from the Hub in tests


@pytest.fixture(scope="session")
def ray_local():
    """A real embedded Ray for the whole session (2 CPUs, like CI)."""
    import ray

    from pipelines.runtime import init_ray

    started = init_ray(num_cpus=2)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny random NemotronH checkpoint + tokenizer + chat template, built once per test session."""
    from sft.init_base import build_base

    return build_base(tmp_path_factory.mktemp("base") / "tiny", preset="tiny", seed=0)
