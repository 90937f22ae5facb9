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
    dz = number of lagged components.

    Attributes:
      point_faces, point_bary: ``[P, 3]`` the surface points (landmarks, then contour candidates).
      cov: ``[3P, 3P]`` prior covariance C of the point offsets (point-major xyz).
      cov_blocks: ``[P, P, 3, 3]`` the same, as 3x3 blocks (cheap gathers of the active block).
      gain: ``[nx, 3P]`` W = P^-1 S^T: x = xbar + W lam reconstructs x from point multipliers.
      lag_mean: ``[3P, dz]`` S P^-1 N: prior mean of the points per unit lag z.
      lag_basis: ``[nx, dz]`` P^-1 N: prior mean of x per unit lag.
      lag_carry: ``[dz, dz]``, lag_gain: ``[dz, 3P]``: z' = lag_carry z + lag_gain lam.
      lag_hessian: ``[dz, dz]`` N^T P^-1 N; lag_cost: ``[dz, dz]`` the minimum of the linear
        terms for a given lag, ``z^T lag_cost z``.
      lag_index: ``[dz]`` positions of the lagged components in x.
    """

    point_faces: jax.Array
    point_bary: jax.Array
    cov: jax.Array
    cov_blocks: jax.Array
    gain: jax.Array
    lag_mean: jax.Array
    lag_basis: jax.Array
    lag_carry: jax.Array
    lag_gain: jax.Array
    lag_hessian: jax.Array
    lag_cost: jax.Array
    lag_index: jax.Array


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
    p = point_faces.shape[0]
    f32 = lambda a: np.asarray(a, dtype)
    return MarginalPrior(
        point_faces=np.asarray(point_faces, np.int32),
        point_bary=f32(point_bary),
        cov=f32(cov),
        cov_blocks=f32(cov).reshape(p, 3, p, 3).transpose(0, 2, 1, 3),
        gain=f32(W),
        lag_mean=f32(lag_mean),
        lag_basis=f32(R_mean),
        lag_carry=f32(R_mean[lag_idx]),
        lag_gain=f32(W[lag_idx]),
        lag_hessian=f32(lag_hessian),
        lag_cost=f32(lag_sq - lag_hessian),
        lag_index=lag_idx.astype(np.int32),
    )


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
