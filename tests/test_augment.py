"""DR encode/decode/interpolate and the shape-augmentation sampling (avatar_jax.augment)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from avatar_jax.augment import (
    METHODS,
    AugmentConfig,
    Sources,
    augment_shapes,
    component_centroids,
    dr_basis,
    dr_decode,
    dr_encode,
    dr_interpolate,
    encode_sources,
    identity_shapes,
    nearest_neighbours,
    plausibility,
    polar_weights,
    prior_energy,
    sample_identities,
)
from avatar_jax.model import load_head_model

ROUND_TRIP_MM = 1e-4
SMALL = AugmentConfig(num_sources=12)


@pytest.fixture(scope="module")
def model():
    return load_head_model()


@pytest.fixture(scope="module")
def basis(model):
    return dr_basis(np.asarray(model.neutral), np.asarray(model.triangles))


@pytest.fixture(scope="module")
def heads(model):
    """The model's neutral and three identities from its prior ``[4, V, 3]``."""
    sampled = sample_identities(model, 3, 3).shapes
    return np.concatenate([np.asarray(model.neutral, np.float64)[None], sampled])


def _rms(a, b):
    return np.sqrt(np.mean(np.sum((np.asarray(a) - np.asarray(b)) ** 2, -1), -1))


# ----------------------------------------------------------------------------- DR


def test_round_trip_is_below_a_tenth_of_a_micron(basis, heads):
    features = dr_encode(basis, heads)
    assert features.shape == heads.shape[:2] + (9,)
    decoded = dr_decode(basis, features, anchor=component_centroids(basis, heads))
    assert np.all(_rms(decoded, heads) < ROUND_TRIP_MM)


def test_plain_least_squares_features_are_lossy(basis, heads):
    # Why dr_encode has exact=True: the paper's per-vertex fit does not decode to its mesh.
    decoded = dr_decode(basis, dr_encode(basis, heads[1:], exact=False),
                        anchor=component_centroids(basis, heads[1:]))
    assert np.all(_rms(decoded, heads[1:]) > 100 * ROUND_TRIP_MM)


def test_unbatched_round_trip_and_default_anchor(basis, heads):
    features = dr_encode(basis, heads[0])
    assert features.shape == (heads.shape[1], 9)
    np.testing.assert_allclose(features, 0.0, atol=1e-9)  # the reference itself: T = I
    decoded = dr_decode(basis, features)  # default anchor: the reference's centroid
    assert _rms(decoded, heads[0]) < ROUND_TRIP_MM


def test_rigid_rotation_encodes_to_constant_log_rotation(basis, heads):
    rotvec = np.array([0.3, -0.5, 0.2])
    moved = heads[0] @ Rotation.from_rotvec(rotvec).as_matrix().T + np.array([5.0, -3.0, 20.0])
    features = dr_encode(basis, moved)
    np.testing.assert_allclose(features[:, :3], np.broadcast_to(rotvec, (len(moved), 3)), atol=1e-9)
    np.testing.assert_allclose(features[:, 3:], 0.0, atol=1e-9)
    assert _rms(dr_decode(basis, features, anchor=component_centroids(basis, moved)), moved) < ROUND_TRIP_MM


def test_uniform_scale_encodes_to_scaled_identity(basis, heads):
    features = dr_encode(basis, 1.25 * heads[0])
    np.testing.assert_allclose(features[:, :3], 0.0, atol=1e-9)
    np.testing.assert_allclose(features[:, 3:6], 0.25, atol=1e-9)
    np.testing.assert_allclose(features[:, 6:], 0.0, atol=1e-9)


def test_single_subject_interpolation_returns_the_subject(basis, heads):
    features = dr_encode(basis, heads)
    weights = polar_weights(np.array(1.0), np.zeros(len(heads) - 1))
    np.testing.assert_array_equal(weights, [1.0, 0.0, 0.0, 0.0])
    blended = dr_interpolate(features[[2, 0, 1, 3]], weights)
    decoded = dr_decode(basis, blended, anchor=component_centroids(basis, heads[2]))
    assert _rms(decoded, heads[2]) < ROUND_TRIP_MM


def test_interpolate_is_linear_and_batched():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(2, 3, 7, 9))
    w = rng.normal(size=(2, 3))
    out = dr_interpolate(d, w)
    assert out.shape == (2, 7, 9)
    np.testing.assert_allclose(out[1], w[1, 0] * d[1, 0] + w[1, 1] * d[1, 1] + w[1, 2] * d[1, 2])


