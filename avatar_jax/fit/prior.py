"""Exact elimination of the linear shape unknowns (alpha, beta, dP) from the fitting problem.

All terms on ``x = [alpha | beta | dP]`` are linear with fixed weights, so together they are the
Gaussian-like quadratic ``(x - xbar)^T P (x - xbar) + c`` with a sparse, image-independent
precision ``P = sum_k w_k A_k^T A_k`` and a mean ``xbar = P^-1 N z`` that moves only with the
lagged components ``z`` (beta^{t-1} in the paper's Ec). The landmarks see x only through P
surface points ``y = S x`` (the 68 landmarks plus the jaw-contour candidates). Minimising over
all x with ``S x = y`` fixed is a closed form, so the problem reduces *exactly* to the surface
points with the prior covariance ``C = S P^-1 S^T`` (3P x 3P): a Gauss-Newton step on the full
``[x, pose]`` equals a step on ``[y, pose]`` (see :mod:`avatar_jax.fit.fitting`).

Everything here is computed once per (model, config, landmark set) in float64 with a sparse
LU of P, and stored in float32. The dense 3V x 3V system is never formed.
"""

from __future__ import annotations

import jax
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from flax import struct

from avatar_jax.fit.terms import LinearTerm, ShapeLayout, surface_point_operator


@struct.dataclass
class MarginalPrior:
    """Image-independent operators of the reduced problem. P = surface points, nx = x size,
    dz = number of lagged components, r = rank of the points' prior covariance C.

    The fit works in *whitened* point coordinates ``c [r]``: ``y = base + F c`` with ``F F^T =
    C``, in which the linear terms' energy, minimised over every x that puts the points at y, is
    ``|c - cbar|^2 + |L z|^2`` with ``cbar = mean_from_lag z`` (z: the lag). The damped normal
    matrix of c is ``I + G^T G``: never worse conditioned than the identity, which is what keeps
    the step exact in float32 (a primal solve on the points is not).

    Attributes:
      point_faces, point_bary: ``[P, 3]`` the surface points (landmarks, then contour candidates).
      cov_blocks: ``[P, 3, 3, P]`` C with the second point index innermost, ``[i, b, d, j] =
        cov(y_ib, y_jd)`` (C_act of the active points is a cheap gather; see ``woodbury.projected_covariance``).
      factor: ``[P, 3, r]`` F, point-major (F = Q sqrt(Lambda) from C's eigendecomposition).
      mean_from_lag: ``[r, dz]`` whitened prior mean of the points per unit lag.
      lag_cost_factor: ``[dz, dz]`` L: ``|L z|^2`` is the minimum of the linear terms for lag z.
      shape_from_c ``[nx, r]``, shape_from_lag ``[nx, dz]``: the x minimising the linear terms at
        (c, z): ``x = shape_from_c c + shape_from_lag z``.
      lag_from_c ``[dz, r]``, lag_from_lag ``[dz, dz]``: the lagged components of that x.
      lag_index: ``[dz]`` positions of the lagged components in x.
    """

    point_faces: jax.Array
    point_bary: jax.Array
    cov_blocks: jax.Array
    factor: jax.Array
    mean_from_lag: jax.Array
    lag_cost_factor: jax.Array
    shape_from_c: jax.Array
    shape_from_lag: jax.Array
    lag_from_c: jax.Array
    lag_from_lag: jax.Array
    lag_index: jax.Array


# Eigenvalues of C below this fraction of the largest are its null space (C is singular without
# the corrective field: 3P points, only alpha and beta to move them).
_RANK_TOLERANCE = 1e-10


def precision_matrix(terms: list[LinearTerm], size: int) -> sp.csc_matrix:
    """P = sum_k w_k A_k^T A_k ``[nx, nx]``."""
    P = sp.csr_matrix((size, size))
    for t in terms:
        P = P + t.weight * (t.A.T @ t.A)
    return P.tocsc()


def lagged_columns(terms: list[LinearTerm], size: int) -> np.ndarray:
    """Indices of x that any ``A_lag`` reads (the components frozen from the last iteration)."""
    used = np.zeros(size, bool)
    for t in terms:
        if t.A_lag is not None:
            used[np.unique(t.A_lag.tocoo().col)] = True
    return np.flatnonzero(used)


