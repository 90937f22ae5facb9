"""Shared test fixtures. Tests may read ../shared/testdata (never the package at run time)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from avatar_jax import enable_compilation_cache  # noqa: E402

enable_compilation_cache()  # as the CLI does: repeated suite runs reuse compiled kernels

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TESTDATA = SHARED / "testdata"


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not TESTDATA.is_dir():
        pytest.skip(f"test data not found at {TESTDATA}")
    return TESTDATA
