"""Optional dlib backend: HOG face detector + 68-point shape predictor.

Needs the ``dlib`` extra (``pip install "avatar-jax[dlib]"``: ``dlib`` and
``face_recognition_models``, which ships ``shape_predictor_68_face_landmarks.dat``).

Licence note: that 68-point predictor was trained on the iBUG 300-W data set, whose terms
exclude commercial use; check them before shipping anything built with this backend.
"""

from __future__ import annotations

import functools

import numpy as np

from avatar_jax.landmarks.types import FaceLandmarks


@functools.lru_cache(maxsize=1)
def _models():
    try:
        import dlib
        import face_recognition_models
    except ImportError as e:
        raise ImportError(
            f"the dlib backend needs the 'dlib' extra (pip install \"avatar-jax[dlib]\"): {e}") from None
    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
    return dlib.get_frontal_face_detector(), predictor


def detect_faces_dlib(image: np.ndarray, max_faces: int | None = None, upsample: int = 1):
    """Faces in ``image`` ``[H, W, 3]`` uint8 RGB, largest first, as ``FaceLandmarks``.

    ``upsample`` doubles the image that many times before detection (dlib's HOG detector finds
    faces down to about 80 px at 0, 40 px at 1).
    """
    detector, predictor = _models()
    rects, scores, _ = detector.run(image, upsample, 0.0)
    order = sorted(range(len(rects)), key=lambda i: rects[i].area(), reverse=True)[:max_faces]
    faces = []
    for i in order:
        r = rects[i]
        shape = predictor(image, r)
        pts = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
        faces.append(FaceLandmarks(box=np.array([r.left(), r.top(), r.right(), r.bottom()], np.float64),
                                   score=float(scores[i]), landmarks68=pts, landmarks478=None,
                                   backend="dlib"))
    return faces
