"""EPnP (Lepetit, Moreno-Noguer, Fua 2009) in JAX: camera pose from 2D-3D correspondences.

One problem per call, fixed shapes, no host syncs: batch with ``jax.vmap(epnp)`` and ``jit``.
Poses are in the OpenCV convention (x right, y down, z forward, ``x_cam = R X + t``, points in
front have ``z > 0``); :func:`epnp_camera` converts to this project's OpenGL-style
:class:`~avatar_jax.geometry.camera.Camera`.

Algorithm (as OpenCV's ``SOLVEPNP_EPNP``, with the changes marked *):

1. Invalid correspondences (non-finite coordinates, weight <= 0 or NaN) get weight 0 and are
   zeroed, so they cannot influence anything. (*) Every step below is weighted.
2. (*) World points are centred and scaled to unit RMS radius, which keeps the float32
   arithmetic well conditioned; the pose is mapped back at the end.
3. Four control points: the centroid plus the three PCA axes scaled by their standard deviation
   (clamped away from 0 so that planar sets stay finite); barycentric coordinates ``alphas``.
4. The ``2N x 12`` system ``M`` (accumulated directly as the ``12 x 12`` ``M^T W M``) and its four
   smallest eigenvectors (``eigh``).
5. Betas for null-space dimensions 1, 2 and 3 from the ``6 x 10`` linearisation ``L beta = rho``,
   each refined by 5 Gauss-Newton steps on the 4 betas; control points in the camera frame, sign
   chosen so the (weighted) points lie in front (``z > 0``), and weighted Procrustes (with the
   reflection fix) gives ``R, t``. The candidate with the lowest reprojection error wins.
6. (*) ``refine_steps`` Levenberg-Marquardt steps on the 6-DoF pose minimising the weighted sum
   of squared pixel reprojection errors (each step kept only if it lowers the cost). Set
   ``refine_steps=0`` to reproduce plain EPnP (e.g. to compare with OpenCV).

``epnp`` is meant for initialisation and is not differentiable (``eigh`` of a matrix with a
near-degenerate null space); its inputs are wrapped in ``stop_gradient``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from avatar_jax.geometry import camera as cam

# Full float32 products even where the default matmul precision is lower (TF32 on GPUs): the
# null space of M^T M and the pose are sensitive to 1e-3 relative errors.
_dot = partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)
_einsum = partial(jnp.einsum, precision=jax.lax.Precision.HIGHEST)

MIN_POINTS = 6
DEFAULT_REFINE_STEPS = 8
_BETA_GN_STEPS = 5
# Smallest accepted ratio of the 2nd to the 1st PCA variance; below it the points are collinear.
_COLLINEAR_RATIO = 1e-5
# Control-point axes shorter than this (unit RMS radius) are clamped, for planar point sets.
_MIN_AXIS = 1e-3
# Image points whose weighted RMS spread is below this (normalised units: 1e-6 * focal length)
# all lie on one ray and say nothing about the pose.
_MIN_IMAGE_SPREAD = 1e-6
_PAIRS = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
# Order of the 10 quadratic beta products in L (OpenCV's compute_L_6x10).
_PRODUCTS = ((0, 0), (0, 1), (1, 1), (0, 2), (1, 2), (2, 2), (0, 3), (1, 3), (2, 3), (3, 3))


def _check_inputs(points3d, points2d, K, weights):
    if points3d.ndim != 2 or points3d.shape[1] != 3:
        raise ValueError(f"points3d must have shape [N, 3], got {tuple(points3d.shape)}")
    n = points3d.shape[0]
    if points2d.shape != (n, 2):
        raise ValueError(f"points2d must have shape [{n}, 2] to match points3d, "
                         f"got {tuple(points2d.shape)}")
    if K.shape != (3, 3):
        raise ValueError(f"K must have shape [3, 3], got {tuple(K.shape)}")
    if weights is not None and weights.shape != (n,):
        raise ValueError(f"weights must have shape [{n}], got {tuple(weights.shape)}")


def _sanitize(points3d, points2d, weights):
    """Zero non-finite points and give them (and non-positive/NaN weights) weight 0."""
    finite = jnp.all(jnp.isfinite(points3d), -1) & jnp.all(jnp.isfinite(points2d), -1)
    w = jnp.ones(points3d.shape[:1]) if weights is None else weights
    valid = finite & jnp.isfinite(w) & (w > 0)
    w = jnp.where(valid, w, 0.0)
    return (jnp.where(valid[:, None], points3d, 0.0), jnp.where(valid[:, None], points2d, 0.0),
            w, valid)


def _normalized_image_points(points2d, K):
    """Pixel coordinates ``[N, 2]`` to normalised camera coordinates (K^-1, skew included)."""
    y = (points2d[:, 1] - K[1, 2]) / K[1, 1]
    x = (points2d[:, 0] - K[0, 2] - K[0, 1] * y) / K[0, 0]
    return jnp.stack([x, y], -1)


def _control_points(world, w):
    """Control points ``[4, 3]``, barycentric ``alphas [N, 4]`` and PCA variances (descending).

    ``world`` is centred on the weighted centroid and has unit weighted RMS radius.
    """
    cov = _einsum("n,ni,nj->ij", w, world, world)
    variances, axes = jnp.linalg.eigh(cov)
    variances, axes = variances[::-1], axes[:, ::-1]
    # Under noise EPnP depends on the control points, so fix the eigenvector signs
    # (largest-magnitude component positive) to make the result backend-independent.
    pivot = jnp.take_along_axis(axes, jnp.argmax(jnp.abs(axes), 0)[None], 0)
    axes = axes * jnp.where(pivot < 0, -1.0, 1.0)
    scales = jnp.maximum(jnp.sqrt(jnp.maximum(variances, 0.0)), _MIN_AXIS)
    ctrl = jnp.concatenate([jnp.zeros((1, 3)), (axes * scales).T], 0)
    coords = _dot(world, axes) / scales
    alphas = jnp.concatenate([1.0 - jnp.sum(coords, -1, keepdims=True), coords], -1)
    return ctrl, alphas, variances


def _null_space(alphas, image, w):
    """Eigenvectors ``[4, 4, 3]`` of ``M^T W M`` with the 4 smallest eigenvalues, smallest first."""
    one, zero = jnp.ones_like(image[:, 0]), jnp.zeros_like(image[:, 0])
    row_x = jnp.stack([one, zero, -image[:, 0]], -1)
    row_y = jnp.stack([zero, one, -image[:, 1]], -1)
    rows = jnp.stack([row_x, row_y], 1)  # [N, 2, 3]
    m = _einsum("nc,nrd->nrcd", alphas, rows).reshape(-1, 2, 12)
    mtm = _einsum("n,nri,nrj->ij", w, m, m)
    _, vecs = jnp.linalg.eigh(mtm)
    return vecs[:, :4].T.reshape(4, 4, 3)


def _pair_differences(ctrl):
    """``ctrl[..., a, :] - ctrl[..., b, :]`` for the 6 control-point pairs: ``[..., 6, 3]``."""
    a, b = zip(*_PAIRS)
    return ctrl[..., list(a), :] - ctrl[..., list(b), :]


def _l_matrix(null):
    """OpenCV's ``L [6, 10]``: squared pair distances are ``L @ beta_products``."""
    dv = _pair_differences(null)  # [4, 6, 3]
    cols = [(1.0 if i == j else 2.0) * jnp.sum(dv[i] * dv[j], -1) for i, j in _PRODUCTS]
    return jnp.stack(cols, -1)


