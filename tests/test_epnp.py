"""EPnP against OpenCV's SOLVEPNP_EPNP and ground truth; masking, batching, degenerate input."""

from __future__ import annotations

from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from avatar_jax.geometry import camera as cam
from avatar_jax.fit.epnp import epnp, epnp_camera

N = 68  # every test uses 68 points and batches of B so the compiled functions are shared
B = 12
K = np.array([[900.0, 0.0, 330.0], [0.0, 900.0, 250.0], [0.0, 0.0, 1.0]])
ICT = Path(__file__).resolve().parent / "data" / "ict_facekit" / "ict_head.npz"


@pytest.fixture(scope="module")
def face_points() -> np.ndarray:
    """The 68 iBUG landmark vertices of the ICT neutral head, mm, model frame."""
    data = np.load(ICT)
    return data["vertices"][data["landmarks68"]].astype(np.float64)


def _random_cloud(rng) -> np.ndarray:
    return rng.uniform(-80, 80, size=(N, 3))


def _poses(rng, batch):
    """OpenCV poses ``R [B, 3, 3]``, ``t [B, 3]`` of a face: yaw +-60, pitch +-20 deg, 0.4-0.9 m."""
    angles = np.stack([rng.uniform(-60, 60, batch), rng.uniform(-20, 20, batch)], -1)
    rot_gl = Rotation.from_euler("yx", angles, degrees=True).as_matrix()
    rot = np.diag([1.0, -1.0, -1.0]) @ rot_gl
    trans = np.stack([rng.uniform(-40, 40, batch), rng.uniform(-40, 40, batch),
                      rng.uniform(400, 900, batch)], -1)
    return rot, trans


def _project(points, rot, trans):
    cam_pts = points @ rot.T + trans
    pix = cam_pts @ K.T
    return pix[..., :2] / pix[..., 2:]


def _angle(rot_a, rot_b) -> float:
    rel = np.asarray(rot_a, np.float64) @ np.asarray(rot_b, np.float64).T
    return float(np.linalg.norm(Rotation.from_matrix(rel).as_rotvec()))


def _problems(points, rng, batch, noise):
    """Batch of (points3d [B,N,3], points2d [B,N,2], true R, true t)."""
    rot, trans = _poses(rng, batch)
    pts = np.stack([points(rng) if callable(points) else points for _ in range(batch)])
    uv = np.stack([_project(pts[b], rot[b], trans[b]) for b in range(batch)])
    return pts, uv + rng.normal(0.0, noise, uv.shape), rot, trans


_batched = jax.jit(jax.vmap(lambda p, q: epnp(p, q, K, refine_steps=0)))
_batched_refined = jax.jit(jax.vmap(lambda p, q: epnp(p, q, K)))


def _opencv(pts, uv):
    _, rvec, tvec = cv2.solvePnP(pts, uv, K, None, flags=cv2.SOLVEPNP_EPNP)
    return cv2.Rodrigues(rvec)[0], tvec[:, 0]


@pytest.mark.parametrize("kind", ["face", "cloud"])
def test_noise_free_matches_opencv_and_truth(kind, face_points):
    rng = np.random.default_rng(0)
    points = face_points if kind == "face" else _random_cloud
    pts, uv, rot, trans = _problems(points, rng, B, noise=0.0)
    ours_r, ours_t, err, ok = _batched(pts, uv)
    ref_r, ref_t, ref_err, _ = _batched_refined(pts, uv)
    assert np.all(ok)
    for b in range(len(pts)):
        cv_r, cv_t = _opencv(pts[b], uv[b])
        assert _angle(cv_r, rot[b]) < 1e-3
        assert _angle(ours_r[b], cv_r) < 1e-3
        assert _angle(ours_r[b], rot[b]) < 1e-3
        assert _angle(ref_r[b], rot[b]) < 1e-4
        np.testing.assert_allclose(ours_t[b], trans[b], rtol=2e-3, atol=0.5)
        np.testing.assert_allclose(ref_t[b], trans[b], rtol=1e-4, atol=0.05)
    assert float(jnp.max(ref_err)) < 0.02  # pixels
    # Solutions put the points in front of the camera (z_cv > 0).
    depth = (np.einsum("bj,bnj->bn", np.asarray(ours_r)[:, 2], pts)
             + np.asarray(ours_t)[:, None, 2])
    assert np.all(depth > 0)


