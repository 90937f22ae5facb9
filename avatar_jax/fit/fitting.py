"""Non-rigid landmark fitting (paper section 3.4), batched and exact, on :mod:`avatar_jax.solve`.

Unknowns per image: ``p = [alpha, beta, dP, t, r, log_fs]`` (alpha only in landmark-only mode).
The shape unknowns ``x = [alpha, beta, dP]`` are eliminated exactly (:mod:`avatar_jax.fit.prior`):
the landmarks see x only through P surface points, so the solver works on the camera ``pose
[7]`` and whitened point coordinates ``c [r]`` (``points = base + F c``, ``F F^T = C`` the
points' prior covariance, r <= 3P), in which the linear terms, minimised over every x that puts
the points there, cost ``|c - cbar(beta^{t-1})|^2 + const``.

The iterations are :func:`avatar_jax.solve.least_squares` (Gauss-Newton or Levenberg-Marquardt)
with two problem-specific pieces, both plain arguments of the generic driver:

- ``refresh`` (:func:`_refresh`), at the start of every iteration: re-picks the jaw-contour
  points (``FitConfig.contour_rule``), freezes beta^{t-1} for Ec as the paper does, and sets the
  robust kernel's IRLS weights;
- ``linear_solver`` (:class:`ShapeEliminatingSolver`): the damped normal equations by the
  Woodbury identity, one ``2K x 2K`` Cholesky (K landmarks) plus a 7 x 7 solve per image.

The step is algebraically the Gauss-Newton step of the full problem; ``tests/test_fit.py`` checks
it against a dense solve of the full normal equations on the real model (float64, ~1e-11). The
full ``x`` (and the mesh) is rebuilt once at the end for the whole batch.

``method="levenberg_marquardt"`` (default) accepts a step only if it lowers the energy of the
iteration (same contour, lag and weights) and otherwise damps the camera block; starting
undamped, it equals the paper's Gauss-Newton while steps succeed. The first iteration runs from
EPnP's pose and from its depth-flipped twin and keeps the one of lower energy.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.experimental import sparse as jsparse

from avatar_jax._disk_cache import cache_key, cached_arrays
from avatar_jax._identity_cache import IdentityCache
from avatar_jax._threads import single_blas_thread
from avatar_jax.geometry import camera as cam
from avatar_jax.fit.config import FitConfig
from avatar_jax.fit.prior import MarginalPrior, build_marginal_prior
from avatar_jax.fit.terms import (IBUG_OUTER_EYE_CORNERS, ShapeLayout, focal_residual, landmark_residual,
                                  landmark_weights, linear_terms, pose_residual, rotation_residual)
from avatar_jax.geometry.mesh import vertex_normals
from avatar_jax.model.head import HeadModel, JAW_LANDMARKS, sample_surface
from avatar_jax.solve import (FactorDamping, GaussNewton, LevenbergMarquardt, Linearisation, Status, least_squares,
                              linearise_matrix_free)

MIN_VALID_LANDMARKS = 6
# Levenberg-Marquardt schedule of the (Marquardt-scaled) camera damping: x0.3 after an accepted
# step, x10 after a rejected one and at least 0.1. A gentler restart (x5, at least 1e-3) spent
# the remaining iterations on rejected steps on a few noisy high-yaw faces: at 4 px noise the
# worst reprojection of 256 heads was 17.8 px (4.6 px on a second seed), now 3.1 px (3.1 px),
# noise-free fits unchanged.
_LM_SCHEDULE = FactorDamping(decrease=0.3, increase=10.0, restart=0.1)


# ----------------------------------------------------------------------------- prepared operators

@struct.dataclass
class LandmarkSet:
    """K landmarks embedded on the model surface; ``sliding`` of them follow the jaw silhouette.

    faces ``[K, 3]`` vertex ids, bary ``[K, 3]``; ``sliding`` static tuple of landmark indices
    whose candidates are ``model.contour_candidates`` rows (in order); ``eye_corners`` the two
    outermost eye landmarks (for W_eye).
    """

    faces: jax.Array
    bary: jax.Array
    sliding: tuple[int, ...] = struct.field(pytree_node=False, default=())
    eye_corners: tuple[int, int] = struct.field(pytree_node=False, default=IBUG_OUTER_EYE_CORNERS)


def ibug68(model: HeadModel) -> LandmarkSet:
    return LandmarkSet(model.landmark_faces, model.landmark_bary, JAW_LANDMARKS)


@struct.dataclass
class FitOperators:
    """Everything image-independent the fit needs, built once by :func:`prepare`."""

    prior: MarginalPrior
    candidate_normals: jax.Array  # [J, C, 3] neutral-mesh normals at the contour candidates
    candidate_index: jax.Array  # [J, C] index of each contour candidate among the P points
    term_sparse: tuple  # per linear term: BCOO [rows, nx] A - A_lag, or None (see term_factor)
    term_factor: tuple  # per linear term: [3P + dz, 3P + dz] U with |U z| = |(A - A_lag) x|, or None
    layout: ShapeLayout = struct.field(pytree_node=False)
    sliding: tuple[int, ...] = struct.field(pytree_node=False)
    num_landmarks: int = struct.field(pytree_node=False)
    eye_corners: tuple[int, int] = struct.field(pytree_node=False)
    term_names: tuple[str, ...] = struct.field(pytree_node=False)
    term_weights: tuple[float, ...] = struct.field(pytree_node=False)


def prepare(model: HeadModel, config: FitConfig = FitConfig(), landmark_set: LandmarkSet | None = None,
            with_identity: bool = True, dtype=np.float32) -> FitOperators:
    """Precompute the reduced problem for ``model`` and ``config`` (host, float64; ~1-5 s).

    ``with_identity``: include alpha (landmark-only mode: no base shape given). ``dtype``: of
    the stored operators (float64 needs ``jax.enable_x64``; used by the exactness test).
    """
    lms = landmark_set if landmark_set is not None else ibug68(model)
    layout = ShapeLayout(model.num_identity if (with_identity and config.fit_identity) else 0,
                         model.num_expression, model.num_vertices, config.use_corrective)
    terms = linear_terms(model, layout, config)
    faces, bary, normals, cand_index = _surface_points(model, lms, config.sliding_contour)
    prior, key = _cached_prior(model, layout, terms, faces, bary, dtype)
    sparse, factors = _term_energy_operators(prior, terms, key, dtype)
    return FitOperators(
        prior=jax.tree.map(jnp.asarray, prior), candidate_normals=jnp.asarray(normals),
        candidate_index=jnp.asarray(cand_index), term_sparse=sparse, term_factor=factors,
        layout=layout, sliding=lms.sliding if config.sliding_contour else (),
        num_landmarks=int(lms.faces.shape[0]), eye_corners=lms.eye_corners, term_names=tuple(t.name for t in terms),
        term_weights=tuple(float(t.weight) for t in terms))


def _self_lagged(t):
    """A term's residual operator when x_lag = x (the dense L B blocks of Ec cancel): A - A_lag."""
    m = (t.A - t.A_lag if t.A_lag is not None else t.A).tocsr()
    m.eliminate_zeros()
    return m


