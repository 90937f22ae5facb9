"""Batched Gauss-Newton / Levenberg-Marquardt for nonlinear least squares on pytrees.

Minimises ``cost(params) = 0.5 · ‖r(params, *args)‖²`` for one problem; batch by ``vmap``::

    fit = jax.jit(jax.vmap(lambda p, a: least_squares(residual_fn, p, a, iterations=20)))
    result = fit(params0_batch, data_batch)        # every field gets a leading [B] axis

Each problem keeps its own damping, step acceptance, freeze-on-convergence and status; all of it
is ``jnp.where`` selection inside one ``lax.scan`` of exactly ``iterations`` steps (no Python loop
over values, no host sync), so a NaN in one problem cannot change another's result.

One iteration (per problem), with ``method = solver`` (``GaussNewton`` / ``LevenbergMarquardt``)
and its ``linear_solver`` (protocol in ``avatar_jax.solve.linear``):

1. linearise: ``refresh`` the args (if given), ``lin = linear_solver.linearise(...)`` at ``x``;
   gradient ``g = lin.vjp(r)``.
2. solve and try: ``step, ok = linear_solver.solve(lin, -g, λ, damping_mode)``, the damped normal
   equations ``(JᵀJ + λ·D) step = -g`` (λ = 0 for Gauss-Newton); one residual evaluation at
   ``x + step``; predicted reduction ``-(r·Jstep + ½‖Jstep‖²)`` from one ``lin.jvp``.
3. judge: the step is taken when solved, finite and ``method.accepts(actual, ρ)`` (gain ratio
   ``ρ = actual / predicted``); the ``Tolerances`` and ``method.gives_up`` decide whether the
   problem stops here, and with which status.
4. update: x, residual and cost of the taken step, ``method.next_damping``, status, histories.

With ``refresh=`` step 1 first updates the auxiliary ``args`` from the current parameters
(correspondences, IRLS weights, lagged terms) and re-evaluates the residual under them; steps
2-4 then run under the refreshed args, so LM never raises the cost it is judged on.

Status codes (``avatar_jax.status.Status``; ``Status.of(code).name`` on the host):

- ``OK`` (0): ``‖g‖_∞ <= gtol``; or an accepted step met ``ftol`` / ``xtol``; or (LM) λ reached
  ``max_damping`` without finding a decrease: no step lowers the cost at working precision
  (this is how float32 problems stop).
- ``MAX_ITERATIONS`` (1): ran all ``iterations`` without meeting a tolerance. With the default
  tolerances (all 0, i.e. the paper's fixed N iterations) this is the normal outcome.
- ``NON_FINITE`` (2): the initial residual was not finite, or (GN) a step produced a non-finite
  residual, or (LM) λ hit ``max_damping`` while the trial points stayed non-finite. The result
  keeps the last finite parameters.
- ``SINGULAR`` (3): the linear solver reported failure (GN: singular ``JᵀJ``; LM: still failing
  at ``max_damping``). Parameters stay at the last accepted point.

Differentiation: see ``avatar_jax.solve.implicit``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct
from jax.flatten_util import ravel_pytree

from avatar_jax.solve.implicit import Differentiation, ImplicitExact, Unrolled
from avatar_jax.solve.linear import FlatResidual, Linearisation
from avatar_jax.solve.methods import LevenbergMarquardt, Method, Tolerances
from avatar_jax.status import Status


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


def least_squares(
    residual_fn: Callable[..., Any],
    params0: Any,
    *args: Any,
    solver: Method = LevenbergMarquardt(),
    iterations: int = 50,
    tolerances: Tolerances = Tolerances(),
    refresh: Callable[..., tuple] | None = None,
    differentiation: Differentiation | None = None,
) -> LeastSquaresResult:
    """Minimise ``0.5 · ‖residual_fn(params, *args)‖²`` over the pytree ``params``.

    Args:
      residual_fn: ``(params, *args) -> residuals`` (array or pytree of floating arrays, any
        shapes; flattened internally to ``[m]``).
      params0: initial parameters, a pytree of floating arrays of one dtype (flattened to ``[n]``).
      *args: extra inputs of ``residual_fn`` (pytrees; integer leaves allowed). With implicit
        differentiation these are what gradients flow to.
      solver: ``LevenbergMarquardt(...)`` (default) or ``GaussNewton(...)``, each holding its
        linear solver (``avatar_jax.solve.methods``).
      iterations: static number of scan steps (a positive Python int).
      tolerances: ``Tolerances(ftol, xtol, gtol)``; all 0 by default: fixed iterations.
      refresh: optional ``(params, *args) -> args``, called at the start of every iteration to
        update auxiliary inputs from the current parameters: correspondences (ICP, sliding
        contours), IRLS weights of a robust kernel, terms lagged by one iteration. The iteration
        then linearises, steps and judges the step under the refreshed args; the cost may change
        between iterations. It must keep the structure, shapes and dtypes of args.
      differentiation: ``ImplicitExact()`` (default), ``ImplicitGaussNewton()`` or ``Unrolled()``
        (default with ``refresh``, the only one that supports it); ``avatar_jax.solve.implicit``.

    Returns:
      ``LeastSquaresResult``.

    Raises:
      ValueError at trace time for non-floating parameters or residuals (naming the leaf), a
      residual_fn that fails on ``params0``, a linear solver returning a mismatched step, a
      refresh changing the args' shapes, or a bad option.
    """
    if differentiation is None:
        differentiation = ImplicitExact() if refresh is None else Unrolled()
    _check_options(solver, iterations, tolerances, refresh, differentiation)
    _check_params(params0)
    _check_residual(residual_fn, params0, args)
    x0, unravel = ravel_pytree(params0)
    residual = FlatResidual(residual_fn, unravel)
    x0_solve, args_solve = differentiation.detach(x0, args)
    state0 = _initial_state(residual, solver, x0_solve, args_solve)
    iteration = functools.partial(_iteration, _Problem(residual, refresh), solver, tolerances)
    state, (linearised_costs, costs) = jax.lax.scan(iteration, state0, None, length=iterations)
    x = differentiation.attach(residual, state.x, args, solver)
    return LeastSquaresResult(
        params=unravel(x),
        cost=state.cost,
        initial_cost=state0.cost,
        cost_history=costs,
        linearization_cost_history=linearised_costs,
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

    Plain ``vmap`` over a large B makes every intermediate (the ``[B, m, n]`` Jacobian, the jvp
    tangents ``[B, n, ...]``) fall out of cache at each of the scan's iterations; running chunks
    through all iterations (``lax.map(..., batch_size=chunk_size)``: a scan over vmapped chunks)
    is several times faster per problem-iteration on CPU (benchmarks/solver_speed.py,
    docs/solver.md). ``chunk_size=None`` is plain ``vmap`` (better on GPU, where batch width is
    free). Results are identical either way up to rounding; pure, jit-able and differentiable
    like ``least_squares`` (``**options`` are passed through).
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


# --------------------------------------------------------------------------------------------
# The iteration: linearise / try a step / judge / update


class _Problem(NamedTuple):
    residual: FlatResidual  # (x [n], args) -> r [m]
    refresh: Callable[..., tuple] | None


@struct.dataclass
class _State:
    x: jax.Array  # [n] last accepted parameters
    r: jax.Array  # [m] residual at x under args
    cost: jax.Array  # [] 0.5 ‖r‖²
    damping: jax.Array  # [] λ
    nu: jax.Array  # [] the damping schedule's growth factor (Nielsen's ν)
    status: jax.Array  # [] int32 Status
    done: jax.Array  # [] bool: frozen
    iterations: jax.Array  # [] int32 iterations run
    gradient_norm: jax.Array  # [] ‖Jᵀr‖_∞ of the last iteration run
    args: tuple  # the last iteration's args


class _Point(NamedTuple):
    """The iterate linearised under this iteration's args."""

    args: tuple
    residual: jax.Array  # [m]
    cost: jax.Array  # []
    gradient: jax.Array  # [n] Jᵀr
    gradient_norm: jax.Array  # [] ‖Jᵀr‖_∞
    linearisation: Linearisation


