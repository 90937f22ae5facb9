"""avatar_jax.evaluate.eos_peer: our head model converted for eos-py, and eos's fit on a synthetic head."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

eos = pytest.importorskip("eos")

from avatar_jax.fit import synthetic  # noqa: E402
from avatar_jax.model import load_head_model  # noqa: E402

@pytest.fixture(scope="module")
def peer():
    from avatar_jax.evaluate import eos_peer

    return eos_peer


@pytest.fixture(scope="module")
def model():
    return load_head_model()


@pytest.fixture(scope="module")
def bundle(peer, model, tmp_path_factory):
    return peer.make_bundle(model, out_dir=tmp_path_factory.mktemp("eos_files"))


def test_conversion_reproduces_mean_blendshapes_and_identity(peer, model, bundle):
    shape = bundle.morphable_model.get_shape_model()
    neutral = np.asarray(model.neutral)
    np.testing.assert_array_equal(np.asarray(shape.get_mean()).reshape(-1, 3), neutral)
    blendshapes = bundle.morphable_model.get_expression_model()
    assert [b.name for b in blendshapes] == list(model.expression_names)
    for j in (0, 17, model.num_expression - 1):
        np.testing.assert_array_equal(np.asarray(blendshapes[j].deformation).reshape(-1, 3),
                                      np.asarray(model.expression_basis[j]))
    u = np.asarray(shape.get_orthonormal_pca_basis(), np.float64)
    np.testing.assert_allclose(u.T @ u, np.eye(model.num_identity), atol=1e-4)
    # eos's sample for z = W^T c equals ours for identity = sigma * c, and the priors agree (|z| = |c|)
    c = np.random.default_rng(0).normal(size=model.num_identity)
    z = bundle.coeff_rotation.T @ c
    ours = neutral + np.einsum("k,kvd->vd", np.asarray(model.identity_sigma) * c,
                               np.asarray(model.identity_basis))
    eos_sample = np.asarray(shape.draw_sample(z.astype(np.float32))).reshape(-1, 3)
    np.testing.assert_allclose(eos_sample, ours, atol=2e-3)
    assert abs(np.linalg.norm(z) - np.linalg.norm(c)) < 1e-9


def _edge_topology_brute_force(triangles):
    faces_of = {}
    for f, tri in enumerate(triangles, start=1):
        for a, b in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0])):
            faces_of.setdefault((min(a, b) + 1, max(a, b) + 1), []).append(f)
    edges = sorted(faces_of)
    faces = [faces_of[e][:2] if len(faces_of[e]) > 1 else [0, faces_of[e][0]] for e in edges]
    return np.array(faces), np.array(edges)


def test_edge_topology_matches_brute_force(peer, model):
    for tris in (np.array([[0, 1, 2], [2, 1, 3], [3, 1, 4]]), np.asarray(model.triangles)):
        faces, verts = peer.edge_topology(tris)
        ref_faces, ref_verts = _edge_topology_brute_force(tris.tolist())
        np.testing.assert_array_equal(verts, ref_verts)
        np.testing.assert_array_equal(faces, ref_faces)


def test_mapper_and_contour_files(peer, model, bundle, tmp_path):
    peer.make_bundle(model, out_dir=tmp_path)
    vid = peer.landmark_vertex_ids(model)
    assert bundle.landmark_mapper.convert("31") == str(vid[30])
    assert bundle.landmark_mapper.convert("9") == str(vid[8])
    assert bundle.landmark_mapper.convert("1") is None and bundle.landmark_mapper.convert("17") is None
    contour = json.loads((tmp_path / "head_model_contours.json").read_text())["model_contour"]
    cand = np.asarray(model.contour_candidates)
    assert set(contour["right_contour"]) == set(cand[0:8].ravel().tolist())
    assert set(contour["left_contour"]) == set(cand[9:17].ravel().tolist())
    assert len(contour["right_contour"]) == len(set(contour["right_contour"]))
    # +X is the subject's left: the right contour lies at x < 0
    neutral = np.asarray(model.neutral)
    assert neutral[contour["right_contour"], 0].mean() < 0 < neutral[contour["left_contour"], 0].mean()


def test_eos_fit_on_a_synthetic_head(peer, model, bundle):
    batch = synthetic.numpy(synthetic.sample(model, jax.random.PRNGKey(3), 2, yaw_deg=30.0))
    lm = batch.landmarks[0]
    out = peer.eos_fit(bundle, lm, tuple(int(s) for s in batch.image_sizes[0]), iterations=5)
    assert out["vertices"].shape == (model.num_vertices, 3) and np.all(np.isfinite(out["vertices"]))
    assert out["shape_coeffs"].shape == (model.num_identity,)
    assert out["blendshape_coeffs"].shape == (model.num_expression,)
    assert np.all(out["blendshape_coeffs"] >= 0)  # eos fits blendshapes by NNLS
    assert out["landmarks2d"].shape == (68, 2) and out["time_s"] > 0
    # our projection is eos's own affine camera
    h, w = (int(s) for s in batch.image_sizes[0])
    affine = np.asarray(eos.fitting.get_3x4_affine_camera_matrix(out["rendering_parameters"], w, h))
    x = out["vertices"][:100]
    np.testing.assert_allclose(peer.project_eos(x, out["modelview"], out["projection"], (h, w)),
                               np.c_[x, np.ones(len(x))] @ affine[:2].T, atol=1e-3)
    # a real fit: a few px on average (this head: 5.1 px; 16.6 px with the contour sides swapped)
    assert out["reprojection_error"] < 10.0
    # the fitted mesh is our model evaluated at the returned coefficients
    ours = (np.asarray(model.neutral)
            + np.einsum("k,kvd->vd", out["identity"], np.asarray(model.identity_basis))
            + np.einsum("k,kvd->vd", out["blendshape_coeffs"], np.asarray(model.expression_basis)))
    np.testing.assert_allclose(out["vertices"], ours, atol=5e-2)


def test_bad_inputs_raise_clear_errors(peer, bundle):
    with pytest.raises(ValueError, match="landmarks68"):
        peer.eos_fit(bundle, np.zeros((67, 2)), (480, 640))
    with pytest.raises(ValueError, match="non-finite"):
        peer.eos_fit(bundle, np.full((68, 2), np.nan), (480, 640))
    with pytest.raises(ValueError, match="image_size"):
        peer.eos_fit(bundle, np.zeros((68, 2)), (0, 640))
    with pytest.raises(TypeError, match="make_bundle"):
        peer.eos_fit(bundle.morphable_model, np.zeros((68, 2)), (480, 640))