def _term_energy_operators(prior: MarginalPrior, terms, key: str, dtype):
    """Per linear term, what evaluates its energy at the solution ``x = G z`` (G = [shape_from_c |
    shape_from_lag], z = [c, lag]; :func:`_assemble`): terms with few rows keep the sparse
    ``A - A_lag`` (energy ``|A x|^2``); terms with more rows than z has entries get a dense
    ``U [m, m]`` with ``|U z|^2 = |A G z|^2`` (U from the eigendecomposition of ``(A G)^T A G``),
    which under jit is ~10x faster than the sparse product with the 3V-row Laplacian."""
    big = [t.A.shape[0] > prior.shape_from_c.shape[1] + prior.shape_from_lag.shape[1] for t in terms]

    def factors():  # only on a cache miss: G is 40 MB in float64
        G = np.hstack([np.asarray(prior.shape_from_c, np.float64), np.asarray(prior.shape_from_lag, np.float64)])
        out = {}
        for i, t in enumerate(terms):
            if big[i]:
                R = _self_lagged(t) @ G
                e, V = np.linalg.eigh(R.T @ R)
                out[f"term{i}"] = np.sqrt(np.clip(e, 0.0, None))[:, None] * V.T
        return out

    dense = cached_arrays("term_factors", cache_key(key, "term_factors"), factors, kind="fit") if any(big) else {}
    sparse = tuple(None if big[i] else jsparse.BCOO.from_scipy_sparse(_self_lagged(t).astype(dtype))
                   for i, t in enumerate(terms))
    factor = tuple(jnp.asarray(dense[f"term{i}"], dtype) if big[i] else None for i in range(len(terms)))
    return sparse, factor


_PRIOR_FORMAT = "whitened points v4"  # change when MarginalPrior's fields change (invalidates the cache)


def _cached_prior(model, layout, terms, faces, bary, dtype) -> MarginalPrior:
    """:func:`build_marginal_prior` through the on-disk cache (seconds -> milliseconds for a new
    process), keyed on everything it is computed from. Returns (prior, cache key)."""
    def term_parts(t):
        parts = [t.name, t.weight, t.A.data, t.A.indices, t.A.indptr]
        if t.A_lag is not None:
            parts += [t.A_lag.data, t.A_lag.indices, t.A_lag.indptr]
        return parts

    key = cache_key(_PRIOR_FORMAT, layout, np.dtype(dtype).name, faces, bary, model.identity_basis,
                    model.expression_basis, *[p for t in terms for p in term_parts(t)])
    arrays = cached_arrays("prior", key, lambda: dataclasses.asdict(
        build_marginal_prior(model, layout, terms, faces, bary, dtype)), kind="fit")
    return MarginalPrior(**arrays), key


