"""Energy terms of the fitting, each its own small function.

The shape unknowns are stacked in one vector ``x = [alpha (Ki) | beta (Ke) | dP (3V)]``
(``dP`` vertex-major, xyz interleaved); :class:`ShapeLayout` says which blocks are present.
Terms linear in ``x`` are sparse operators (``weight * |A x - A_lag x_lag|^2``) so that the solver
can eliminate ``x`` exactly; terms on the camera and on the landmarks are JAX functions.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from avatar_jax.geometry.camera import rotvec_to_quaternion
from avatar_jax.fit.config import FitConfig, LinearTermSpec
from avatar_jax.model.head import HeadModel, laplacian_matrix

IBUG_OUTER_EYE_CORNERS = (36, 45)


@dataclasses.dataclass(frozen=True)
class ShapeLayout:
    """Sizes of the blocks of the stacked shape vector ``x``."""

    num_identity: int
    num_expression: int
    num_vertices: int
    use_corrective: bool

    @property
    def num_delta(self) -> int:
        return 3 * self.num_vertices if self.use_corrective else 0

    @property
    def size(self) -> int:
        return self.num_identity + self.num_expression + self.num_delta

    @property
    def identity(self) -> slice:
        return slice(0, self.num_identity)

    @property
    def expression(self) -> slice:
        return slice(self.num_identity, self.num_identity + self.num_expression)

    @property
    def delta(self) -> slice:
        start = self.num_identity + self.num_expression
        return slice(start, start + self.num_delta)

    def split(self, x):
        """``x [..., size]`` -> (alpha [..., Ki], beta [..., Ke], dP [..., V, 3] or None)."""
        delta = None
        if self.use_corrective:
            delta = x[..., self.delta].reshape(x.shape[:-1] + (self.num_vertices, 3))
        return x[..., self.identity], x[..., self.expression], delta


@dataclasses.dataclass(frozen=True)
class LinearTerm:
    """``weight * |A x - A_lag x_lag|^2`` with A, A_lag sparse ``[rows, layout.size]``."""

    name: str
    weight: float
    A: sp.csr_matrix
    A_lag: sp.csr_matrix | None = None


# ----------------------------------------------------------------------------- operators

def _block_row(layout: ShapeLayout, identity=None, expression=None, delta=None) -> sp.csr_matrix:
    """Assemble ``[identity | expression | delta]`` column blocks (None = zeros) into one matrix."""
    blocks = [(identity, layout.num_identity), (expression, layout.num_expression),
              (delta, layout.num_delta)]
    rows = next(b.shape[0] for b, _ in blocks if b is not None)
    cols = [sp.csr_matrix(b) if b is not None else sp.csr_matrix((rows, n)) for b, n in blocks if n]
    return sp.hstack(cols, format="csr")


def _expression_matrix(model: HeadModel) -> np.ndarray:
    """Expression basis as ``[3V, Ke]`` (vertex-major xyz rows)."""
    basis = np.asarray(model.expression_basis, np.float64)
    return basis.reshape(basis.shape[0], -1).T


def default_linear_terms(model: HeadModel, layout: ShapeLayout, config: FitConfig) -> list[LinearTerm]:
    """The paper's terms linear in x: Ec (smoothness + magnitude), Er on beta, alpha prior."""
    terms = []
    wr = config.regularization_weight
    if layout.num_expression and wr > 0:
        inv_sigma = 1.0 / np.asarray(model.expression_sigma, np.float64)
        terms.append(LinearTerm("expression_prior", wr, _block_row(layout, expression=sp.diags(inv_sigma))))
    if layout.num_identity and wr * config.identity_weight > 0:
        inv_sigma = 1.0 / np.asarray(model.identity_sigma, np.float64)
        terms.append(LinearTerm("identity_prior", wr * config.identity_weight,
                                _block_row(layout, identity=sp.diags(inv_sigma))))
    if layout.use_corrective:
        terms += _corrective_terms(model, layout, config)
    return terms


def _corrective_terms(model: HeadModel, layout: ShapeLayout, config: FitConfig) -> list[LinearTerm]:
    lap3 = sp.kron(laplacian_matrix(model), sp.identity(3), format="csr")
    smooth = _block_row(layout, delta=lap3)
    lag = None
    if config.lagged_expression and layout.num_expression:
        # |L(P_F) - L(P + B beta^{t-1})|^2 = |L (B (beta - beta^{t-1}) + dP)|^2
        lap_b = lap3 @ _expression_matrix(model)
        smooth = _block_row(layout, expression=lap_b, delta=lap3)
        lag = _block_row(layout, expression=lap_b)
    wc = config.corrective_weight / config.length_unit_mm**2
    magnitude = _block_row(layout, delta=sp.identity(layout.num_delta))
    return [LinearTerm("corrective_smoothness", wc, smooth, lag),
            LinearTerm("corrective_magnitude", wc * config.lambda_delta, magnitude)]