def _beta_products(betas):
    return jnp.stack([betas[i] * betas[j] for i, j in _PRODUCTS])


def _safe_div(a, b):
    return a / jnp.where(jnp.abs(b) > 1e-30, b, 1e-30)


def _initial_betas(l_mat, rho):
    """Betas ``[3, 4]`` for null-space dimensions 1, 2, 3 (OpenCV's find_betas_approx_1/2/3)."""
    def solve(cols):
        return jnp.linalg.lstsq(l_mat[:, list(cols)], rho, rcond=None)[0]

    b4 = solve((0, 1, 3, 6))  # B11 B12 B13 B14
    sign = jnp.where(b4[0] < 0, -1.0, 1.0)
    beta0 = jnp.sqrt(jnp.abs(b4[0]))
    dim1 = jnp.stack([beta0, *(_safe_div(sign * b4[k], beta0) for k in (1, 2, 3))])

    def first_two(b):
        neg = b[0] < 0
        beta0 = jnp.sqrt(jnp.abs(b[0]))
        beta1 = jnp.where(neg == (b[2] < 0), jnp.sqrt(jnp.abs(b[2])), 0.0)
        return jnp.where(b[1] < 0, -beta0, beta0), beta1

    b3 = solve((0, 1, 2))  # B11 B12 B22
    dim2 = jnp.stack([*first_two(b3), 0.0, 0.0])
    b5 = solve((0, 1, 2, 3, 4))  # B11 B12 B22 B13 B23
    beta0, beta1 = first_two(b5)
    dim3 = jnp.stack([beta0, beta1, _safe_div(b5[3], beta0), 0.0])
    return jnp.stack([dim1, dim2, dim3])


