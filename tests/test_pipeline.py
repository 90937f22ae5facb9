"""The public pipeline steps (detect -> fit_faces -> texture_avatar -> export_avatar) on the bundled
photo, and reconstruct's per-photo statuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pygltflib
import pytest
from PIL import Image

from avatar_jax import pipeline
from avatar_jax.io.image import load_image
from avatar_jax.model import load_head_model
from avatar_jax.reconstruct import Options, reconstruct
from avatar_jax.status import Status

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "examples" / "tom_cruise.jpg"


@pytest.fixture(scope="module")
def photo_fit():
    model = load_head_model()
    image = load_image(PHOTO)
    faces = pipeline.detect(image)
    return model, image, faces, pipeline.fit_faces(image, faces, model=model)


def test_steps_from_photo_to_files(photo_fit, tmp_path):
    model, image, faces, fits = photo_fit
    assert len(faces) == 1 and fits.vertices.shape == (1, model.num_vertices, 3)
    res = pipeline.face_fit(fits, 0)
    assert Status.of(res.status) == Status.OK
    avatar = pipeline.texture_avatar(image, res, model=model, texture_size=64)
    assert avatar.texture.shape == (64, 64, 3) and avatar.texture.dtype == np.uint8
    assert avatar.vertices.shape == (avatar.mesh.num_vertices, 3) and avatar.mesh.num_vertices > model.num_vertices
    assert avatar.texture.std() > 5  # the photo was baked in, not a flat fill
    files = pipeline.export_avatar(avatar, tmp_path / "head", formats=("glb",))
    assert files == [tmp_path / "head.glb"]
    glb = pygltflib.GLTF2().load(str(files[0]))
    assert len(glb.meshes[0].extras["targetNames"]) == len(model.expression_names)
    report = json.loads(pipeline.write_report(tmp_path / "head.json", str(PHOTO), faces[0], res, model, {}).read_text())
    assert report["status"] == "ok" and report["reprojection_error_px"] < 5.0


def test_detect_resolves_the_fitted_routes(photo_fit):
    _, image, faces, _ = photo_fit
    fitted = pipeline.detect(image, route="fitted")[0].landmarks68
    assert fitted.shape == (68, 2) and np.all(np.isfinite(fitted))
    scale = np.sqrt(np.prod(np.ptp(faces[0].landmarks68, axis=0)))
    assert np.linalg.norm(fitted - faces[0].landmarks68, axis=1).mean() < 0.1 * scale


def test_bad_inputs_name_the_problem(photo_fit, tmp_path):
    model, image, faces, fits = photo_fit
    with pytest.raises(ValueError, match="face_fit"):
        pipeline.texture_avatar(image, fits, model=model, texture_size=64)  # still batched
    with pytest.raises(ValueError, match="texture_size"):
        pipeline.texture_avatar(image, pipeline.face_fit(fits, 0), model=model, texture_size=8)
    with pytest.raises(ValueError, match="no faces"):
        pipeline.fit_faces(image, [])
    avatar = pipeline.texture_avatar(image, pipeline.face_fit(fits, 0), model=model, texture_size=16)
    with pytest.raises(ValueError, match="unknown formats"):
        pipeline.export_avatar(avatar, tmp_path / "x", formats=("fbx",))


def test_reconstruct_reports_a_status_per_photo(tmp_path):
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(blank)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(PHOTO.read_bytes()[:300])
    out = reconstruct([blank, corrupt, tmp_path / "missing.png"], tmp_path / "out", Options(texture_size=32))
    assert [o.status for o in out] == [Status.NO_FACE, Status.UNREADABLE, Status.UNREADABLE]
    assert "corrupt.jpg" in out[1].message and "missing.png" in out[2].message
