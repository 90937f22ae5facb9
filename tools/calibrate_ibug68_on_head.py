"""Place the head model's inner iBUG-68 landmarks where the landmark detector sees them.

    python tools/calibrate_ibug68_on_head.py DATASET [--num 1024] [--radius 20] [--skip 17-26]
        [--points ibug68|mediapipe468] [--out avatar_jax/fit/data/<points>_calibrated.npz]

DATASET is a ``make-dataset --detect`` folder (renders with their true meshes and cameras and
the detector's 68 points on each render). ICT FaceKit's own 68 landmark vertices follow its
authors' convention, not the one the 68-point detectors were trained on: on renders the
detector's points sit several millimetres from them (brows, lips), so a fit to detected points
bends the identity to close that gap. For each inner landmark (17-67) this picks the surface
point (triangles within ``--radius`` mm of the current landmark on the neutral head, barycentric
grid of step 1/4) whose projection in the true meshes lies nearest the detected point, over the
renders with |yaw| < 45 deg (where the point is visible), error in units of the face size. The jaw
(0-16) slides along the silhouette and is left alone. ``--skip`` keeps the given landmarks as they
are. Writes ``faces [68, 3]``, ``bary [68, 3]`` and per-landmark errors before/after.

``--points mediapipe468`` does the same for all 468 points of MediaPipe's mesh (the
``make-dataset --detect`` renders hold the detected mesh), starting from the embedding of
``tools/embed_mediapipe_on_head.py``: the places the dense shape source fits to.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial.transform import Rotation

REPO = Path(__file__).resolve().parents[1]
GRID = 4  # barycentric grid steps per triangle edge
MAX_ABS_YAW = 45.0
CAMERA_FIELDS = ("rotvec", "translation", "log_fs", "focal", "principal")


def load_renders(folder: Path, num: int) -> dict[str, np.ndarray]:
    """The first ``num`` renders' meshes, cameras, detected 68 points and MediaPipe meshes."""
    from avatar_jax.io.shards import iter_shards

    keys = ["vertices", "detected68", "mesh478", *CAMERA_FIELDS]
    parts, total = [], 0
    for shard in iter_shards(folder, keys):
        parts.append(shard)
        total += len(shard["vertices"])
        if total >= num:
            break
    return {k: np.concatenate([p[k] for p in parts])[:num] for k in keys}


def bary_grid(step: int = GRID) -> np.ndarray:
    """``[G, 3]`` barycentric points of a triangle at ``1/step`` spacing (corners included)."""
    return np.array([(i, j, step - i - j) for i in range(step + 1) for j in range(step + 1 - i)],
                    np.float32) / step