def _solve_qr(a, b):
    """Least squares ``a x = b`` for a full-column-rank ``a`` via QR (as OpenCV's qr_solve)."""
    q, r = jnp.linalg.qr(a)
    return jax.scipy.linalg.solve_triangular(r, _dot(q.T, b))


def _refine_betas(l_mat, rho, betas):
    """Gauss-Newton on the 4 betas minimising ``|L beta_products - rho|^2`` (as OpenCV)."""
    def residual(b):
        return _dot(l_mat, _beta_products(b)) - rho

    def step(_, b):
        return b + _solve_qr(jax.jacfwd(residual)(b), -residual(b))

    return jax.lax.fori_loop(0, _BETA_GN_STEPS, step, betas, unroll=True)


def _procrustes(src, dst, w):
    """Weighted rigid fit ``dst ~ R src + t`` (proper rotation): ``(R [3, 3], t [3])``."""
    src_mean, dst_mean = _dot(w, src), _dot(w, dst)
    cov = _einsum("n,ni,nj->ij", w, dst - dst_mean, src - src_mean)
    u, _, vt = jnp.linalg.svd(cov)
    reflect = jnp.linalg.det(_dot(u, vt)) < 0
    signs = jnp.stack([1.0, 1.0, jnp.where(reflect, -1.0, 1.0)])
    rot = _dot(u * signs, vt)
    return rot, dst_mean - _dot(rot, src_mean)


def _project_cv(rot, trans, world, K):
    """OpenCV projection of ``world [N, 3]`` to pixels ``[N, 2]``; depth clamped away from 0."""
    p = _dot(world, rot.T) + trans
    z = jnp.where(jnp.abs(p[:, 2]) > 1e-12, p[:, 2], 1e-12)
    x, y = p[:, 0] / z, p[:, 1] / z
    return jnp.stack([K[0, 0] * x + K[0, 1] * y + K[0, 2], K[1, 1] * y + K[1, 2]], -1)


def _reprojection_error(rot, trans, world, pixels, K, w):
    """Weighted mean pixel distance (w sums to 1)."""
    err = jnp.linalg.norm(_project_cv(rot, trans, world, K) - pixels, axis=-1)
    return jnp.sum(w * err)


def _pose_from_betas(betas, null, alphas, world, w):
    ctrl_cam = _einsum("k,kcd->cd", betas, null)
    cam_points = _dot(alphas, ctrl_cam)
    # The null-space solution is defined up to sign: put the points in front of the camera.
    flip = jnp.sum(w * cam_points[:, 2]) < 0
    cam_points = jnp.where(flip, -cam_points, cam_points)
    return _procrustes(world, cam_points, w)