def _surface_points(model: HeadModel, lms: LandmarkSet, sliding: bool):
    """The P surface points the landmarks can touch: the K landmark points, then each distinct
    contour-candidate vertex once (rows of ``contour_candidates`` are padded by repetition and
    neighbouring rows share vertices; duplicates would only enlarge C).

    Returns faces ``[P, 3]``, bary ``[P, 3]``, candidate normals ``[J, C, 3]`` and the point
    index of each candidate slot ``[J, C]``.
    """
    faces = [np.asarray(lms.faces)]
    bary = [np.asarray(lms.bary, np.float32)]
    k = faces[0].shape[0]
    cands = np.asarray(model.contour_candidates)[: len(lms.sliding)] if sliding and lms.sliding else \
        np.zeros((0, 1), np.int32)
    unique, slot = np.unique(cands.reshape(-1), return_inverse=True)
    faces.append(np.stack([unique] * 3, -1))
    bary.append(np.tile(np.array([[1.0, 0.0, 0.0]], np.float32), (unique.size, 1)))
    normals = np.asarray(vertex_normals(model.neutral, model.triangles))
    cand_normals = normals[cands] if cands.size else np.zeros((0, 1, 3), np.float32)
    index = (k + slot.reshape(cands.shape)).astype(np.int32)
    return np.concatenate(faces), np.concatenate(bary), cand_normals.astype(np.float32), index


_PREPARED: IdentityCache[FitOperators] = IdentityCache(maxsize=16)


def prepared(model: HeadModel, config: FitConfig, with_identity: bool,
             landmark_set: LandmarkSet | None = None) -> FitOperators:
    """Cached :func:`prepare`, keyed on the model and landmark-set objects and the config."""
    return _PREPARED.get((model, landmark_set), (config, with_identity),
                         lambda: prepare(model, config, landmark_set, with_identity=with_identity))


# ----------------------------------------------------------------------------- one iteration's problem

class _ImageData(NamedTuple):
    targets: jax.Array  # [K, 2]
    weights: jax.Array  # [K] 100/W_eye * confidence (0 = missing)
    focal: jax.Array  # []
    principal: jax.Array  # [2]
    base_points: jax.Array  # [P, 3]


class _Aux(NamedTuple):
    """What :func:`_refresh` re-picks at the start of every iteration (the solver's ``args``)."""

    sel: jax.Array  # [K] active point index per landmark (the jaw slides over its candidates)
    lag: jax.Array  # [dz] beta^{t-1}: the lagged components of the previous iterate's shape
    sqrt_w: jax.Array  # [K] sqrt of the landmark weights, times the robust kernel's IRLS weights


def _camera(pose, data: _ImageData) -> cam.Camera:
    return cam.Camera(rotvec=pose[:3], translation=pose[3:6], log_fs=pose[6], focal=data.focal,
                      principal=data.principal)


def _project(pose, points, data):
    return cam.project(_camera(pose, data), points)


def _points(ops: FitOperators, data: _ImageData, c):
    """All P surface points ``[P, 3]`` at whitened coordinates ``c [r]``: ``base + F c``. One GEMM
    over the batch chunk under vmap; the landmarks then gather their 3-vectors (gathering F's
    active rows per image instead measured ~30% slower for the whole fit)."""
    factor = ops.prior.factor
    return data.base_points + (factor.reshape(-1, factor.shape[-1]) @ c).reshape(-1, 3)


def _active_points(ops: FitOperators, data: _ImageData, c, sel):
    """The K active points ``[K, 3]`` at whitened coordinates ``c [r]``."""
    return _points(ops, data, c)[sel]


def _select(ops: FitOperators, config: FitConfig, pose, points, data) -> jax.Array:
    """Active point per landmark ``[K]``: each sliding (jaw) landmark takes one of its contour
    candidates, the others their own point. ``contour_rule="silhouette"``: the candidate with
    the smallest |n . view direction| under the current pose (n: neutral-mesh normal);
    ``"nearest"``: the candidate whose projection is nearest the detected landmark (as eos)."""
    k = ops.num_landmarks
    sel = jnp.arange(k)
    if not ops.sliding:
        return sel
    j, c = ops.candidate_index.shape
    cand = points[ops.candidate_index]  # [J, C, 3]
    if config.contour_rule == "nearest":
        targets = data.targets[jnp.asarray(ops.sliding)]
        score = jnp.sum((_project(pose, cand.reshape(-1, 3), data).reshape(j, c, 2)
                         - targets[:, None]) ** 2, -1)
        pick = jnp.take_along_axis(ops.candidate_index, jnp.argmin(score, -1)[:, None], 1)[:, 0]
    else:
        pick = cam.silhouette_pick(ops.candidate_index, cand, ops.candidate_normals,
                                   pose[:3], pose[3:6])
    return sel.at[jnp.asarray(ops.sliding)].set(pick)


def _irls_weights(pose, active_points, data, config):
    if config.landmark_kernel is None:
        return data.weights
    d = _project(pose, active_points, data) - data.targets
    return data.weights * config.landmark_kernel.weight(jax.lax.stop_gradient(jnp.sum(d * d, -1)))


