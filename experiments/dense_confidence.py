"""Per-point confidence of the dense shape source: the embedding's residuals (the default) against
the calibration's own per-point errors, scored by the identity's face-region vertex error.

    python experiments/dense_confidence.py --renders data/synth-train --shards 6 7 [--out FILE]

``--renders`` is a ``make-dataset --detect`` folder (its ``mesh478`` and true ``shapes``);
``--shards`` picks its shard files (default: all). Shards 0-5 of the training set calibrated the
468 places (``tools/calibrate_ibug68_on_head.py --points mediapipe468 --num 1536``): pick others.
Every variant has the default's total weight, so only the spread over the points differs; the
fit is ``fit.dense.SHAPE_CONFIG`` on the calibrated places, as ``base_shapes("dense")``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tune_identity_prior import face_error  # noqa: E402

from avatar_jax.fit import dense  # noqa: E402
from avatar_jax.fit.fitting import fit  # noqa: E402
from avatar_jax.io.shards import read_manifest  # noqa: E402
from avatar_jax.model import head, load_head_model  # noqa: E402

FACE_RADIUS_MM = 95.0


def load(folder: Path, shards: list[int] | None):
    """``[n, 468, 2]`` detected points, ``[n, V, 3]`` true shapes of the renders with a detected
    mesh, and the number of renders read; ``shards`` index the dataset manifest's shard list."""
    names = read_manifest(folder)["shards"]
    parts = [np.load(folder / names[i]) for i in (shards if shards else range(len(names)))]
    mesh, shapes = (np.concatenate([p[k] for p in parts]) for k in ("mesh478", "shapes"))
    ok = np.isfinite(mesh).all((1, 2))
    return mesh[ok, :dense.NUM_MESH_POINTS, :2], shapes[ok], int(ok.size)


def variants() -> dict[str, np.ndarray]:
    """name -> ``[468]`` weights with the default's total."""
    default = dense.dense_confidence().astype(np.float64)
    errors = np.load(dense.CALIBRATED_FILE)["error_after"].astype(np.float64)
    eyes = list(dense.EYE_CONTOURS)

    def scaled(w):
        return (w * default.sum() / w.sum()).astype(np.float32)

    def from_errors(scale, eye_rings=True):
        w = 1.0 / (1.0 + (errors / (scale * np.median(errors))) ** 2)
        if eye_rings:
            w[eyes] *= dense.EYE_CONTOUR_WEIGHT
        return w

    uniform = np.ones(dense.NUM_MESH_POINTS)
    uniform[eyes] *= dense.EYE_CONTOUR_WEIGHT
    out = {"embedding residuals (default)": scaled(default), "uniform, eye rings down-weighted": scaled(uniform)}
    for s in (0.5, 1.0, 2.0):
        out[f"calibration errors, scale {s}x median"] = scaled(from_errors(s))
    out["calibration errors 1x, eye rings not down-weighted"] = scaled(from_errors(1.0, eye_rings=False))
    out["embedding x calibration errors 1x"] = scaled(default * from_errors(1.0, eye_rings=False))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--renders", type=Path, required=True)
    ap.add_argument("--shards", type=int, nargs="*", default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    model = load_head_model()
    points, true, total = load(args.renders, args.shards)
    sizes = np.full((len(points), 2), 256, np.float32)  # make-dataset's 256-pixel scenes
    mean = float(np.nanmean(face_error(model, np.broadcast_to(np.asarray(model.neutral), true.shape), true,
                                       FACE_RADIUS_MM)))
    print(f"{len(points)} of {total} renders with a detected mesh; mean face {mean:.3f} mm")
    rows = {"mean face": mean}
    for name, conf in variants().items():
        r = fit(points, sizes, config=dense.SHAPE_CONFIG, model=model,
                confidence=np.broadcast_to(conf, points.shape[:2]), landmark_set=dense.calibrated_mediapipe_set(model))
        shapes = np.asarray(jax.vmap(lambda a: head.vertices(model, a))(r.identity))
        rows[name] = float(np.nanmean(face_error(model, shapes, true, FACE_RADIUS_MM)))
        print(f"| {name} | {rows[name]:.3f} |", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"renders": str(args.renders), "shards": args.shards, "face_error_mm": rows},
                                       indent=1) + "\n")


if __name__ == "__main__":
    main()
