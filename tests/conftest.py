"""Shared test fixtures. Photos come from tests/data/photos (in the repo; see its README.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from avatar_jax import enable_compilation_cache  # noqa: E402

enable_compilation_cache()  # as the CLI does: repeated suite runs reuse compiled kernels

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO / "tests" / "data" / "photos"  # redistributable photos + labels, manifest.json


@pytest.fixture(scope="session")
def testdata() -> Path:
    return TESTDATA
