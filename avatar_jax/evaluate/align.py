"""Similarity alignment: Umeyama from correspondences, and ICP against a triangle mesh.

A similarity is ``(s, R, t)``: scale ``[]``, rotation ``[3, 3]`` (det +1), translation ``[3]``,
acting as ``x -> s * R @ x + t``. Everything here is jit-able and batches with ``jax.vmap``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from avatar_jax.geometry.closest import point_triangle_distance

Similarity = tuple[jax.Array, jax.Array, jax.Array]


def apply_similarity(similarity: Similarity, points: jax.Array) -> jax.Array:
    """``s R x + t`` for points ``[..., 3]``."""
    s, R, t = similarity
    return s * points @ R.T + t


def identity_similarity() -> Similarity:
    return jnp.ones(()), jnp.eye(3), jnp.zeros(3)


def similarity_from_correspondences(src: jax.Array, dst: jax.Array, weights: jax.Array | None = None,
                                    with_scale: bool = True) -> Similarity:
    """Least-squares similarity with ``dst ~ s R src + t`` (Umeyama 1991), weighted.

    Args:
      src, dst: ``[N, 3]`` corresponding points (N >= 3, not all collinear).
      weights: ``[N]`` non-negative (default all 1); zero drops a pair (masks keep shapes fixed).
      with_scale: False fixes ``s = 1`` (rigid).

    Returns:
      ``(s [], R [3, 3], t [3])``. ``R`` is a proper rotation: a reflection that would fit
      better is replaced by the best rotation (Umeyama's sign correction). If all weights are
      zero the result is NaN (nothing to fit).
    """
    if src.ndim != 2 or src.shape[-1] != 3 or src.shape != dst.shape:
        raise ValueError("similarity_from_correspondences: src and dst must both be [N, 3], "
                         f"got {src.shape} and {dst.shape}")
    w = jnp.ones(src.shape[:1]) if weights is None else jnp.asarray(weights, jnp.float32)
    if w.shape != src.shape[:1]:
        raise ValueError(f"similarity_from_correspondences: weights must be [{src.shape[0]}], "
                         f"got {w.shape}")
    w = w / jnp.sum(w)
    mu_src = w @ src
    mu_dst = w @ dst
    src_c, dst_c = src - mu_src, dst - mu_dst
    cov = (dst_c * w[:, None]).T @ src_c  # [3, 3] = sum_i w_i dst_i src_i^T
    U, D, Vt = jnp.linalg.svd(cov)
    sign = jnp.sign(jnp.linalg.det(U) * jnp.linalg.det(Vt))
    S = jnp.stack([1.0, 1.0, jnp.where(sign == 0, 1.0, sign)])
    R = (U * S) @ Vt
    if with_scale:
        s = jnp.sum(D * S) / jnp.sum(w * jnp.sum(src_c**2, axis=-1))
    else:
        s = jnp.ones((), src.dtype)
    t = mu_dst - s * R @ mu_src
    return s, R, t


def _rotation_from_vector(omega: jax.Array) -> jax.Array:
    """Rodrigues: rotation ``[3, 3]`` by angle |omega| about omega ``[3]`` (safe at 0)."""
    theta2 = jnp.sum(omega**2)
    theta = jnp.sqrt(jnp.maximum(theta2, 1e-30))
    small = theta2 < 1e-12
    a = jnp.where(small, 1.0 - theta2 / 6, jnp.sin(theta) / theta)
    b = jnp.where(small, 0.5 - theta2 / 24, (1 - jnp.cos(theta)) / jnp.maximum(theta2, 1e-30))
    K = jnp.array([[0.0, -omega[2], omega[1]], [omega[2], 0.0, -omega[0]], [-omega[1], omega[0], 0.0]])
    return jnp.eye(3) + a * K + b * K @ K


def _point_to_plane_update(similarity: Similarity, moved, closest, normals, weights,
                           with_scale: bool) -> Similarity:
    """One Gauss-Newton step of sum_i w_i (n_i . (y_i - q_i))^2 over a similarity increment.

    The increment (rotation omega, translation dt, log-scale ds) acts about the weighted
    centroid m of the moved points y (for conditioning): y -> (1 + ds) R(omega) (y - m) + m + dt.
    """
    m = weights @ moved / jnp.sum(weights)
    u = moved - m
    jac = jnp.concatenate([jnp.cross(u, normals), normals, jnp.sum(u * normals, -1, keepdims=True)], 1)
    if not with_scale:
        jac = jac.at[:, 6].set(0.0)
    residual = jnp.sum(normals * (moved - closest), axis=-1)
    # Tiny damping keeps the 7x7 system solvable when a direction is unconstrained (e.g. the
    # scale column when with_scale=False, or a flat target region).
    lhs = (jac * weights[:, None]).T @ jac + 1e-6 * jnp.eye(7) * jnp.sum(weights)
    delta = -jnp.linalg.solve(lhs, (jac * weights[:, None]).T @ residual)
    rot = _rotation_from_vector(delta[:3])
    ds = jnp.exp(delta[6])
    s, R, t = similarity
    return s * ds, rot @ R, ds * rot @ (t - m) + m + delta[3:6]


@partial(jax.jit, static_argnames=("iterations", "with_scale", "method", "return_rms"))
def icp(src_points: jax.Array, dst_tri: jax.Array, init: Similarity, iterations: int = 20,
        with_scale: bool = True, src_mask: jax.Array | None = None,
        dst_tri_mask: jax.Array | None = None, max_distance: float | jax.Array = jnp.inf,
        method: str = "point_to_plane", return_rms: bool = False):
    """ICP of points onto a triangle mesh, with optional scale.

    Each iteration moves ``src_points`` by the current similarity and finds the exact closest
    point on the (kept) target triangles. Then

    * ``"point_to_plane"`` (default): one Gauss-Newton step on the squared distances to the
      tangent planes of the closest triangles (converges in a few iterations near the optimum);
    * ``"point_to_point"``: the classic Besl-McKay refit, a weighted Umeyama from the original
      points to the closest points (slower, linear convergence).

    A fixed number of iterations runs in ``lax.scan`` (no host sync; batch with ``jax.vmap``).

    Args:
      src_points: ``[P, 3]`` points to align.
      dst_tri: ``[T, 3, 3]`` target triangle corners.
      init: starting similarity ``(s, R, t)``, e.g. from :func:`similarity_from_correspondences`.
      iterations: number of ICP iterations (static).
      with_scale: estimate scale too (static).
      src_mask: ``[P]`` bool, points to use (default all).
      dst_tri_mask: ``[T]`` bool, target triangles to use (default all).
      max_distance: pairs farther apart than this (mm) are ignored in that iteration.
      method: ``"point_to_plane"`` or ``"point_to_point"`` (static).
      return_rms: also return the per-iteration RMS (static).

    Returns:
      ``(s, R, t)``, the final similarity; with ``return_rms``, ``((s, R, t), rms)`` where
      ``rms [iterations]`` is the RMS point-to-surface distance of the used pairs *before*
      each iteration's update.
    """
    if method not in ("point_to_plane", "point_to_point"):
        raise ValueError(f"icp: method must be 'point_to_plane' or 'point_to_point', got {method!r}")
    src_points = jnp.asarray(src_points, jnp.float32)
    dst_tri = jnp.asarray(dst_tri, jnp.float32)
    valid = jnp.ones(src_points.shape[:1], bool) if src_mask is None else src_mask.astype(bool)
    if valid.shape != src_points.shape[:1]:
        raise ValueError(f"icp: src_mask must be [{src_points.shape[0]}], got {valid.shape}")
    normals = jnp.cross(dst_tri[:, 1] - dst_tri[:, 0], dst_tri[:, 2] - dst_tri[:, 0])
    normals = normals / jnp.maximum(jnp.linalg.norm(normals, axis=-1, keepdims=True), 1e-20)

    def step(similarity, _):
        moved = apply_similarity(similarity, src_points)
        dist, closest, tri_index = point_triangle_distance(moved, dst_tri, dst_tri_mask, valid)
        used = valid & (dist <= max_distance)
        weights = used.astype(jnp.float32)
        rms = jnp.sqrt(jnp.sum(jnp.where(used, dist, 0.0) ** 2) / jnp.sum(weights))
        closest = jnp.where(used[:, None], closest, moved)  # unused pairs must not be NaN
        tri_index = jnp.maximum(tri_index, 0)
        if method == "point_to_plane":
            new = _point_to_plane_update(similarity, moved, closest, normals[tri_index],
                                         weights, with_scale)
        else:
            new = similarity_from_correspondences(src_points, closest, weights, with_scale)
        # Too few usable pairs (everything rejected): keep the current estimate, not NaN.
        ok = jnp.sum(weights) >= 7
        return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, similarity), rms

    init = tuple(jnp.asarray(x, jnp.float32) for x in init)
    final, rms = jax.lax.scan(step, init, None, length=iterations)
    return (final, rms) if return_rms else final
