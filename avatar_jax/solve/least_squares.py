"""Batched Gauss-Newton / Levenberg-Marquardt for nonlinear least squares on pytrees.

Minimises ``cost(params) = 0.5 · ‖r(params, *args)‖²`` for one problem; batch by ``vmap``::

    fit = jax.jit(jax.vmap(lambda p, a: least_squares(residual_fn, p, a, iterations=20)))
    result = fit(params0_batch, data_batch)        # every field gets a leading [B] axis

Each problem keeps its own damping, step acceptance, freeze-on-convergence and status; all of it
is ``jnp.where`` selection inside one ``lax.scan`` of exactly ``iterations`` steps (no Python loop
over values, no host sync), so a NaN in one problem cannot change another's result.

One iteration (per problem):

1. ``J· = linearize(r, x)``; gradient ``g = Jᵀr`` by the transposed linearisation (with
   ``DenseCholesky`` J is formed once by ``jacfwd`` and serves steps 1-3).
2. ``step, ok = linear_solver(residual_fn, params, args, -g, λ, damping_mode)`` — the damped
   normal equations ``(JᵀJ + λ·D) step = -g`` (see ``avatar_jax.solve.linear`` for the solver
   protocol; λ = 0 for Gauss-Newton).
3. Predicted reduction from one jvp, ``pred = -(r·Jstep + ½‖Jstep‖²)``, so acceptance works for
   any linear solver; actual reduction from one residual evaluation at ``x + step``.
4. Gauss-Newton accepts every finite step. Levenberg-Marquardt accepts when the gain ratio
   ``ρ = actual / pred > 1e-4`` and updates λ with Nielsen's rule (accept: ``λ ·= max(⅓,
   1 - (2ρ-1)³)``; reject: ``λ ·= ν, ν ·= 2``); ``damping_update=FactorDamping(...)`` instead
   accepts any decrease and scales λ by fixed factors.

With ``refresh=`` each iteration first updates the auxiliary ``args`` from the current
parameters (correspondences, IRLS weights, lagged terms) and re-evaluates the residual under
them; steps 1-4 then run under the refreshed args.

Status codes (``Status``; ``status_name(code)``):

- ``CONVERGED`` (0): ``‖g‖_∞ <= gtol``; or an accepted step with ``actual <= ftol · cost`` or
  ``‖step‖ <= xtol · (xtol + ‖x‖)``; or (LM) λ reached ``max_damping`` without finding a
  decrease: no step lowers the cost at working precision (this is how float32 problems stop).
- ``MAX_ITERATIONS`` (1): ran all ``iterations`` without meeting a tolerance. With the default
  tolerances (all 0, i.e. the paper's fixed N iterations) this is the normal outcome.
- ``NON_FINITE`` (2): the initial residual was not finite, or (GN) a step produced a non-finite
  residual, or (LM) λ hit ``max_damping`` while the trial points stayed non-finite. The result
  keeps the last finite parameters.
- ``SINGULAR`` (3): the linear solver reported failure (GN: singular ``JᵀJ``; LM: still failing
  at ``max_damping``). Parameters stay at the last accepted point.

Differentiation (``differentiation=``):

- ``"implicit"`` (default): the solve itself is not differentiated; ``params`` of the result is
  attached to ``args`` by the implicit function theorem at the returned point, ``dx*/dθ =
  -H⁻¹ ∂g/∂θ`` with ``g = ∇ₓ cost``. ``implicit_hessian="exact"`` uses the true Hessian of the
  cost (dense ``jax.hessian`` + eigen pseudo-inverse for ``n <= dense_hessian_limit``, otherwise
  CG on Hessian-vector products); ``"gauss_newton"`` uses ``H ≈ JᵀJ`` and ``∂g/∂θ ≈ Jᵀ ∂r/∂θ``
  solved with ``linear_solver`` (cheaper, reuses a structured solver; exact only for
  zero-residual problems). ``params0`` gets zero gradient. Gradients are only meaningful when
  the returned point is a stationary point (check ``status``). Only inputs passed through
  ``args`` get gradients: values closed over by ``residual_fn`` are treated as constants.
- ``"unrolled"``: reverse-mode through all iterations of the scan (memory grows with
  ``iterations``). Use it when the solve is deliberately stopped early (a few GN iterations
  inside a learning loop) and the gradient of that truncated procedure is what you want. A NaN
  in a rejected trial step can turn unrolled gradients NaN (the ``where`` that discarded it
  still multiplies its cotangent by zero).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct
from jax.flatten_util import ravel_pytree

from avatar_jax.solve.linear import DenseCholesky, LinearSolver, _pcg, check_damping_mode

METHODS = ("gauss_newton", "levenberg_marquardt")
DIFFERENTIATION = ("implicit", "unrolled")
IMPLICIT_HESSIANS = ("exact", "gauss_newton")
_ACCEPT_RATIO = 1e-4  # minimal gain ratio of an accepted LM step (Nielsen / Madsen et al.)


class Status(enum.IntEnum):
    CONVERGED = 0
    MAX_ITERATIONS = 1
    NON_FINITE = 2
    SINGULAR = 3


def status_name(code) -> str:
    """Name of an integer status code, e.g. ``status_name(result.status[3]) == "CONVERGED"``."""
    try:
        return Status(int(code)).name
    except ValueError:
        raise ValueError(f"unknown least-squares status code {code!r}") from None


@struct.dataclass
class LeastSquaresResult:
    """Per-problem result (under ``vmap`` every field gets a leading ``[B]`` axis).

    Attributes:
      params: pytree shaped like ``params0``: the last accepted parameters.
      cost: ``[]`` final ``0.5 · ‖r‖²``.
      initial_cost: ``[]`` cost at ``params0``.
      cost_history: ``[iterations]`` cost after each iteration (constant once frozen).
      linearization_cost_history: ``[iterations]`` cost at the point each iteration linearised,
        under that iteration's ``args`` (after ``refresh``; without it, the previous iteration's
        cost). An LM iteration never ends above it.
      iterations: ``[]`` int32, iterations run before the problem froze (<= ``iterations``).
      status: ``[]`` int32 ``Status`` code.
      damping: ``[]`` final LM λ (0 for Gauss-Newton).
      gradient_norm: ``[]`` ``‖Jᵀr‖_∞`` at the start of the last iteration run.
      args: the ``args`` tuple of the last iteration run (after ``refresh``; the inputs as given
        without it).
    """

    params: Any
    cost: jax.Array
    initial_cost: jax.Array
    cost_history: jax.Array
    linearization_cost_history: jax.Array
    iterations: jax.Array
    status: jax.Array
    damping: jax.Array
    gradient_norm: jax.Array
    args: tuple = ()


@dataclasses.dataclass(frozen=True)
class NielsenDamping:
    """LM damping update of Nielsen (1999), the default: after an accepted step with gain ratio
    ρ, ``λ ·= max(⅓, 1 - (2ρ-1)³)``; after a rejected one ``λ ·= ν, ν ·= 2`` (ν = 2 again after
    the next accepted step)."""

    def __call__(self, damping, nu, accept, ratio):
        shrink = jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3)
        return (jnp.where(accept, damping * shrink, damping * nu),
                jnp.where(accept, 2.0, jnp.minimum(2.0 * nu, 2.0**30)))


@dataclasses.dataclass(frozen=True)
class FactorDamping:
    """Marquardt's original schedule: a step is accepted when it lowers the cost (no gain-ratio
    test, so the predicted reduction and its J·step product go unused and are compiled away);
    ``λ ·= decrease`` after an accepted step, ``λ = max(λ · increase, restart)`` after a rejected
    one. ``restart > 0`` lets LM start undamped (``initial_damping=0``: plain Gauss-Newton steps
    while they succeed) and still recover."""

    decrease: float = 1.0 / 3.0
    increase: float = 10.0
    restart: float = 1e-3
    uses_gain_ratio = False  # class attribute, read by the driver

    def __call__(self, damping, nu, accept, ratio):
        return (jnp.where(accept, damping * self.decrease,
                          jnp.maximum(damping * self.increase, self.restart)), nu)


@struct.dataclass
class _State:
    x: jax.Array  # [n]
    r: jax.Array  # [m]
    cost: jax.Array
    damping: jax.Array
    nu: jax.Array
    status: jax.Array
    done: jax.Array
    iterations: jax.Array
    gradient_norm: jax.Array
    args: tuple


def least_squares(
    residual_fn: Callable[..., Any],
    params0: Any,
    *args: Any,
    method: str = "levenberg_marquardt",
    iterations: int = 50,
    linear_solver: LinearSolver | None = None,
    damping_mode: str = "marquardt",
    initial_damping: float = 1e-3,
    max_damping: float = 1e16,
    ftol: float = 0.0,
    xtol: float = 0.0,
    gtol: float = 0.0,
    differentiation: str | None = None,
    implicit_hessian: str = "exact",
    dense_hessian_limit: int = 1024,
    refresh: Callable[..., tuple] | None = None,
    damping_update: Callable = NielsenDamping(),
) -> LeastSquaresResult:
    """Minimise ``0.5 · ‖residual_fn(params, *args)‖²`` over the pytree ``params``.

    Args:
      residual_fn: ``(params, *args) -> residuals`` (array or pytree of floating arrays, any
        shapes; flattened internally to ``[m]``).
      params0: initial parameters, a pytree of floating arrays (flattened to ``[n]``).
      *args: extra inputs of ``residual_fn`` (pytrees; integer leaves allowed). With implicit
        differentiation these are what gradients flow to.
      method: ``"levenberg_marquardt"`` or ``"gauss_newton"``.
      iterations: static number of scan steps.
      linear_solver: solver of the damped normal equations (``DenseCholesky()`` by default,
        ``ConjugateGradient()`` or a structured solver following the protocol in
        ``avatar_jax.solve.linear``).
      damping_mode: ``"marquardt"`` (``D = diag(JᵀJ)``, scale invariant, like MINPACK) or
        ``"identity"`` (``D = I``).
      initial_damping / max_damping: LM λ at the start / ceiling that ends the search.
      ftol, xtol, gtol: convergence tolerances (0 disables, the default: fixed iterations).
      differentiation, implicit_hessian, dense_hessian_limit: see the module docstring.
        ``differentiation=None`` means ``"implicit"``, or ``"unrolled"`` with ``refresh``.
      refresh: optional ``(params, *args) -> args``, called at the start of every iteration to
        update auxiliary inputs from the current parameters: correspondences (ICP, sliding
        contours), IRLS weights of a robust kernel, terms lagged by one iteration. The iteration
        then linearises, steps and judges the step under the refreshed args, so LM still never
        raises the cost it is judged on; the cost may change between iterations. It must keep
        the structure, shapes and dtypes of args. Only ``"unrolled"`` differentiation supports
        it (the implicit gradient would miss the refresh's dependence on the solution).
      damping_update: the LM damping schedule, ``NielsenDamping()`` (default: accept when the
        gain ratio ρ > 1e-4) or ``FactorDamping(decrease, increase, restart)`` (accept any
        decrease); any callable ``(λ, ν, accept, ρ) -> (λ, ν)`` works. A schedule whose
        ``uses_gain_ratio`` attribute is False accepts any decrease (its predicted reduction
        is then unused, and compiled away).

    Returns:
      ``LeastSquaresResult``.

    Raises:
      ValueError at trace time for non-floating parameters or residuals (naming the leaf), a
      residual_fn that fails on ``params0``, a linear solver returning a mismatched step, or an
      unknown option.
    """
    if differentiation is None:
        differentiation = "implicit" if refresh is None else "unrolled"
    _check_options(method, differentiation, implicit_hessian, damping_mode, iterations)
    if refresh is not None and differentiation == "implicit":
        raise ValueError("refresh needs differentiation='unrolled': the implicit gradient would "
                         "treat the refreshed args as independent of the solution")
    _check_params(params0)
    _check_residual(residual_fn, params0, args)
    solver = DenseCholesky() if linear_solver is None else linear_solver
    x0, unravel = ravel_pytree(params0)

    if differentiation == "implicit":
        x0, args_solve = jax.lax.stop_gradient((x0, args))
    else:
        args_solve = args
    fn = _flatten_residual(residual_fn, unravel, x0.dtype)
    state, (history_before, history), initial_cost = _run(
        fn, residual_fn, unravel, x0, args_solve, solver,
        method=method, iterations=iterations, damping_mode=damping_mode,
        initial_damping=initial_damping, max_damping=max_damping,
        ftol=ftol, xtol=xtol, gtol=gtol, refresh=refresh, damping_update=damping_update,
    )
    x = state.x
    if differentiation == "implicit":
        x = _attach_implicit_gradient(
            fn, residual_fn, unravel, solver, damping_mode, implicit_hessian,
            dense_hessian_limit, x, args,
        )
    return LeastSquaresResult(
        params=unravel(x),
        cost=state.cost,
        initial_cost=initial_cost,
        cost_history=history,
        linearization_cost_history=history_before,
        iterations=state.iterations,
        status=state.status,
        damping=state.damping,
        gradient_norm=state.gradient_norm,
        args=state.args,
    )


def batched_least_squares(
    residual_fn: Callable[..., Any],
    params0: Any,
    *args: Any,
    chunk_size: int | None = 64,
    **options: Any,
) -> LeastSquaresResult:
    """``least_squares`` over a leading batch axis ``[B, ...]`` of ``params0`` and every ``args``
    leaf, ``chunk_size`` problems at a time.

    Plain ``vmap`` over B = 1024 makes every intermediate (the ``[B, m, n]`` Jacobian, the jvp
    tangents ``[B, n, ...]``) fall out of cache at each of the scan's iterations; running chunks
    of 64 through all iterations (``lax.map(..., batch_size=chunk_size)``: a scan over vmapped
    chunks) measured ~3-6x faster per problem-iteration on CPU (benchmarks/solver_speed.py).
    ``chunk_size=None`` is plain ``vmap`` (better on GPU, where batch width is free). Results are
    identical either way up to rounding; pure, jit-able and differentiable like
    ``least_squares`` (``**options`` are passed through).
    """
    leaves = jax.tree_util.tree_leaves((params0, args))
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            "batched_least_squares needs a common leading batch axis on params0 and every args "
            f"leaf; got leading sizes {sorted(map(str, sizes))}"
        )

    def one(inputs):
        p, a = inputs
        return least_squares(residual_fn, p, *a, **options)

    if chunk_size is None:
        return jax.vmap(one)((params0, args))
    return jax.lax.map(one, (params0, args), batch_size=min(chunk_size, sizes.pop()))


def _run(fn, residual_fn, unravel, x0, args, solver, *, method, iterations, damping_mode,
         initial_damping, max_damping, ftol, xtol, gtol, refresh, damping_update):
    dtype = x0.dtype
    lm = method == "levenberg_marquardt"
    r0 = fn(x0, *args)
    cost0 = 0.5 * jnp.vdot(r0, r0)
    bad_start = ~jnp.isfinite(cost0)
    state = _State(
        x=x0,
        r=r0,
        cost=cost0,
        damping=jnp.asarray(initial_damping if lm else 0.0, dtype),
        nu=jnp.asarray(2.0, dtype),
        status=jnp.where(bad_start, Status.NON_FINITE, Status.MAX_ITERATIONS).astype(jnp.int32),
        done=bad_start,
        iterations=jnp.zeros((), jnp.int32),
        gradient_norm=jnp.asarray(jnp.inf, dtype),
        args=jax.tree.map(jnp.asarray, tuple(args)),
    )

    def step_fn(s: _State, _):
        args, r, cost = s.args, s.r, s.cost
        if refresh is not None:
            args = _checked_refresh(refresh, unravel(s.x), s.args)
        if isinstance(solver, DenseCholesky):  # form J once: gradient, step and J·step share it
            if refresh is not None:
                r = fn(s.x, *args)
            jac = jax.jacfwd(lambda x: fn(x, *args))(s.x)  # [m, n]
            g = r @ jac
            step, ok = solver.solve_dense(jac, -g, s.damping, damping_mode)
            j_step = lambda v: jac @ v  # noqa: E731
        else:
            r_lin, j_step = jax.linearize(lambda x: fn(x, *args), s.x)
            if refresh is not None:  # the residual under the refreshed args
                r = r_lin
            (g,) = jax.linear_transpose(j_step, s.x)(r)
            step_tree, ok = solver(residual_fn, unravel(s.x), args, unravel(-g), s.damping,
                                   damping_mode)
            step = _flatten_step(step_tree, unravel(s.x), dtype)
        if refresh is not None:
            cost = 0.5 * jnp.vdot(r, r)
        g_inf = jnp.max(jnp.abs(g), initial=0.0)
        small_gradient = g_inf <= gtol
        ok = jnp.asarray(ok, bool) & jnp.all(jnp.isfinite(step))
        step = jnp.where(ok, step, 0.0)

        j_step = j_step(step)
        predicted = -(jnp.vdot(r, j_step) + 0.5 * jnp.vdot(j_step, j_step))
        x_new = s.x + step
        r_new = fn(x_new, *args)
        cost_new = 0.5 * jnp.vdot(r_new, r_new)
        finite = jnp.isfinite(cost_new)
        actual = cost - cost_new
        ratio = actual / jnp.maximum(predicted, jnp.finfo(dtype).tiny)

        if lm:
            accept = ok & finite & (actual > 0)
            if getattr(damping_update, "uses_gain_ratio", True):
                accept = accept & (ratio > _ACCEPT_RATIO)
            damping, nu = damping_update(s.damping, s.nu, accept, ratio)
            damping, nu = jnp.asarray(damping, dtype), jnp.asarray(nu, dtype)
            exhausted = ~accept & (s.damping >= max_damping)
            damping = jnp.minimum(damping, max_damping)
            fail_status = jnp.where(~ok, Status.SINGULAR,
                                    jnp.where(~finite, Status.NON_FINITE, Status.CONVERGED))
            failed = exhausted
        else:
            accept = ok & finite
            damping, nu = s.damping, s.nu
            fail_status = jnp.where(~ok, Status.SINGULAR, Status.NON_FINITE)
            failed = ~accept

        step_small = jnp.linalg.norm(step) <= xtol * (xtol + jnp.linalg.norm(s.x))
        cost_small = (actual >= 0) & (actual <= ftol * cost)
        converged = small_gradient | (accept & (step_small | cost_small))

        new_status = jnp.where(
            small_gradient, Status.CONVERGED,
            jnp.where(failed, fail_status,
                      jnp.where(converged, Status.CONVERGED, s.status))).astype(jnp.int32)
        take = accept & ~small_gradient & ~s.done
        live = ~s.done
        new = _State(
            x=jnp.where(take, x_new, s.x),
            r=jnp.where(take, r_new, jnp.where(live, r, s.r)),
            cost=jnp.where(take, cost_new, jnp.where(live, cost, s.cost)),
            damping=jnp.where(live, damping, s.damping),
            nu=jnp.where(live, nu, s.nu),
            status=jnp.where(live, new_status, s.status),
            done=s.done | converged | failed,
            iterations=s.iterations + live.astype(jnp.int32),
            gradient_norm=jnp.where(live, g_inf, s.gradient_norm),
            args=jax.tree.map(lambda a, b: jnp.where(live, a, b), args, s.args),
        )
        return new, (jnp.where(live, cost, s.cost), new.cost)

    state, history = jax.lax.scan(step_fn, state, None, length=iterations)
    return state, history, cost0


def _checked_refresh(refresh, params, args):
    new = tuple(refresh(params, *args))
    shapes = lambda t: jax.tree.map(lambda a: (jnp.shape(a), jnp.result_type(a)), t)  # noqa: E731
    if jax.tree_util.tree_structure(new) != jax.tree_util.tree_structure(args) or shapes(new) != shapes(args):
        raise ValueError("refresh must return args with the structure, shapes and dtypes it was given: "
                         f"got {shapes(new)}, expected {shapes(args)}")
    return new


def _flatten_residual(residual_fn, unravel, dtype):
    def fn(x, *args):
        r, _ = ravel_pytree(residual_fn(unravel(x), *args))
        return r.astype(dtype)

    return fn


def _flatten_step(step_tree, params, dtype):
    """Ravel a linear solver's step after checking it has the structure of ``params``."""
    want = jax.tree_util.tree_structure(params)
    got = jax.tree_util.tree_structure(step_tree)
    if want != got:
        raise ValueError(f"linear_solver returned a step with structure {got}, expected {want}")
    for (path, p), s in zip(jax.tree_util.tree_leaves_with_path(params),
                            jax.tree_util.tree_leaves(step_tree)):
        if jnp.shape(p) != jnp.shape(s):
            raise ValueError(
                f"linear_solver returned step leaf {jax.tree_util.keystr(path)} with shape "
                f"{jnp.shape(s)}, expected {jnp.shape(p)}"
            )
    flat, _ = ravel_pytree(step_tree)
    return flat.astype(dtype)


# --------------------------------------------------------------------------------------------
# Implicit differentiation


def _attach_implicit_gradient(fn, residual_fn, unravel, solver, damping_mode, implicit_hessian,
                              dense_hessian_limit, x_star, args):
    """Identity on ``x_star`` whose VJP w.r.t. ``args`` is the implicit-function-theorem one."""
    leaves, treedef = jax.tree_util.tree_flatten(args)
    is_float = [jnp.issubdtype(jnp.result_type(leaf), jnp.inexact) for leaf in leaves]

    def rebuild(float_leaves, other_leaves):
        fl, ot = iter(float_leaves), iter(other_leaves)
        return treedef.unflatten([next(fl) if f else next(ot) for f in is_float])

    float_leaves = [leaf for leaf, f in zip(leaves, is_float) if f]
    other_leaves = [leaf for leaf, f in zip(leaves, is_float) if not f]

    @jax.custom_vjp
    def attach(x, float_leaves, other_leaves):
        return x

    def fwd(x, float_leaves, other_leaves):
        return x, (x, float_leaves, other_leaves)

    def bwd(res, x_bar):
        x, fls, ols = res
        a = rebuild(fls, ols)

        def grad_x(x_, fls_):
            def cost(xx):
                r = fn(xx, *rebuild(fls_, ols))
                return 0.5 * jnp.vdot(r, r)

            return jax.grad(cost)(x_)

        if implicit_hessian == "exact":
            w = _solve_hessian(lambda xx: grad_x(xx, fls), x, x_bar, dense_hessian_limit)
            _, vjp_theta = jax.vjp(lambda f: grad_x(x, f), fls)
            (fls_bar,) = vjp_theta(-w)
        else:
            w_tree, ok = solver(residual_fn, unravel(x), a, unravel(x_bar),
                                jnp.zeros((), x.dtype), damping_mode)
            w, _ = ravel_pytree(w_tree)
            w = jnp.where(ok, w.astype(x.dtype), 0.0)
            _, j_w = jax.jvp(lambda xx: fn(xx, *a), (x,), (w,))
            _, vjp_theta = jax.vjp(lambda f: fn(x, *rebuild(f, ols)), fls)
            (fls_bar,) = vjp_theta(-j_w)
        return jnp.zeros_like(x), fls_bar, [None] * len(ols)

    attach.defvjp(fwd, bwd)
    return attach(x_star, float_leaves, other_leaves)


def _solve_hessian(grad_fn, x, b, dense_limit: int):
    """``H⁺ b`` for the Hessian ``H = ∂grad_fn/∂x`` at ``x`` (``[n]``)."""
    n = x.shape[0]
    if n <= dense_limit:
        hess = jax.jacfwd(grad_fn)(x)
        hess = 0.5 * (hess + hess.T)
        evals, evecs = jnp.linalg.eigh(hess)
        cutoff = n * jnp.finfo(x.dtype).eps * jnp.max(jnp.abs(evals), initial=0.0)
        inv = jnp.where(jnp.abs(evals) > cutoff, 1.0 / jnp.where(evals == 0, 1.0, evals), 0.0)
        return evecs @ (inv * (evecs.T @ b))
    _, hvp = jax.linearize(grad_fn, x)
    return _pcg(hvp, b, jnp.ones_like(b), 4 * n if n < 500 else 2000, 1e-12)


# --------------------------------------------------------------------------------------------
# Input validation (trace time)


def _check_options(method, differentiation, implicit_hessian, damping_mode, iterations):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if differentiation not in DIFFERENTIATION:
        raise ValueError(f"differentiation must be one of {DIFFERENTIATION}, got {differentiation!r}")
    if implicit_hessian not in IMPLICIT_HESSIANS:
        raise ValueError(f"implicit_hessian must be one of {IMPLICIT_HESSIANS}, "
                         f"got {implicit_hessian!r}")
    check_damping_mode(damping_mode)
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive Python int, got {iterations!r}")


def _check_params(params0):
    leaves = jax.tree_util.tree_leaves_with_path(params0)
    if not leaves:
        raise ValueError("params0 has no array leaves")
    for path, leaf in leaves:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(
                f"params0 leaf {jax.tree_util.keystr(path) or '<root>'} has dtype {dtype}; "
                "parameters must be real floating point"
            )
    dtypes = {jnp.result_type(leaf) for _, leaf in leaves}
    if len(dtypes) > 1:
        raise ValueError(f"params0 leaves mix dtypes {sorted(map(str, dtypes))}; use one float dtype")


def _check_residual(residual_fn, params0, args):
    try:
        out = jax.eval_shape(residual_fn, params0, *args)
    except Exception as err:  # re-raised with the shapes that caused it
        shapes = jax.tree_util.tree_map(jnp.shape, params0)
        raise ValueError(
            f"residual_fn failed on params0 (leaf shapes {shapes}) and {len(args)} args: "
            f"{type(err).__name__}: {err}"
        ) from err
    leaves = jax.tree_util.tree_leaves_with_path(out)
    if not leaves:
        raise ValueError("residual_fn returned no residual arrays")
    for path, leaf in leaves:
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise ValueError(
                f"residual leaf {jax.tree_util.keystr(path) or '<root>'} has dtype {leaf.dtype}; "
                "residuals must be real floating point"
            )
