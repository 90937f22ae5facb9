"""How gradients flow through ``least_squares``: the ``differentiation=`` options.

- ``ImplicitExact(dense_limit=1024)`` (the default without ``refresh``): the solve itself is not
  differentiated; the returned ``params`` carry the implicit-function-theorem VJP at the
  returned point, ``dx*/dθ = -H⁻¹ ∂g/∂θ`` with ``g = ∇ₓ cost`` and ``H`` the true Hessian of the
  cost (dense ``jax.hessian`` and an eigen pseudo-inverse for ``n <= dense_limit``, otherwise CG
  on Hessian-vector products).
- ``ImplicitGaussNewton()``: the same with ``H ≈ JᵀJ`` and ``∂g/∂θ ≈ Jᵀ ∂r/∂θ``, the system
  solved by the method's own linear solver (so a structured solver serves the gradient too).
  Cheaper; exact only for zero-residual problems.
- ``Unrolled()`` (the default with ``refresh``): reverse-mode through every iteration of the
  scan (memory grows with ``iterations``). For deliberately truncated solves (a few GN steps
  inside a learning loop), where the gradient of that procedure is what you want. A NaN in a
  rejected trial step can turn unrolled gradients NaN (the ``where`` that discarded it still
  multiplies its cotangent by zero).

Implicit gradients reach only the floating leaves of ``args`` (``params0`` gets zero, integer
leaves none; values closed over by ``residual_fn`` are constants), and are meaningful only when
the returned point is a stationary point (check ``status``). They cannot see a ``refresh``'s
dependence on the solution, so these options refuse one (``supports_refresh``).

Each option is a frozen dataclass with ``detach(x0, args)`` (what the iterations see) and
``attach(residual, x_star, args, method)`` (the returned point, with its VJP).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from avatar_jax.solve.linear import FlatResidual, pcg

__all__ = ["Differentiation", "ImplicitExact", "ImplicitGaussNewton", "Unrolled"]


@runtime_checkable
class Differentiation(Protocol):
    supports_refresh: bool

    def detach(self, x0: jax.Array, args: tuple) -> tuple[jax.Array, tuple]: ...

    def attach(self, residual: FlatResidual, x_star: jax.Array, args: tuple, method: Any) -> jax.Array: ...


@dataclasses.dataclass(frozen=True)
class Unrolled:
    """Differentiate through the iterations as they ran (module docstring)."""

    supports_refresh: ClassVar[bool] = True

    def detach(self, x0, args):
        return x0, args

    def attach(self, residual, x_star, args, method):
        return x_star


@dataclasses.dataclass(frozen=True)
class ImplicitExact:
    """Implicit gradient with the true Hessian of the cost (module docstring)."""

    dense_limit: int = 1024
    supports_refresh: ClassVar[bool] = False

    def __post_init__(self):
        if not isinstance(self.dense_limit, int) or self.dense_limit < 0:
            raise ValueError(f"ImplicitExact.dense_limit must be an int >= 0, got {self.dense_limit!r}")

    def detach(self, x0, args):
        return jax.lax.stop_gradient((x0, args))

    def attach(self, residual, x_star, args, method):
        """``x_star [n]`` unchanged, with the VJP ``θ̄ = -(∂g/∂θ)ᵀ H⁺ x̄``."""

        def cotangent(x, floats, args_of, x_bar):
            def gradient(x_, floats_):
                return jax.grad(lambda y: _cost(residual, y, args_of(floats_)))(x_)

            w = _solve_hessian(lambda y: gradient(y, floats), x, x_bar, self.dense_limit)
            _, vjp = jax.vjp(lambda f: gradient(x, f), floats)
            return vjp(-w)[0]

        return _with_implicit_vjp(x_star, args, cotangent)


@dataclasses.dataclass(frozen=True)
class ImplicitGaussNewton:
    """Implicit gradient with ``H ≈ JᵀJ``, solved by ``method.linear_solver`` (module docstring)."""

    supports_refresh: ClassVar[bool] = False

    def detach(self, x0, args):
        return jax.lax.stop_gradient((x0, args))

    def attach(self, residual, x_star, args, method):
        """``x_star [n]`` unchanged, with the VJP ``θ̄ = -(∂r/∂θ)ᵀ J (JᵀJ)⁻¹ x̄``."""
        solver = method.linear_solver

        def cotangent(x, floats, args_of, x_bar):
            a = args_of(floats)
            lin = solver.linearise(residual.residual_fn, residual.unravel(x), a)
            w, ok = solver.solve(lin, residual.unravel(x_bar), jnp.zeros((), x.dtype), method.damping_mode)
            w = jnp.where(ok, ravel_pytree(w)[0].astype(x.dtype), 0.0)
            _, vjp = jax.vjp(lambda f: residual(x, args_of(f)), floats)
            return vjp(-lin.jvp(w))[0]

        return _with_implicit_vjp(x_star, args, cotangent)


def _cost(residual: FlatResidual, x, args):
    r = residual(x, args)
    return 0.5 * jnp.vdot(r, r)


def _with_implicit_vjp(x_star, args, cotangent: Callable):
    """Identity on ``x_star [n]`` whose VJP sends ``x̄ [n]`` to ``cotangent(x, floats, args_of,
    x̄)`` on the floating leaves of ``args`` (a list of them; ``args_of(floats)`` rebuilds the
    args tuple around them), zero on ``x_star`` and nothing on the other leaves."""
    leaves, treedef = jax.tree_util.tree_flatten(args)
    is_float = [jnp.issubdtype(jnp.result_type(leaf), jnp.inexact) for leaf in leaves]
    floats = [leaf for leaf, f in zip(leaves, is_float) if f]
    others = [leaf for leaf, f in zip(leaves, is_float) if not f]

    def rebuild(float_leaves, other_leaves):
        fl, ot = iter(float_leaves), iter(other_leaves)
        return treedef.unflatten([next(fl) if f else next(ot) for f in is_float])

    @jax.custom_vjp
    def attach(x, floats, others):
        return x

    def fwd(x, floats, others):
        return x, (x, floats, others)

    def bwd(res, x_bar):
        x, fls, ols = res
        fls_bar = cotangent(x, fls, lambda f: rebuild(f, ols), x_bar)
        return jnp.zeros_like(x), fls_bar, [None] * len(ols)

    attach.defvjp(fwd, bwd)
    return attach(x_star, floats, others)


def _solve_hessian(grad_fn, x, b, dense_limit: int):
    """``H⁺ b`` ``[n]`` for the Hessian ``H = ∂grad_fn/∂x`` at ``x [n]``, ``b [n]``: eigen
    pseudo-inverse of the dense H up to ``dense_limit`` unknowns, CG on H-vector products above."""
    n = x.shape[0]
    if n <= dense_limit:
        hess = jax.jacfwd(grad_fn)(x)
        hess = 0.5 * (hess + hess.T)
        evals, evecs = jnp.linalg.eigh(hess)
        cutoff = n * jnp.finfo(x.dtype).eps * jnp.max(jnp.abs(evals), initial=0.0)
        inv = jnp.where(jnp.abs(evals) > cutoff, 1.0 / jnp.where(evals == 0, 1.0, evals), 0.0)
        return evecs @ (inv * (evecs.T @ b))
    _, hvp = jax.linearize(grad_fn, x)
    return pcg(hvp, b, jnp.ones_like(b), 4 * n if n < 500 else 2000, 1e-12)