def _pose_residual_and_jacobian(rot, trans, world, pixels, K, row_scale):
    """Scaled pixel residuals ``[2N]`` and their Jacobian ``[2N, 6]`` w.r.t. a left rotation
    perturbation ``exp([w]) R`` (w first) and a translation step, in closed form."""
    rotated = _dot(world, rot.T)
    p = rotated + trans
    z = jnp.where(jnp.abs(p[:, 2]) > 1e-12, p[:, 2], 1e-12)
    x, y = p[:, 0] / z, p[:, 1] / z
    residual = jnp.stack([K[0, 0] * x + K[0, 1] * y + K[0, 2], K[1, 1] * y + K[1, 2]], -1) - pixels
    zero = jnp.zeros_like(z)
    d_xy_d_p = jnp.stack([jnp.stack([1 / z, zero, -x / z], -1),
                          jnp.stack([zero, 1 / z, -y / z], -1)], -2)  # [N, 2, 3]
    d_uv_d_xy = jnp.array([[K[0, 0], K[0, 1]], [0.0, K[1, 1]]])
    d_p_d_w = -cam.skew(rotated)  # d(exp([w]) R X)/dw at 0 = -[R X]_x
    d_p = jnp.concatenate([d_p_d_w, jnp.broadcast_to(jnp.eye(3), d_p_d_w.shape)], -1)
    jac = _einsum("ab,nbc,ncd->nad", d_uv_d_xy, d_xy_d_p, d_p)  # [N, 2, 6]
    return ((residual * row_scale).ravel(), (jac * row_scale[..., None]).reshape(-1, 6))


def _refine_pose(rot, trans, world, pixels, K, w, steps):
    """Levenberg-Marquardt on (rotation perturbation, translation), pixel residuals."""
    # Residuals in focal-length units keep the normal equations O(1) in float32.
    row_scale = jnp.sqrt(w)[:, None] / K[0, 0]

    def cost(rot, trans):
        res, _ = _pose_residual_and_jacobian(rot, trans, world, pixels, K, row_scale)
        return jnp.sum(res**2)

    def step(_, state):
        rot, trans, current, damping = state
        res, jac = _pose_residual_and_jacobian(rot, trans, world, pixels, K, row_scale)
        hess = _dot(jac.T, jac)
        damped = hess + damping * jnp.diag(jnp.diag(hess)) + 1e-12 * jnp.eye(6)
        delta = -jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(damped), _dot(jac.T, res))
        new_rot = _dot(cam.rotation_matrix(delta[:3]), rot)
        new_trans = trans + delta[3:]
        new_cost = cost(new_rot, new_trans)
        better = new_cost < current  # False for NaN
        return (jnp.where(better, new_rot, rot), jnp.where(better, new_trans, trans),
                jnp.where(better, new_cost, current),
                jnp.where(better, damping * 0.3, damping * 10.0))

    state = (rot, trans, cost(rot, trans), jnp.asarray(1e-3))
    rot, trans, _, _ = jax.lax.fori_loop(0, steps, step, state, unroll=True)
    return rot, trans


