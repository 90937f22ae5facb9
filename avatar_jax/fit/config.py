"""Configuration of the non-rigid fitting energy (paper section 3.4).

``E = El + wc * Ec + wr * Er`` with

- ``El = 100 / W_eye * sum_i c_i * rho(|pi(K, T(S(P_F, m_i))) - L_i|^2)`` (landmarks),
- ``Ec = |L(P_F) - L(P + B beta^{t-1})|^2 + lambda_delta * |dP|^2`` (corrective field),
- ``Er = sum beta^2 / sigma^2 + lambda_f log^2(fs) + lambda_q |q_v|^2`` (+ identity prior).

Every weight lives here; a weight of 0 drops its term. Terms that are linear in the shape
coefficients (``alpha``, ``beta``, ``dP``) are :class:`LinearTerm` objects: a researcher can add
one (``extra_linear_terms``) without touching the solver, because the solver only ever sees the
sum of their normal matrices (see :mod:`avatar_jax.fit.prior`). Terms on the camera are functions
of the pose (``extra_pose_terms``).
"""

from __future__ import annotations

import dataclasses
from typing import Callable



@dataclasses.dataclass(frozen=True)
class GemanMcClure:
    """Robust kernel rho(s) = s * scale^2 / (s + scale^2) on squared landmark residuals (px^2).

    Applied by iteratively reweighted least squares: each Gauss-Newton iteration weights a
    landmark by rho'(s) = scale^4 / (s + scale^2)^2, evaluated at the linearisation point.
    """

    scale: float = 5.0

    def weight(self, squared_residual):
        s2 = self.scale**2
        return s2 * s2 / (squared_residual + s2) ** 2

    def energy(self, squared_residual):
        s2 = self.scale**2
        return squared_residual * s2 / (squared_residual + s2)


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Weights and switches of the fitting energy. Frozen and hashable: it keys compiled code.

    Paper defaults (section 4.1): ``corrective_weight`` (wc) = 25, ``regularization_weight``
    (wr) = 10, ``lambda_delta`` = 4, ``lambda_f`` = 5, ``lambda_q`` = 5, 5 Gauss-Newton iterations.
    """

    corrective_weight: float = 25.0
    regularization_weight: float = 10.0
    lambda_delta: float = 4.0
    lambda_f: float = 5.0
    lambda_q: float = 5.0
    # Weight of the identity prior sum(alpha^2/sigma^2), relative to wr (landmark-only mode; the
    # paper takes the identity from its regressor). Chosen by experiments/tune_identity_prior.py
    # on rendered heads with a real detector in the loop, the detected points placed by the
    # calibrated landmark set (docs/solver.md): weaker priors fit detector noise into the
    # identity; noise-free synthetic landmarks prefer a weaker one (0.1 to 3).
    identity_weight: float = 30.0
    # Length unit (in mm) in which Ec and lambda_delta |dP|^2 are measured. The paper does not say;
    # its weights (wc = 25, lambda_delta = 4) freeze dP when lengths are in mm (a 1 mm correction
    # would cost 100x a 1 px landmark error) and act as intended in cm, ICT-FaceKit's native unit.
    length_unit_mm: float = 10.0
    iterations: int = 5
    # "levenberg_marquardt" (default) starts undamped: while steps lower the energy it takes
    # exactly the paper's Gauss-Newton steps; a step that raises it is rejected and the pose
    # block damped (measured: plain GN diverged on 1 of 256 synthetic heads at 58 deg yaw).
    # "gauss_newton" takes every finite step, as the paper.
    method: str = "levenberg_marquardt"
    initial_damping: float = 0.0
    use_corrective: bool = True  # per-vertex corrective field dP (the paper's full energy)
    fit_identity: bool = True  # fit alpha jointly when no base shape is given
    lagged_expression: bool = True  # Ec uses beta^{t-1} as in the paper (else beta itself)
    sliding_contour: bool = True  # jaw landmarks re-pick their contour point every iteration
    # "nearest": the candidate projecting nearest the detected landmark (as eos; converges in 3-4
    # iterations); "silhouette": smallest |n . view| under the current pose (slower, jumpier).
    contour_rule: str = "nearest"
    landmark_kernel: GemanMcClure | None = None
    extra_linear_terms: tuple["LinearTermSpec", ...] = ()
    extra_pose_terms: tuple["PoseTermSpec", ...] = ()
    # images per vmap chunk, chunks in sequence under lax.map; None: 32 on a CPU backend, the
    # whole batch on an accelerator (avatar_jax.fit.fitting picks it)
    chunk_size: int | None = None

    def __post_init__(self):
        if self.method not in ("gauss_newton", "levenberg_marquardt"):
            raise ValueError(f"FitConfig.method must be 'gauss_newton' or 'levenberg_marquardt', got {self.method!r}")
        if self.contour_rule not in ("silhouette", "nearest"):
            raise ValueError(f"FitConfig.contour_rule must be 'silhouette' or 'nearest', got {self.contour_rule!r}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"FitConfig.chunk_size must be None or >= 1, got {self.chunk_size}")
        if self.iterations < 1:
            raise ValueError(f"FitConfig.iterations must be >= 1, got {self.iterations}")
        for name in ("corrective_weight", "regularization_weight", "lambda_delta", "lambda_f",
                     "lambda_q", "identity_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"FitConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.length_unit_mm <= 0:
            raise ValueError(f"FitConfig.length_unit_mm must be > 0, got {self.length_unit_mm}")
        if self.use_corrective and self.corrective_weight * self.lambda_delta <= 0:
            raise ValueError("use_corrective needs corrective_weight * lambda_delta > 0 "
                             "(the corrective field needs a proper prior)")

    def replace(self, **changes) -> "FitConfig":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class LinearTermSpec:
    """A user-defined term ``weight * |A x - A_lag x_lag|^2`` on the stacked shape vector x.

    ``build(layout) -> (A, A_lag | None)`` returns scipy.sparse matrices with ``layout.size``
    columns (:class:`avatar_jax.fit.ShapeLayout`: its ``identity`` / ``expression`` / ``delta``
    slices locate alpha, beta and dP in x). ``x_lag`` is x at the previous iteration (frozen),
    as the paper does for beta in Ec. The term is eliminated exactly with the others, so it
    costs nothing per iteration. For example, keep the mouth closed (expression ``j``)::

        def mouth_closed(layout):
            col = layout.expression.start + j
            return sp.csr_matrix(([1.0], ([0], [col])), shape=(1, layout.size)), None

        FitConfig(extra_linear_terms=(LinearTermSpec("mouth_closed", 10.0, mouth_closed),))
    """

    name: str
    weight: float
    build: Callable


@dataclasses.dataclass(frozen=True)
class PoseTermSpec:
    """A user-defined term ``weight * |fn(rotvec[3], translation[3], log_fs[])|^2`` on the camera."""

    name: str
    weight: float
    fn: Callable