def test_each_connected_component_gets_its_own_anchor():
    # Two disjoint octahedra: DR fixes one translation per component.
    octa = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
    faces = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    verts = np.concatenate([octa, octa * 2 + 10])
    tris = np.concatenate([faces, faces + 6])
    b = dr_basis(verts, tris)
    assert b.num_components == 2 and list(b.anchors) == [0, 6]
    rng = np.random.default_rng(1)
    shape = verts + 0.1 * rng.normal(size=verts.shape)
    shape[6:] += np.array([3.0, -2.0, 1.0])  # move the second component only
    decoded = dr_decode(b, dr_encode(b, shape), anchor=component_centroids(b, shape)[0])
    assert _rms(decoded, shape) < ROUND_TRIP_MM


def test_dr_rejects_bad_input(basis, heads):
    with pytest.raises(ValueError, match="shapes must have shape"):
        dr_encode(basis, heads[:, :-1])
    nan = heads[:1].copy()
    nan[0, 5, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        dr_encode(basis, nan)
    with pytest.raises(ValueError, match="features must have shape"):
        dr_decode(basis, np.zeros((1, heads.shape[1], 8)))
    with pytest.raises(ValueError, match="anchor"):
        dr_decode(basis, np.zeros((2, heads.shape[1], 9)), anchor=np.zeros((3, 1, 3)))
    with pytest.raises(ValueError, match="weights"):
        dr_interpolate(np.zeros((3, 4, 9)), np.ones(2))
    with pytest.raises(ValueError, match="no triangle"):
        dr_basis(np.zeros((4, 3)) + np.arange(4)[:, None], np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match="outside"):
        dr_basis(np.eye(3), np.array([[0, 1, 3]]))


# ----------------------------------------------------------------------------- sampling


def test_polar_weights_have_norm_r_and_are_non_negative():
    rng = np.random.default_rng(2)
    r = rng.uniform(0.6, 1.3, 50)
    theta = rng.uniform(0, np.pi / 2, (50, 4))
    w = polar_weights(r, theta)
    assert w.shape == (50, 5) and np.all(w >= 0)
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), r)
    np.testing.assert_allclose(polar_weights(np.array(2.0), np.array([np.pi / 3])),
                               [2 * np.cos(np.pi / 3), 2 * np.sin(np.pi / 3)])


def test_sample_identities_follow_the_model(model):
    src = sample_identities(model, 0, 3)
    assert src.coefficients.shape == (3, model.num_identity)
    assert src.shapes.shape == (3, model.num_vertices, 3)
    np.testing.assert_allclose(src.shapes, identity_shapes(model, src.coefficients))
    keyed = sample_identities(model, jax.random.PRNGKey(0), 2)
    assert keyed.coefficients.shape == (2, model.num_identity)
    extra = sample_identities(model, 1, 2, extra_shapes=src.shapes[:2])
    assert extra.num == 4
    np.testing.assert_allclose(extra.coefficients[2:], src.coefficients[:2], atol=1e-6)


def test_nearest_neighbours_exclude_self_and_are_sorted():
    z = np.array([[0.0], [1.0], [3.0], [3.5], [10.0]])
    np.testing.assert_array_equal(nearest_neighbours(z, np.ones(1), 2),
                                  [[1, 2], [0, 2], [3, 1], [2, 1], [3, 2]])
    with pytest.raises(ValueError, match="sources"):
        nearest_neighbours(z, np.ones(1), 5)


def test_augment_is_deterministic_for_a_seed(model):
    a = augment_shapes(model, "dr", 3, seed=7, config=SMALL)
    b = augment_shapes(model, "dr", 3, seed=7, config=SMALL)
    c = augment_shapes(model, "dr", 3, seed=8, config=SMALL)
    np.testing.assert_array_equal(a.shapes, b.shapes)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert not np.allclose(a.shapes, c.shapes)
    assert a.shapes.shape == (3, model.num_vertices, 3)
    assert a.sources.shape == a.weights.shape == (3, 5) and a.theta.shape == (3, 4)
    assert np.all((a.r >= 0.6) & (a.r <= 1.3)) and np.all((a.theta >= 0) & (a.theta <= np.pi / 2))
    np.testing.assert_allclose(a.weights, polar_weights(a.r, a.theta))


