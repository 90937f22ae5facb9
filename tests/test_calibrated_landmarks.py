"""The head's iBUG-68 landmarks placed where the detector sees them (avatar_jax.fit.calibrated)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avatar_jax import pipeline
from avatar_jax.fit import dense
from avatar_jax.fit.calibrated import CALIBRATED_FILE, calibrated_ibug68, load_ibug68_set
from avatar_jax.fit.operators import ibug68
from avatar_jax.io.image import load_image
from avatar_jax.io.pts import read_pts
from avatar_jax.landmarks import detect_faces
from avatar_jax.model import load_head_model, sample_surface

@pytest.fixture(scope="module")
def model():
    return load_head_model()


def test_packaged_set_moves_only_inner_points_and_not_far(model):
    cal, ict = calibrated_ibug68(model), ibug68(model)
    assert cal is calibrated_ibug68(model)  # one object per model: the fit's precomputation is reused
    assert cal.sliding == ict.sliding and cal.eye_corners == ict.eye_corners
    np.testing.assert_array_equal(np.asarray(cal.faces)[:17], np.asarray(ict.faces)[:17])
    np.testing.assert_allclose(np.asarray(cal.bary).sum(1), 1.0, atol=1e-5)
    a = np.asarray(sample_surface(model.neutral, cal.faces, cal.bary))
    b = np.asarray(sample_surface(model.neutral, ict.faces, ict.bary))
    moved = np.linalg.norm(a - b, axis=1)
    meta = json.loads(str(np.load(CALIBRATED_FILE)["metadata"]))
    assert moved[:17].max() == 0 and moved[17:].max() < meta["radius_mm"] + 2.0
    assert np.count_nonzero(moved[17:] > 0.5) > 25  # the calibration did move most inner points


def _labelled_faces(testdata):
    """(image file, labels [68, 2]) of every labelled face in the test photos (human or dlib-model labels)."""
    for entry in json.loads((testdata / "manifest.json").read_text())["images"]:
        for pts in [entry.get("landmarks")] + entry.get("additional_faces_landmarks", []):
            if pts:
                yield entry["file"], read_pts(testdata / pts, entry["pts_index_base"])


def test_calibrated_points_match_the_labels_better_on_photos(model, testdata):
    """The head fitted to MediaPipe's 468 points (which ignores the 68 definitions), its inner
    points projected: nearer the labels with the calibrated places than with ICT's."""
    errors, detections = {"ict": [], "calibrated": []}, {}
    for file, gt in _labelled_faces(testdata):
        image = load_image(testdata / file)
        faces = detections.setdefault(file, detect_faces(image, max_faces=None, small_faces=True))
        face = min(faces, key=lambda f: np.linalg.norm(f.landmarks68.mean(0) - gt.mean(0)))
        scale = np.sqrt(np.prod(np.ptp(gt, 0)))
        if np.linalg.norm(face.landmarks68.mean(0) - gt.mean(0)) > 0.5 * scale:
            continue  # not found
        result = dense.fit_dense(face.landmarks478, image.shape[:2], model=model)
        for label in errors:
            pts = dense.fitted_landmarks68(result, model, landmark_set=pipeline.head_landmark_set(model, label))[0]
            errors[label].append(np.linalg.norm(pts[17:] - gt[17:], axis=1).mean() / scale)
    assert len(errors["ict"]) >= 12
    ict, cal = np.mean(errors["ict"]), np.mean(errors["calibrated"])
    assert cal < ict - 0.001, (cal, ict)  # see docs/landmarks.md for the measured figures


def test_names_and_bad_files(model, tmp_path):
    assert pipeline.head_landmark_set(model, "ict").faces is ibug68(model).faces or np.array_equal(
        pipeline.head_landmark_set(model, "ict").faces, model.landmark_faces)
    with pytest.raises(ValueError, match="landmarks on head must be one of"):
        pipeline.head_landmark_set(model, "dlib")
    with pytest.raises(FileNotFoundError, match="no landmark file"):
        load_ibug68_set(model, tmp_path / "missing.npz")
    np.savez(tmp_path / "short.npz", faces=np.zeros((51, 3), np.int32), bary=np.zeros((51, 3), np.float32))
    with pytest.raises(ValueError, match=r"shape \[68, 3\]"):
        load_ibug68_set(model, tmp_path / "short.npz")
    np.savez(tmp_path / "big.npz", faces=np.full((68, 3), 10**7, np.int32), bary=np.ones((68, 3), np.float32) / 3)
    with pytest.raises(ValueError, match="another head"):
        load_ibug68_set(model, tmp_path / "big.npz")
