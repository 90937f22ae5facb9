"""Fitting speed and accuracy, side by side with eos-py on the same model and landmarks.

    python benchmarks/fit_speed.py [--batches 1 32 256] [--eos-images 32] [--repeats 3] [--processes 2]

Prints, for (a) landmark-only mode (alpha, beta, pose) and (b) the full energy with the
corrective field: cold compile time, warm ms per image and images/s per batch size, mean landmark
reprojection error; and eos-py's ``fit_shape_and_pose`` (5 iterations, contour fitting on) on the
same synthetic landmarks, with ratios. Absolute times drift on shared machines: read the ratios.
``--processes N`` adds the throughput of N processes fitting B = 256 at once (XLA runs the fit on
one core; one process per core is how to use the others).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import jax
import numpy as np

from avatar_jax import enable_compilation_cache
from avatar_jax.fit import FitConfig, fit, synthetic
from avatar_jax.fit import fitting as F
from avatar_jax.model import load_head_model

enable_compilation_cache()  # "cold" is a fresh compile read from the persistent cache, as the CLI runs

MODES = {
    "landmark-only (alpha, beta, pose)": FitConfig(use_corrective=False),
    "full energy (+ corrective field dP)": FitConfig(),
}


def _time_fit(batch, config, model, repeats):
    """(cold seconds incl. compile, best warm seconds, result) for one batch."""
    F._fit_jit.clear_cache()
    t0 = time.perf_counter()
    res = fit(batch.landmarks, batch.image_sizes, config=config, model=model)
    jax.block_until_ready(res.vertices)
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = fit(batch.landmarks, batch.image_sizes, config=config, model=model)
        jax.block_until_ready(res.vertices)
        warm.append(time.perf_counter() - t0)
    return cold, min(warm), res


def run_ours(model, batches, repeats, noise):
    rows = []
    for name, cfg in MODES.items():
        F.cached_operators(model, cfg, True)  # host precomputation, once per model and config
        for b in batches:
            batch = synthetic.numpy(synthetic.sample(model, jax.random.PRNGKey(b), b, noise_px=noise))
            # small batches take well under a millisecond: more repeats for a stable best time
            cold, warm, res = _time_fit(batch, cfg, model, max(repeats, 64 // b))
            rows.append(dict(mode=name, batch=b, cold_s=cold, ms_per_image=1e3 * warm / b,
                             images_per_s=b / warm,
                             reproj_px=float(np.mean(np.asarray(res.reprojection_error))),
                             ok=int(np.sum(np.asarray(res.status) == 0))))
    return rows


def run_eos(model, n, noise):
    try:
        from avatar_jax.evaluate import eos_peer
    except ImportError as err:  # eos-py is in the `bench` extra
        print(f"eos-py peer skipped: {err}")
        return None
    bundle = eos_peer.make_bundle(model)
    batch = synthetic.numpy(synthetic.sample(model, jax.random.PRNGKey(n), n, noise_px=noise))
    times, errs = [], []
    for lm, size in zip(batch.landmarks, batch.image_sizes):
        out = eos_peer.eos_fit(bundle, lm, (int(size[0]), int(size[1])), iterations=5)
        times.append(out["time_s"])
        errs.append(np.mean(np.linalg.norm(out["landmarks2d"] - lm, axis=-1)))
    # same images through ours (landmark-only), for a like-for-like error
    ours = fit(batch.landmarks, batch.image_sizes, config=MODES["landmark-only (alpha, beta, pose)"],
               model=model)
    return dict(ms_per_image=1e3 * float(np.median(times)), images_per_s=1.0 / float(np.median(times)),
                reproj_px=float(np.mean(errs)),
                ours_reproj_px=float(np.mean(np.asarray(ours.reprojection_error))), n=n)


def _worker(mode, b, repeats, noise, seed, barrier, queue):
    """One process of the multi-process run: warm up, wait for the others, fit ``repeats`` times."""
    model = load_head_model()
    cfg = MODES[mode]
    batch = synthetic.numpy(synthetic.sample(model, jax.random.PRNGKey(seed), b, noise_px=noise))
    jax.block_until_ready(fit(batch.landmarks, batch.image_sizes, config=cfg, model=model).vertices)
    barrier.wait()
    t0 = time.monotonic()  # system-wide clock: comparable between processes
    for _ in range(repeats):
        jax.block_until_ready(fit(batch.landmarks, batch.image_sizes, config=cfg, model=model).vertices)
    queue.put((t0, time.monotonic()))


def run_processes(n, b, repeats, noise):
    """Throughput of ``n`` processes fitting B images each, ``repeats`` times, at the same time
    (the fit itself runs on one core): images per second over the span from the first start to
    the last finish."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    rows = []
    for mode in MODES:
        procs = [ctx.Process(target=_worker, args=(mode, b, repeats, noise, 1000 + i, barrier, queue))
                 for i in range(n)]
        for p in procs:
            p.start()
        spans = [queue.get() for _ in procs]
        for p in procs:
            p.join()
        wall = max(e for _, e in spans) - min(s for s, _ in spans)
        rows.append(dict(mode=mode, processes=n, batch=b, ms_per_image=1e3 * wall / (n * b * repeats),
                         images_per_s=n * b * repeats / wall))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    ap.add_argument("--eos-images", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="at least 64 / B for batch B")
    ap.add_argument("--noise", type=float, default=1.0, help="landmark noise in px")
    ap.add_argument("--processes", type=int, default=0,
                    help="also fit B=256 in this many processes at once (e.g. one per core)")
    args = ap.parse_args(argv)
    model = load_head_model()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPU cores; "
          f"model V={model.num_vertices}; landmark noise {args.noise} px")
    rows = run_ours(model, args.batches, args.repeats, args.noise)
    peer = run_eos(model, args.eos_images, args.noise)
    print("\n| mode | B | cold (s) | warm ms/image | images/s | reproj. px | vs eos-py images/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['images_per_s'] / peer['images_per_s']:.0f}x" if peer else "n/a"
        print(f"| {r['mode']} | {r['batch']} | {r['cold_s']:.1f} | {r['ms_per_image']:.3f} | "
              f"{r['images_per_s']:.0f} | {r['reproj_px']:.3f} | {ratio} |")
    if peer:
        print(f"| eos-py fit_shape_and_pose (5 it., contour) | 1 | - | {peer['ms_per_image']:.2f} | "
              f"{peer['images_per_s']:.0f} | {peer['reproj_px']:.3f} | 1x |")
        print(f"\nsame {peer['n']} images: eos-py reprojection {peer['reproj_px']:.3f} px, "
              f"ours (landmark-only) {peer['ours_reproj_px']:.3f} px")
    if args.processes:
        print("\n| mode | processes x B | ms/image (aggregate) | images/s | vs one process |")
        print("|---|---|---|---|---|")
        single = {r["mode"]: r for r in rows if r["batch"] == 256}
        for r in run_processes(args.processes, 256, max(args.repeats, 5), args.noise):
            ref = single.get(r["mode"])
            ratio = f"{r['images_per_s'] / ref['images_per_s']:.2f}x" if ref else "n/a"
            print(f"| {r['mode']} | {r['processes']} x {r['batch']} | {r['ms_per_image']:.3f} | "
                  f"{r['images_per_s']:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
