"""Where the real test data lives: ../shared/data beside the repo (CI has it; a user's clone may not)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NANOFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data; skips the calling test with a clear message when it is absent.

    from datapaths import shared_data
    path = shared_data("gsm8k", "test.jsonl")
    """
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real test data not found at {path} (set NANOFORGE_SHARED_DATA to the shared/data folder)")
    return path
