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


GLTF_VALIDATOR = REPO / "tools" / "gltf_validator"


@pytest.fixture(scope="session")
def gltf_validate():
    """``validate(*paths)``: the Khronos glTF validator's reports, asserting zero errors and zero
    warnings. Needs Node.js and ``npm ci --prefix tools/gltf_validator`` (``.ci/run`` does both)."""
    import json
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None or not (GLTF_VALIDATOR / "node_modules" / "gltf-validator").is_dir():
        pytest.skip("the Khronos glTF validator needs Node.js and `npm ci --prefix tools/gltf_validator` "
                    "(.ci/run installs both)")

    def validate(*paths):
        run = subprocess.run([node, str(GLTF_VALIDATOR / "validate.mjs"), *map(str, paths)],
                             capture_output=True, text=True, timeout=120)
        reports = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
        assert len(reports) == len(paths), f"glTF validator failed: {run.stderr}"
        for report in reports:
            assert report["errors"] == 0 and report["warnings"] == 0, report
        return reports

    return validate