def _residual(ops: FitOperators, config: FitConfig, params, data: _ImageData, aux: _Aux) -> dict:
    """Residuals of one iteration's energy on ``params = {"pose": [7], "c": [r]}``; ``|r|^2`` is
    E with the landmark kernel as IRLS weights: the landmarks, the linear terms minimised over
    the shapes that put the points at ``base + F c`` (exact, :mod:`avatar_jax.fit.prior`), the
    camera priors. The ``"lag"`` part is constant in the parameters (the linear terms' minimum
    for this beta^{t-1}); it makes the cost the energy."""
    pose, c, pr = params["pose"], params["c"], ops.prior
    active = _active_points(ops, data, c, aux.sel)
    return {"landmarks": landmark_residual(_project(pose, active, data), data.targets, aux.sqrt_w),
            "shape": c - pr.mean_from_lag @ aux.lag,
            "lag": pr.lag_cost_factor @ aux.lag,
            "pose": pose_residual(pose[:3], pose[3:6], pose[6], config)}


def _refresh(ops: FitOperators, config: FitConfig, params, data: _ImageData, aux: _Aux):
    """Start of an iteration: re-pick the contour points, freeze beta^{t-1} (the beta of the
    current shape), and re-weight the landmarks by the robust kernel."""
    pose, c, pr = params["pose"], params["c"], ops.prior
    points = _points(ops, data, c)
    sel = _select(ops, config, pose, points, data)
    lag = pr.lag_from_c @ c + pr.lag_from_lag @ aux.lag
    sqrt_w = jnp.sqrt(_irls_weights(pose, points[sel], data, config))
    return data, _Aux(sel, lag, sqrt_w)


def _active_cov(ops, sel):
    """Prior covariance of the active points ``[K, 3, 3, K]`` (C_act[i, b, d, j] = cov(y_ib, y_jd))."""
    return ops.prior.cov_blocks[sel][..., sel]


def _gram(D, c_act):
    """``D C_act D^T`` ``[2K, 2K]`` for block-diagonal D ``[K, 2, 3]`` and C_act ``[K, 3, 3, K]``.

    Broadcast multiply-adds with the second point index innermost, so every op runs along K
    contiguous floats: 16 us per image on this CPU, against 63 us with the 3x3 blocks innermost
    and ~3x that as a 3-operand einsum (tiny batched matmuls)."""
    k = D.shape[0]
    u = sum(D[:, :, b, None, None] * c_act[:, None, b] for b in range(3))  # [K, 2, 3, K]
    dt = jnp.transpose(D, (1, 2, 0))  # [2, 3, K]
    m = sum(u[:, :, None, d] * dt[None, None, :, d] for d in range(3))  # [K, 2, 2, K]
    return jnp.transpose(m, (0, 1, 3, 2)).reshape(2 * k, 2 * k)


class _Linearisation(NamedTuple):
    active: jax.Array  # [K, 3] active points
    jac: jax.Array  # [2K, 7] landmark rows w.r.t. the camera
    jac_prior: jax.Array  # [n, 7] camera-prior rows
    D: jax.Array  # [K, 2, 3] landmark rows w.r.t. the active points
    chol: jax.Array  # [2K, 2K] Cholesky factor of M = I + G G^T


