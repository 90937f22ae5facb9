"""Pinhole camera, rigid transforms and rotation conversions (pure JAX, batched by leading dims).

Conventions (shared by the whole fitting stage):

* Model frame: millimetres, +Y up, +Z out of the face, +X = the subject's left (ICT-FaceKit).
* Rigid transform: ``X_view = R(r) @ X + t`` with ``r`` a rotation vector (axis * angle, radians).
  The view frame is OpenGL eye space: camera at the origin looking down -Z, +Y up, +X right.
  ``r = 0`` is a frontal face (the face looks at the camera); a face in front of the camera has
  ``t_z < 0``.
* Unit quaternion ``q = (w, x, y, z)`` with ``q_v = (x, y, z) = sin(theta/2) * axis`` and
  ``w = cos(theta/2) >= 0`` (the paper's ``lambda_q * |q_v|^2`` rotation regulariser).
* Intrinsics (paper, sec. 3.4): base focal ``f = max(h, w)`` pixels, principal point
  ``(cx, cy) = (w/2, h/2)``, focal scale ``fs = exp(log_fs)``. Pixel centres sit at integer
  coordinates ``0..w-1``, so the exact image centre would be ``(w-1)/2``; we follow the paper's
  ``w/2`` (half a pixel off), which only shifts the estimated translation by a fraction of a mm.
* Projection to image pixels (x right, y down)::

      u = cx + fs*f * X_view.x / (-X_view.z)
      v = cy - fs*f * X_view.y / (-X_view.z)

  No clamping is applied: points at or behind the camera (``X_view.z >= 0``) give inf or
  mirrored coordinates, as the pinhole model says.
* OpenCV convention (x right, y down, z forward): ``R_cv = D @ R``, ``t_cv = D @ t`` with
  ``D = diag(1, -1, -1)``, and ``K_cv = [[fs*f, 0, cx], [0, fs*f, cy], [0, 0, 1]]``; then
  ``cv2.projectPoints(X, rvec_cv, t_cv, K_cv, None)`` equals :func:`project`.

Everything here is jit/vmap-able and float32-safe; rotation functions have finite gradients at
``r = 0`` (Taylor branches selected with ``jnp.where`` on safe arguments).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import struct

# Below this squared angle (rad^2) the Taylor expansions are exact to float32 precision.
_SMALL_ANGLE_SQ = 1e-6
_OPENGL_TO_OPENCV = jnp.array([1.0, -1.0, -1.0])
# Full float32 rotation products even where the default matmul precision is TF32 (GPUs), which
# would put ~0.5 mm errors on a head 500 mm away.
_dot = partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)


@struct.dataclass
class Camera:
    """Pinhole camera with a rigid model-to-view transform. Leading dims ``[...]`` batch.

    Attributes:
      rotvec: ``[..., 3]`` rotation vector r of ``X_view = R(r) X + t``.
      translation: ``[..., 3]`` t in mm (``t_z < 0`` in front of the camera).
      log_fs: ``[...]`` log of the focal scale; focal length in pixels is ``exp(log_fs) * focal``.
      focal: ``[...]`` base focal length f = max(h, w) in pixels (not optimised).
      principal: ``[..., 2]`` principal point (cx, cy) in pixels.
    """

    rotvec: jax.Array
    translation: jax.Array
    log_fs: jax.Array
    focal: jax.Array
    principal: jax.Array

    @property
    def focal_px(self) -> jax.Array:
        """``[...]`` effective focal length ``fs * f`` in pixels."""
        return jnp.exp(self.log_fs) * self.focal


def _check_last_dim(name: str, x: jax.Array, size: int) -> None:
    if x.ndim < 1 or x.shape[-1] != size:
        raise ValueError(f"{name} must have shape [..., {size}], got {tuple(x.shape)}")


def intrinsics_from_image_size(image_size) -> tuple[jax.Array, jax.Array]:
    """Paper intrinsics from ``image_size`` ``[..., 2]`` given as ``(h, w)``.

    Returns:
      focal ``[...]`` = max(h, w) and principal ``[..., 2]`` = (w/2, h/2), float32 pixels.
    """
    size = jnp.asarray(image_size, jnp.float32)
    _check_last_dim("image_size", size, 2)
    h, w = size[..., 0], size[..., 1]
    return jnp.maximum(h, w), jnp.stack([w / 2.0, h / 2.0], axis=-1)


def camera_from_image_size(image_size, rotvec=None, translation=None, log_fs=0.0) -> Camera:
    """Camera with the paper intrinsics for ``image_size`` ``[..., 2]`` = (h, w).

    ``rotvec``/``translation`` ``[..., 3]`` default to zero (identity pose; set ``t_z < 0``
    before projecting); ``log_fs`` ``[...]`` defaults to 0 (fs = 1).
    """
    focal, principal = intrinsics_from_image_size(image_size)
    batch = focal.shape
    rotvec = jnp.zeros(batch + (3,)) if rotvec is None else jnp.asarray(rotvec, jnp.float32)
    translation = (jnp.zeros(batch + (3,)) if translation is None
                   else jnp.asarray(translation, jnp.float32))
    _check_last_dim("rotvec", rotvec, 3)
    _check_last_dim("translation", translation, 3)
    log_fs = jnp.broadcast_to(jnp.asarray(log_fs, jnp.float32), batch)
    return Camera(rotvec=rotvec, translation=translation, log_fs=log_fs, focal=focal,
                  principal=principal)


def skew(v: jax.Array) -> jax.Array:
    """Cross-product matrix ``[..., 3, 3]`` of ``v`` ``[..., 3]``."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    zero = jnp.zeros_like(x)
    return jnp.stack([jnp.stack([zero, -z, y], -1),
                      jnp.stack([z, zero, -x], -1),
                      jnp.stack([-y, x, zero], -1)], -2)


