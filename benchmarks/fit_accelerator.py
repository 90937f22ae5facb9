"""The fit on an accelerator: agreement with the CPU, and speed by batch and chunk size.

    python benchmarks/fit_accelerator.py [--batches 256 4096] [--chunks 32 0] [--check 64]

Runs the same synthetic landmarks (1 px noise) through :func:`avatar_jax.fit.fit` on JAX's default
backend (a GPU or TPU) and on the CPU in one process, and prints the largest vertex and camera
differences, both reprojection errors and whether the statuses agree; then the warm ms per image
of the full energy on the accelerator for each batch size and chunk size (``--chunks 0``: the
whole batch in one vmap, no ``lax.map`` over chunks, which suits a GPU). Run it where an
accelerator is present; on a CPU-only machine both sides are the CPU.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from avatar_jax.fit import FitConfig, fit, synthetic
from avatar_jax.model import load_head_model

MODES = {"landmark-only": FitConfig(use_corrective=False), "full energy": FitConfig()}


def _fit(batch, config, model):
    return jax.tree.map(np.asarray, fit(batch.landmarks, batch.image_sizes, config=config, model=model))


def agreement(model, n):
    batch = synthetic.numpy(synthetic.sample(model, jax.random.PRNGKey(1), n, noise_px=1.0))
    cpu = jax.devices("cpu")[0]
    for name, cfg in MODES.items():
        acc = _fit(batch, cfg, model)
        with jax.default_device(cpu):
            ref = _fit(batch, cfg, model)
        dv = np.abs(acc.vertices - ref.vertices).max(axis=(1, 2))
        drot = np.abs(acc.camera.rotvec - ref.camera.rotvec).max()
        print(f"{name}: {n} images; max |vertex diff| {dv.max():.3g} mm (median {np.median(dv):.3g}); "
              f"max |rotvec diff| {drot:.3g} rad; reprojection px accelerator {acc.reprojection_error.mean():.4f}"
              f" / cpu {ref.reprojection_error.mean():.4f}; statuses equal: {np.array_equal(acc.status, ref.status)}")


def speed(model, batches, chunks, repeats):
    print("| B | chunk | compile (s) | warm ms/image | images/s | reproj. px |")
    print("|---|---|---|---|---|---|")
    for b in batches:
        batch = synthetic.numpy(synthetic.sample(model, jax.random.PRNGKey(b), b, noise_px=1.0))
        for chunk in chunks:
            cfg = FitConfig(chunk_size=chunk or b)
            t0 = time.perf_counter()
            res = fit(batch.landmarks, batch.image_sizes, config=cfg, model=model)
            cold = time.perf_counter() - t0
            warm = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                res = fit(batch.landmarks, batch.image_sizes, config=cfg, model=model)
                warm.append(time.perf_counter() - t0)
            ms = 1e3 * min(warm) / b
            print(f"| {b} | {chunk or 'all'} | {cold:.1f} | {ms:.4f} | {1e3 / ms:.0f} | "
                  f"{float(np.mean(res.reprojection_error)):.3f} |", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 4096])
    parser.add_argument("--chunks", type=int, nargs="+", default=[32, 0])
    parser.add_argument("--check", type=int, default=64, help="images in the CPU agreement check")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"jax {jax.__version__}; default backend {jax.default_backend()}: {jax.devices()[0].device_kind}")
    model = load_head_model()
    agreement(model, args.check)
    speed(model, args.batches, args.chunks, args.repeats)


if __name__ == "__main__":
    main()
