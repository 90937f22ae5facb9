"""Do reconstructed face shapes carry identity? Same- vs different-person distances on real photos.

    python experiments/identity_auc.py [--regressors RUN/regressor.npz ...] [--photos ../shared/testdata]

Every face of the test photos (``manifest.json``: ``identity``; a photo with several named people
lists them left to right, faces beyond the list are unnamed) is detected and fitted with the full energy on
each shape source (``landmarks``, ``dense``, each regressor). Its neutral face shape is the
fitted mesh without the fitted expression, face region only (``model.face_mask``), rigidly
aligned to the other (rotation + translation, no scale). Reports the mean same-person and
different-person RMS distance and the verification AUC (the chance that a random same-person
pair is closer than a random different-person pair). Faces without an identity label join the
different-person pairs only. Photos that are resized or re-encoded copies of another photo
(``SAME_PHOTO``) are left out: they would be trivially close.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAME_PHOTO = {"fr_obama_small.jpg", "fr_32bit.png", "fr_obama_partial_face.jpg"}  # copies of fr_obama
NOT_PEOPLE = {"dlib_dogs.jpg"}
# ~25 faces of 4 people with no per-face labels: its pairs could be either, so it is left out.
UNLABELLED_FACES = {"dlib_bald_guys.jpg"}


def _faces(photos: Path):
    """``(photo, identity or None, image, face)`` for every usable face, left to right per photo."""
    from avatar_jax.io.image import load_image
    from avatar_jax.pipeline import detect

    manifest = json.loads((photos / "manifest.json").read_text())["images"]
    for entry in manifest:
        if entry["file"] in SAME_PHOTO | NOT_PEOPLE | UNLABELLED_FACES:
            continue
        image = load_image(photos / entry["file"])
        faces = sorted(detect(image, max_faces=None), key=lambda f: f.box[0])
        names = entry.get("identity")
        names = names if isinstance(names, list) else [names] * len(faces) if len(faces) == 1 else [None] * len(faces)
        for face, name in zip(faces, names + [None] * (len(faces) - len(names))):
            yield entry["file"], name, image, face


def _neutral(model, res) -> np.ndarray:
    verts = np.asarray(res.vertices)[0]
    return verts - np.einsum("k,kvd->vd", np.asarray(res.expression)[0], np.asarray(model.expression_basis))


def _rigid_rms(a: np.ndarray, b: np.ndarray) -> float:
    a0, b0 = a - a.mean(0), b - b.mean(0)
    u, _, vt = np.linalg.svd(a0.T @ b0)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    return float(np.sqrt(np.mean(np.sum((a0 @ rot - b0) ** 2, -1))))


def _auc(same: np.ndarray, diff: np.ndarray) -> float:
    """P(same-person distance < different-person distance), ties count half."""
    s, d = same[:, None], diff[None, :]
    return float(np.mean((s < d) + 0.5 * (s == d)))


def verification_summary(label: str, same, diff, width: int = 36) -> dict:
    """Mean same- and different-person distances and the AUC of two lists of distances (printed)."""
    same, diff = np.array(same), np.array(diff)
    out = {"same_pairs": len(same), "different_pairs": len(diff), "same_mm": float(same.mean()),
           "different_mm": float(diff.mean()), "auc": _auc(same, diff)}
    print(f"{label:<{width}} same {same.mean():.2f} mm ({len(same)})  different {diff.mean():.2f} mm ({len(diff)})  "
          f"AUC {out['auc']:.3f}")
    return out


def main(argv=None) -> None:
    from avatar_jax import pipeline
    from avatar_jax.model import load_head_model
    from avatar_jax.regress import load_regressor

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "testdata")
    ap.add_argument("--regressors", nargs="*", default=[])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "regress")
    args = ap.parse_args(argv)
    model = load_head_model()
    faces = list(_faces(args.photos))
    sources = {"landmarks": {}, "dense": {}}
    sources.update({f"regressor ({load_regressor(p).encoder}, {Path(p).parent.name})":
                    {"regressor": load_regressor(p)} for p in args.regressors})
    mask = np.asarray(model.face_mask)
    result = {"faces": [[f, n] for f, n, _, _ in faces]}
    for name, kwargs in sources.items():
        source = "landmarks" if name == "landmarks" else "dense" if name == "dense" else "regressor"
        shapes = []
        for _, _, image, face in faces:
            base = pipeline.base_shapes(image, [face], source, model=model, **kwargs)
            shapes.append(_neutral(model, pipeline.fit_faces(image, [face], model=model, base_shapes=base))[mask])
        same, diff = [], []
        for (i, (_, a, _, _)), (j, (_, b, _, _)) in itertools.combinations(enumerate(faces), 2):
            dist = _rigid_rms(shapes[i], shapes[j])
            (same if a is not None and a == b else diff).append(dist)
        result[name] = verification_summary(name, same, diff)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "identity_auc.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
