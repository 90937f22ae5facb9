"""Where the photo meets the synthesized fill, and the collar: CIELAB checks of the baked texture.

    python benchmarks/texture_seam.py [--size 2048] [--photos ...]

For each photo (largest face: detect -> fit -> bake, as ``reconstruct`` does), on the bake's
half-resolution grid:

* **Seam step**: at every texel of the photo/fill boundary (its foreground opacity ``alpha``
  crosses 0.5 towards a 4-neighbour), the CIELAB distance (Delta E 1976) between the mean colour
  of the photo side (``alpha > 0.9``) and of the fill side (``alpha < 0.1``) within a
  ``(2r+1)²`` box; its mean over the boundary. For scale, the **detail step**: the same distance
  between the box means ``r`` texels left and right of the photo's own texels (``alpha > 0.99``),
  the colour change a seam-free texture has over that distance.
* **Collar**: the neck texels (10-60 mm below the chin, front half) against two references: the
  skin (the bake's face-core median) and the clothing (median photo colour below the jaw that
  fails the skin test). Mean Delta E to each, and the share of neck texels closer to the clothing.
* **Face sides**: the texels of the cheeks, jaw and ears (below the eyes, above 10 mm under the
  chin, more than 35 mm off the midline, within 100 degrees of the front): the share whose colour
  is more than :data:`FOREIGN_DE` from the skin's, i.e. hair, background or shadow smeared onto
  them where the fitted silhouette overlaps them in the photo.
* **Cold texels**: the share of the face's texels below the eyes (above 10 mm under the chin,
  in front of the ears) that are green, cyan or blue (YCrCb Cr below the bake's
  ``MOUTH_MIN_CR``): no skin, lip or tooth is; the background at a turned face's silhouette is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTOS = ("examples/tom_cruise.jpg", "examples/obama.jpg")
BOX_RADIUS = 4
FOREIGN_DE = 25.0


def lab(rgb) -> np.ndarray:
    """``[..., 3]`` RGB in [0, 1] -> CIELAB."""
    rgb = np.asarray(rgb, np.float32)
    return cv2.cvtColor(rgb.reshape(-1, 1, 3), cv2.COLOR_RGB2Lab).reshape(rgb.shape)


def _box_mean(x, mask, r):
    """Mean of ``x`` ``[L, L, C]`` over ``mask`` ``[L, L]`` in each ``(2r+1)²`` box, and the count."""
    k = (2 * r + 1,) * 2
    m = mask.astype(np.float32)
    n = cv2.blur(m, k, borderType=cv2.BORDER_CONSTANT)
    return cv2.blur(x * m[..., None], k, borderType=cv2.BORDER_CONSTANT) / np.maximum(n, 1e-6)[..., None], n


def seam_steps(texture, alpha, inside, r=BOX_RADIUS) -> tuple[float, float, int]:
    """(mean seam Delta E, mean detail Delta E, boundary texels) of a ``[S, S, 3]`` uint8 texture
    with the bake's half-resolution ``alpha`` ``[L, L]`` and chart interior ``inside`` ``[L, L]``."""
    low = alpha.shape[0]
    t = lab(cv2.resize(texture, (low, low), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0)
    fg = inside & (alpha > 0.9)
    bg = inside & (alpha < 0.1)
    fg_mean, fg_n = _box_mean(t, fg, r)
    bg_mean, bg_n = _box_mean(t, bg, r)
    hi = inside & (alpha >= 0.5)
    lo = inside & (alpha < 0.5)
    edge = np.zeros_like(hi)
    for axis in (0, 1):
        for shift in (1, -1):
            edge |= hi & np.roll(lo, shift, axis)
    support = (2 * r + 1) ** 2 / 8  # both sides cover at least an eighth of the box
    edge &= (fg_n * (2 * r + 1) ** 2 > support) & (bg_n * (2 * r + 1) ** 2 > support)
    seam = np.linalg.norm(fg_mean - bg_mean, axis=-1)[edge]
    own, own_n = _box_mean(t, inside & (alpha > 0.99), r // 2)
    full = own_n > 0.99
    left, right = np.roll(own, r, 1), np.roll(own, -r, 1)
    ok = full & np.roll(full, r, 1) & np.roll(full, -r, 1)
    detail = np.linalg.norm(left - right, axis=-1)[ok]
    return float(seam.mean()), float(detail.mean()), int(edge.sum())


def _texel_points(model, plan, verts) -> np.ndarray:
    """``[L, L, 3]`` surface point of each half-resolution texel."""
    from avatar_jax.texture.bake import _interpolate

    return np.asarray(_interpolate(jnp.asarray(verts, jnp.float32), plan.uv_low, model.triangles))


def clothing_colour(image, verts, camera, model, skin_stats) -> np.ndarray:
    """Median RGB in [0, 1] of the photo pixels below the jaw (0.08-1 face heights under the chin,
    within the jaw's width) that fail the skin test (the clothing)."""
    from avatar_jax.geometry.camera import project
    from avatar_jax.model.head import landmarks
    from avatar_jax.texture.skin import skin_probability

    lms = np.asarray(project(camera, landmarks(model, jnp.asarray(verts, jnp.float32))))
    chin, brow = lms[8], lms[17:27].mean(0)
    face_h = chin[1] - brow[1]
    x0, x1 = lms[0, 0], lms[16, 0]
    h, w = image.shape[:2]
    rows = slice(int(np.clip(chin[1] + 0.08 * face_h, 0, h)), int(np.clip(chin[1] + 1.0 * face_h, 0, h)))
    cols = slice(int(np.clip(x0, 0, w)), int(np.clip(x1, 0, w)))
    px = image[rows, cols].reshape(-1, 3).astype(np.float32) / 255.0
    if len(px) == 0:
        raise ValueError("clothing_colour: the photo shows nothing below the jaw")
    px = px[skin_probability(px, skin_stats) < 0.2]
    return np.median(px, 0) if len(px) else np.full(3, np.nan)


def collar_check(texture, verts, model, plan, skin, clothing) -> dict:
    """Delta E of the neck texels to the skin and to the clothing, and the share closer to clothing."""
    from avatar_jax.model.head import landmarks

    p = _texel_points(model, plan, verts)
    chin = np.asarray(landmarks(model, jnp.asarray(verts, jnp.float32)))[8]
    neck = np.asarray(plan.uv_low.inside) & (p[..., 1] < chin[1] - 10) & (p[..., 1] > chin[1] - 60) & (p[..., 2] > 0)
    low = plan.uv_low.size
    t = lab(cv2.resize(texture, (low, low), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0)[neck]
    to_skin = np.linalg.norm(t - lab(skin), axis=-1)
    to_cloth = np.linalg.norm(t - lab(clothing), axis=-1)
    return dict(texels=int(neck.sum()), to_skin=float(to_skin.mean()), to_clothing=float(to_cloth.mean()),
                closer_to_clothing=float(np.mean(to_cloth < to_skin)),
                skin_to_clothing=float(np.linalg.norm(lab(skin) - lab(clothing))))


def side_check(texture, verts, model, plan, skin) -> dict:
    """Share of the face-side texels (cheeks, jaw, ears) farther than FOREIGN_DE from the skin."""
    from avatar_jax.model.head import landmarks

    p = _texel_points(model, plan, verts)
    lms = np.asarray(landmarks(model, jnp.asarray(verts, jnp.float32)))
    v = np.asarray(verts)
    band = np.abs(v[:, 1] - lms[17:27, 1].mean()) < 10.0
    z_mid = 0.5 * (v[band, 2].min() + v[band, 2].max())
    azimuth = np.degrees(np.arctan2(np.abs(p[..., 0]), p[..., 2] - z_mid))
    side = (np.asarray(plan.uv_low.inside) & (p[..., 1] < lms[36:48, 1].mean()) & (p[..., 1] > lms[8, 1] - 10)
            & (np.abs(p[..., 0]) > 35) & (azimuth < 100))
    low = plan.uv_low.size
    t = lab(cv2.resize(texture, (low, low), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0)[side]
    far = np.linalg.norm(t - lab(skin), axis=-1) > FOREIGN_DE
    return dict(texels=int(side.sum()), foreign=float(far.mean()))


def cold_check(texture, verts, model, plan) -> dict:
    """Share of the lower face's texels whose colour is green, cyan or blue."""
    from avatar_jax.model.head import landmarks
    from avatar_jax.texture.bake import MOUTH_MIN_CR
    from avatar_jax.texture.skin import ycrcb

    p = _texel_points(model, plan, verts)
    lms = np.asarray(landmarks(model, jnp.asarray(verts, jnp.float32)))
    ears = np.abs(lms[[0, 16], 0]).mean()
    face = (np.asarray(plan.uv_low.inside) & (p[..., 1] < lms[36:48, 1].mean()) & (p[..., 1] > lms[8, 1] - 10)
            & (np.abs(p[..., 0]) < ears) & (p[..., 2] > lms[[0, 16], 2].mean()))
    low = plan.uv_low.size
    t = cv2.resize(texture, (low, low), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return dict(texels=int(face.sum()), cold=float((ycrcb(t[face])[1] < MOUTH_MIN_CR).mean()))


def check_photo(path, model, capped, plan, size) -> dict:
    """Bake one photo and run the four checks."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from hair_scalp import fit_photo

    from avatar_jax.texture.bake import bake_texture

    image, verts, camera = fit_photo(path, model)
    diag = {}
    tex = bake_texture(image, verts, camera, capped, size, plan=plan, diagnostics=diag)
    seam, detail, n = seam_steps(tex, diag["alpha"], np.asarray(plan.uv_low.inside))
    clothing = clothing_colour(image, verts, camera, capped, diag["skin_stats"])
    skin = np.asarray(diag["skin"])
    return dict(seam=seam, detail=detail, boundary=n, clothing=clothing,
                collar=collar_check(tex, verts, capped, plan, skin, clothing),
                sides=side_check(tex, verts, capped, plan, skin), cold=cold_check(tex, verts, capped, plan))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--photos", nargs="+", default=[str(REPO / p) for p in PHOTOS])
    args = ap.parse_args(argv)

    from avatar_jax.model import load_head_model
    from avatar_jax.pipeline import capped_model
    from avatar_jax.texture.bake import bake_plan

    model = load_head_model()
    capped, caps = capped_model(model)
    plan = bake_plan(capped, args.size, np.arange(capped.num_vertices) >= caps.num_base)
    for p in args.photos:
        r = check_photo(p, model, capped, plan, args.size)
        c = r["collar"]
        print(f"{Path(p).name}: seam step dE {r['seam']:.2f} over {r['boundary']} boundary texels "
              f"(detail step {r['detail']:.2f}); neck ({c['texels']} texels) dE to skin {c['to_skin']:.1f}, "
              f"to clothing {np.round(r['clothing'], 2)} {c['to_clothing']:.1f} (skin-clothing "
              f"{c['skin_to_clothing']:.1f}), closer to clothing {100 * c['closer_to_clothing']:.1f} %; "
              f"face sides ({r['sides']['texels']} texels) over dE {FOREIGN_DE:.0f} from skin "
              f"{100 * r['sides']['foreign']:.1f} %; lower-face texels green/cyan/blue "
              f"{100 * r['cold']['cold']:.2f} % of {r['cold']['texels']}")


if __name__ == "__main__":
    main()
