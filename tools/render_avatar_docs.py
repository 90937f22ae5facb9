"""Render avatars reconstructed from the bundled photos for the README (front, three-quarter,
side-back and back: the last two show the scalp the photo does not, see
avatar_jax.texture.hair), and their baked UV textures side by side (docs/texture_atlas.png).

    python tools/render_avatar_docs.py [--out docs] [--texture-size 1024]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import jax.numpy as jnp
import numpy as np

from avatar_jax.geometry.camera import Camera
from avatar_jax.io.image import load_image
from avatar_jax import pipeline
from avatar_jax.model import load_head_model
from avatar_jax.render.preview import render_mesh

REPO = Path(__file__).resolve().parents[1]
PHOTOS = ("tom_cruise.jpg", "obama.jpg")


YAWS = (0.0, 35.0, 120.0, 180.0)


def views(size=512):
    """Cameras at :data:`YAWS` (degrees; 0 = front, 180 = back) looking at the head from 430 mm."""
    out = []
    for yaw in YAWS:
        out.append(Camera(rotvec=jnp.array([0.0, np.deg2rad(yaw), 0.0]), translation=jnp.array([0.0, 25.0, -430.0]),
                          log_fs=jnp.asarray(0.0), focal=jnp.asarray(float(size)),
                          principal=jnp.array([size / 2, size / 2])))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "docs"))
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--no-hair", action="store_true", help="the skin fill on the scalp (before/after)")
    args = ap.parse_args(argv)
    model = load_head_model()
    rows, atlases = [], []
    for name in PHOTOS:
        image = load_image(REPO / "examples" / name)
        faces = pipeline.detect(image)
        res = pipeline.face_fit(pipeline.fit_faces(image, faces, model=model), 0)
        # What reconstruct exports: the capped mesh (eye and mouth openings closed).
        avatar = pipeline.texture_avatar(image, res, model=model, texture_size=args.texture_size,
                                        hair=not args.no_hair, landmarks478=faces[0].landmarks478)
        verts, texture, capped = avatar.vertices, avatar.texture, avatar.mesh
        atlases.append(cv2.resize(texture, (512, 512), interpolation=cv2.INTER_AREA))
        # Render the fitted shape in a neutral pose (the fitted expression is kept).
        tiles = [cv2.resize(image, (int(512 * image.shape[1] / image.shape[0]), 512))]
        for camera in views():
            img = render_mesh(verts, capped.triangles, camera, (512, 512),
                              texture=jnp.asarray(texture, jnp.float32) / 255.0,
                              uvs=capped.uvs, triangle_uvs=capped.triangle_uvs,
                              ambient=0.55)  # the texture is de-lit (texture.delight): light it anew
            tiles.append((np.clip(np.asarray(img), 0, 1) * 255).astype(np.uint8))
        rows.append(np.concatenate(tiles, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    path = Path(args.out) / "avatars.png"
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))
    print(f"wrote {path}")
    atlas = Path(args.out) / "texture_atlas.png"  # the baked UV textures (caps: top islands)
    cv2.imwrite(str(atlas), cv2.cvtColor(np.concatenate(atlases, 1), cv2.COLOR_RGB2BGR))
    print(f"wrote {atlas}")


if __name__ == "__main__":
    main()