@dataclasses.dataclass(frozen=True)
class ShapeEliminatingSolver:
    """Structured linear solver (:mod:`avatar_jax.solve.linear` protocol) for :func:`_residual`.

    The landmark rows see ``c`` through ``G = D E F`` (``[2K, r]``: D the projection's derivative
    at the K active points, E their selection), so the damped normal equations are::

        [Jc^T Jc + Jp^T Jp + mu Dp    Jc^T G ] [s_pose]   [b_pose]
        [G^T Jc                       I + G^T G] [s_c   ] = [b_c   ]

    (Jc: landmark rows w.r.t. the camera, Jp: camera priors). Eliminating c with the Woodbury
    identity needs only ``M = I + G G^T = I + D C_act D^T`` (2K x 2K, from C's 3x3 blocks)::

        (Jc^T M^-1 Jc + Jp^T Jp + mu Dp) s_pose = b_pose - Jc^T M^-1 G b_c
        s_c = b_c - G^T M^-1 (G b_c + Jc s_pose)

    one Cholesky of M and a 7 x 7 solve per image, for any right-hand side. Only the camera is
    damped (``Dp`` = the diagonal of its reduced matrix, "marquardt", or I, "identity"): the
    shape block is linear under a proper prior and needs no trust region.
    """

    ops: FitOperators
    config: FitConfig

    def _factors(self, params, data: _ImageData, aux: _Aux) -> _Linearisation:
        ops, config, pose = self.ops, self.config, params["pose"]
        active = _active_points(ops, data, params["c"], aux.sel)
        d_pose, d_points = cam.pose_jacobian(_camera(pose, data), active)
        jac = (aux.sqrt_w[:, None, None] * d_pose).reshape(-1, 7)
        jp = jax.jacfwd(lambda p: pose_residual(p[:3], p[3:6], p[6], config))(pose)
        D = aux.sqrt_w[:, None, None] * d_points
        gram = _gram(D, _active_cov(ops, aux.sel))
        # LAPACK reads one triangle; jnp.linalg.cholesky's symmetrisation (a + a^T) / 2 measured
        # ~40% of this Cholesky's time under vmap on CPU
        chol = jax.lax.linalg.cholesky(jnp.eye(gram.shape[0]) + gram, symmetrize_input=False)
        return _Linearisation(active, jac, jp, D, chol)

    def _g_transpose(self, lin: _Linearisation, aux: _Aux, u):
        """``G^T u`` ``[r]`` for ``u [2K]``: the active points' 3-vectors scattered to all P, one GEMV."""
        k, factor = self.ops.num_landmarks, self.ops.prior.factor
        lam = jnp.zeros(factor.shape[:2], u.dtype).at[aux.sel].add(jnp.einsum("iab,ia->ib", lin.D, u.reshape(k, 2)))
        return lam.reshape(-1) @ factor.reshape(-1, factor.shape[-1])

    def _camera_step(self, lin: _Linearisation, rhs_pose, g_b, damping, damping_mode):
        """Solve the reduced camera system; returns ``(s_pose, M^-1 (G b_c + Jc s_pose))``."""
        minv = jax.scipy.linalg.cho_solve((lin.chol, True), jnp.concatenate([g_b[:, None], lin.jac], 1))
        minv_gb, minv_j = minv[:, 0], minv[:, 1:]
        reduced = lin.jac.T @ minv_j + lin.jac_prior.T @ lin.jac_prior
        scale = jnp.maximum(jnp.diag(reduced), 1e-6) if damping_mode == "marquardt" else jnp.ones(7)
        s_pose = jax.scipy.linalg.solve(reduced + damping * jnp.diag(scale), rhs_pose - lin.jac.T @ minv_gb,
                                        assume_a="pos")
        return s_pose, minv_gb + minv_j @ s_pose

    @staticmethod
    def _ok(lin, *arrays):
        return functools.reduce(jnp.logical_and, [jnp.all(jnp.isfinite(a)) for a in (lin.chol,) + arrays])

    def linearise(self, residual_fn, params, args) -> Linearisation:
        """The driver's matrix-free linearisation of ``residual_fn`` (gradient, predicted
        reduction), carrying this image's Woodbury factors and ``aux`` for :meth:`solve`."""
        data, aux = args
        return linearise_matrix_free(residual_fn, params, args, operator=(self._factors(params, data, aux), aux))

    def solve(self, linearisation: Linearisation, rhs, damping, damping_mode):
        """``(pose, c)`` step ``{"pose": [7], "c": [r]}`` for any ``rhs`` of that shape, and ``ok``."""
        lin, aux = linearisation.operator
        factor = self.ops.prior.factor
        g_b = jnp.einsum("iab,ib->ia", lin.D, (factor.reshape(-1, factor.shape[-1]) @ rhs["c"])
                         .reshape(-1, 3)[aux.sel]).reshape(-1)
        s_pose, w = self._camera_step(lin, rhs["pose"], g_b, damping, damping_mode)
        s_c = rhs["c"] - self._g_transpose(lin, aux, w)
        return {"pose": s_pose, "c": s_c}, self._ok(lin, s_pose, s_c)


def _shape_vector(ops: FitOperators, c, lag):
    """The shape unknowns ``x [nx]`` minimising the linear terms at (c, lag) (tests, debugging)."""
    return ops.prior.shape_from_c @ c + ops.prior.shape_from_lag @ lag


# ----------------------------------------------------------------------------- one image, batch

@struct.dataclass
class FitResult:
    """Batched fit output (leading dim B). ``status`` holds :class:`avatar_jax.status.Status` codes.

    Attributes:
      vertices: ``[B, V, 3]`` fitted mesh in the model frame (mm): base + B beta + dP.
      camera: :class:`avatar_jax.geometry.camera.Camera` with ``[B, ...]`` leaves.
      identity ``[B, Ki]`` (zeros when a base shape was given), expression ``[B, Ke]``,
      corrective ``[B, V, 3]`` (zeros when the corrective field is off).
      landmarks2d: ``[B, K, 2]`` projected model landmarks (jaw: the active contour points).
      reprojection_error: ``[B]`` mean pixel distance over valid landmarks.
      energy: ``[B]`` total energy E; ``energy_terms``: dict name -> ``[B]``.
      cost_history: ``[B, N]`` energy of each iteration's linearisation point (under that
        iteration's contour, lag and IRLS weights), ``cost_after``: ``[B, N]`` the same energy
        after the step (LM: never larger). Between iterations the energy is re-stated under the
        new contour and lag, so ``cost_history[t+1]`` may differ from ``cost_after[t]``.
      status: ``[B]`` int32 ``Status``: ``OK``, ``NON_FINITE``, ``DEGENERATE_INPUT`` (too few usable
        landmarks to start from) or ``DIVERGED`` (a landmark ended behind the camera).
    """

    vertices: jax.Array
    camera: cam.Camera
    identity: jax.Array
    expression: jax.Array
    corrective: jax.Array
    landmarks2d: jax.Array
    reprojection_error: jax.Array
    energy: jax.Array
    energy_terms: dict
    cost_history: jax.Array
    cost_after: jax.Array
    status: jax.Array

    def status_of(self, i: int) -> Status:
        """Image ``i``'s :class:`~avatar_jax.status.Status` (a host read)."""
        return Status.of(np.asarray(self.status)[i])