@partial(jax.jit, static_argnames=("refine_steps",))
def epnp(points3d, points2d, K, weights=None, *, refine_steps: int = DEFAULT_REFINE_STEPS):
    """Camera pose from ``N`` 2D-3D correspondences, OpenCV convention.

    Args:
      points3d: ``[N, 3]`` world points (any unit; ``t`` comes out in the same unit).
      points2d: ``[N, 2]`` pixel coordinates (x right, y down).
      K: ``[3, 3]`` intrinsic matrix.
      weights: ``[N]`` non-negative confidences, or None (all 1). Points with weight 0 or with a
        non-finite coordinate are ignored.
      refine_steps: Levenberg-Marquardt steps on the final pose (0: plain EPnP).

    Returns:
      ``(R [3, 3], t [3], reprojection_error [], ok [] bool)`` with ``x_cam = R X + t``;
      the error is the weighted mean pixel distance. ``ok`` is False for fewer than
      ``MIN_POINTS`` valid points, (near-)collinear 3D points, image points all at one pixel,
      points behind the camera or a non-finite result; then ``R = I``, ``t = 0`` and the
      error is ``inf`` (``R`` and ``t`` are always finite).
    """
    points3d, points2d, K = (jax.lax.stop_gradient(jnp.asarray(a, jnp.float32))
                             for a in (points3d, points2d, K))
    if weights is not None:
        weights = jax.lax.stop_gradient(jnp.asarray(weights, jnp.float32))
    _check_inputs(points3d, points2d, K, weights)
    points3d, points2d, w, valid = _sanitize(points3d, points2d, weights)
    w = w / jnp.maximum(jnp.sum(w), 1e-30)

    centroid = _dot(w, points3d)
    radius = jnp.sqrt(jnp.sum(w * jnp.sum((points3d - centroid) ** 2, -1)))
    radius = jnp.where(radius > 0, radius, 1.0)
    world = jnp.where(valid[:, None], (points3d - centroid) / radius, 0.0)

    ctrl, alphas, variances = _control_points(world, w)
    image = _normalized_image_points(points2d, K)
    null = _null_space(alphas, image, w)
    l_mat = _l_matrix(null)
    rho = jnp.sum(_pair_differences(ctrl) ** 2, -1)
    betas = jax.vmap(lambda b: _refine_betas(l_mat, rho, b))(_initial_betas(l_mat, rho))

    rots, transs = jax.vmap(lambda b: _pose_from_betas(b, null, alphas, world, w))(betas)
    errors = jax.vmap(lambda r, t: _reprojection_error(r, t, world, points2d, K, w))(rots, transs)
    best = jnp.argmin(jnp.where(jnp.isfinite(errors), errors, jnp.inf))
    rot, trans = rots[best], transs[best]
    if refine_steps > 0:
        rot, trans = _refine_pose(rot, trans, world, points2d, K, w, refine_steps)
    error = _reprojection_error(rot, trans, world, points2d, K, w)

    depth = jnp.sum(w * (_dot(world, rot[2]) + trans[2]))
    # Back to the caller's world frame: x_cam = R (X - c)/s + t_n, times s.
    trans = radius * trans - _dot(rot, centroid)
    ok = ((jnp.sum(valid) >= MIN_POINTS)
          & (variances[1] > _COLLINEAR_RATIO * variances[0])
          & (jnp.sum(w * jnp.sum((image - _dot(w, image)) ** 2, -1)) > _MIN_IMAGE_SPREAD**2)
          & (depth > 0)
          & jnp.all(jnp.isfinite(rot)) & jnp.all(jnp.isfinite(trans)) & jnp.isfinite(error))
    return (jnp.where(ok, rot, jnp.eye(3)), jnp.where(ok, trans, 0.0),
            jnp.where(ok, error, jnp.inf), ok)


@partial(jax.jit, static_argnames=("refine_steps",))
def epnp_camera(points3d, points2d, image_size, log_fs=0.0, weights=None, *,
                refine_steps: int = DEFAULT_REFINE_STEPS) -> tuple[cam.Camera, jax.Array]:
    """Pose of the head model from landmarks, as a :class:`Camera` in this project's convention.

    Args:
      points3d: ``[N, 3]`` model-frame points (mm). points2d: ``[N, 2]`` pixels (x right, y down).
      image_size: ``[2]`` = (h, w); paper intrinsics: f = max(h, w), principal (w/2, h/2).
      log_fs: ``[]`` fixed focal scale (fs = exp(log_fs)). weights: ``[N]`` or None.

    Returns:
      ``(camera, ok)``; when ``ok`` is False the pose is the placeholder ``rotvec = 0, t = 0``.
      Batch with ``jax.vmap(epnp_camera)``.
    """
    camera = cam.camera_from_image_size(image_size, log_fs=log_fs)
    rot_cv, trans_cv, _, ok = epnp(points3d, points2d, cam.intrinsic_matrix(camera), weights,
                                   refine_steps=refine_steps)
    flip = jnp.array([1.0, -1.0, -1.0])
    return camera.replace(rotvec=cam.matrix_to_rotvec(flip[:, None] * rot_cv),
                          translation=flip * trans_cv), ok
