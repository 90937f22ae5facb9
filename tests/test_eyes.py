"""Clean eyes on the eye caps (avatar_jax.texture.eyes via pipeline.texture_avatar)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar_jax import pipeline
from avatar_jax.io.image import load_image
from avatar_jax.model import load_head_model
from avatar_jax.texture import eyes
from avatar_jax.texture.project import uv_raster

REPO = Path(__file__).resolve().parents[1]
SIZE = 512


def _lab(rgb):
    return cv2.cvtColor(np.asarray(rgb, np.float32).reshape(-1, 1, 3), cv2.COLOR_RGB2Lab).reshape(-1, 3)


@pytest.fixture(scope="module")
def tom():
    model = load_head_model()
    image = load_image(REPO / "examples" / "tom_cruise.jpg")
    faces = pipeline.detect(image)
    res = pipeline.face_fit(pipeline.fit_faces(image, faces, model=model), 0)
    return model, image, faces[0], res


def _eye_cap_texels(avatar, model) -> np.ndarray:
    """``[S, S]`` bool: texels of the two eye caps (cap triangles above the nose tip)."""
    cm = avatar.mesh
    uv = uv_raster(cm, SIZE)
    tri = np.asarray(uv.tri_id)
    v = np.asarray(cm.neutral)
    above = v[np.asarray(cm.triangles)].mean(1)[:, 1] > v[int(cm.nose_tip), 1]
    cap = np.arange(cm.triangles.shape[0]) >= model.triangles.shape[0]
    return np.asarray(uv.inside) & (tri >= 0) & (cap & above)[np.maximum(tri, 0)]


def _lid_colour(image, lms) -> np.ndarray:
    """Median RGB in [0, 1] of the photo's eyelid skin: a ring 2-6 px outside both eye openings."""
    from avatar_jax.landmarks.mediapipe import EYE_CONTOUR_IDS_263, EYE_CONTOUR_IDS_33

    mask = np.zeros(image.shape[:2], np.uint8)
    for ids in (EYE_CONTOUR_IDS_33, EYE_CONTOUR_IDS_263):
        cv2.fillPoly(mask, [np.round(eyes._eyelid_polygon(lms, ids)).astype(np.int32)], 1)
    ring = (cv2.dilate(mask, np.ones((13, 13), np.uint8)) > 0) & ~(cv2.dilate(mask, np.ones((5, 5), np.uint8)) > 0)
    return np.median(image[ring], 0) / 255.0


def test_eye_caps_show_a_clean_eye_in_the_photo_iris_colour(tom):
    model, image, face, res = tom
    plain = pipeline.texture_avatar(image, res, model=model, texture_size=SIZE)
    clean = pipeline.texture_avatar(image, res, model=model, texture_size=SIZE, landmarks478=face.landmarks478)
    caps = _eye_cap_texels(clean, model)
    assert caps.sum() > 300
    obs = eyes.observe_eyes(image, face.landmarks478)
    lid = _lab(_lid_colour(image, face.landmarks478)[None])[0]
    near_lid = {name: float(np.mean(np.linalg.norm(_lab(t.texture[caps] / 255.0) - lid, axis=1) < 10.0))
                for name, t in (("plain", plain), ("clean", clean))}
    assert near_lid["clean"] < 0.05 and near_lid["plain"] > 2 * near_lid["clean"] + 0.1, near_lid  # no lid skin
    lab = _lab(clean.texture[caps].astype(np.float32) / 255.0)
    d = np.min([np.linalg.norm(lab - _lab(o.iris_rgb[None])[0], axis=1) for o in obs], 0)
    assert np.mean(d < 8.0) > 0.05, np.mean(d < 8.0)  # an iris in the photo's colour ...
    assert np.mean(lab[:, 0] < 10.0) > 0.01  # ... with a pupil ...
    assert np.mean(lab[:, 0] > 65.0) > 0.2  # ... in a white sclera


def test_observe_eyes_rejects_landmarks_without_iris(tom):
    _, image, face, _ = tom
    with pytest.raises(ValueError, match="478"):
        eyes.observe_eyes(image, face.landmarks478[:468])
    with pytest.raises(ValueError, match="texel_px_low"):
        eyes.paint_eye_caps(np.zeros((64, 64, 3), np.uint8), np.zeros((16, 16, 2)), np.zeros((16, 16), np.int8), {},
                            eyes.observe_eyes(image, face.landmarks478))
