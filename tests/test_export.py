"""Export round trips: OBJ + MTL + PNG through trimesh, .glb through trimesh and pygltflib."""

from __future__ import annotations

import numpy as np
import pygltflib
import pytest
import trimesh

from avatar_jax.io.export import split_uv_seams, write_glb, write_obj
from avatar_jax.model import load_head_model


def _head():
    """(verts mm, triangles, uvs, triangle_uvs, expression deltas, names) of the head."""
    m = load_head_model()
    return (np.asarray(m.neutral), np.asarray(m.triangles), np.asarray(m.uvs),
            np.asarray(m.triangle_uvs), np.asarray(m.expression_basis), list(m.expression_names))


@pytest.fixture(scope="module")
def head():
    return _head()


def _texture(size=64):
    yy, xx = np.mgrid[0:size, 0:size]
    tex = np.stack([xx / size, yy / size, ((xx // 8 + yy // 8) % 2) * 0.8], -1)
    return (tex * 255).astype(np.uint8)


def test_obj_round_trip(tmp_path, head):
    verts, tris, uvs, tri_uvs, _, _ = head
    tex = _texture(64)
    obj, mtl, png = write_obj(tmp_path / "avatar", verts, tris, uvs, tri_uvs, tex)
    assert obj.name == "avatar.obj" and "map_Kd avatar.png" in mtl.read_text()
    mesh = trimesh.load(obj, process=False)
    # trimesh splits vertices at UV seams like any OBJ loader: compare against our split.
    vid, uid, _ = split_uv_seams(tris, tri_uvs)
    assert len(mesh.faces) == len(tris)
    assert len(mesh.vertices) == len(vid)
    # Each loaded face corner has the position and UV we wrote.
    np.testing.assert_allclose(mesh.vertices[mesh.faces], verts[tris], atol=1e-4)
    np.testing.assert_allclose(mesh.visual.uv[mesh.faces], uvs[tri_uvs], atol=1e-5)
    image = mesh.visual.material.image
    assert image.size == (64, 64)
    np.testing.assert_array_equal(np.asarray(image.convert("RGB")), tex)


def test_glb_round_trip(tmp_path, head, gltf_validate):
    verts, tris, uvs, tri_uvs, basis, names = head
    k = 5
    morphs = {n: basis[i] for i, n in enumerate(names[:k])}
    tex = _texture(32)
    path = write_glb(tmp_path / "avatar.glb", verts, tris, uvs, tri_uvs, tex, morphs)

    gl = pygltflib.GLTF2().load(str(path))
    mesh = gl.meshes[0]
    assert mesh.extras["targetNames"] == names[:k]
    assert len(mesh.primitives[0].targets) == k and mesh.weights == [0.0] * k

    scene = trimesh.load(path, process=False)
    (loaded,) = scene.geometry.values()
    vid, uid, faces = split_uv_seams(tris, tri_uvs)
    assert len(loaded.vertices) == len(vid) and len(loaded.faces) == len(tris)
    np.testing.assert_allclose(loaded.vertices, verts[vid] * 1e-3, atol=1e-6)
    # trimesh converts glTF's v-down texcoords back to v-up.
    np.testing.assert_allclose(loaded.visual.uv, uvs[uid], atol=1e-6)
    assert loaded.visual.material.baseColorTexture.size == (32, 32)

    # Morph target deltas survive (metres), including the duplicated seam vertices.
    acc = gl.accessors[mesh.primitives[0].targets[2]["POSITION"]]
    view = gl.bufferViews[acc.bufferView]
    blob = gl.binary_blob()
    delta = np.frombuffer(blob[view.byteOffset:view.byteOffset + view.byteLength],
                          np.float32).reshape(-1, 3)
    np.testing.assert_allclose(delta, basis[2][vid] * 1e-3, atol=1e-7)
    assert acc.min is not None and acc.max is not None
    gltf_validate(path)


def test_glb_without_morph_targets_and_png_texture_validates(tmp_path, head, gltf_validate):
    verts, tris, uvs, tri_uvs, _, _ = head
    path = write_glb(tmp_path / "plain.glb", verts, tris, uvs, tri_uvs, _texture(16), image_format="png")
    gl = pygltflib.GLTF2().load(str(path))
    assert not gl.meshes[0].primitives[0].targets and gl.images[0].mimeType == "image/png"
    gltf_validate(path)


def test_export_rejects_bad_input(tmp_path, head):
    verts, tris, uvs, tri_uvs, _, _ = head
    with pytest.raises(ValueError, match="triangle_uvs"):
        write_obj(tmp_path / "x", verts, tris, uvs, tri_uvs[:-1], _texture())
    with pytest.raises(ValueError, match="texture"):
        write_glb(tmp_path / "x.glb", verts, tris, uvs, tri_uvs, np.zeros((4, 4)))
    with pytest.raises(ValueError, match="morph target 'a'"):
        write_glb(tmp_path / "x.glb", verts, tris, uvs, tri_uvs, _texture(), {"a": verts[:3]})
