"""The fit's structured linear solver: the damped normal equations with the shape eliminated by
the Woodbury identity (one ``2K x 2K`` Cholesky and a ``7 x 7`` solve per image)."""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from avatar_jax.fit.config import FitConfig
from avatar_jax.fit.operators import FitOperators
from avatar_jax.fit.problem import ImageData, IterationArgs, active_points_at, camera_at
from avatar_jax.fit.terms import pose_residual
from avatar_jax.geometry import camera as cam
from avatar_jax.solve import Linearisation, linearise_matrix_free

def active_covariance(ops, sel):
    """Prior covariance of the active points ``[K, 3, 3, K]`` (C_act[i, b, d, j] = cov(y_ib, y_jd))."""
    return ops.prior.cov_blocks[sel][..., sel]


def projected_covariance(D, c_act):
    """``D C_act D^T`` ``[2K, 2K]`` for block-diagonal D ``[K, 2, 3]`` and C_act ``[K, 3, 3, K]``.

    Broadcast multiply-adds with the second point index innermost, so every op runs along K
    contiguous floats (faster than the 3x3 blocks innermost or a 3-operand einsum of tiny batched
    matmuls: docs/solver.md, "Measured choices inside the fit")."""
    k = D.shape[0]
    u = sum(D[:, :, b, None, None] * c_act[:, None, b] for b in range(3))  # [K, 2, 3, K]
    dt = jnp.transpose(D, (1, 2, 0))  # [2, 3, K]
    m = sum(u[:, :, None, d] * dt[None, None, :, d] for d in range(3))  # [K, 2, 2, K]
    return jnp.transpose(m, (0, 1, 3, 2)).reshape(2 * k, 2 * k)


class WoodburyFactors(NamedTuple):
    active: jax.Array  # [K, 3] active points
    jac: jax.Array  # [2K, 7] landmark rows w.r.t. the camera
    jac_prior: jax.Array  # [n, 7] camera-prior rows
    D: jax.Array  # [K, 2, 3] landmark rows w.r.t. the active points
    chol: jax.Array  # [2K, 2K] Cholesky factor of M = I + G G^T


def damped_camera_matrix(reduced, damping, damping_mode):
    """``reduced + damping * Dp`` (Dp: the diagonal of ``reduced`` for "marquardt", else I)."""
    scale = jnp.maximum(jnp.diag(reduced), 1e-6) if damping_mode == "marquardt" else jnp.ones(reduced.shape[0])
    return reduced + damping * jnp.diag(scale)


