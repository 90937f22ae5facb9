"""The built wheel is self-contained: installed into a fresh virtual environment and run from a
folder outside the checkout, it finds every model and data file it needs."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SMOKE = """
import pathlib, sys
import avatar_jax
assert 'site-packages' in avatar_jax.__file__, avatar_jax.__file__
from avatar_jax import pipeline
from avatar_jax.evaluate.rendered import example_photos
from avatar_jax.fit import dense
from avatar_jax.io.image import load_image
from avatar_jax.model import load_head_model
from avatar_jax.regress.dlib_resnet import load_dlib_resnet
model = load_head_model()
image = load_image(example_photos()[0])
faces = pipeline.detect(image)
assert len(faces) == 1, faces
assert dense.embedding()['faces'].shape == (468, 3)
load_dlib_resnet()
print('ok', model.num_vertices)
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps",
                    "-q", "-w", str(out)], check=True, capture_output=True)
    (path,) = out.glob("avatar_jax-*.whl")
    return path


def test_wheel_runs_outside_the_checkout(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=False)  # dependencies from this env
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--ignore-installed", "-q",
                    str(wheel)], check=True, capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = subprocess.run([str(python), "-c", SMOKE], cwd=work, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("ok")