def _image_data(ops, targets, confidence, image_size, base_vertices):
    valid = jnp.all(jnp.isfinite(targets), -1) & jnp.isfinite(confidence) & (confidence > 0)
    targets = jnp.where(valid[:, None], targets, 0.0)
    weights = landmark_weights(targets, jnp.where(valid, confidence, 0.0), valid, ops.eye_corners)
    focal, principal = cam.intrinsics_from_image_size(image_size)
    base_points = sample_surface(base_vertices, ops.prior.point_faces, ops.prior.point_bary)
    return _ImageData(targets, weights, focal, principal, base_points), valid


def _initial_pose(ops, data, valid, image_size):
    from avatar_jax.fit.epnp import epnp_camera

    k = ops.num_landmarks
    use = valid & ~jnp.isin(jnp.arange(k), jnp.asarray(ops.sliding, jnp.int32))
    camera, ok = epnp_camera(data.base_points[:k], data.targets, image_size,
                             weights=use.astype(jnp.float32))
    pose = jnp.concatenate([camera.rotvec, camera.translation, jnp.zeros((1,))])
    enough = jnp.sum(use) >= MIN_VALID_LANDMARKS
    return pose, ok & enough & jnp.all(jnp.isfinite(pose))


def _depth_flipped(pose):
    """The pose seen as the same image under weak perspective with the head's depth mirrored
    (yaw/pitch negated): R' = S R S, S = diag(1, 1, -1). EPnP returns it instead of the true
    pose on some noisy high-yaw faces."""
    return pose.at[:2].set(-pose[:2])


def _energy(ops, config, data, params, aux: _Aux):
    """Total energy E at ``params`` under the lag ``aux.lag`` (robust landmark kernel included)."""
    active = _active_points(ops, data, params["c"], aux.sel)
    r = _residual(ops, config, params, data, aux)
    sq = lambda v: jnp.sum(v * v)  # noqa: E731
    return sum(_camera_energy_terms(config, data, params["pose"], active).values()) + sq(r["shape"]) + sq(r["lag"])


def _solve(ops, config, data, params, aux, iterations, damping):
    """``iterations`` Gauss-Newton / LM iterations of :func:`avatar_jax.solve.least_squares`, LM from
    the camera damping ``damping []`` (carried between the two solves of :func:`_fit_one`)."""
    linear_solver = ShapeEliminatingSolver(ops, config)
    solver = (GaussNewton(linear_solver) if config.method == "gauss_newton" else
              LevenbergMarquardt(damping=_LM_SCHEDULE, initial_damping=damping, linear_solver=linear_solver))
    return least_squares(functools.partial(_residual, ops, config), params, data, aux, solver=solver,
                         iterations=iterations, refresh=functools.partial(_refresh, ops, config))


def _fit_one(ops: FitOperators, model: HeadModel, config: FitConfig, targets, confidence,
             image_size, base_vertices):
    data, valid = _image_data(ops, targets, confidence, image_size, base_vertices)
    pose0, init_ok = _initial_pose(ops, data, valid, image_size)
    pose0 = jnp.where(init_ok, pose0, jnp.array([0, 0, 0, 0, 0, -1000.0, 0]))
    k, dz, r = ops.num_landmarks, ops.prior.lag_index.shape[0], ops.prior.factor.shape[-1]
    aux0 = _Aux(sel=jnp.arange(k), lag=jnp.zeros((dz,)), sqrt_w=jnp.sqrt(data.weights))
    damping0 = jnp.asarray(config.initial_damping, jnp.float32)

    # First iteration from both EPnP's pose and its depth-flipped twin; keep the lower energy
    # (the true one: with a robust kernel the step's IRLS-weighted cost favours the start whose
    # landmarks are all far off, as it down-weights them).
    firsts = jax.vmap(lambda p: _solve(ops, config, data, {"pose": p, "c": jnp.zeros((r,))}, aux0, 1, damping0))(
        jnp.stack([pose0, _depth_flipped(pose0)]))
    energy0 = jax.vmap(lambda res: _energy(ops, config, data, res.params, res.args[1]))(firsts)
    first = jax.tree.map(lambda a: a[jnp.argmin(jnp.where(jnp.isfinite(energy0), energy0, jnp.inf))], firsts)
    if config.iterations == 1:
        return _finish_image(ops, config, data, valid, first, [first], init_ok)
    rest = _solve(ops, config, data, first.params, first.args[1], config.iterations - 1, first.damping)
    return _finish_image(ops, config, data, valid, rest, [first, rest], init_ok)


class _ImageFit(NamedTuple):
    """Per-image part of the result; the shape (x, mesh) is rebuilt for the whole batch at once."""

    camera: cam.Camera
    landmarks2d: jax.Array
    reprojection_error: jax.Array
    energy_terms: dict
    cost_history: jax.Array
    cost_after: jax.Array
    status: jax.Array
    c: jax.Array  # [r] whitened point coordinates
    lag: jax.Array  # [dz] the last iteration's beta^{t-1}