def _angle_terms(rotvec: jax.Array):
    """``(theta^2, sin(theta)/theta, (1-cos theta)/theta^2, sin(theta/2)/theta)``, safe at 0."""
    theta_sq = jnp.sum(rotvec * rotvec, axis=-1)
    small = theta_sq < _SMALL_ANGLE_SQ
    # Evaluate the closed forms on a dummy angle where small, so neither branch yields NaN grads.
    theta = jnp.sqrt(jnp.where(small, 1.0, theta_sq))
    half_sinc = jnp.sin(theta / 2) / theta  # sin(theta/2)/theta
    sinc = jnp.where(small, 1.0 - theta_sq / 6.0 + theta_sq**2 / 120.0, jnp.sin(theta) / theta)
    # (1 - cos t)/t^2 = 2 sin^2(t/2)/t^2 avoids the float32 cancellation of 1 - cos t.
    cosc = jnp.where(small, 0.5 - theta_sq / 24.0 + theta_sq**2 / 720.0, 2.0 * half_sinc**2)
    half = jnp.where(small, 0.5 - theta_sq / 48.0 + theta_sq**2 / 3840.0, half_sinc)
    return theta_sq, sinc, cosc, half


def rotation_matrix(rotvec: jax.Array) -> jax.Array:
    """Rodrigues: rotation matrices ``[..., 3, 3]`` from rotation vectors ``[..., 3]``."""
    rotvec = jnp.asarray(rotvec)
    _check_last_dim("rotvec", rotvec, 3)
    _, sinc, cosc, _ = _angle_terms(rotvec)
    k = skew(rotvec)
    eye = jnp.eye(3, dtype=k.dtype)
    return eye + sinc[..., None, None] * k + cosc[..., None, None] * _dot(k, k)


