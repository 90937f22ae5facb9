"""Linear solvers for the (damped) Gauss-Newton normal equations.

Every solver answers one question for one problem (batching comes from ``vmap`` outside)::

    (JᵀJ + damping · D) step = rhs

where ``J`` is the Jacobian of ``residual_fn`` w.r.t. ``params`` at ``params`` and ``D`` is
``diag(JᵀJ)`` (``damping_mode="marquardt"``, clamped from below so it stays positive) or the
identity (``damping_mode="identity"``). ``damping`` is 0 for Gauss-Newton.

Solver protocol (what a user-supplied structured solver implements)
-------------------------------------------------------------------
Any callable with this signature can be passed as ``linear_solver=`` to ``least_squares``::

    solver(residual_fn, params, args, rhs, damping, damping_mode) -> (step, ok)

- ``residual_fn(params, *args)``: the user's residual function (returns a pytree of floats).
- ``params``: the current parameters, same pytree structure as ``params0``.
- ``args``: the tuple of extra positional arguments given to ``least_squares``.
- ``rhs``: pytree shaped like ``params``. The driver passes ``-Jᵀr`` for a step; the implicit
  differentiation (``implicit_hessian="gauss_newton"``) passes an arbitrary cotangent.
- ``damping``: scalar ``[]`` float, the current LM lambda (exactly 0 for Gauss-Newton).
- ``damping_mode``: static string, ``"marquardt"`` or ``"identity"``; raise ``ValueError`` at
  trace time for a mode you do not support.
- returns ``step`` (pytree shaped like ``params``, same leaf shapes) and ``ok`` (scalar bool,
  False when the system was singular or the solve failed; the driver then keeps the old
  parameters and records ``SINGULAR`` for Gauss-Newton, or raises the damping for LM).

The solver is traced once per problem and vmapped by the caller, so it must be pure and use
``jnp.where`` instead of Python branching on values. It may call ``jax.jvp`` / ``jax.vjp`` /
``jax.linearize`` on ``residual_fn`` and never form J (a block-elimination / Schur-complement
solve for a per-vertex field does exactly that: eliminate the block-diagonal part, solve the small
reduced system densely, back-substitute). Being a plain callable it can be a frozen dataclass
holding its static configuration.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

DAMPING_MODES = ("marquardt", "identity")
# diag(JᵀJ) entries below this fraction of the largest are raised to it, so that a parameter the
# residual ignores still gets damped (and the damped system stays positive definite).
_DIAG_FLOOR = 1e-9


class LinearSolver(Protocol):
    def __call__(
        self,
        residual_fn: Callable[..., Any],
        params: Any,
        args: tuple,
        rhs: Any,
        damping: jax.Array,
        damping_mode: str,
    ) -> tuple[Any, jax.Array]: ...


def check_damping_mode(damping_mode: str) -> None:
    if damping_mode not in DAMPING_MODES:
        raise ValueError(f"damping_mode must be one of {DAMPING_MODES}, got {damping_mode!r}")


def flat_residual(residual_fn: Callable[..., Any], params: Any, args: tuple):
    """Return ``(x [n], unravel, r(x) -> [m])``: the residual as a flat function of flat params."""
    x, unravel = ravel_pytree(params)

    def fn(x_flat):
        r, _ = ravel_pytree(residual_fn(unravel(x_flat), *args))
        return r.astype(x_flat.dtype)

    return x, unravel, fn


def damping_diagonal(jtj_diag: jax.Array, damping_mode: str) -> jax.Array:
    """``D`` of the damped system from ``diag(JᵀJ)`` ``[n]``: clamped diagonal or ones ``[n]``."""
    if damping_mode == "identity":
        return jnp.ones_like(jtj_diag)
    floor = _DIAG_FLOOR * jnp.max(jtj_diag)
    d = jnp.maximum(jtj_diag, floor)
    return jnp.where(d > 0, d, jnp.ones_like(d))  # all-zero Jacobian: fall back to identity


@dataclasses.dataclass(frozen=True)
class DenseCholesky:
    """Forms J ``[m, n]`` with ``jax.jacfwd`` (n batched jvps) and Cholesky-factors the damped
    ``JᵀJ`` ``[n, n]``. Best for small n (up to a few hundred parameters); under ``vmap`` the
    jvps, the ``JᵀJ`` product and the factorisation all become batched kernels."""

    def __call__(self, residual_fn, params, args, rhs, damping, damping_mode):
        check_damping_mode(damping_mode)
        x, unravel, fn = flat_residual(residual_fn, params, args)
        b, _ = ravel_pytree(rhs)
        step, ok = self.solve_dense(jax.jacfwd(fn)(x), b.astype(x.dtype), damping, damping_mode)
        return unravel(step), ok

    @staticmethod
    def solve_dense(jac, rhs, damping, damping_mode):
        """The same solve from a formed Jacobian ``jac [m, n]``, flat ``rhs [n]`` -> ``[n], ok``.
        ``least_squares`` calls this directly (sharing J with the gradient and the predicted
        reduction) when the solver is a ``DenseCholesky``."""
        check_damping_mode(damping_mode)
        jtj = jnp.einsum("mi,mj->ij", jac, jac)
        d = damping_diagonal(jnp.diagonal(jtj), damping_mode)
        # JᵀJ is symmetric as formed and LAPACK reads one triangle: skip jnp.linalg.cholesky's
        # (a + aᵀ)/2, which measured ~40% of a batched 136x136 factorisation on CPU
        chol = jax.lax.linalg.cholesky(jtj + jnp.diag(damping * d), symmetrize_input=False)
        step = jax.scipy.linalg.cho_solve((chol, True), rhs)
        ok = jnp.all(jnp.isfinite(chol)) & jnp.all(jnp.isfinite(step))
        return jnp.where(ok, step, jnp.zeros_like(step)), ok


@dataclasses.dataclass(frozen=True)
class ConjugateGradient:
    """Matrix-free Jacobi-preconditioned conjugate gradients on the damped normal equations.

    Products ``JᵀJ v`` come from one ``jax.linearize`` of the residual (a jvp and its transpose),
    so J is never formed: memory is O(m + n) per problem. The Jacobi preconditioner and the
    Marquardt scaling need ``diag(JᵀJ)`` (squared column norms of J):

    - exactly, from n jvps with basis vectors, when ``n <= exact_diagonal_limit``;
    - otherwise estimated from ``diagonal_probes`` vjps with Rademacher vectors u:
      ``E[(Jᵀu)_j²] = Σ_i J_ij²`` (unbiased, never negative; fixed key, so pure).

    Runs exactly ``max_iterations`` CG iterations with ``lax.scan`` (iterations after the residual
    drops below ``tolerance · ‖rhs‖`` are frozen), so it vmaps and reverse-differentiates.
    """

    max_iterations: int = 100
    tolerance: float = 1e-10
    exact_diagonal_limit: int = 64
    diagonal_probes: int = 16

    def __call__(self, residual_fn, params, args, rhs, damping, damping_mode):
        check_damping_mode(damping_mode)
        x, unravel, fn = flat_residual(residual_fn, params, args)
        b, _ = ravel_pytree(rhs)
        b = b.astype(x.dtype)
        r0, jvp = jax.linearize(fn, x)
        vjp = jax.linear_transpose(jvp, x)

        jtj_diag = self._jtj_diagonal(jvp, vjp, x, r0)
        d = damping_diagonal(jtj_diag, damping_mode)
        precond = 1.0 / jnp.maximum(jtj_diag + damping * d, jnp.finfo(x.dtype).tiny)

        def matvec(v):
            (jtjv,) = vjp(jvp(v))
            return jtjv + damping * d * v

        step = _pcg(matvec, b, precond, self.max_iterations, self.tolerance)
        ok = jnp.all(jnp.isfinite(step))
        return unravel(jnp.where(ok, step, jnp.zeros_like(step))), ok

    def _jtj_diagonal(self, jvp, vjp, x, r0):
        n = x.shape[0]
        if n <= self.exact_diagonal_limit:
            cols = jax.vmap(jvp)(jnp.eye(n, dtype=x.dtype))  # [n, m]: rows are columns of J
            return jnp.sum(cols * cols, axis=1)
        probes = jax.random.rademacher(
            jax.random.key(0), (self.diagonal_probes, r0.shape[0]), dtype=x.dtype
        )
        (jtu,) = jax.vmap(vjp)(probes)  # [probes, n]
        return jnp.mean(jtu * jtu, axis=0)


def _pcg(matvec, b, precond, iterations: int, tolerance: float):
    """Preconditioned CG from x=0 for a symmetric positive (semi-)definite operator; ``[n]``."""
    x = jnp.zeros_like(b)
    r = b
    z = precond * r
    p = z
    rz = jnp.vdot(r, z)
    stop = tolerance * tolerance * jnp.vdot(b, b)
    tiny = jnp.finfo(b.dtype).tiny

    def body(carry, _):
        x, r, p, rz = carry
        active = jnp.vdot(r, r) > stop
        ap = matvec(p)
        pap = jnp.vdot(p, ap)
        alpha = rz / jnp.where(pap > tiny, pap, 1.0)
        alpha = jnp.where(active & (pap > tiny), alpha, 0.0)
        x_new = x + alpha * p
        r_new = r - alpha * ap
        z_new = precond * r_new
        rz_new = jnp.vdot(r_new, z_new)
        beta = rz_new / jnp.where(rz > tiny, rz, 1.0)
        p_new = z_new + beta * p
        keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
        return (keep(x_new, x), keep(r_new, r), keep(p_new, p), keep(rz_new, rz)), None

    (x, _, _, _), _ = jax.lax.scan(body, (x, r, p, rz), None, length=iterations)
    return x