def _finish_image(ops, config, data, valid, res, runs, init_ok) -> _ImageFit:
    pose, c, aux = res.params["pose"], res.params["c"], res.args[1]
    camera = _camera(pose, data)
    active = _active_points(ops, data, c, aux.sel)
    lm2d = cam.project(camera, active)
    err = jnp.linalg.norm(lm2d - data.targets, axis=-1)
    reproj = jnp.sum(jnp.where(valid, err, 0.0)) / jnp.maximum(jnp.sum(valid), 1)
    terms = _camera_energy_terms(config, data, pose, active)
    solved = functools.reduce(jnp.logical_and, [run.status != Status.NON_FINITE for run in runs]) \
        & (res.status != Status.SINGULAR)
    ok = solved & jnp.isfinite(sum(terms.values())) & jnp.all(jnp.isfinite(c))
    behind = jnp.any(valid & (cam.transform(camera, active)[:, 2] >= 0.0))
    status = jnp.where(~init_ok, Status.DEGENERATE_INPUT, jnp.where(
        ~ok, Status.NON_FINITE, jnp.where(behind, Status.DIVERGED, Status.OK)))
    # the solver's cost is E / 2
    before = 2.0 * jnp.concatenate([run.linearization_cost_history for run in runs])
    after = 2.0 * jnp.concatenate([run.cost_history for run in runs])
    return _ImageFit(camera, lm2d, reproj, terms, before, after, status.astype(jnp.int32), c, aux.lag)


def _camera_energy_terms(config, data, pose, active) -> dict:
    """Energies of the landmark and camera terms at the solution."""
    sq = lambda v: jnp.sum(v * v)  # noqa: E731
    d = _project(pose, active, data) - data.targets
    s = jnp.sum(d * d, -1)
    per_lm = config.landmark_kernel.energy(s) if config.landmark_kernel is not None else s
    rot, trans, log_fs = pose[:3], pose[3:6], pose[6]
    terms = {"landmarks": jnp.sum(data.weights * per_lm),
             "focal_prior": sq(focal_residual(log_fs, config)),
             "rotation_prior": sq(rotation_residual(rot, config))}
    for spec in config.extra_pose_terms:
        terms[spec.name] = spec.weight * sq(spec.fn(rot, trans, log_fs))
    return terms


def _assemble(ops: FitOperators, model: HeadModel, part: _ImageFit, base_vertices) -> FitResult:
    """Shape unknowns, meshes and linear-term energies for the whole batch ``[B, ...]``: one
    GEMM with ``shape_from_c`` (nx x r, 16 MB with dP: read once rather than once per chunk); the
    linear terms' energies (Ec with beta^{t-1} = the final beta, priors) from :func:`_term_energy_operators`."""
    layout, pr = ops.layout, ops.prior
    x = part.c @ pr.shape_from_c.T + part.lag @ pr.shape_from_lag.T  # [B, nx]
    alpha, beta, delta = layout.split(x)
    b, (nv, _) = x.shape[0], model.neutral.shape
    verts = base_vertices + (beta @ model.expression_basis.reshape(model.num_expression, -1)).reshape(b, nv, 3)
    if layout.num_identity:
        verts = verts + (alpha @ model.identity_basis.reshape(model.num_identity, -1)).reshape(b, nv, 3)
    if delta is not None:
        verts = verts + delta
    terms = dict(part.energy_terms)
    z = jnp.concatenate([part.c, part.lag], axis=1)
    for name, w, A, U in zip(ops.term_names, ops.term_weights, ops.term_sparse, ops.term_factor):
        terms[name] = w * (jnp.sum((A @ x.T) ** 2, axis=0) if U is None else jnp.sum((z @ U.T) ** 2, axis=1))
    energy = sum(terms.values())
    finite = jnp.isfinite(energy) & jnp.all(jnp.isfinite(verts), axis=(1, 2))
    status = jnp.where((part.status == Status.OK) & ~finite, Status.NON_FINITE, part.status)
    return FitResult(
        vertices=verts, camera=part.camera,
        identity=alpha if layout.num_identity else jnp.zeros((b, model.num_identity)), expression=beta,
        corrective=delta if delta is not None else jnp.zeros((b, nv, 3)),
        landmarks2d=part.landmarks2d, reprojection_error=part.reprojection_error, energy=energy,
        energy_terms=terms, cost_history=part.cost_history, cost_after=part.cost_after,
        status=status.astype(jnp.int32))


# ----------------------------------------------------------------------------- public API

# Images per vmap chunk on a CPU backend: 32 measured 2-5% faster than 16 and 64 at B = 32 and
# 256 (full energy and landmark-only, one process, same run).
_CPU_CHUNK = 32


def _chunk_size(config: FitConfig) -> int:
    """``config.chunk_size``, or by default 32 on a CPU backend (chunks in sequence under lax.map
    keep each chunk's working set in cache) and the whole batch on an accelerator, which one vmap
    fills (H100, B = 4096: 0.030 ms/image in one vmap, 0.12 ms/image in chunks of 32)."""
    if config.chunk_size is not None:
        return config.chunk_size
    return _CPU_CHUNK if jax.default_backend() == "cpu" else 1 << 30


