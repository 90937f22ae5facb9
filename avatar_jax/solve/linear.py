"""Linear solvers for the (damped) Gauss-Newton normal equations, and the protocol they share.

Every solver answers, for one problem (batching comes from ``vmap`` outside)::

    (JᵀJ + damping · D) step = rhs

where ``J [m, n]`` is the Jacobian of ``residual_fn`` w.r.t. ``params`` and ``D`` is ``diag(JᵀJ)``
(``damping_mode="marquardt"``, clamped from below so it stays positive) or the identity
(``damping_mode="identity"``). ``damping`` is 0 for Gauss-Newton.

The protocol (``LinearSolver``)
-------------------------------
A solver has two methods; the driver calls both, the same way, whatever the solver:

- ``linearise(residual_fn, params, args) -> Linearisation`` at the current iterate:
  ``residual_fn(params, *args)`` is the user's residual (a pytree of floats), ``params`` the
  current parameters (pytree like ``params0``), ``args`` the tuple of extra inputs. The
  ``Linearisation`` holds the flat residual ``r [m]``, J as two linear maps (``jvp: [n] -> [m]``,
  ``vjp: [m] -> [n]``; the driver takes the gradient ``Jᵀr`` and the predicted reduction from
  them), ``unravel: [n] -> params`` and an ``operator``: whatever ``solve`` needs (J itself, a
  factorisation, a preconditioner). ``linearise_matrix_free`` builds the first four from one
  ``jax.linearize`` for solvers that never form J.
- ``solve(linearisation, rhs, damping, damping_mode) -> (step, ok)``: ``rhs`` is a pytree like
  ``params`` (``-Jᵀr`` for a step; an arbitrary cotangent for ``ImplicitGaussNewton``),
  ``damping`` a ``[]`` float (exactly 0 for Gauss-Newton), ``damping_mode`` a static string
  (raise ``ValueError`` at trace time for a mode you do not support). Returns ``step``, a
  pytree with the structure and leaf shapes of ``params``, and ``ok``, a ``[]`` bool that is
  False when the system was singular or the solve failed (the driver then keeps the old
  parameters: ``SINGULAR`` for Gauss-Newton, more damping for LM).

Both are traced once per problem and vmapped by the caller, so they must be pure and use
``jnp.where`` instead of Python branching on values. A block-elimination / Schur-complement
solver for a per-vertex field fits the protocol without ever forming J: ``linearise`` keeps the
small factors, ``solve`` eliminates the block-diagonal part, solves the reduced system densely
and back-substitutes. Solvers are frozen dataclasses holding their static configuration.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

DAMPING_MODES = ("marquardt", "identity")
# diag(JᵀJ) entries below this fraction of the largest are raised to it, so that a parameter the
# residual ignores still gets damped (and the damped system stays positive definite).
_DIAG_FLOOR = 1e-9


@dataclasses.dataclass(frozen=True)
class Linearisation:
    """The residual and its Jacobian at one iterate, as a linear solver's ``linearise`` returns it.

    Attributes:
      residual: ``[m]`` the flat residual ``r(x)`` in the parameters' dtype.
      jvp: ``v [n] -> J v [m]``.
      vjp: ``u [m] -> Jᵀ u [n]``.
      unravel: ``x [n] -> params`` pytree (``ravel_pytree``'s inverse for these parameters).
      operator: the solver's own data for ``solve`` (``None`` if it needs nothing more).
    """

    residual: jax.Array
    jvp: Callable[[jax.Array], jax.Array]
    vjp: Callable[[jax.Array], jax.Array]
    unravel: Callable[[jax.Array], Any]
    operator: Any = None

    def predicted_reduction(self, residual: jax.Array, step: jax.Array) -> jax.Array:
        """Cost decrease ``[]`` the linear model predicts for ``step [n]`` from ``residual [m]``:
        ``-(r·Js + ½‖Js‖²)``, one jvp, so it holds for any solver."""
        j_step = self.jvp(step)
        return -(jnp.vdot(residual, j_step) + 0.5 * jnp.vdot(j_step, j_step))


@runtime_checkable
class LinearSolver(Protocol):
    """What ``GaussNewton`` / ``LevenbergMarquardt`` need from a linear solver (module docstring)."""

    def linearise(self, residual_fn: Callable[..., Any], params: Any, args: tuple) -> Linearisation: ...

    def solve(self, linearisation: Linearisation, rhs: Any, damping: jax.Array,
              damping_mode: str) -> tuple[Any, jax.Array]: ...


def check_damping_mode(damping_mode: str) -> None:
    if damping_mode not in DAMPING_MODES:
        raise ValueError(f"damping_mode must be one of {DAMPING_MODES}, got {damping_mode!r}")


@dataclasses.dataclass(frozen=True)
class FlatResidual:
    """``residual_fn`` as a function of flat parameters: ``self(x [n], args) -> r [m]``, cast to
    ``x``'s dtype (the driver, the implicit gradient and the solvers all use this form)."""

    residual_fn: Callable[..., Any]
    unravel: Callable[[jax.Array], Any]

    def __call__(self, x: jax.Array, args: tuple) -> jax.Array:
        r, _ = ravel_pytree(self.residual_fn(self.unravel(x), *args))
        return r.astype(x.dtype)


def flat_residual(residual_fn: Callable[..., Any], params: Any, args: tuple):
    """Return ``(x [n], unravel, r(x) -> [m])``: the residual as a flat function of flat params."""
    x, unravel = ravel_pytree(params)
    flat = FlatResidual(residual_fn, unravel)
    return x, unravel, lambda x_flat: flat(x_flat, args)


def linearise_matrix_free(residual_fn: Callable[..., Any], params: Any, args: tuple,
                          operator: Any = None) -> Linearisation:
    """A ``Linearisation`` from one ``jax.linearize`` of the residual (J never formed): ``jvp`` is
    the linearisation, ``vjp`` its transpose; ``operator`` is passed through."""
    x, unravel, fn = flat_residual(residual_fn, params, args)
    r, jvp = jax.linearize(fn, x)
    transpose = jax.linear_transpose(jvp, x)
    return Linearisation(r, jvp, lambda u: transpose(u)[0], unravel, operator)


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
    jvps, the ``JᵀJ`` product and the factorisation all become batched kernels. The formed J
    also serves the driver's gradient and predicted reduction (``jvp``/``vjp`` are products
    with it)."""

    def linearise(self, residual_fn, params, args) -> Linearisation:
        x, unravel, fn = flat_residual(residual_fn, params, args)
        jac = jax.jacfwd(fn)(x)  # [m, n]
        # the residual is evaluated apart from jacfwd, which drops it; unused, it is compiled away
        return Linearisation(fn(x), lambda v: jac @ v, lambda u: u @ jac, unravel, jac)

    def solve(self, linearisation, rhs, damping, damping_mode):
        check_damping_mode(damping_mode)
        jac = linearisation.operator
        b, _ = ravel_pytree(rhs)
        step, ok = _cholesky_solve(jac, b.astype(jac.dtype), damping, damping_mode)
        return linearisation.unravel(step), ok


def _cholesky_solve(jac, rhs, damping, damping_mode):
    """``(JᵀJ + damping·D) step = rhs`` for ``jac [m, n]``, ``rhs [n]`` -> ``step [n], ok []``."""
    jtj = jnp.einsum("mi,mj->ij", jac, jac)
    d = damping_diagonal(jnp.diagonal(jtj), damping_mode)
    # JᵀJ is symmetric as formed and LAPACK reads one triangle: skip jnp.linalg.cholesky's
    # (a + aᵀ)/2, a large share of a small batched factorisation on CPU (docs/solver.md)
    chol = jax.lax.linalg.cholesky(jtj + jnp.diag(damping * d), symmetrize_input=False)
    step = jax.scipy.linalg.cho_solve((chol, True), rhs)
    ok = jnp.all(jnp.isfinite(chol)) & jnp.all(jnp.isfinite(step))
    return jnp.where(ok, step, jnp.zeros_like(step)), ok


@dataclasses.dataclass(frozen=True)
class ConjugateGradient:
    """Matrix-free Jacobi-preconditioned conjugate gradients on the damped normal equations.

    Products ``JᵀJ v`` come from one ``jax.linearize`` of the residual (a jvp and its transpose),
    so J is never formed: memory is O(m + n) per problem. The Jacobi preconditioner and the
    Marquardt scaling need ``diag(JᵀJ)`` (squared column norms of J), computed once per
    linearisation:

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

    def __post_init__(self):
        if not isinstance(self.max_iterations, int) or self.max_iterations < 1:
            raise ValueError(f"ConjugateGradient.max_iterations must be a positive int, "
                             f"got {self.max_iterations!r}")

    def linearise(self, residual_fn, params, args) -> Linearisation:
        lin = linearise_matrix_free(residual_fn, params, args)
        x, _ = ravel_pytree(params)
        return dataclasses.replace(lin, operator=self._jtj_diagonal(lin, x.shape[0], x.dtype))

    def solve(self, linearisation, rhs, damping, damping_mode):
        check_damping_mode(damping_mode)
        jtj_diag, lin = linearisation.operator, linearisation
        b, _ = ravel_pytree(rhs)
        b = b.astype(jtj_diag.dtype)
        d = damping_diagonal(jtj_diag, damping_mode)
        precond = 1.0 / jnp.maximum(jtj_diag + damping * d, jnp.finfo(b.dtype).tiny)

        def matvec(v):
            return lin.vjp(lin.jvp(v)) + damping * d * v

        step = pcg(matvec, b, precond, self.max_iterations, self.tolerance)
        ok = jnp.all(jnp.isfinite(step))
        return lin.unravel(jnp.where(ok, step, jnp.zeros_like(step))), ok

    def _jtj_diagonal(self, lin: Linearisation, n: int, dtype) -> jax.Array:
        """``diag(JᵀJ)`` ``[n]``, exact or estimated (class docstring)."""
        if n <= self.exact_diagonal_limit:
            cols = jax.vmap(lin.jvp)(jnp.eye(n, dtype=dtype))  # [n, m]: rows are columns of J
            return jnp.sum(cols * cols, axis=1)
        probes = jax.random.rademacher(
            jax.random.key(0), (self.diagonal_probes, lin.residual.shape[0]), dtype=dtype
        )
        jtu = jax.vmap(lin.vjp)(probes)  # [probes, n]
        return jnp.mean(jtu * jtu, axis=0)


def pcg(matvec, b, precond, iterations: int, tolerance: float):
    """Preconditioned CG from x=0 for a symmetric positive (semi-)definite operator; ``[n]``.

    ``matvec: [n] -> [n]``, ``b [n]``, ``precond [n]`` (the inverse diagonal); exactly
    ``iterations`` steps of ``lax.scan``, frozen once ``‖r‖ <= tolerance · ‖b‖``."""
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