class _Trial(NamedTuple):
    """The solved step and the point it leads to."""

    step: jax.Array  # [n], zeros when not ok
    ok: jax.Array  # [] bool: solved with a finite step
    x: jax.Array  # [n] x + step
    residual: jax.Array  # [m] at x + step
    cost: jax.Array  # []
    predicted: jax.Array  # [] the linear model's cost reduction


class _Verdict(NamedTuple):
    accept: jax.Array  # [] bool: the method takes the step
    small_gradient: jax.Array  # [] bool: gtol met before stepping (the step is not taken)
    ratio: jax.Array  # [] gain ratio actual / predicted
    stop: jax.Array  # [] bool: the problem freezes after this iteration
    status: jax.Array  # [] int32


def _initial_state(residual: FlatResidual, method: Method, x0, args) -> _State:
    """State at ``x0 [n]``: ``NON_FINITE`` and frozen if the initial cost is not finite."""
    r0 = residual(x0, args)
    cost0 = 0.5 * jnp.vdot(r0, r0)
    bad_start = ~jnp.isfinite(cost0)
    return _State(
        x=x0, r=r0, cost=cost0,
        damping=jnp.asarray(method.initial_damping, x0.dtype),
        nu=jnp.asarray(2.0, x0.dtype),
        status=jnp.where(bad_start, Status.NON_FINITE, Status.MAX_ITERATIONS).astype(jnp.int32),
        done=bad_start,
        iterations=jnp.zeros((), jnp.int32),
        gradient_norm=jnp.asarray(jnp.inf, x0.dtype),
        args=jax.tree.map(jnp.asarray, tuple(args)),
    )