@pytest.mark.parametrize("kind", ["face", "cloud"])
def test_noisy_accuracy_same_order_as_opencv(kind, face_points):
    rng = np.random.default_rng(1)
    points = face_points if kind == "face" else _random_cloud
    pts, uv, rot, trans = (np.concatenate(a) for a in zip(*(
        _problems(points, rng, B, noise=1.5) for _ in range(2))))
    ours_r, _, err, ok = (np.concatenate(a) for a in zip(_batched(pts[:B], uv[:B]),
                                                          _batched(pts[B:], uv[B:])))
    ref_r, _, ref_err, _ = (np.concatenate(a) for a in zip(_batched_refined(pts[:B], uv[:B]),
                                                            _batched_refined(pts[B:], uv[B:])))
    assert np.all(ok)
    cv_rot = [_opencv(pts[b], uv[b])[0] for b in range(len(pts))]
    cv_err = np.median([_angle(cv_rot[b], rot[b]) for b in range(len(pts))])
    ours = np.median([_angle(ours_r[b], rot[b]) for b in range(len(pts))])
    refined = np.median([_angle(ref_r[b], rot[b]) for b in range(len(pts))])
    assert ours < 1.5 * cv_err + 1e-3, (ours, cv_err)
    assert refined < 1.5 * cv_err + 1e-3, (refined, cv_err)
    # Each LM step is accepted only if it lowers the (squared) reprojection cost.
    assert float(jnp.mean(ref_err)) <= float(jnp.mean(err)) + 1e-3
    # ~1.5 px noise gives a mean pixel distance of about 1.5 * sqrt(pi/2) ~ 1.9 px.
    assert 1.0 < float(jnp.mean(ref_err)) < 2.5


def test_batched_equals_looped_and_nan_is_isolated(face_points):
    rng = np.random.default_rng(2)
    pts, uv, rot, _ = _problems(face_points, rng, B, noise=1.0)
    uv[1] = np.nan  # one broken batch item
    pts[2, 5] = np.nan  # one broken landmark in another item
    rots, trans, err, ok = _batched_refined(pts, uv)
    assert ok.tolist() == [True, False] + [True] * (B - 2)
    for arr in (rots, trans):
        assert np.all(np.isfinite(np.asarray(arr)))
    np.testing.assert_array_equal(rots[1], np.eye(3))
    for b in (0, 2, 3):
        single = epnp(pts[b], uv[b], K)
        np.testing.assert_allclose(rots[b], single[0], atol=1e-5)
        np.testing.assert_allclose(trans[b], single[1], rtol=1e-5, atol=1e-2)
        assert _angle(rots[b], rot[b]) < 0.03


def test_zero_weight_and_nan_points_have_no_influence(face_points):
    rng = np.random.default_rng(3)
    pts, uv, _, _ = _problems(face_points, rng, 1, noise=1.0)
    pts, uv = pts[0], uv[0]
    weights = np.ones(N)
    weights[:8] = 0.0
    weights[8] = np.nan  # NaN weight counts as missing
    base = epnp(pts, uv, K, weights)
    corrupted_pts, corrupted_uv = pts.copy(), uv.copy()
    corrupted_pts[:4] = 1e5
    corrupted_uv[4:9] = -3e4
    corrupted_uv[60] = np.nan  # a NaN landmark is dropped even with weight 1
    weights_nan = weights.copy()
    other = epnp(corrupted_pts, corrupted_uv, K, weights_nan)
    w60 = weights.copy()
    w60[60] = 0.0
    reference = epnp(pts, uv, K, w60)
    assert bool(base[3]) and bool(other[3])
    np.testing.assert_allclose(other[0], reference[0], atol=1e-5)
    np.testing.assert_allclose(other[1], reference[1], rtol=1e-5, atol=1e-2)
    assert _angle(base[0], reference[0]) < 5e-3  # one landmark less barely moves it