def rotvec_to_quaternion(rotvec: jax.Array) -> jax.Array:
    """Unit quaternions ``[..., 4]`` as (w, x, y, z), w >= 0 for angles <= pi, from ``[..., 3]``."""
    rotvec = jnp.asarray(rotvec)
    _check_last_dim("rotvec", rotvec, 3)
    theta_sq, _, _, half = _angle_terms(rotvec)
    # cos(theta/2) via its Taylor series near 0 keeps the gradient finite there.
    small = theta_sq < _SMALL_ANGLE_SQ
    theta = jnp.sqrt(jnp.where(small, 1.0, theta_sq))
    w = jnp.where(small, 1.0 - theta_sq / 8.0 + theta_sq**2 / 384.0, jnp.cos(theta / 2))
    return jnp.concatenate([w[..., None], half[..., None] * rotvec], axis=-1)


def quaternion_to_rotvec(quat: jax.Array) -> jax.Array:
    """Rotation vectors ``[..., 3]`` (angle in [0, pi]) from quaternions ``[..., 4]`` (w, x, y, z).

    The quaternion is normalised first; q and -q give the same rotation vector.
    """
    quat = jnp.asarray(quat)
    _check_last_dim("quat", quat, 4)
    quat = quat / jnp.linalg.norm(quat, axis=-1, keepdims=True)
    quat = jnp.where(quat[..., :1] < 0, -quat, quat)
    w, v = quat[..., 0], quat[..., 1:]
    s_sq = jnp.sum(v * v, axis=-1)
    small = s_sq < _SMALL_ANGLE_SQ
    s = jnp.sqrt(jnp.where(small, 1.0, s_sq))
    # angle/s = 2 atan2(s, w)/s; near s = 0 (w ~ 1): 2/w * (1 - s^2/(3 w^2)).
    w_safe = jnp.where(small, w, 1.0)
    scale = jnp.where(small, 2.0 / w_safe * (1.0 - s_sq / (3.0 * w_safe**2)),
                      2.0 * jnp.arctan2(s, w) / s)
    return scale[..., None] * v


def matrix_to_quaternion(matrix: jax.Array) -> jax.Array:
    """Unit quaternions ``[..., 4]`` (w, x, y, z), w >= 0, from rotation matrices ``[..., 3, 3]``.

    Shepperd's method: use the largest of (trace, R00, R11, R22) as pivot, so it stays accurate
    for angles near pi, where the trace-only formula loses the axis.
    """
    m = jnp.asarray(matrix)
    if m.ndim < 2 or m.shape[-2:] != (3, 3):
        raise ValueError(f"matrix must have shape [..., 3, 3], got {tuple(m.shape)}")
    r00, r01, r02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    r10, r11, r12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    r20, r21, r22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    trace = r00 + r11 + r22
    # Each row: 4 * pivot_component * q, before dividing by that component.
    candidates = jnp.stack([
        jnp.stack([1 + trace, r21 - r12, r02 - r20, r10 - r01], -1),
        jnp.stack([r21 - r12, 1 + r00 - r11 - r22, r01 + r10, r02 + r20], -1),
        jnp.stack([r02 - r20, r01 + r10, 1 - r00 + r11 - r22, r12 + r21], -1),
        jnp.stack([r10 - r01, r02 + r20, r12 + r21, 1 - r00 - r11 + r22], -1),
    ], -2)
    pivot = jnp.argmax(jnp.stack([trace, r00, r11, r22], -1), axis=-1)
    chosen = jnp.take_along_axis(candidates, pivot[..., None, None], axis=-2)[..., 0, :]
    # The row is proportional to q (factor 4*q_pivot, > 0 by the pivot choice); normalise.
    quat = chosen / jnp.maximum(jnp.linalg.norm(chosen, axis=-1, keepdims=True), 1e-30)
    return jnp.where(quat[..., :1] < 0, -quat, quat)


def matrix_to_rotvec(matrix: jax.Array) -> jax.Array:
    """Rotation vectors ``[..., 3]`` from rotation matrices ``[..., 3, 3]`` (robust near pi)."""
    return quaternion_to_rotvec(matrix_to_quaternion(matrix))


