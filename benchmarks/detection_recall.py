"""Face detection recall, false positives and cost per megapixel, per detector configuration.

    python benchmarks/detection_recall.py [--data ../shared/testdata] [--crops 40]

Labelled faces: every ``.pts`` file of the data folder (``NAME.pts`` and ``NAME_faceK.pts``; index
base from its manifest); a face counts as found when a detected face's landmark box overlaps its
label box at IoU > 0.3. Also run: ``dlib_dogs.jpg`` (no human face), two unlabelled group photos
(detections counted), and ``--crops`` random crops (up to 256 px) per photo that overlap no face
found with tiling (detections there are false positives or unlabelled faces: look at them).
Configurations: short range alone (the earlier default), full range + short range (the default),
each without tiles, with tiles where the full frame finds none, and always tiled. Cost: wall ms per
megapixel over all photos, mesh and iris per face included. Absolute times drift on shared
machines.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from avatar_jax.io.image import load_image
from avatar_jax.io.pts import read_pts
from avatar_jax.landmarks.api import detect_faces
from avatar_jax.landmarks.mediapipe import FaceMeshPipeline, box_iou

UNLABELLED = ("dlib_dogs.jpg", "dlib_bald_guys.jpg", "fr_obama_and_biden.jpg")


def labelled(data: Path) -> list[tuple[Path, list[np.ndarray]]]:
    """(photo, label boxes) of every manifest entry with 68-point labels."""
    out = []
    for entry in json.loads((data / "manifest.json").read_text())["images"]:
        if entry.get("landmarks"):
            names = [entry["landmarks"], *entry.get("additional_faces_landmarks", [])]
            pts = [read_pts(data / n, entry["pts_index_base"]) for n in names]
            out.append((data / entry["file"], [np.concatenate([p.min(0), p.max(0)]) for p in pts]))
    return out


def boxes_of(faces) -> list[np.ndarray]:
    return [np.concatenate([f.landmarks68.min(0), f.landmarks68.max(0)]) for f in faces]


def non_face_crops(photos, per_photo: int, rng) -> list[np.ndarray]:
    crops = []
    for path in photos:
        img = load_image(path)
        faces = boxes_of(detect_faces(img, small_faces=True, max_faces=None))
        h, w = img.shape[:2]
        s = min(256, h // 2, w // 2)
        for _ in range(per_photo):
            x, y = rng.integers(0, w - s), rng.integers(0, h - s)
            pad = 0.5 * s
            if not any(x <= b[2] + pad and x + s >= b[0] - pad and y <= b[3] + pad and y + s >= b[1] - pad
                       for b in faces):
                crops.append(np.ascontiguousarray(img[y:y + s, x:x + s]))
    return crops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "testdata")
    ap.add_argument("--crops", type=int, default=40, help="random crops per photo for false positives")
    args = ap.parse_args()
    faces = labelled(args.data)
    others = [args.data / n for n in UNLABELLED if (args.data / n).is_file()]
    photos = [p for p, _ in faces] + others
    crops = non_face_crops(photos, args.crops, np.random.default_rng(0))
    images = {p: load_image(p) for p in photos}
    megapixels = sum(im.shape[0] * im.shape[1] for im in images.values()) / 1e6
    total = sum(len(b) for _, b in faces)
    print(f"{total} labelled faces in {len(faces)} photos; {len(crops)} non-face crops; {megapixels:.1f} MP\n")
    print("| detector | tiles | labelled faces found | " + " | ".join(p.name for p in others)
          + " | detections on non-face crops | ms/MP |")
    print("|---|---|---|" + "---|" * len(others) + "---|---|")
    for name in ("short_range", "full_range"):
        pipe = FaceMeshPipeline(detector=name)
        for small, label in ((False, "never"), (None, "where none found"), (True, "always")):
            run = lambda im: detect_faces(im, small_faces=small, max_faces=None, pipeline=pipe)  # noqa: E731
            t = time.perf_counter()
            found = {p: run(im) for p, im in images.items()}
            ms_per_mp = (time.perf_counter() - t) * 1000 / megapixels
            hits = sum(any(box_iou(b, g) > 0.3 for g in boxes_of(found[p])) for p, bs in faces for b in bs)
            fp = sum(len(run(c)) for c in crops)
            print(f"| {name} | {label} | {hits}/{total} | " + " | ".join(str(len(found[p])) for p in others)
                  + f" | {fp} | {ms_per_mp:.0f} |", flush=True)


if __name__ == "__main__":
    main()
