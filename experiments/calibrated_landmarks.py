"""Does a fit to detected 68 points improve when the head's landmarks sit where the detector sees them?

    python experiments/calibrated_landmarks.py --sets NAME=FILE.npz ... --dataset TEST_FOLDER
        [--num 128] [--seeds 1 2] [--out docs/landmarks/calibrated.json]

Each ``--sets`` file comes from ``tools/calibrate_ibug68_on_head.py`` (calibrated on renders of
another seed than ``--dataset``). Three measures, each against the ICT landmarks and the mean face:

- ARMSE (mm, d = 110 mm) of the full-energy fit to MediaPipe's 68 points on the first ``--num``
  renders of ``--dataset`` (de-identified skins; identities and skins the calibration never saw),
  with the identity fitted and with the mean identity (pose and expression only);
- the same on the rendered suite's heads (:mod:`avatar_jax.evaluate.rendered`, skins baked from
  photos, another renderer), per seed;
- real photos: the head fitted to MediaPipe's 468 points (independent of the 68 definitions), its
  inner 68 points projected, NME (%) against the labels of every labelled face (as given, mirrored,
  rotated by ±20°; see benchmarks/landmark_devset.py), per label kind, by region.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
REGIONS = {"brows": slice(17, 27), "nose": slice(27, 36), "eyes": slice(36, 48), "mouth": slice(48, 68),
           "inner": slice(17, 68)}


def landmark_sets(model, files: dict[str, Path]) -> dict:
    from avatar_jax.fit.calibrated import load_ibug68_set
    from avatar_jax.fit.operators import ibug68

    return {"ICT": ibug68(model), **{name: load_ibug68_set(model, path) for name, path in files.items()}}


def armse_rows(model, images, lm, truth, sets) -> dict:
    """ARMSE mean per (landmark set, identity fitted or mean) for 68 points ``lm`` ``[n, 68, 2]``."""
    from avatar_jax.evaluate.synthetic import armse_against_truth
    from avatar_jax.fit import FitConfig, fit

    sizes = np.tile(np.asarray(images.shape[1:3], np.float32), (len(lm), 1))
    out = {}
    for name, lset in sets.items():
        for label, config in (("fitted identity", FitConfig()), ("mean identity", FitConfig(fit_identity=False))):
            verts = np.asarray(fit(lm, sizes, None, config, model=model, landmark_set=lset).vertices)
            s = [armse_against_truth(model, v, t, distances=(110.0,)).armse[0] for v, t in zip(verts, truth)]
            out[f"{name}, {label}"] = float(np.nanmean(s))
            print(f"  {name:>14}, {label:<16} ARMSE {np.nanmean(s):.3f} mm (n = {len(s)})")
    return out


def detected(images) -> tuple[np.ndarray, np.ndarray]:
    from avatar_jax.landmarks.api import detect_faces

    faces = [detect_faces(np.asarray(img), max_faces=1) for img in images]
    idx = np.array([i for i, f in enumerate(faces) if f])
    return idx, np.stack([faces[i][0].landmarks68 for i in idx]).astype(np.float32)


def on_dataset(model, folder: Path, num: int, sets) -> dict:
    from avatar_jax.io.shards import iter_shards

    shards = list(iter_shards(folder, ["images", "vertices"]))
    images = np.concatenate([s["images"] for s in shards])[:num]
    truth = np.concatenate([s["vertices"] for s in shards])[:num]
    idx, lm = detected(images)
    print(f"dataset {folder.name}: {len(idx)} of {num} found")
    return armse_rows(model, images, lm, truth[idx], sets)


def on_suite(model, seed: int, sets) -> dict:
    from avatar_jax.evaluate.rendered import example_photos, render_scene

    scene = render_scene(model, 16, seed, 60.0, example_photos())
    images = np.asarray(scene.images)
    idx, lm = detected(images)
    print(f"rendered suite seed {seed}: {len(idx)} of {len(images)} found")
    return armse_rows(model, images, lm, np.asarray(scene.batch.vertices)[idx], sets)


def on_photos(model, sets) -> dict:
    import landmark_devset as devset

    from avatar_jax.fit import dense

    views = list(devset.photo_views())
    out = {}
    for human in (True, False):
        sel = [v for v in views if v[3] == human]
        gts = np.stack([v[2] for v in sel])
        meshes, found, _ = devset.detect_all([v[1] for v in sel], gts)
        sizes = np.array([v[1].shape[:2] for v in sel], np.float32)[found]
        result = dense.fit_dense(meshes[found], sizes, model=model)
        kind = "human labels" if human else "dlib-model labels"
        for name, lset in sets.items():
            pred = dense.fitted_landmarks68(result, model, landmark_set=lset)
            gt = gts[found]
            span = gt.max(1) - gt.min(1)
            d = np.linalg.norm(pred - gt, axis=2) / np.sqrt(span[:, 0] * span[:, 1])[:, None]
            out[f"{kind}, {name}"] = {r: float(100 * d[:, s].mean()) for r, s in REGIONS.items()}
            print(f"  photos, {kind}, {name}: " + ", ".join(f"{r} {v:.2f}" for r, v in out[f'{kind}, {name}'].items()))
    return out


def main(argv=None) -> None:
    from avatar_jax.model import load_head_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", required=True, help="NAME=FILE.npz")
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--num", type=int, default=128)
    ap.add_argument("--seeds", nargs="*", type=int, default=[1, 2])
    ap.add_argument("--photos-only", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "landmarks" / "calibrated.json")
    args = ap.parse_args(argv)
    model = load_head_model()
    sets = landmark_sets(model, dict(s.split("=", 1) for s in args.sets))
    results = {"photos": on_photos(model, sets)}
    if not args.photos_only:
        results["dataset"] = on_dataset(model, args.dataset, args.num, sets)
        results.update({f"rendered suite seed {s}": on_suite(model, s, sets) for s in args.seeds})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