def candidates(model, point: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Triangles ``[C, 3]`` and barycentrics ``[C, 3]`` of the surface points near ``point``."""
    tri = np.asarray(model.triangles)
    centroids = np.asarray(model.neutral)[tri].mean(1)
    near = np.where(np.linalg.norm(centroids - point, axis=1) < radius)[0]
    grid = bary_grid()
    return np.repeat(tri[near], len(grid), 0), np.tile(grid, (len(near), 1))


@jax.jit
def _project_points(vertices, faces, bary, camera):
    """``[n, C, 2]``: surface points (faces, bary ``[C, 3]``) of each mesh ``[n, V, 3]`` projected."""
    from avatar_jax.geometry.camera import project
    from avatar_jax.model.head import sample_surface

    return jax.vmap(lambda v, c: project(c, sample_surface(v, faces, bary)))(vertices, camera)


def face_scale(points: np.ndarray) -> np.ndarray:
    """``[n]`` √(w·h) of each 68-point box (the NME normaliser)."""
    span = points.max(1) - points.min(1)
    return np.sqrt(span[:, 0] * span[:, 1])


def _usable(renders: dict, detected: np.ndarray) -> np.ndarray:
    """``[n]`` renders where every detected point is finite and |yaw| < MAX_ABS_YAW."""
    yaw = np.degrees(Rotation.from_rotvec(renders["rotvec"]).as_euler("zxy")[:, 2])
    return np.isfinite(detected).all((1, 2)) & (np.abs(yaw) < MAX_ABS_YAW)


def calibrate_points(model, renders: dict, detected: np.ndarray, faces: np.ndarray, bary: np.ndarray,
                     movable, radius: float) -> dict[str, np.ndarray]:
    """Move each point of ``movable`` (faces/bary ``[K, 3]`` on the head) to the surface point whose
    projection in the true meshes lies nearest its ``detected [n, K, 2]`` point, mean error in units
    of the face size (√(w·h) of the detected points' box). Returns new ``faces``/``bary`` and the
    per-point errors before/after (NaN for points not moved)."""
    from avatar_jax.geometry.camera import Camera

    use = _usable(renders, detected)
    det = detected[use]
    scale = face_scale(det)
    verts = jnp.asarray(renders["vertices"][use])
    camera = Camera(*(jnp.asarray(renders[f][use]) for f in CAMERA_FIELDS))
    faces, bary = faces.copy(), bary.copy()
    before, after = np.full(len(faces), np.nan), np.full(len(faces), np.nan)
    current = (np.asarray(model.neutral)[faces] * bary[..., None]).sum(1)
    for k in movable:
        cf, cb = candidates(model, current[k], radius)
        pad = -(len(cf) + 1) % 512  # a few padded sizes: a few compilations
        cf = np.concatenate([faces[k:k + 1], cf, np.repeat(faces[k:k + 1], pad, 0)])
        cb = np.concatenate([bary[k:k + 1], cb, np.repeat(bary[k:k + 1], pad, 0)])
        pts = np.asarray(_project_points(verts, jnp.asarray(cf), jnp.asarray(cb), camera))
        err = (np.linalg.norm(pts - det[:, None, k], axis=2) / scale[:, None]).mean(0)
        best = int(np.argmin(err))
        before[k], after[k] = err[0], err[best]
        faces[k], bary[k] = cf[best], cb[best]
    return {"faces": faces.astype(np.int32), "bary": bary.astype(np.float32), "error_before": before,
            "error_after": after, "renders_used": np.int32(use.sum())}


def calibrate(model, renders: dict, radius: float, skip: set[int]) -> dict[str, np.ndarray]:
    """The inner iBUG-68 points (17-67, less ``skip``) moved; see :func:`calibrate_points`."""
    faces, bary = np.asarray(model.landmark_faces), np.asarray(model.landmark_bary)
    movable = [k for k in range(17, 68) if k not in skip]
    return calibrate_points(model, renders, renders["detected68"], faces, bary, movable, radius)


def calibrate_mediapipe(model, renders: dict, radius: float, skip: set[int]) -> dict[str, np.ndarray]:
    """MediaPipe's 468 mesh points (less ``skip``) moved from the packaged embedding
    (``avatar_jax.fit.dense``); see :func:`calibrate_points`."""
    from avatar_jax.fit import dense

    emb = dense.embedding()
    movable = [k for k in range(dense.NUM_MESH_POINTS) if k not in skip]
    detected = renders["mesh478"][:, :dense.NUM_MESH_POINTS, :2]
    return calibrate_points(model, renders, detected, emb["faces"], emb["bary"], movable, radius)


def parse_skip(text: str) -> set[int]:
    out = set()
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


DATA = REPO / "avatar_jax" / "fit" / "data"
POINT_SETS = {"ibug68": (calibrate, DATA / "ibug68_calibrated.npz"),
              "mediapipe468": (calibrate_mediapipe, DATA / "mediapipe468_calibrated.npz")}


def main(argv=None) -> None:
    from avatar_jax.model import load_head_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--points", choices=sorted(POINT_SETS), default="ibug68",
                    help="the detector's iBUG-68 points (inner 17-67) or MediaPipe's 468 mesh points")
    ap.add_argument("--num", type=int, default=1024)
    ap.add_argument("--radius", type=float, default=20.0, help="mm around the current landmark")
    ap.add_argument("--skip", default="", help="landmarks to keep, e.g. 17-26")
    ap.add_argument("--out", type=Path, default=None, help="default: avatar_jax/fit/data/<points>_calibrated.npz")
    args = ap.parse_args(argv)
    run, default_out = POINT_SETS[args.points]
    out = args.out or default_out
    model = load_head_model()
    result = run(model, load_renders(args.dataset, args.num), args.radius, parse_skip(args.skip))
    manifest = json.loads((args.dataset / "manifest.json").read_text())
    meta = {"dataset_config": manifest.get("config", manifest), "points": args.points, "num": args.num,
            "radius_mm": args.radius, "skip": sorted(parse_skip(args.skip)), "max_abs_yaw_deg": MAX_ABS_YAW,
            "grid": GRID, "num_vertices": model.num_vertices}
    np.savez(out, **result, metadata=json.dumps(meta))
    before, after = (100 * np.nanmean(result[k]) for k in ("error_before", "error_after"))
    print(f"{int(result['renders_used'])} renders; moved points' mean error {before:.2f} -> {after:.2f} % of "
          f"face size; wrote {out}")


if __name__ == "__main__":
    main()
