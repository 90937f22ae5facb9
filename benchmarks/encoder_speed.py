"""Speed of the Flax dlib face descriptor against dlib's own, on the same chips, same run.

Ours: ``avatar_jax.regress.face_descriptor`` (jitted, warmed up, ``block_until_ready``) on
uint8 chips ``[B, 150, 150, 3]``. dlib: ``face_recognition_model_v1.compute_face_descriptor``
on the same chips, one call per chip at batch 1 and one call with the list of chips at larger
batches (dlib then runs them as one batch). Chips are the parity references'
(``tests/data/dlib_resnet_reference.npz``) repeated to the batch size. Times are the median of
``--runs`` runs, reported as ms per image with the ratio dlib / ours; the two descriptors are
also compared (max cosine distance) so a fast wrong answer shows.

A last column times the shipped shape regressor's decoder (``load_regressor().predict``, 128 ->
3V) on the descriptors, so "ours + decoder" is the regressor's cost from aligned chips to shapes.

Usage: ``python benchmarks/encoder_speed.py [--batches 1 64] [--runs 7]``
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import jax
import numpy as np

from avatar_jax.regress import dlib_resnet as dr

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "data" / "dlib_resnet_reference.npz"


def median_seconds(fn, runs: int, *args) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def chips_of_batch(chips: np.ndarray, batch: int) -> np.ndarray:
    """``[batch, 150, 150, 3]`` by repeating the reference chips."""
    return np.ascontiguousarray(np.resize(chips, (batch,) + chips.shape[1:]))


def dlib_model():
    try:
        import dlib
        import face_recognition_models
    except ImportError:
        return None
    return dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())


def dlib_descriptors(model, chips: np.ndarray) -> np.ndarray:
    if len(chips) == 1:
        return np.array([model.compute_face_descriptor(chips[0])])
    return np.array(model.compute_face_descriptor(list(chips)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args(argv)

    with np.load(REFERENCE) as z:
        ref_chips = z["chips"]
    params = dr.load_dlib_resnet()
    model = dlib_model()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.devices()[0].device_kind}), "
          f"{os.cpu_count()} CPUs; dlib: {'yes' if model is not None else 'not installed'}")
    from avatar_jax.regress import load_regressor

    regressor = load_regressor()
    print(f"{'batch':>5} {'ours ms/img':>12} {'decoder ms/img':>15} {'dlib ms/img':>12} {'dlib/ours':>10} "
          f"{'max cos dist':>13}")
    for batch in args.batches:
        chips = chips_of_batch(ref_chips, batch)
        x = jax.device_put(chips)
        ours = np.asarray(dr.face_descriptor(params, x))  # compile + warm up
        t_ours = median_seconds(lambda p, c: dr.face_descriptor(p, c).block_until_ready(), args.runs,
                                params, x)
        regressor.predict(ours).block_until_ready()  # compile
        t_dec = median_seconds(lambda f: regressor.predict(f).block_until_ready(), args.runs, ours)
        row = f"{batch:>5} {1e3 * t_ours / batch:>12.2f} {1e3 * t_dec / batch:>15.3f}"
        if model is not None:
            theirs = dlib_descriptors(model, chips)  # warm up
            t_dlib = median_seconds(dlib_descriptors, args.runs, model, chips)
            cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
            row += f" {1e3 * t_dlib / batch:>12.2f} {t_dlib / t_ours:>10.2f} {1 - cos.min():>13.2e}"
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
