"""Generic batched nonlinear least squares (Gauss-Newton / Levenberg-Marquardt) in JAX.

Knows nothing about faces. See ``least_squares`` for the driver and ``linear`` for the linear
solvers and the protocol a user-supplied structured solver implements.
"""

from avatar_jax.solve.least_squares import (
    DIFFERENTIATION,
    IMPLICIT_HESSIANS,
    METHODS,
    FactorDamping,
    LeastSquaresResult,
    NielsenDamping,
    Status,
    batched_least_squares,
    least_squares,
    status_name,
)
from avatar_jax.solve.linear import (
    DAMPING_MODES,
    ConjugateGradient,
    DenseCholesky,
    LinearSolver,
    damping_diagonal,
    flat_residual,
)

__all__ = [
    "DAMPING_MODES",
    "DIFFERENTIATION",
    "IMPLICIT_HESSIANS",
    "METHODS",
    "ConjugateGradient",
    "DenseCholesky",
    "FactorDamping",
    "LeastSquaresResult",
    "NielsenDamping",
    "LinearSolver",
    "Status",
    "batched_least_squares",
    "damping_diagonal",
    "flat_residual",
    "least_squares",
    "status_name",
]
