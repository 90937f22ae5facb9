"""The public pipeline steps (detect -> fit_faces -> texture_avatar -> export_avatar) on the bundled
photo, and reconstruct's per-photo statuses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pygltflib
import pytest
from PIL import Image

from avatar_jax import pipeline
from avatar_jax.io.export import read_glb_rig, split_uv_seams
from avatar_jax.io.image import load_image
from avatar_jax.model import ARKIT_NAMES, load_head_model
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
    assert glb.meshes[0].extras["targetNames"] == list(ARKIT_NAMES)
    report = json.loads(pipeline.write_report(tmp_path / "head.json", str(PHOTO), faces[0], res, model, {}).read_text())
    assert report["status"] == "ok" and report["reprojection_error_px"] < 5.0
    assert list(report["expression"]) == list(ARKIT_NAMES)


@pytest.mark.parametrize("naming", ["arkit", "ict"])
def test_the_rig_rests_neutral_and_its_default_weights_pose_the_fitted_head(photo_fit, tmp_path, naming):
    model, image, faces, fits = photo_fit
    res = pipeline.face_fit(fits, 0)
    avatar = pipeline.texture_avatar(image, res, model=model, texture_size=16)
    (path,) = pipeline.export_avatar(avatar, tmp_path / "rig", formats=("glb",), blendshape_names=naming)
    rig = read_glb_rig(path)
    weights = rig["weights"]
    rest, deltas = rig["positions"].astype(np.float64), rig["targets"].astype(np.float64)
    vid, _, _ = split_uv_seams(np.asarray(avatar.mesh.triangles), np.asarray(avatar.mesh.triangle_uvs))
    posed = rest + np.einsum("k,kvd->vd", weights, deltas)
    np.testing.assert_allclose(posed, avatar.vertices[vid] * 1e-3, atol=2e-6)  # metres
    if naming == "ict":  # the rest pose is the fitted head without any expression
        neutral = avatar.vertices - np.einsum("k,kvd->vd", res.expression, np.asarray(avatar.mesh.expression_basis))
        np.testing.assert_allclose(rest, neutral[vid] * 1e-3, atol=2e-6)
        np.testing.assert_allclose(weights, res.expression, atol=1e-6)


def test_ict_names_on_request(photo_fit, tmp_path, gltf_validate):
    model, image, faces, fits = photo_fit
    res = pipeline.face_fit(fits, 0)
    avatar = pipeline.texture_avatar(image, res, model=model, texture_size=32)
    (path,) = pipeline.export_avatar(avatar, tmp_path / "ict", formats=("glb",), blendshape_names="ict")
    assert pygltflib.GLTF2().load(str(path)).meshes[0].extras["targetNames"] == list(model.expression_names)
    gltf_validate(path)
    report = pipeline.fit_report(res, model, blendshape_names="ict")
    assert report["expression"] == dict(zip(model.expression_names, np.asarray(res.expression).tolist()))
    with pytest.raises(ValueError, match="blendshape_names"):
        pipeline.export_avatar(avatar, tmp_path / "x", formats=("glb",), blendshape_names="apple")


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


def test_blender_imports_the_rig_and_jaw_open_opens_the_mouth(photo_fit, tmp_path, gltf_validate):
    blender = shutil.which("blender")
    if blender is None:
        pytest.skip("Blender is not installed (.ci/run installs Debian's blender and python3-numpy)")
    model, image, faces, fits = photo_fit
    avatar = pipeline.texture_avatar(image, pipeline.face_fit(fits, 0), model=model, texture_size=2048)
    (glb,) = pipeline.export_avatar(avatar, tmp_path / "head", formats=("glb",))
    gltf_validate(glb)
    run = subprocess.run([blender, "-b", "--factory-startup", "--python", str(REPO / "tools/blender/check_avatar.py"),
                          "--", str(glb), str(tmp_path), "--shapes", "jawOpen", "--size", "256",
                          "--fbx", str(tmp_path / "head.fbx")], capture_output=True, text=True, timeout=300,
                         env=_blender_env(blender))
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("AVATAR_JAX_REPORT ")]
    assert run.returncode == 0 and lines, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(lines[0].split(" ", 1)[1])
    assert report["shape_keys"] == list(ARKIT_NAMES)
    # The default pose is the report's expression (its pairs are projected on the uncapped head).
    fitted = pipeline.fit_report(pipeline.face_fit(fits, 0), model)["expression"]
    np.testing.assert_allclose([report["default_weights"][n] for n in ARKIT_NAMES], list(fitted.values()), atol=1e-4)
    assert list(report["images"].values()) == [[2048, 2048]]
    width, depth, height = report["dimensions_m"]  # Blender is Z up, metres
    assert 0.12 < width < 0.35 and 0.12 < depth < 0.35 and 0.2 < height < 0.45
    assert 0.02 < report["moved"]["jawOpen"]["max_m"] < 0.06  # jawOpen drops the chin by centimetres, not metres or mm
    neutral, posed = (np.asarray(Image.open(tmp_path / f"{n}.png").convert("RGB"), np.float64)
                      for n in ("neutral", "jawOpen"))
    diff = np.abs(neutral - posed).mean(-1)
    x0, y0, x1, y1 = np.round(report["moved"]["jawOpen"]["box_px"]).astype(int)
    assert diff[y0:y1 + 1, x0:x1 + 1].mean() > 10.0  # the mouth region changes ...
    top = max(y0 - (y1 - y0) * 2, 1)
    assert diff[:top].mean() < 0.5  # ... and the top of the head does not
    assert (tmp_path / "head.fbx").stat().st_size > 1_000_000  # FBX with the embedded texture


def _blender_env(blender: str) -> dict:
    """Debian's Blender embeds the first ``python3`` on PATH (a virtualenv's or pyenv's lacks the
    system NumPy its glTF importer needs); put the one beside Blender first."""
    return {**os.environ, "PATH": os.path.dirname(blender) + os.pathsep + os.environ.get("PATH", "")}