@dataclasses.dataclass(frozen=True)
class ShapeEliminatingSolver:
    """Structured linear solver (:mod:`avatar_jax.solve.linear` protocol) for :func:`residual`.

    The landmark rows see ``c`` through ``G = D E F`` (``[2K, r]``: D the projection's derivative
    at the K active points, E their selection), so the damped normal equations are::

        [Jc^T Jc + Jp^T Jp + mu Dp    Jc^T G ] [s_pose]   [b_pose]
        [G^T Jc                       I + G^T G] [s_c   ] = [b_c   ]

    (Jc: landmark rows w.r.t. the camera, Jp: camera priors). Eliminating c with the Woodbury
    identity needs only ``M = I + G G^T = I + D C_act D^T`` (2K x 2K, from C's 3x3 blocks)::

        (Jc^T M^-1 Jc + Jp^T Jp + mu Dp) s_pose = b_pose - Jc^T M^-1 G b_c
        s_c = b_c - G^T M^-1 (G b_c + Jc s_pose)

    one Cholesky of M and a 7 x 7 solve per image, for any right-hand side. Only the camera is
    damped (``Dp`` = the diagonal of its reduced matrix, "marquardt", or I, "identity"): the
    shape block is linear under a proper prior and needs no trust region.
    """

    ops: FitOperators
    config: FitConfig

    def factors(self, params, data: ImageData, aux: IterationArgs) -> WoodburyFactors:
        """This image's factors at ``params = {"pose": [7], "c": [r]}`` under ``aux``."""
        ops, config, pose = self.ops, self.config, params["pose"]
        active = active_points_at(ops, data, params["c"], aux.sel)
        d_pose, d_points = cam.pose_jacobian(camera_at(pose, data), active)
        jac = (aux.sqrt_w[:, None, None] * d_pose).reshape(-1, 7)
        jp = jax.jacfwd(lambda p: pose_residual(p[:3], p[3:6], p[6], config))(pose)
        D = aux.sqrt_w[:, None, None] * d_points
        gram = projected_covariance(D, active_covariance(ops, aux.sel))
        # LAPACK reads one triangle; jnp.linalg.cholesky's symmetrisation (a + a^T) / 2 is a large
        # share of this small Cholesky's time under vmap on CPU (docs/solver.md)
        chol = jax.lax.linalg.cholesky(jnp.eye(gram.shape[0]) + gram, symmetrize_input=False)
        return WoodburyFactors(active, jac, jp, D, chol)

    def _g_transpose(self, lin: WoodburyFactors, aux: IterationArgs, u):
        """``G^T u`` ``[r]`` for ``u [2K]``: the active points' 3-vectors scattered to all P, one GEMV."""
        k, factor = self.ops.num_landmarks, self.ops.prior.factor
        lam = jnp.zeros(factor.shape[:2], u.dtype).at[aux.sel].add(jnp.einsum("iab,ia->ib", lin.D, u.reshape(k, 2)))
        return lam.reshape(-1) @ factor.reshape(-1, factor.shape[-1])

    def _camera_step(self, lin: WoodburyFactors, rhs_pose, g_b, damping, damping_mode):
        """Solve the reduced camera system; returns ``(s_pose, M^-1 (G b_c + Jc s_pose))``."""
        minv = jax.scipy.linalg.cho_solve((lin.chol, True), jnp.concatenate([g_b[:, None], lin.jac], 1))
        minv_gb, minv_j = minv[:, 0], minv[:, 1:]
        reduced = lin.jac.T @ minv_j + lin.jac_prior.T @ lin.jac_prior
        s_pose = jax.scipy.linalg.solve(damped_camera_matrix(reduced, damping, damping_mode),
                                        rhs_pose - lin.jac.T @ minv_gb, assume_a="pos")
        return s_pose, minv_gb + minv_j @ s_pose

    def landmark_rows(self, lin: WoodburyFactors, aux: IterationArgs, step):
        """``Jc s_pose + G s_c`` ``[2K]``: the landmark rows' change under ``step``."""
        return lin.jac @ step["pose"] + self._g(lin, aux, step["c"])

    def g_transpose(self, lin: WoodburyFactors, aux: IterationArgs, u):
        """``(Jc^T u, G^T u)`` as a step-shaped pytree, for landmark-row vectors ``u [2K]``."""
        return {"pose": lin.jac.T @ u, "c": self._g_transpose(lin, aux, u)}

    def _g(self, lin: WoodburyFactors, aux: IterationArgs, c):
        factor = self.ops.prior.factor
        points = (factor.reshape(-1, factor.shape[-1]) @ c).reshape(-1, 3)[aux.sel]
        return jnp.einsum("iab,ib->ia", lin.D, points).reshape(-1)

    @staticmethod
    def _ok(*arrays):
        # a failed or non-finite Cholesky is all NaN (jax.lax.linalg.cholesky), which every step
        # entry then carries: checking the small step, not the 2K x 2K factor, is enough
        return functools.reduce(jnp.logical_and, [jnp.all(jnp.isfinite(a)) for a in arrays])

    def linearise(self, residual_fn, params, args) -> Linearisation:
        """The driver's matrix-free linearisation of ``residual_fn`` (gradient, predicted
        reduction), carrying this image's Woodbury factors and ``aux`` for :meth:`solve`."""
        data, aux = args
        return linearise_matrix_free(residual_fn, params, args, operator=(self.factors(params, data, aux), aux))

    def solve(self, linearisation: Linearisation, rhs, damping, damping_mode):
        """``(pose, c)`` step ``{"pose": [7], "c": [r]}`` for any ``rhs`` of that shape, and ``ok``."""
        lin, aux = linearisation.operator
        g_b = self._g(lin, aux, rhs["c"])
        s_pose, w = self._camera_step(lin, rhs["pose"], g_b, damping, damping_mode)
        s_c = rhs["c"] - self._g_transpose(lin, aux, w)
        return {"pose": s_pose, "c": s_c}, self._ok(s_pose, s_c)