def _iteration(problem: _Problem, method: Method, tolerances: Tolerances, state: _State, _):
    """One scan step for one problem. Returns the new state and, for the histories, the cost at
    the linearisation point and after the step (both ``[]``)."""
    point = _linearise(problem, method.linear_solver, state)
    trial = _try_step(problem, method, state, point)
    verdict = _judge(method, tolerances, state, point, trial)
    new = _update(method, state, point, trial, verdict)
    return new, (jnp.where(state.done, state.cost, point.cost), new.cost)


def _linearise(problem: _Problem, linear_solver, state: _State) -> _Point:
    """Refresh the args at ``state.x [n]`` and linearise the residual there: ``r [m]``, cost ``[]``,
    gradient ``Jᵀr [n]``."""
    args, params = state.args, problem.residual.unravel(state.x)
    if problem.refresh is not None:
        args = _checked_refresh(problem.refresh, params, args)
    lin = linear_solver.linearise(problem.residual.residual_fn, params, args)
    if problem.refresh is None:  # the state's residual is this point's (lin.residual is compiled away)
        r, cost = state.r, state.cost
    else:
        r = lin.residual
        cost = 0.5 * jnp.vdot(r, r)
    gradient = lin.vjp(r)
    return _Point(args, r, cost, gradient, jnp.max(jnp.abs(gradient), initial=0.0), lin)


def _try_step(problem: _Problem, method: Method, state: _State, point: _Point) -> _Trial:
    """Solve ``(JᵀJ + λD) step = -Jᵀr`` at the point and evaluate ``x + step``: ``step [n]``, its
    residual ``[m]``, cost and predicted reduction ``[]``. A failed solve gives a zero step."""
    lin, unravel = point.linearisation, problem.residual.unravel
    step, ok = method.linear_solver.solve(lin, unravel(-point.gradient), state.damping, method.damping_mode)
    step = _flatten_step(step, unravel(state.x), state.x.dtype)
    ok = jnp.asarray(ok, bool) & jnp.all(jnp.isfinite(step))
    step = jnp.where(ok, step, 0.0)
    x = state.x + step
    r = problem.residual(x, point.args)
    return _Trial(step, ok, x, r, 0.5 * jnp.vdot(r, r), lin.predicted_reduction(point.residual, step))