def transform(camera: Camera, points: jax.Array) -> jax.Array:
    """Model-frame points ``[..., N, 3]`` to view frame ``[..., N, 3]``: ``R(r) X + t``."""
    points = jnp.asarray(points)
    _check_last_dim("points", points, 3)
    rot = rotation_matrix(camera.rotvec)
    return _dot(points, jnp.swapaxes(rot, -1, -2)) + camera.translation[..., None, :]


def grazing(rotvec: jax.Array, translation: jax.Array, points: jax.Array,
            normals: jax.Array) -> jax.Array:
    """``|n . v|`` ``[...]`` for model-frame points and unit normals ``[..., 3]`` under the
    transform ``(rotvec, translation)``: v is the unit direction from the camera to the point,
    so 0 means the surface is seen edge-on (on the silhouette)."""
    rot = rotation_matrix(rotvec)
    view = points @ rot.T + translation
    return jnp.abs(jnp.sum((normals @ rot.T) * view, -1)) / jnp.linalg.norm(view, axis=-1)


def silhouette_pick(candidates: jax.Array, points: jax.Array, normals: jax.Array,
                    rotvec: jax.Array, translation: jax.Array) -> jax.Array:
    """The candidate seen most edge-on in each row: ``candidates [J, C]`` (any ids), their
    model-frame ``points`` and unit ``normals [J, C, 3]`` -> chosen ids ``[J]``.

    This is the sliding-contour rule: a jaw landmark on a turned head lies on the silhouette,
    where the surface is seen edge-on (:func:`grazing` smallest)."""
    score = grazing(rotvec, translation, points, normals)
    return jnp.take_along_axis(candidates, jnp.argmin(score, -1)[:, None], -1)[:, 0]


def project_view(camera: Camera, view_points: jax.Array) -> jax.Array:
    """View-frame points ``[..., N, 3]`` to pixels ``[..., N, 2]`` (x right, y down)."""
    _check_last_dim("view_points", view_points, 3)
    depth = -view_points[..., 2]
    scale = (camera.focal_px[..., None] / depth)[..., None]
    xy = view_points[..., :2] * scale * jnp.array([1.0, -1.0])
    return camera.principal[..., None, :] + xy


def project(camera: Camera, points: jax.Array) -> jax.Array:
    """Model-frame points ``[..., N, 3]`` to image pixels ``[..., N, 2]`` (x right, y down)."""
    return project_view(camera, transform(camera, points))


def project_jacobian(camera: Camera, view_points: jax.Array) -> jax.Array:
    """Closed-form ``d(u, v) / d X_view`` ``[..., N, 2, 3]`` at view points ``[..., N, 3]``."""
    _check_last_dim("view_points", view_points, 3)
    x, y, z = view_points[..., 0], view_points[..., 1], view_points[..., 2]
    a = camera.focal_px[..., None]
    inv_depth = -1.0 / z
    zero = jnp.zeros_like(x)
    du = jnp.stack([a * inv_depth, zero, a * x * inv_depth**2], -1)
    dv = jnp.stack([zero, -a * inv_depth, -a * y * inv_depth**2], -1)
    return jnp.stack([du, dv], -2)


def rotation_left_jacobian(rotvec: jax.Array) -> jax.Array:
    """Left Jacobian ``J_l(r)`` ``[..., 3, 3]`` of the rotation vector: ``d(R(r) X) = -[R X]_x
    J_l(r) dr``. ``I + (1 - cos t)/t^2 [r]_x + (t - sin t)/t^3 [r]_x^2``, Taylor below t = 0.1
    (where ``t - sin t`` loses float32 digits)."""
    theta_sq, _, cosc, _ = _angle_terms(rotvec)
    small = theta_sq < 1e-2
    theta = jnp.sqrt(jnp.where(small, 1.0, theta_sq))
    c3 = jnp.where(small, 1.0 / 6.0 - theta_sq / 120.0 + theta_sq**2 / 5040.0,
                   (theta - jnp.sin(theta)) / theta**3)
    k = skew(rotvec)
    return jnp.eye(3, dtype=k.dtype) + cosc[..., None, None] * k + c3[..., None, None] * _dot(k, k)


