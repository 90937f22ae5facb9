"""Build the de-identified mean skin: the tone-normalised mean of many photo-baked UV textures.

    python tools/build_mean_skin.py [--photos tests/data/photos] [--size 512]

Every face of every colour photo in ``--photos`` (the test photos: licences in their
manifest.json) is detected, fitted and baked onto the capped head's UV layout
(:func:`avatar_jax.texture.bake.bake_texture`, as ``reconstruct`` does). Each texture is divided
by its own skin colour (so tone and white balance drop out), and the textures are averaged
weighted by how well each texel was seen in its photo; texels no face showed well keep the plain
tone. The mean of many people carries nobody's brows, eyes or lips: the skins that
:mod:`avatar_jax.dataset.skins` grow from it vary tone, detail and features procedurally,
independently of the rendered shape.

Writes ``avatar_jax/dataset/data/mean_skin.png`` (RGB, the normalised mean times a neutral
reference tone) and ``mean_skin.json`` (the faces used, their photos' licences, the reference).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEST = REPO / "avatar_jax" / "dataset" / "data"
REFERENCE_TONE = (0.72, 0.55, 0.45)  # a mid skin tone; the skins re-tone it anyway
# No people; and the same photo of one person again (fr_obama is kept once).
SKIP = {"dlib_dogs.jpg", "fr_32bit.png", "fr_obama_small.jpg", "fr_obama_partial_face.jpg"}
MIN_FACE_PX = 40.0  # smaller faces are too blurry to add features to the mean


def _faces(photos: Path):
    from avatar_jax.io.image import load_image
    from avatar_jax.pipeline import detect

    for path in sorted(photos.iterdir()):
        if path.suffix.lower() not in (".jpg", ".png") or path.name in SKIP:
            continue
        image = load_image(path)
        if np.allclose(image[..., 0], image[..., 1]) and np.allclose(image[..., 1], image[..., 2]):
            continue  # greyscale: no skin colour to learn
        for i, face in enumerate(detect(image, max_faces=None, small_faces=True)):
            box = np.nanmax(face.landmarks68, 0) - np.nanmin(face.landmarks68, 0)
            if float(np.sqrt(np.prod(box))) >= MIN_FACE_PX:
                yield path, i, image, face


def _bake(image, face, size: int):
    from avatar_jax.pipeline import face_fit, fit_faces
    from avatar_jax.texture.bake import bake_plan, bake_texture
    from avatar_jax.texture.caps import capped_model, extend_vertices
    from avatar_jax.model import load_head_model

    model = load_head_model()
    res = face_fit(fit_faces(image, [face], model=model), 0)
    capped, caps = capped_model(model)
    verts = np.asarray(extend_vertices(caps, res.vertices))
    plan = bake_plan(capped, size, np.arange(capped.num_vertices) >= caps.num_base)
    info: dict = {}
    texture = bake_texture(image, verts, res.camera, capped, size, plan=plan, diagnostics=info)
    alpha = cv2.resize(info["alpha"].astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    return texture.astype(np.float64) / 255.0, np.clip(alpha, 0.0, 1.0), np.asarray(info["skin"], np.float64)


def build(photos: Path, size: int) -> tuple[np.ndarray, list[dict]]:
    manifest = {m["file"]: m for m in json.loads((photos / "manifest.json").read_text())["images"]}
    total = np.zeros((size, size, 3))
    weight = np.zeros((size, size, 1))
    used = []
    for path, i, image, face in _faces(photos):
        texture, alpha, skin = _bake(image, face, size)
        total += alpha[..., None] * texture / skin
        weight += alpha[..., None]
        used.append({"photo": path.name, "face": i, "licence": manifest.get(path.name, {}).get("licence", "?")})
        print(f"{path.name} face {i}: skin {np.round(skin, 3).tolist()}")
    seen = weight / max(float(weight.max()), 1e-9)
    # Where few faces were seen the mean is noisy: fade to the plain tone there.
    trust = np.clip(seen / 0.25, 0.0, 1.0)
    mean = np.where(weight > 0, total / np.maximum(weight, 1e-9), 1.0)
    normalised = trust * mean + (1.0 - trust)
    return np.clip(normalised * np.asarray(REFERENCE_TONE), 0.0, 1.0), used


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, default=REPO / "tests" / "data" / "photos")
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args(argv)
    skin, used = build(args.photos, args.size)
    DEST.mkdir(parents=True, exist_ok=True)
    iio.imwrite(DEST / "mean_skin.png", np.round(skin * 255.0).astype(np.uint8))
    (DEST / "mean_skin.json").write_text(json.dumps(
        {"reference_tone": REFERENCE_TONE, "size": args.size, "faces": used,
         "how": "tools/build_mean_skin.py: tone-normalised, visibility-weighted mean of the baked textures"},
        indent=1) + "\n")
    print(f"{len(used)} faces -> {DEST / 'mean_skin.png'}")


if __name__ == "__main__":
    main()
