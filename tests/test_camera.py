"""Camera model, rotation conversions and OpenCV interop."""

from __future__ import annotations

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from avatar_jax.geometry import camera as cam


def _random_rotvecs(rng, n, max_angle=np.pi):
    axes = rng.normal(size=(n, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    return (axes * rng.uniform(0, max_angle, size=(n, 1))).astype(np.float32)


def test_rotation_matrix_matches_scipy():
    rng = np.random.default_rng(0)
    rv = np.concatenate([_random_rotvecs(rng, 64), np.zeros((1, 3), np.float32),
                         np.array([[1e-5, -2e-5, 3e-6], [0, 0, 3.1]], np.float32)])
    ours = np.asarray(cam.rotation_matrix(rv))
    np.testing.assert_allclose(ours, Rotation.from_rotvec(rv).as_matrix(), atol=2e-6)
    # Batched leading dims.
    assert cam.rotation_matrix(rv[:65].reshape(13, 5, 3)).shape == (13, 5, 3, 3)


def test_quaternion_matches_scipy_and_round_trips():
    rng = np.random.default_rng(1)
    rv = _random_rotvecs(rng, 64, max_angle=np.pi - 1e-3)
    q = np.asarray(cam.rotvec_to_quaternion(rv))
    q_scipy = Rotation.from_rotvec(rv).as_quat(scalar_first=True)
    q_scipy *= np.sign(q_scipy[:, :1])
    np.testing.assert_allclose(q, q_scipy, atol=2e-6)
    np.testing.assert_allclose(np.asarray(cam.quaternion_to_rotvec(q)), rv, atol=2e-5)
    # -q is the same rotation; tiny angles use the Taylor branch.
    np.testing.assert_allclose(np.asarray(cam.quaternion_to_rotvec(-q)), rv, atol=2e-5)
    tiny = np.array([[2e-4, -1e-4, 5e-5]], np.float32)
    np.testing.assert_allclose(np.asarray(cam.quaternion_to_rotvec(cam.rotvec_to_quaternion(tiny))),
                               tiny, rtol=1e-5)


@pytest.mark.parametrize("angle", [0.0, 1e-4, 0.5, 2.0, np.pi - 1e-4, np.pi])
def test_matrix_to_rotvec_round_trip_including_near_pi(angle):
    rng = np.random.default_rng(2)
    axes = rng.normal(size=(32, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    rv = (axes * angle).astype(np.float32)
    mats = Rotation.from_rotvec(rv).as_matrix().astype(np.float32)
    back = np.asarray(cam.matrix_to_rotvec(mats))
    # Compare rotations (at pi, r and -r are the same rotation).
    np.testing.assert_allclose(Rotation.from_rotvec(back).as_matrix(), mats, atol=1e-5)
    assert np.all(np.linalg.norm(back, axis=1) <= np.pi + 1e-5)
    if 0 < angle < 3.0:
        np.testing.assert_allclose(back, rv, atol=1e-5)


def test_gradients_finite_at_zero_and_match_finite_differences():
    def loss_r(r):
        return jnp.sum(cam.rotation_matrix(r) * jnp.arange(9.0).reshape(3, 3))

    def loss_q(r):
        return jnp.sum(cam.rotvec_to_quaternion(r)[1:] ** 2) + cam.rotvec_to_quaternion(r)[0]

    zero = jnp.zeros(3)
    g = jax.grad(loss_r)(zero)
    assert np.all(np.isfinite(np.asarray(g)))
    # d/dr sum(W * (I + [r]_x)) at 0 is exact: the skew part of W.
    w = np.arange(9.0).reshape(3, 3)
    np.testing.assert_allclose(g, [w[2, 1] - w[1, 2], w[0, 2] - w[2, 0], w[1, 0] - w[0, 1]],
                               atol=1e-5)
    assert np.all(np.isfinite(np.asarray(jax.grad(loss_q)(zero))))
    assert np.all(np.isfinite(np.asarray(jax.jacfwd(cam.quaternion_to_rotvec)(
        jnp.array([1.0, 0, 0, 0])))))
    assert np.all(np.isfinite(np.asarray(jax.jacrev(cam.matrix_to_rotvec)(jnp.eye(3)))))
    # Away from 0 the analytic gradient matches central differences (float32 tolerance).
    r0 = jnp.array([0.3, -0.2, 0.5])
    fd = [(loss_r(r0 + 1e-3 * e) - loss_r(r0 - 1e-3 * e)) / 2e-3 for e in jnp.eye(3)]
    np.testing.assert_allclose(jax.grad(loss_r)(r0), np.array(fd), rtol=2e-3, atol=2e-3)


def test_quaternion_regulariser_is_sin_half_angle_squared():
    r = jnp.array([0.0, 0.8, 0.0])
    q = cam.rotvec_to_quaternion(r)
    np.testing.assert_allclose(jnp.sum(q[1:] ** 2), np.sin(0.4) ** 2, rtol=1e-6)


def test_intrinsics_and_frontal_projection():
    camera = cam.camera_from_image_size((480, 640), translation=jnp.array([0.0, 0.0, -500.0]))
    np.testing.assert_allclose(camera.focal, 640.0)
    np.testing.assert_allclose(camera.principal, [320.0, 240.0])
    # A point up (+Y) and to the subject's left (+X) of a frontal face lands up (smaller v)
    # and right (larger u) in the image.
    uv = np.asarray(cam.project(camera, jnp.array([[0.0, 0.0, 0.0], [10.0, 20.0, 0.0]])))
    np.testing.assert_allclose(uv[0], [320.0, 240.0], atol=1e-4)
    np.testing.assert_allclose(uv[1], [320 + 640 * 10 / 500, 240 - 640 * 20 / 500], atol=1e-3)
    # Points nearer the camera (+Z, nose) are in front, i.e. smaller depth.
    view = cam.transform(camera, jnp.array([[0.0, 0.0, 100.0]]))
    assert float(view[0, 2]) == pytest.approx(-400.0)


def _random_cameras(rng, batch):
    rotvec = _random_rotvecs(rng, batch, max_angle=1.0)
    translation = np.stack([rng.uniform(-50, 50, batch), rng.uniform(-50, 50, batch),
                            rng.uniform(-900, -400, batch)], -1).astype(np.float32)
    size = np.stack([rng.integers(200, 900, batch), rng.integers(200, 900, batch)], -1)
    return cam.camera_from_image_size(size, rotvec, translation,
                                      rng.uniform(-0.5, 0.5, batch).astype(np.float32))


def test_projection_matches_cv2_project_points():
    rng = np.random.default_rng(3)
    cameras = _random_cameras(rng, 6)
    points = rng.uniform(-80, 80, size=(6, 20, 3)).astype(np.float32)
    ours = np.asarray(cam.project(cameras, points))
    rvec, tvec, K = (np.asarray(a, np.float64) for a in cam.to_opencv(cameras))
    for b in range(6):
        ref, _ = cv2.projectPoints(points[b].astype(np.float64), rvec[b], tvec[b], K[b], None)
        np.testing.assert_allclose(ours[b], ref[:, 0], atol=2e-3, rtol=1e-5)


def test_opencv_round_trip_and_jit_vmap():
    rng = np.random.default_rng(4)
    cameras = _random_cameras(rng, 5)
    size = np.stack([2 * cameras.principal[:, 1], 2 * cameras.principal[:, 0]], -1)
    rvec, tvec, K = cam.to_opencv(cameras)
    back = jax.jit(cam.from_opencv)(rvec, tvec, K, size)
    for name in ("rotvec", "translation", "log_fs", "focal", "principal"):
        np.testing.assert_allclose(getattr(back, name), getattr(cameras, name), atol=2e-5,
                                   rtol=1e-5, err_msg=name)
    points = jnp.asarray(rng.normal(size=(5, 7, 3)) * 50, jnp.float32)
    looped = np.stack([np.asarray(cam.project(jax.tree.map(lambda a: a[b], cameras), points[b]))
                       for b in range(5)])
    np.testing.assert_allclose(jax.jit(jax.vmap(cam.project))(cameras, points), looped,
                               rtol=1e-6, atol=1e-3)


def test_project_jacobian_matches_autodiff():
    rng = np.random.default_rng(5)
    camera = jax.tree.map(lambda a: a[0], _random_cameras(rng, 1))
    view = jnp.asarray(rng.normal(size=(9, 3)) * 30 + [0, 0, -500], jnp.float32)
    auto = jax.vmap(jax.jacfwd(lambda p: cam.project_view(camera, p[None])[0]))(view)
    np.testing.assert_allclose(cam.project_jacobian(camera, view), auto, rtol=1e-5, atol=1e-7)


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="rotvec"):
        cam.rotation_matrix(jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="image_size"):
        cam.camera_from_image_size((1, 2, 3))
    with pytest.raises(ValueError, match="matrix"):
        cam.matrix_to_rotvec(jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match="points"):
        cam.transform(cam.camera_from_image_size((10, 10)), jnp.zeros((5, 2)))


def test_reprojection_loss_gradient_finite_at_frontal_pose():
    camera = cam.camera_from_image_size((480, 640), translation=jnp.array([0.0, 0.0, -500.0]))
    points = jnp.asarray(np.random.default_rng(6).normal(size=(10, 3)) * 40, jnp.float32)
    target = cam.project(camera, points) + 1.0

    def loss(c):
        return jnp.sum((cam.project(c, points) - target) ** 2)

    grads = jax.grad(loss)(camera)
    for name in ("rotvec", "translation", "log_fs"):
        g = np.asarray(getattr(grads, name))
        assert np.all(np.isfinite(g)) and np.any(g != 0), name


@pytest.mark.parametrize("angle", [0.0, 1e-4, 0.05, 0.3, 1.2, 3.0])
def test_pose_jacobian_matches_autodiff(angle):
    rng = np.random.default_rng(int(angle * 100))
    axis = rng.normal(size=3)
    rotvec = jnp.asarray(angle * axis / np.linalg.norm(axis), jnp.float32)
    pts = jnp.asarray(rng.normal(scale=60.0, size=(20, 3)), jnp.float32)
    camera = cam.camera_from_image_size(jnp.array([480.0, 640.0]), rotvec=rotvec,
                                        translation=jnp.array([5.0, -8.0, -600.0]), log_fs=0.1)

    def proj(pose, x):
        c = camera.replace(rotvec=pose[:3], translation=pose[3:6], log_fs=pose[6])
        return cam.project(c, x)

    pose = jnp.concatenate([camera.rotvec, camera.translation, camera.log_fs[None]])
    d_pose, d_points = cam.pose_jacobian(camera, pts)
    ref_pose = jax.jacfwd(proj)(pose, pts)  # [N, 2, 7]
    ref_points = jnp.einsum("iaib->iab", jax.jacfwd(proj, argnums=1)(pose, pts))
    np.testing.assert_allclose(d_pose, ref_pose, rtol=2e-4, atol=2e-4 * float(jnp.abs(ref_pose).max()))
    np.testing.assert_allclose(d_points, ref_points, rtol=1e-5, atol=1e-6)
