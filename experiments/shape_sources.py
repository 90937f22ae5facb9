"""Which base shape P helps the fit: the rendered suite's ARMSE per shape source.

    python experiments/shape_sources.py --regressors RUN/regressor.npz ... [--seeds 1 2] [--num 16]

The rendered benchmark's heads (:mod:`avatar_jax.evaluate.rendered`: out-of-space identities
and expressions at yaw up to 60 deg, wearing skins baked from photos, i.e. skins the regressors
never saw in training; MediaPipe in the loop) are fitted with the full energy on each base shape:

- ``landmarks``: the identity fitted from the 68 points (today's default);
- ``mean identity``: the model's mean (the average-face baseline);
- ``dense``: the identity of the head fitted to MediaPipe's 468 points;
- one row per regressor given (its encoder on the render, then the fit around its shape).

ARMSE (mm, d = 110 mm, the 3DFAW protocol as in docs/results.md) against the true mesh, per seed.
With ``--datasets`` also on make-dataset folders (e.g. a test set of another seed: identities and
de-identified skins no regressor saw). The rendered suite's skins carry two real people's faces
whatever the shape, which misleads an appearance encoder by construction; the datasets do not.
Writes ``shape_sources.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _sources(model, regressors):
    from avatar_jax import pipeline

    rows = {"landmarks": None, "mean identity": "mean", "dense": lambda img, faces: pipeline.base_shapes(
        img, faces, "dense", model=model)}
    for path in regressors:
        from avatar_jax.regress import load_regressor

        reg = load_regressor(path)
        rows[f"regressor ({reg.encoder}, {Path(path).parent.name})"] = (
            lambda img, faces, reg=reg: pipeline.base_shapes(img, faces, "regressor", regressor=reg, model=model))
    return rows


def run_seed(model, seed, num, sources) -> dict:
    """The rendered suite's heads of ``seed`` (skins baked from photos)."""
    from avatar_jax.evaluate.rendered import example_photos, render_scene

    scene = render_scene(model, num, seed, 60.0, example_photos())
    return _run(model, scene.images, scene.batch.vertices, sources, f"seed {seed}")


def run_dataset(model, folder, num, sources) -> dict:
    """The first ``num`` items of a make-dataset folder (de-identified skins of another seed)."""
    from avatar_jax.io.shards import iter_shards

    images, truth = [], []
    for shard in iter_shards(folder, ["images", "vertices"]):
        images.append(shard["images"])
        truth.append(shard["vertices"])
    return _run(model, np.concatenate(images)[:num], np.concatenate(truth)[:num], sources, Path(folder).name)


def _run(model, images, truth, sources, label) -> dict:
    from avatar_jax.evaluate.synthetic import armse_against_truth
    from avatar_jax.fit import FitConfig, fit
    from avatar_jax.landmarks.api import detect_faces
    from avatar_jax.pipeline import head_landmark_set

    landmark_set = head_landmark_set(model, "calibrated")  # the detected points as reconstruct fits them

    num = len(images)
    faces = [detect_faces(img, max_faces=1) for img in images]
    idx = [i for i, f in enumerate(faces) if f]
    lm = np.stack([faces[i][0].landmarks68 for i in idx]).astype(np.float32)
    sizes = np.tile(np.asarray(images.shape[1:3], np.float32), (len(idx), 1))
    result = {"found": len(idx), "num": num}
    for name, source in sources.items():
        config = FitConfig(fit_identity=False) if source == "mean" else FitConfig()
        base = None if source in (None, "mean") else np.concatenate([source(images[i], faces[i]) for i in idx])
        verts = np.asarray(fit(lm, sizes, base, config, model=model, landmark_set=landmark_set).vertices)
        scores = np.array([armse_against_truth(model, verts[j], truth[i], distances=(110.0,)).armse[0]
                           for j, i in enumerate(idx)])
        result[name] = {"armse_mean": float(np.nanmean(scores)), "armse_std": float(np.nanstd(scores)),
                        "armse_median": float(np.nanmedian(scores))}
        print(f"{label} {name:<40} ARMSE {np.nanmean(scores):.3f} +- {np.nanstd(scores):.3f}")
    return result


def main(argv=None) -> None:
    from avatar_jax.model import load_head_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--regressors", nargs="*", default=[])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--num", type=int, default=16)
    ap.add_argument("--datasets", nargs="*", default=[], type=Path,
                    help="make-dataset folders to score too (e.g. a test set of another seed)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "regress")
    args = ap.parse_args(argv)
    model = load_head_model()
    sources = _sources(model, args.regressors)
    results = {f"rendered seed {seed}": run_seed(model, seed, args.num, sources) for seed in args.seeds}
    results.update({f"dataset {d.name}": run_dataset(model, d, 2 * args.num, sources) for d in args.datasets})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shape_sources.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