def linear_terms(model: HeadModel, layout: ShapeLayout, config: FitConfig) -> list[LinearTerm]:
    """Default terms plus the config's ``extra_linear_terms``, zero-weight terms dropped."""
    terms = default_linear_terms(model, layout, config)
    for spec in config.extra_linear_terms:
        terms.append(_build_extra(spec, layout))
    return [t for t in terms if t.weight > 0]


def _build_extra(spec: LinearTermSpec, layout: ShapeLayout) -> LinearTerm:
    A, A_lag = spec.build(layout)
    for name, m in (("A", A), ("A_lag", A_lag)):
        if m is not None and m.shape[1] != layout.size:
            raise ValueError(f"extra linear term {spec.name!r}: {name} has {m.shape[1]} columns, "
                             f"the shape vector has {layout.size}")
    return LinearTerm(spec.name, spec.weight, sp.csr_matrix(A),
                      None if A_lag is None else sp.csr_matrix(A_lag))


def surface_point_operator(model: HeadModel, layout: ShapeLayout, faces: np.ndarray,
                           bary: np.ndarray) -> sp.csr_matrix:
    """S ``[3P, layout.size]``: the P surface points ``(faces [P,3], bary [P,3])`` as a linear
    function of x (their offset from the base shape)."""
    faces = np.asarray(faces)
    bary = np.asarray(bary, np.float64)

    def sample(basis):  # basis [K, V, 3] -> [3P, K]
        pts = np.einsum("pk,npkd->pdn", bary, np.asarray(basis, np.float64)[:, faces])
        return pts.reshape(-1, basis.shape[0])

    identity = sample(model.identity_basis) if layout.num_identity else None
    expression = sample(model.expression_basis) if layout.num_expression else None
    delta = None
    if layout.use_corrective:
        p = faces.shape[0]
        rows = (3 * np.arange(p)[:, None, None] + np.arange(3)[None, None, :]).repeat(3, axis=1)
        cols = 3 * faces[:, :, None] + np.arange(3)[None, None, :]
        vals = np.broadcast_to(bary[:, :, None], rows.shape)
        delta = sp.csr_matrix((vals.ravel(), (rows.ravel(), cols.ravel())), shape=(3 * p, layout.num_delta))
    return _block_row(layout, identity=identity, expression=expression, delta=delta)


# ----------------------------------------------------------------------------- residuals

def landmark_weights(targets, confidence, valid, eye_corners=IBUG_OUTER_EYE_CORNERS):
    """Per-landmark weight ``100 / W_eye * confidence`` (0 for missing landmarks). ``[K]``.

    ``W_eye`` is the distance between the two outermost eye landmarks (indices ``eye_corners``
    of the targets).
    """
    i, j = eye_corners
    w_eye = jnp.linalg.norm(targets[i] - targets[j])
    w_eye = jnp.where(jnp.isfinite(w_eye) & (w_eye > 1e-3), w_eye, 1.0)
    return jnp.where(valid, 100.0 / w_eye * confidence, 0.0)


def landmark_residual(projected, targets, sqrt_weights):
    """El residual ``[K, 2]``: ``sqrt(w_i) * (projected_i - target_i)`` in pixels."""
    return sqrt_weights[:, None] * (projected - targets)


def focal_residual(log_fs, config: FitConfig):
    """``sqrt(wr * lambda_f) * log(fs)``: keeps the focal scale near the image-size prior."""
    return jnp.sqrt(config.regularization_weight * config.lambda_f) * jnp.reshape(log_fs, (1,))


def rotation_residual(rotvec, config: FitConfig):
    """``sqrt(wr * lambda_q) * q_v``: q_v is the vector part of the head-to-view rotation
    quaternion, so the term pulls towards a frontal head (q = identity) and grows as
    sin(angle/2)."""
    return jnp.sqrt(config.regularization_weight * config.lambda_q) * rotvec_to_quaternion(rotvec)[1:]


def pose_residual(rotvec, translation, log_fs, config: FitConfig):
    """All camera-prior residuals stacked, including the config's extra pose terms."""
    parts = [focal_residual(log_fs, config), rotation_residual(rotvec, config)]
    for spec in config.extra_pose_terms:
        parts.append(jnp.sqrt(spec.weight) * jnp.ravel(spec.fn(rotvec, translation, log_fs)))
    return jnp.concatenate(parts)