def build_marginal_prior(model, layout: ShapeLayout, terms: list[LinearTerm], point_faces,
                         point_bary, dtype=np.float32) -> MarginalPrior:
    """Precompute the reduced-problem operators (numpy/scipy in float64, stored as ``dtype``)."""
    n = layout.size
    P = precision_matrix(terms, n)
    lag_idx = lagged_columns(terms, n)
    N = sp.csr_matrix((n, lag_idx.size))
    lag_sq = np.zeros((lag_idx.size, lag_idx.size))
    for t in terms:
        if t.A_lag is not None:
            A_lag_z = t.A_lag[:, lag_idx]
            N = N + t.weight * (t.A.T @ A_lag_z)
            lag_sq += t.weight * (A_lag_z.T @ A_lag_z).toarray()
    S = surface_point_operator(model, layout, point_faces, point_bary)
    rhs = np.hstack([S.T.toarray(), N.toarray()])
    sol = _solve_spd(P, rhs, layout.num_identity + layout.num_expression)
    W, R_mean = sol[:, : S.shape[0]], sol[:, S.shape[0]:]
    cov = np.asarray(S @ W)
    cov = 0.5 * (cov + cov.T)
    lag_mean = np.asarray(S @ R_mean)
    lag_hessian = np.asarray(N.T @ R_mean)
    e, Q = np.linalg.eigh(cov)
    keep = e > _RANK_TOLERANCE * max(e.max(initial=0.0), 1e-300)
    Q, root = Q[:, keep], np.sqrt(e[keep])
    _check_in_range(Q, lag_mean)
    to_multipliers = Q / root  # C^+ F: y - ybar = F (c - cbar)  <=>  lam = C^+ (y - ybar)
    mean_from_lag = to_multipliers.T @ lag_mean
    shape_from_c = W @ to_multipliers
    shape_from_lag = R_mean - shape_from_c @ mean_from_lag
    ev, V = np.linalg.eigh(lag_sq - lag_hessian)
    p = point_faces.shape[0]
    f32 = lambda a: np.asarray(a, dtype)
    return MarginalPrior(
        point_faces=np.asarray(point_faces, np.int32),
        point_bary=f32(point_bary),
        cov_blocks=np.ascontiguousarray(f32(cov).reshape(p, 3, p, 3).transpose(0, 1, 3, 2)),
        factor=f32(Q * root).reshape(p, 3, -1),
        mean_from_lag=f32(mean_from_lag),
        lag_cost_factor=f32(np.sqrt(np.clip(ev, 0.0, None))[:, None] * V.T),
        shape_from_c=f32(shape_from_c),
        shape_from_lag=f32(shape_from_lag),
        lag_from_c=f32(shape_from_c[lag_idx]),
        lag_from_lag=f32(shape_from_lag[lag_idx]),
        lag_index=lag_idx.astype(np.int32),
    )


def _check_in_range(Q, lag_mean):
    """The lag moves the prior mean of the points inside C's range (it acts through x), so the
    whitened coordinates represent it exactly; a violation means inconsistent operators."""
    outside = lag_mean - Q @ (Q.T @ lag_mean)
    if np.linalg.norm(outside) > 1e-6 * max(np.linalg.norm(lag_mean), 1.0):
        raise ValueError(f"lagged prior mean leaves the range of the point covariance "
                         f"({np.linalg.norm(outside):.3g}); the linear terms are inconsistent")


def _solve_spd(P: sp.csc_matrix, rhs: np.ndarray, num_dense: int) -> np.ndarray:
    """P^-1 rhs for the SPD precision whose first ``num_dense`` rows/columns (alpha, beta) are
    dense and the rest (dP) sparse: block elimination, with a sparse LU of the dP block only
    (a sparse LU of the whole P fills in and is ~10x slower)."""
    n = P.shape[0]
    if n == 0:
        return np.zeros((0, rhs.shape[1]))
    if n - num_dense <= 0 or n <= 2000:
        return np.linalg.solve(P.toarray(), rhs)
    P = P.tocsr()
    A = P[:num_dense, :num_dense].toarray()
    B = P[:num_dense, num_dense:].toarray()
    lu = spla.splu(P[num_dense:, num_dense:].tocsc(), permc_spec="COLAMD")
    kinv_bt = lu.solve(np.ascontiguousarray(B.T))
    schur = A - B @ kinv_bt
    kinv_r = lu.solve(np.ascontiguousarray(rhs[num_dense:]))
    top = np.linalg.solve(schur, rhs[:num_dense] - B @ kinv_r)
    return np.vstack([top, kinv_r - kinv_bt @ top])