def test_groups_are_a_subject_and_its_nearest_neighbours(model):
    src = sample_identities(model, 4, 12)
    res = augment_shapes(model, "linear", 6, seed=1, sources=src)
    near = nearest_neighbours(src.coefficients, model.identity_sigma, 4)
    np.testing.assert_array_equal(res.sources[:, 1:], near[res.sources[:, 0]])


def test_baselines_behave_as_defined(model):
    src = sample_identities(model, 5, 12)
    none = augment_shapes(model, "none", 6, seed=2, sources=src)
    np.testing.assert_array_equal(none.shapes, src.shapes[none.sources[:, 0]])
    np.testing.assert_array_equal(none.weights, np.eye(5)[np.zeros(6, int)])

    cpca = augment_shapes(model, "cpca", 6, seed=2, sources=src)
    np.testing.assert_allclose(cpca.weights.sum(1), 1.0)
    assert np.all(np.isnan(cpca.r)) and np.all(np.isnan(cpca.theta))
    np.testing.assert_allclose(cpca.shapes, np.einsum("nm,nmvd->nvd", cpca.weights, src.shapes[cpca.sources]))
    assert np.all(plausibility(model, cpca.shapes).residual_rms < 1e-6)  # inside the linear span

    linear = augment_shapes(model, "linear", 6, seed=2, sources=src)
    ref = src.shapes.mean(0)
    np.testing.assert_allclose(linear.shapes,
                               ref + np.einsum("nm,nmvd->nvd", linear.weights, src.shapes[linear.sources] - ref))


def test_dr_samples_are_heads_near_the_identity_span(model):
    src = sample_identities(model, 6, 12)
    dr = augment_shapes(model, "dr", 4, seed=3, sources=src)
    linear = augment_shapes(model, "linear", 4, seed=3, sources=src)
    np.testing.assert_array_equal(dr.weights, linear.weights)
    # DR is nonlinear (leaves the span a little) but stays close to the linear blend.
    off = _rms(dr.shapes, linear.shapes)
    assert np.all(off > 1e-3) and np.all(off < 3.0)
    assert np.all(plausibility(model, dr.shapes).residual_rms < 2.0)


def test_plausibility_measures(model):
    src = sample_identities(model, 9, 3)
    p = plausibility(model, src.shapes)
    assert np.all(p.residual_rms < 1e-6)
    np.testing.assert_allclose(p.prior_energy, prior_energy(model, src.coefficients), rtol=1e-6)
    bumped = src.shapes.copy()
    bumped[:, :, 2] += np.random.default_rng(0).normal(0, 1.0, bumped.shape[:2])  # off-span noise
    assert np.all(plausibility(model, bumped).residual_rms > 0.5)


def test_augment_rejects_bad_input(model):
    src = sample_identities(model, 0, 4)
    with pytest.raises(ValueError, match="larger than the number of sources"):
        augment_shapes(model, "dr", 2, seed=0, sources=src)
    with pytest.raises(ValueError, match="method"):
        augment_shapes(model, "pca", 2, seed=0, sources=src)
    with pytest.raises(ValueError, match="positive int"):
        augment_shapes(model, "none", 0, seed=0, sources=src)
    with pytest.raises(ValueError, match="source shapes must have shape"):
        augment_shapes(model, "none", 2, seed=0, sources=src.shapes[:, :10])
    nan = src.shapes.copy()
    nan[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        augment_shapes(model, "none", 2, seed=0, sources=nan)
    with pytest.raises(ValueError, match="coefficients"):
        augment_shapes(model, "none", 2, seed=0, sources=Sources(src.coefficients[:, :3], src.shapes))
    assert set(METHODS) == {"dr", "linear", "cpca", "none"}


def test_precomputed_source_features_give_the_same_dr_samples(model):
    sources = sample_identities(model, 5, 12)
    plain = augment_shapes(model, "dr", 4, 9, sources=sources, config=SMALL)
    encoded = encode_sources(model, sources)
    assert encoded.dr_features.shape == (12, model.num_vertices, 9)
    again = augment_shapes(model, "dr", 4, 9, sources=encoded, config=SMALL)
    np.testing.assert_allclose(again.shapes, plain.shapes, atol=1e-9)
    # Features encoded with the other exactness flag are not reused.
    inexact = augment_shapes(model, "dr", 4, 9, sources=encode_sources(model, sources, exact=False), config=SMALL)
    np.testing.assert_allclose(inexact.shapes, plain.shapes, atol=1e-9)
