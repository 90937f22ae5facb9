"""Generic batched nonlinear least squares (Gauss-Newton / Levenberg-Marquardt) in JAX.

Knows nothing about faces. ``least_squares`` is the driver; ``methods`` holds the configuration
objects (``GaussNewton``, ``LevenbergMarquardt``, damping schedules, ``Tolerances``), ``linear``
the linear solvers and the ``LinearSolver`` protocol a structured solver implements, and
``implicit`` the ``differentiation=`` options. ``Status`` is :class:`avatar_jax.status.Status`.
"""

from avatar_jax.solve.implicit import (
    Differentiation,
    ImplicitExact,
    ImplicitGaussNewton,
    Unrolled,
)
from avatar_jax.solve.least_squares import (
    LeastSquaresResult,
    batched_least_squares,
    least_squares,
)
from avatar_jax.solve.linear import (
    DAMPING_MODES,
    ConjugateGradient,
    DenseCholesky,
    FlatResidual,
    Linearisation,
    LinearSolver,
    damping_diagonal,
    flat_residual,
    linearise_matrix_free,
)
from avatar_jax.solve.methods import (
    DampingSchedule,
    FactorDamping,
    GaussNewton,
    LevenbergMarquardt,
    Method,
    NielsenDamping,
    Tolerances,
)
from avatar_jax.status import Status

__all__ = [
    "DAMPING_MODES",
    "ConjugateGradient",
    "DampingSchedule",
    "DenseCholesky",
    "Differentiation",
    "FactorDamping",
    "FlatResidual",
    "GaussNewton",
    "ImplicitExact",
    "ImplicitGaussNewton",
    "LeastSquaresResult",
    "LevenbergMarquardt",
    "LinearSolver",
    "Linearisation",
    "Method",
    "NielsenDamping",
    "Status",
    "Tolerances",
    "Unrolled",
    "batched_least_squares",
    "damping_diagonal",
    "flat_residual",
    "least_squares",
    "linearise_matrix_free",
]
