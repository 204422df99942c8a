"""Shared fixtures. Real data is read in place from ../shared/data and tests using it skip where it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("TOOTHSEG_REAL_DATA", REPO.parent / "shared" / "data"))

# Keep torch to the cores CI has, and make sure nothing ever reaches a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TIMM_FUSED_ATTN", "0")


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not (REAL_DATA / "tufts" / "images").is_dir():
        pytest.skip(f"real data not found at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained fake run (helpers.fakerun.make_trained_run), shared by a module's tests."""
    from helpers.fakerun import make_trained_run

    return make_trained_run(tmp_path_factory.mktemp("predict"))