def pose_jacobian(camera: Camera, points: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Closed-form derivatives of :func:`project` at model points ``[..., N, 3]``.

    Returns ``(d(u, v)/d(rotvec, translation, log_fs) [..., N, 2, 7], d(u, v)/dX [..., N, 2, 3])``
    (the second w.r.t. the model-frame points). Equal to ``jax.jacfwd`` of :func:`project` (tested)
    at a fraction of its cost.
    """
    rot = rotation_matrix(camera.rotvec)
    rotated = _dot(points, jnp.swapaxes(rot, -1, -2))
    view = rotated + camera.translation[..., None, :]
    d_view = project_jacobian(camera, view)  # [..., N, 2, 3]
    left = rotation_left_jacobian(camera.rotvec)[..., None, :, :]
    d_rot = -_dot(_dot(d_view, skew(rotated)), left)
    d_fs = project_view(camera, view) - camera.principal[..., None, :]
    d_pose = jnp.concatenate([d_rot, d_view, d_fs[..., None]], -1)
    return d_pose, _dot(d_view, rot[..., None, :, :])


def intrinsic_matrix(camera: Camera) -> jax.Array:
    """OpenCV intrinsic matrices ``K`` ``[..., 3, 3]`` (fx = fy = fs*f, no skew)."""
    fpx = camera.focal_px
    zero, one = jnp.zeros_like(fpx), jnp.ones_like(fpx)
    cx, cy = camera.principal[..., 0], camera.principal[..., 1]
    return jnp.stack([jnp.stack([fpx, zero, cx], -1),
                      jnp.stack([zero, fpx, cy], -1),
                      jnp.stack([zero, zero, one], -1)], -2)


def to_opencv(camera: Camera) -> tuple[jax.Array, jax.Array, jax.Array]:
    """OpenCV pose and intrinsics: ``(rvec [..., 3], tvec [..., 3], K [..., 3, 3])``."""
    rot_cv = _OPENGL_TO_OPENCV[:, None] * rotation_matrix(camera.rotvec)
    return (matrix_to_rotvec(rot_cv), _OPENGL_TO_OPENCV * camera.translation,
            intrinsic_matrix(camera))


def from_opencv(rvec, tvec, K, image_size) -> Camera:
    """Camera from an OpenCV pose ``rvec``/``tvec`` ``[..., 3]`` and ``K`` ``[..., 3, 3]``.

    ``image_size`` ``[..., 2]`` = (h, w) sets the base focal ``f = max(h, w)``; the focal scale
    is ``(K00 + K11) / (2 f)`` and the principal point is taken from ``K``. Skew is ignored.
    """
    rvec, tvec, K = (jnp.asarray(a, jnp.float32) for a in (rvec, tvec, K))
    _check_last_dim("rvec", rvec, 3)
    _check_last_dim("tvec", tvec, 3)
    if K.ndim < 2 or K.shape[-2:] != (3, 3):
        raise ValueError(f"K must have shape [..., 3, 3], got {tuple(K.shape)}")
    focal, _ = intrinsics_from_image_size(image_size)
    rot = _OPENGL_TO_OPENCV[:, None] * rotation_matrix(rvec)
    log_fs = jnp.log(0.5 * (K[..., 0, 0] + K[..., 1, 1]) / focal)
    return Camera(rotvec=matrix_to_rotvec(rot), translation=_OPENGL_TO_OPENCV * tvec,
                  log_fs=log_fs, focal=jnp.broadcast_to(focal, log_fs.shape),
                  principal=K[..., :2, 2])
