"""The solver configuration objects: the method, its damping schedule and the stopping rule.

A method (``GaussNewton``, ``LevenbergMarquardt``) says how one iteration treats its trial step;
the driver (``least_squares``) asks it the same four things whatever it is:

- ``initial_damping`` and ``damping_mode`` (how ``D`` is built, see ``avatar_jax.solve.linear``);
- ``accepts(actual, ratio) -> [] bool``: is a solved, finite trial step taken, given the actual
  cost reduction and the gain ratio ``actual / predicted``;
- ``next_damping(damping, nu, accepted, ratio) -> (damping, nu)``: the damping after this step;
- ``gives_up(accepted, damping) -> [] bool``: does a rejected step end the solve.

All of them are frozen dataclasses of static numbers, strings and nested config objects, so they
hash and compare by value: a jitted function closing over one, or taking it as a static
argument, does not recompile for an equal one. Numbers may also be traced arrays (a damping
carried over from an earlier solve); such an object is then not hashable, and its value checks
are skipped.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from avatar_jax.solve.linear import (
    DAMPING_MODES,
    DenseCholesky,
    LinearSolver,
    check_damping_mode,
)


def _check_at_least(owner: str, name: str, value, low: float, strict: bool = False) -> None:
    """Raise ``ValueError`` if a concrete ``value`` is below ``low`` (or equal, when ``strict``)."""
    try:
        v = float(value)
    except TypeError:  # a traced or non-scalar value: checked by nobody, as jnp would not either
        return
    if math.isnan(v) or v < low or (strict and v == low):
        raise ValueError(f"{owner}.{name} must be {'>' if strict else '>='} {low}, got {value!r}")


def _check_linear_solver(owner: str, solver) -> None:
    if not isinstance(solver, LinearSolver):
        raise ValueError(
            f"{owner}.linear_solver must implement the LinearSolver protocol (methods linearise and "
            f"solve, see avatar_jax.solve.linear), got {solver!r}"
        )


@dataclasses.dataclass(frozen=True)
class Tolerances:
    """When a problem stops before its iteration budget (0 disables a test; all 0, the default,
    runs the fixed number of iterations, as the paper does).

    - ``gtol``: ``‖Jᵀr‖_∞ <= gtol`` at the start of an iteration;
    - ``ftol``: an accepted step lowered the cost by at most ``ftol · cost``;
    - ``xtol``: an accepted step has ``‖step‖ <= xtol · (xtol + ‖x‖)``.

    A separate object, not fields of the method, because the stopping rule is the driver's and
    the same for every method, and it is what varies between calls that share a method (a
    fixed-budget fit and a solve to convergence).
    """

    ftol: float = 0.0
    xtol: float = 0.0
    gtol: float = 0.0

    def __post_init__(self):
        for name in ("ftol", "xtol", "gtol"):
            _check_at_least("Tolerances", name, getattr(self, name), 0.0)

    def gradient_met(self, gradient_norm: jax.Array) -> jax.Array:
        """``[]`` bool: the max-norm ``gradient_norm []`` of ``Jᵀr`` is at most ``gtol``."""
        return gradient_norm <= self.gtol

    def step_met(self, step, x, actual, cost) -> jax.Array:
        """``[]`` bool: ``step [n]`` from ``x [n]``, or its cost reduction ``actual []`` relative to
        ``cost []``, is small enough to stop (meaningful for an accepted step)."""
        step_small = jnp.linalg.norm(step) <= self.xtol * (self.xtol + jnp.linalg.norm(x))
        cost_small = (actual >= 0) & (actual <= self.ftol * cost)
        return step_small | cost_small


@runtime_checkable
class DampingSchedule(Protocol):
    """A Levenberg-Marquardt damping rule: which steps it accepts and how λ moves."""

    def accepts(self, actual: jax.Array, ratio: jax.Array) -> jax.Array: ...

    def update(self, damping: jax.Array, nu: jax.Array, accepted: jax.Array,
               ratio: jax.Array) -> tuple[jax.Array, jax.Array]: ...


@dataclasses.dataclass(frozen=True)
class NielsenDamping:
    """Nielsen (1999), the default: accept a step that lowers the cost with gain ratio ρ >
    ``min_gain_ratio``; then ``λ ·= max(⅓, 1 - (2ρ-1)³)``, ``ν = 2``; after a rejected one
    ``λ ·= ν, ν ·= 2``."""

    min_gain_ratio: float = 1e-4  # Nielsen / Madsen et al.

    def accepts(self, actual, ratio):
        """``[]`` bool from the actual reduction ``[]`` and the gain ratio ``[]``."""
        return (actual > 0) & (ratio > self.min_gain_ratio)

    def update(self, damping, nu, accepted, ratio):
        """``(λ, ν)`` after a step, all ``[]``."""
        shrink = jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3)
        return (jnp.where(accepted, damping * shrink, damping * nu),
                jnp.where(accepted, 2.0, jnp.minimum(2.0 * nu, 2.0**30)))


@dataclasses.dataclass(frozen=True)
class FactorDamping:
    """Marquardt's original schedule: accept any step that lowers the cost (no gain-ratio test,
    so the predicted reduction and its J·step product go unused and are compiled away);
    ``λ ·= decrease`` after an accepted step, ``λ = max(λ · increase, restart)`` after a rejected
    one. ``restart > 0`` lets LM start undamped (``initial_damping=0``: plain Gauss-Newton steps
    while they succeed) and still recover. ν is carried unchanged."""

    decrease: float = 1.0 / 3.0
    increase: float = 10.0
    restart: float = 1e-3

    def __post_init__(self):
        _check_at_least("FactorDamping", "decrease", self.decrease, 0.0, strict=True)
        _check_at_least("FactorDamping", "increase", self.increase, 1.0, strict=True)
        _check_at_least("FactorDamping", "restart", self.restart, 0.0)

    def accepts(self, actual, ratio):
        """``[]`` bool: the step lowered the cost (``ratio`` unused)."""
        return actual > 0

    def update(self, damping, nu, accepted, ratio):
        """``(λ, ν)`` after a step, all ``[]``."""
        return (jnp.where(accepted, damping * self.decrease,
                          jnp.maximum(damping * self.increase, self.restart)), nu)


@runtime_checkable
class Method(Protocol):
    """What the driver asks of ``GaussNewton`` / ``LevenbergMarquardt`` (module docstring)."""

    linear_solver: LinearSolver
    initial_damping: float
    damping_mode: str

    def accepts(self, actual: jax.Array, ratio: jax.Array) -> jax.Array: ...

    def next_damping(self, damping: jax.Array, nu: jax.Array, accepted: jax.Array,
                     ratio: jax.Array) -> tuple[jax.Array, jax.Array]: ...

    def gives_up(self, accepted: jax.Array, damping: jax.Array) -> jax.Array: ...


@dataclasses.dataclass(frozen=True)
class GaussNewton:
    """Undamped Gauss-Newton: every solved step with a finite residual is taken, even one that
    raises the cost; a singular system (``SINGULAR``) or a non-finite trial (``NON_FINITE``) ends
    the solve, keeping the last parameters."""

    linear_solver: LinearSolver = DenseCholesky()
    initial_damping: ClassVar[float] = 0.0  # never damped ...
    damping_mode: ClassVar[str] = "marquardt"  # ... so D only meets a factor 0

    def __post_init__(self):
        _check_linear_solver("GaussNewton", self.linear_solver)

    def accepts(self, actual, ratio):
        """Always ``[]`` True: any solved, finite step is taken."""
        return jnp.ones(jnp.shape(actual), bool)

    def next_damping(self, damping, nu, accepted, ratio):
        """Unchanged ``(0, ν)``."""
        return damping, nu

    def gives_up(self, accepted, damping):
        """``[]`` bool: with no damping to raise, a rejected step ends the solve."""
        return ~accepted


@dataclasses.dataclass(frozen=True)
class LevenbergMarquardt:
    """Damped Gauss-Newton: steps solve ``(JᵀJ + λ·D) step = -Jᵀr``; ``damping`` decides which
    are taken and how λ moves, from ``initial_damping``. A rejected step with λ already at
    ``max_damping`` ends the solve: ``OK`` when the trial was finite (no step lowers the cost
    at working precision, which is how float32 problems stop), else ``NON_FINITE`` /
    ``SINGULAR``.

    Attributes:
      damping: ``NielsenDamping()`` (gain-ratio test) or ``FactorDamping(...)`` (any decrease).
      initial_damping: λ at the start (>= 0; may be a traced ``[]`` array).
      max_damping: ceiling of λ (> 0).
      damping_mode: ``"marquardt"`` (``D = diag(JᵀJ)`` clamped, scale invariant like MINPACK)
        or ``"identity"`` (``D = I``).
      linear_solver: ``DenseCholesky()``, ``ConjugateGradient(...)`` or a structured solver.
    """

    damping: DampingSchedule = NielsenDamping()
    initial_damping: float = 1e-3
    max_damping: float = 1e16
    damping_mode: str = "marquardt"
    linear_solver: LinearSolver = DenseCholesky()

    def __post_init__(self):
        check_damping_mode(self.damping_mode)
        _check_linear_solver("LevenbergMarquardt", self.linear_solver)
        if not isinstance(self.damping, DampingSchedule):
            raise ValueError("LevenbergMarquardt.damping must be NielsenDamping(), FactorDamping(...) "
                             f"or another DampingSchedule (accepts, update), got {self.damping!r}")
        _check_at_least("LevenbergMarquardt", "initial_damping", self.initial_damping, 0.0)
        _check_at_least("LevenbergMarquardt", "max_damping", self.max_damping, 0.0, strict=True)

    def accepts(self, actual, ratio):
        """``[]`` bool, the schedule's rule."""
        return self.damping.accepts(actual, ratio)

    def next_damping(self, damping, nu, accepted, ratio):
        """The schedule's ``(λ, ν)`` in λ's dtype, λ capped at ``max_damping``; all ``[]``."""
        new, nu = self.damping.update(damping, nu, accepted, ratio)
        new, nu = jnp.asarray(new, damping.dtype), jnp.asarray(nu, damping.dtype)
        return jnp.minimum(new, self.max_damping), nu

    def gives_up(self, accepted, damping):
        """``[]`` bool: rejected while λ (before this step's update) was already at the ceiling."""
        return ~accepted & (damping >= self.max_damping)


__all__ = ["DAMPING_MODES", "DampingSchedule", "FactorDamping", "GaussNewton", "LevenbergMarquardt",
           "Method", "NielsenDamping", "Tolerances"]