def test_degenerate_input_is_flagged_with_finite_outputs(face_points):
    rng = np.random.default_rng(4)
    pts, uv, _, _ = _problems(face_points, rng, 1, noise=0.0)
    pts, uv = pts[0], uv[0]
    five = np.zeros(N)
    five[:5] = 1.0
    line = np.linspace(0, 1, N)[:, None] * np.array([30.0, -10.0, 20.0])
    cases = {"all_nan": (pts * np.nan, uv, np.ones(N)), "five_valid": (pts, uv, five),
             "collinear": (line, uv, np.ones(N)), "zero_weights": (pts, uv, np.zeros(N)),
             "one_pixel": (pts, np.broadcast_to(uv[0], uv.shape), np.ones(N))}
    for name, (p, q, w) in cases.items():
        rot, trans, err, ok = epnp(p, q, K, w)
        assert not bool(ok), name
        np.testing.assert_array_equal(rot, np.eye(3), err_msg=name)
        np.testing.assert_array_equal(trans, np.zeros(3), err_msg=name)
        assert float(err) == np.inf, name
    six = np.zeros(N)
    six[[0, 8, 16, 30, 48, 54]] = 1.0  # six well spread landmarks are enough
    assert bool(epnp(pts, uv, K, six)[3])


def test_exactly_planar_points(face_points):
    rng = np.random.default_rng(5)
    planar = face_points * np.array([1.0, 1.0, 0.0])
    pts, uv, rot, trans = _problems(planar, rng, B, noise=0.0)
    rots, trs, _, ok = _batched_refined(pts, uv)
    assert np.all(ok)
    for b in range(B):
        assert _angle(rots[b], rot[b]) < 1e-3
        np.testing.assert_allclose(trs[b], trans[b], rtol=1e-3, atol=0.5)


def test_epnp_camera_recovers_our_convention(face_points):
    rng = np.random.default_rng(6)
    size = np.array([480, 640])
    for yaw, pitch in [(-55.0, 15.0), (0.0, 0.0), (35.0, -18.0)]:
        rotvec = Rotation.from_euler("yx", [yaw, pitch], degrees=True).as_rotvec()
        translation = np.array([rng.uniform(-30, 30), rng.uniform(-30, 30), -rng.uniform(400, 900)])
        truth = cam.camera_from_image_size(size, rotvec.astype(np.float32),
                                           translation.astype(np.float32), 0.3)
        uv = jax.jit(cam.project)(truth, jnp.asarray(face_points, jnp.float32))
        fitted, ok = epnp_camera(jnp.asarray(face_points, jnp.float32), uv, size, 0.3)
        assert bool(ok)
        np.testing.assert_allclose(fitted.rotvec, rotvec, atol=1e-4)
        np.testing.assert_allclose(fitted.translation, translation, rtol=1e-4, atol=0.05)
        np.testing.assert_allclose(fitted.log_fs, 0.3, atol=1e-6)
        np.testing.assert_allclose(fitted.principal, truth.principal)
        assert np.all(np.asarray(cam.transform(fitted, face_points.astype(np.float32)))[:, 2] < 0)


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="points3d"):
        epnp(np.zeros((10, 2)), np.zeros((10, 2)), K)
    with pytest.raises(ValueError, match="points2d"):
        epnp(np.zeros((10, 3)), np.zeros((9, 2)), K)
    with pytest.raises(ValueError, match="K"):
        epnp(np.zeros((10, 3)), np.zeros((10, 2)), np.eye(4))
    with pytest.raises(ValueError, match="weights"):
        epnp(np.zeros((10, 3)), np.zeros((10, 2)), K, np.ones(3))