def _fit_padded(ops, model, config, chunk, targets, confidence, image_sizes, base_vertices):
    """Per-image iterations in chunks of ``chunk`` images (vmap; chunks in sequence under
    lax.map), then the batch-wide mesh rebuild."""
    chunk = min(chunk, targets.shape[0])
    one = jax.vmap(lambda t, c, s, b: _fit_one(ops, model, config, t, c, s, b))
    n = targets.shape[0]
    reshape = lambda a: a.reshape((n // chunk, chunk) + a.shape[1:])
    out = jax.lax.map(lambda args: one(*args),
                      (reshape(targets), reshape(confidence), reshape(image_sizes), reshape(base_vertices)))
    part = jax.tree.map(lambda a: a.reshape((n,) + a.shape[2:]), out)
    return _assemble(ops, model, part, base_vertices)


_fit_jit = jax.jit(_fit_padded, static_argnames=("config", "chunk"))


def fit(landmarks, image_sizes, base_shape=None, config: FitConfig = FitConfig(), *,
        model: HeadModel | None = None, confidence=None,
        landmark_set: LandmarkSet | None = None) -> FitResult:
    """Fit the head model to 2D landmarks of B images.

    Args:
      landmarks: ``[B, K, 2]`` pixel coordinates (x right, y down), K = 68 iBUG points by default;
        NaN marks a missing landmark.
      image_sizes: ``[B, 2]`` (height, width) in pixels.
      base_shape: ``[B, V, 3]`` base shapes P (e.g. from the regressor), or None: landmark-only
        mode, P = neutral + identity_basis . alpha with alpha fitted under its prior.
      config: energy weights and switches (:class:`FitConfig`).
      model: head model (default: the bundled low-poly head).
      confidence: ``[B, K]`` optional per-landmark confidence weights (default 1).
      landmark_set: the K landmarks' embedding on the model (default: iBUG-68 with the jaw
        sliding); keep the same object between calls so its precomputation is reused. The
        landmark term's W_eye uses landmarks 36 and 45 of the set.

    Returns:
      :class:`FitResult` with leading dimension B. Bad images are flagged in ``status`` and
      never change other images' results. Returns once the fit has run; it runs with one BLAS
      thread (see :mod:`avatar_jax._threads`).
    """
    if model is None:
        from avatar_jax.model import load_head_model

        model = load_head_model()
    landmarks = np.asarray(landmarks, np.float32)
    image_sizes = np.asarray(image_sizes, np.float32)
    if landmarks.ndim != 3 or landmarks.shape[-1] != 2:
        raise ValueError(f"landmarks must have shape [B, K, 2], got {landmarks.shape}")
    b, k = landmarks.shape[:2]
    if image_sizes.shape != (b, 2):
        raise ValueError(f"image_sizes must have shape [B, 2] = ({b}, 2), got {image_sizes.shape}")
    confidence = np.ones((b, k), np.float32) if confidence is None else np.asarray(confidence, np.float32)
    if confidence.shape != (b, k):
        raise ValueError(f"confidence must have shape [B, K] = ({b}, {k}), got {confidence.shape}")
    ops = prepared(model, config, with_identity=base_shape is None, landmark_set=landmark_set)
    if k != ops.num_landmarks:
        raise ValueError(f"landmarks has {k} points per image, the landmark set has {ops.num_landmarks}")
    if base_shape is None:
        base = np.broadcast_to(np.asarray(model.neutral), (b,) + model.neutral.shape)
    else:
        base = np.asarray(base_shape, np.float32)
        if base.shape != (b,) + tuple(model.neutral.shape):
            raise ValueError(f"base_shape must have shape [B, V, 3] = ({b}, {model.num_vertices}, 3), "
                             f"got {base.shape}")
    chunk = _chunk_size(config)
    padded = _padded_size(b, chunk)
    pad = lambda a, fill: np.concatenate([a, np.full((padded - b,) + a.shape[1:], fill, a.dtype)])
    sizes_fill = image_sizes[:1] if b else np.ones((1, 2), np.float32)
    # Full float32 products: GPUs default to TF32 passes (~1e-3 relative), which moved vertices by
    # up to 41 mm and rotations by 1.7 deg from the CPU fit on 64 noisy heads (H100); the fit's
    # GEMMs are small, so full precision costs little. No effect on CPU.
    with single_blas_thread(), jax.default_matmul_precision("highest"):
        out = jax.block_until_ready(_fit_jit(
            ops, model, config, chunk, pad(landmarks, np.nan), pad(confidence, 1.0),
            np.concatenate([image_sizes, np.repeat(sizes_fill, padded - b, 0)]),
            pad(np.ascontiguousarray(base), 0.0)))
    return jax.tree.map(lambda a: a[:b], out)


def _padded_size(b: int, chunk: int) -> int:
    """Batch sizes are padded to a power of two, and to a multiple of ``chunk`` above it."""
    if b <= chunk:
        return 1 << max(0, math.ceil(math.log2(max(b, 1))))
    return chunk * (1 << math.ceil(math.log2(math.ceil(b / chunk))))