def _judge(method: Method, tolerances: Tolerances, state: _State, point: _Point, trial: _Trial) -> _Verdict:
    """Take or reject the trial; stop the problem if a tolerance is met or the method gives up
    (all ``[]``). Only ``method`` decides acceptance: GN takes any finite step, LM asks its
    damping schedule."""
    finite = jnp.isfinite(trial.cost)
    actual = point.cost - trial.cost
    ratio = actual / jnp.maximum(trial.predicted, jnp.finfo(actual.dtype).tiny)
    accept = trial.ok & finite & method.accepts(actual, ratio)
    small_gradient = tolerances.gradient_met(point.gradient_norm)
    failed = method.gives_up(accept, state.damping)
    converged = small_gradient | (accept & tolerances.step_met(trial.step, state.x, actual, point.cost))
    failure = jnp.where(~trial.ok, Status.SINGULAR, jnp.where(~finite, Status.NON_FINITE, Status.OK))
    status = jnp.where(small_gradient, Status.OK,
                       jnp.where(failed, failure, jnp.where(converged, Status.OK, state.status)))
    return _Verdict(accept, small_gradient, ratio, converged | failed, status.astype(jnp.int32))


def _update(method: Method, state: _State, point: _Point, trial: _Trial, verdict: _Verdict) -> _State:
    """The next state: the trial's x, residual and cost if taken, the method's new damping; a
    frozen problem (``state.done``) keeps everything."""
    live = ~state.done
    take = verdict.accept & ~verdict.small_gradient & live
    damping, nu = method.next_damping(state.damping, state.nu, verdict.accept, verdict.ratio)
    keep = lambda new, old: jnp.where(live, new, old)  # noqa: E731
    return _State(
        x=jnp.where(take, trial.x, state.x),
        r=jnp.where(take, trial.residual, keep(point.residual, state.r)),
        cost=jnp.where(take, trial.cost, keep(point.cost, state.cost)),
        damping=keep(damping, state.damping),
        nu=keep(nu, state.nu),
        status=keep(verdict.status, state.status),
        done=state.done | verdict.stop,
        iterations=state.iterations + live.astype(jnp.int32),
        gradient_norm=keep(point.gradient_norm, state.gradient_norm),
        args=jax.tree.map(keep, point.args, state.args),
    )


def _checked_refresh(refresh, params, args):
    new = tuple(refresh(params, *args))
    shapes = lambda t: jax.tree.map(lambda a: (jnp.shape(a), jnp.result_type(a)), t)  # noqa: E731
    if jax.tree_util.tree_structure(new) != jax.tree_util.tree_structure(args) or shapes(new) != shapes(args):
        raise ValueError("refresh must return args with the structure, shapes and dtypes it was given: "
                         f"got {shapes(new)}, expected {shapes(args)}")
    return new


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
# Input validation (trace time)


def _check_options(solver, iterations, tolerances, refresh, differentiation):
    if not isinstance(solver, Method):
        raise ValueError("solver must be GaussNewton(...) or LevenbergMarquardt(...) "
                         f"(avatar_jax.solve.methods), got {solver!r}")
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
        raise ValueError(f"iterations must be a positive Python int, got {iterations!r}")
    if not isinstance(tolerances, Tolerances):
        raise ValueError(f"tolerances must be a Tolerances(ftol=, xtol=, gtol=), got {tolerances!r}")
    if not isinstance(differentiation, Differentiation):
        raise ValueError("differentiation must be ImplicitExact(), ImplicitGaussNewton() or "
                         f"Unrolled() (avatar_jax.solve.implicit), got {differentiation!r}")
    if refresh is not None and not differentiation.supports_refresh:
        raise ValueError("refresh needs differentiation=Unrolled(): the implicit gradient would "
                         "treat the refreshed args as independent of the solution")


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
