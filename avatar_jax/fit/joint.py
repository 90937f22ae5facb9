"""Several photos of one person fitted jointly: one shared identity, per-photo camera, expression
and corrective field -- exact and batched like the single-image fit.

Unknowns of a group of V photos: the identity ``alpha [Ki]`` (shared) and, per photo, the camera
``pose_v [7]`` and whitened point coordinates ``c_v [r]`` of its own shape unknowns ``[beta_v,
dP_v]`` on the base ``neutral + identity_basis . alpha`` (the base-shape operators of
:mod:`avatar_jax.fit.prior`, which eliminate beta_v and dP_v exactly as for one image). The
energy is the single-image energy summed over the photos, alpha shared::

    E = n * wr * identity_weight * |alpha / sigma|^2 + sum_v E_v(pose_v, c_v; alpha)

with ``n`` the number of photos used (``identity_prior="per_photo"``, the default: each photo
keeps its own prior, as if fitted alone) or 1 (``"once"``: the posterior of alpha given all the
photos). "once" is the textbook choice and recovers clean-landmark shapes far better, but with
detector-like noise it drifts: landmarks alone barely separate identity from per-photo
expression, correctives and camera distance, and a prior paid once lets the shared identity
soak up what the photos' own priors would charge V times for (docs/batch.md has the numbers).

The damped normal equations have arrow structure: the photos' blocks ``N_v`` (each exactly the
single-image system that :class:`~avatar_jax.fit.woodbury.ShapeEliminatingSolver` solves) are
coupled only through alpha::

    [N_1              B_1] [s_1]   [b_1]
    [      ...        ...] [...] = [...]
    [           N_V   B_V] [s_V]   [b_V]
    [B_1^T ... B_V^T   A ] [s_a]   [b_a]

with ``B_v = [Jc^T H_v; G^T H_v]`` (``H_v [2K, Ki]``: the landmark rows' derivative w.r.t. alpha,
D_v times the identity basis at the active points) and ``A = Lambda + sum_v H_v^T H_v``. The
Schur complement on alpha is only Ki x Ki::

    S = Lambda + sum_v H_v^T W_v H_v,   W_v = M_v^-1 - M_v^-1 Jc R_v^-1 Jc^T M_v^-1

(``M_v = I + G G^T`` and the damped reduced camera matrix ``R_v``: the single image's own
factors), so a step is ``s_a = S^-1 (b_a - sum_v B_v^T N_v^-1 b_v)``, ``s_v = N_v^-1 (b_v - B_v
s_a)``: per photo one Cholesky solve on the single image's factor (all right-hand sides at once)
and one 7 x 7 camera solve, and one Ki x Ki solve per group; the back-substitution is matrix
products only. No dense system of the full problem is formed.

Start: every photo is first fitted on its own (:func:`avatar_jax.fit.fit`); a photo whose own
fit fails (too few landmarks, non-finite, diverged) is left out of its group and keeps that
result. The group starts from those cameras and the mean of their identities, then runs
``config.iterations`` joint Gauss-Newton / Levenberg-Marquardt iterations (LM damps the
cameras, as for one image; the shape blocks are linear under their prior).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from avatar_jax._identity_cache import IdentityCache
from avatar_jax._threads import single_blas_thread
from avatar_jax.fit.config import FitConfig
from avatar_jax.fit.fitting import _LM_SCHEDULE, FitResult, _assemble, _fitted_view, _image_data, _ImageFit, fit
from avatar_jax.fit.operators import FitOperators, LandmarkSet, cached_operators
from avatar_jax.fit.problem import ImageData, IterationArgs, refresh, residual
from avatar_jax.fit.woodbury import ShapeEliminatingSolver, damped_camera_matrix
from avatar_jax.model.head import HeadModel, sample_surface
from avatar_jax.solve import GaussNewton, LevenbergMarquardt, least_squares, linearise_matrix_free
from avatar_jax.status import Status

IDENTITY_PRIORS = ("per_photo", "once")


@struct.dataclass
class JointOperators:
    """The base-shape operators plus what alpha needs: its basis at the P surface points
    ``identity_points [P, 3, Ki]`` and ``prior_sqrt [Ki]`` (sqrt(wr * identity_weight) / sigma)."""

    ops: FitOperators
    identity_points: jax.Array
    prior_sqrt: jax.Array
    prior_per_photo: bool = struct.field(pytree_node=False, default=True)


def joint_operators(model: HeadModel, ops: FitOperators, config: FitConfig,
                    identity_prior: str = "per_photo") -> JointOperators:
    """:class:`JointOperators` from the base-shape operators ``ops`` (``prepare(...,
    with_identity=False)``); ``identity_prior`` as for :func:`fit_joint`."""
    if identity_prior not in IDENTITY_PRIORS:
        raise ValueError(f"identity_prior must be one of {IDENTITY_PRIORS}, got {identity_prior!r}")
    basis = jnp.asarray(model.identity_basis)  # [Ki, V, 3]
    points = jax.vmap(lambda b: sample_surface(b, ops.prior.point_faces, ops.prior.point_bary))(basis)
    weight = config.regularization_weight * config.identity_weight
    return JointOperators(ops, jnp.transpose(points, (1, 2, 0)),
                          jnp.sqrt(weight) / jnp.asarray(model.identity_sigma), identity_prior == "per_photo")


class GroupData(NamedTuple):
    views: ImageData  # [V, ...] on the neutral base
    used: jax.Array  # [V] bool: the photo takes part in the joint fit


@struct.dataclass
class JointFitResult:
    """Batched joint-fit output: G groups of V photos (padded groups: ``view_used`` False).

    Attributes:
      views: :class:`~avatar_jax.fit.FitResult` with leading dims ``[G, V]``; a photo left out of
        its group (``view_used`` False) holds its own single-photo fit. ``views.identity`` is the
        group's alpha; ``views.energy_terms["identity_prior"]`` the group's prior energy.
      identity: ``[G, Ki]`` the shared identity.
      energy: ``[G]`` the group's energy (its identity prior, as ``identity_prior`` counts it,
        plus the used photos' other terms).
      view_used: ``[G, V]`` bool.
      cost_history, cost_after: ``[G, N]`` the group's energy per iteration (as :class:`FitResult`).
      status: ``[G]`` int32 :class:`~avatar_jax.status.Status` of the joint solve
        (``DEGENERATE_INPUT`` when no photo of the group could be fitted on its own).
    """

    views: FitResult
    identity: jax.Array
    energy: jax.Array
    view_used: jax.Array
    cost_history: jax.Array
    cost_after: jax.Array
    status: jax.Array


def with_identity(jops: JointOperators, views: ImageData, alpha) -> ImageData:
    """The photos' data ``[V, ...]`` on the base ``neutral + identity_basis . alpha``."""
    return views._replace(base_points=views.base_points + jops.identity_points @ alpha)


def group_residual(jops: JointOperators, config: FitConfig, params, data: GroupData, auxes: IterationArgs):
    """Residuals of the group: every used photo's single-image residuals, and the identity prior."""
    views = with_identity(jops, data.views, params["alpha"])
    one = lambda p, c, d, a: residual(jops.ops, config, {"pose": p, "c": c}, d, a)  # noqa: E731
    per_view = jax.vmap(one)(params["pose"], params["c"], views, auxes)
    mask = lambda r: jnp.where(data.used.reshape((-1,) + (1,) * (r.ndim - 1)), r, 0.0)  # noqa: E731
    return {"views": jax.tree.map(mask, per_view), "identity": identity_prior_sqrt(jops, data.used) * params["alpha"]}


def identity_prior_sqrt(jops: JointOperators, used) -> jax.Array:
    """``[Ki]`` square root of the group's identity-prior weights: ``prior_sqrt`` once, or every
    used photo's own prior (``sqrt(num_used) * prior_sqrt``; module docstring)."""
    if not jops.prior_per_photo:
        return jops.prior_sqrt
    return jnp.sqrt(jnp.maximum(jnp.sum(used), 1).astype(jops.prior_sqrt.dtype)) * jops.prior_sqrt


def group_refresh(jops: JointOperators, config: FitConfig, params, data: GroupData, auxes: IterationArgs):
    """Every photo's :func:`~avatar_jax.fit.problem.refresh` on the current shared identity."""
    views = with_identity(jops, data.views, params["alpha"])
    one = lambda p, c, d, a: refresh(jops.ops, config, {"pose": p, "c": c}, d, a)[1]  # noqa: E731
    return data, jax.vmap(one)(params["pose"], params["c"], views, auxes)


@dataclasses.dataclass(frozen=True)
class ArrowSolver:
    """Linear solver (:mod:`avatar_jax.solve.linear` protocol) of :func:`group_residual`: the
    arrow-structured normal equations by the Schur complement on alpha (module docstring)."""

    jops: JointOperators
    config: FitConfig

    @property
    def view_solver(self) -> ShapeEliminatingSolver:
        return ShapeEliminatingSolver(self.jops.ops, self.config)

    def linearise(self, residual_fn, params, args):
        data, auxes = args
        views = with_identity(self.jops, data.views, params["alpha"])
        factors = jax.vmap(lambda p, c, d, a: self.view_solver.factors({"pose": p, "c": c}, d, a))(
            params["pose"], params["c"], views, auxes)
        h = jax.vmap(self._identity_rows)(factors.D, auxes.sel)
        return linearise_matrix_free(residual_fn, params, args, operator=(factors, auxes, h, data.used))

    def _identity_rows(self, D, sel):
        """``H [2K, Ki]``: the landmark rows' derivative w.r.t. alpha."""
        return jnp.einsum("kab,kbi->kai", D, self.jops.identity_points[sel]).reshape(2 * D.shape[0], -1)

    def solve(self, linearisation, rhs, damping, damping_mode):
        factors, auxes, h, used = linearisation.operator
        part = jax.vmap(functools.partial(self._view_part, damping, damping_mode))
        u, coupling, schur, minv_h, minv_j, x, ok = part(factors, auxes, h, rhs["pose"], rhs["c"], used)
        system = jnp.diag(identity_prior_sqrt(self.jops, used) ** 2) + jnp.sum(schur, 0)
        s_alpha = jax.scipy.linalg.solve(system, rhs["alpha"] - jnp.sum(coupling, 0), assume_a="pos")
        steps = jax.vmap(functools.partial(self._back_substitute, s_alpha))(factors, auxes, minv_h, minv_j, x, u, used)
        ok_all = jnp.all(ok) & jnp.all(jnp.isfinite(s_alpha)) & jnp.all(jnp.isfinite(steps["c"]))
        return {"alpha": s_alpha, "pose": steps["pose"], "c": steps["c"]}, ok_all

    def _view_part(self, damping, damping_mode, lin, aux, h_v, b_pose, b_c, use):
        """One photo: ``u = N_v^-1 b_v``, ``B_v^T u``, ``H^T W H`` and what the back-substitution
        needs. One Cholesky solve with every right-hand side at once and one 7 x 7 solve, each
        depending on the last: XLA's CPU runtime can deadlock when independent batched LAPACK
        calls run concurrently on its thread pool (they re-enter it), so none are independent."""
        vs = self.view_solver
        g_b = vs.landmark_rows(lin, aux, {"pose": jnp.zeros_like(b_pose), "c": b_c})
        minv = jax.scipy.linalg.cho_solve((lin.chol, True), jnp.concatenate([g_b[:, None], lin.jac, h_v], 1))
        minv_gb, minv_j, minv_h = minv[:, 0], minv[:, 1:8], minv[:, 8:]
        reduced = damped_camera_matrix(lin.jac.T @ minv_j + lin.jac_prior.T @ lin.jac_prior, damping, damping_mode)
        rhs = jnp.concatenate([(b_pose - lin.jac.T @ minv_gb)[:, None], lin.jac.T @ minv_h], 1)
        sol = jax.scipy.linalg.solve(reduced, rhs, assume_a="pos")
        s_pose, x = sol[:, 0], sol[:, 1:]  # x = R^-1 Jc^T M^-1 H
        u = {"pose": s_pose, "c": b_c - vs.g_transpose(lin, aux, minv_gb + minv_j @ s_pose)["c"]}
        zero = lambda a: jnp.where(use, a, 0.0)  # noqa: E731  (a left-out photo's system is singular)
        coupling = h_v.T @ vs.landmark_rows(lin, aux, u)  # B_v^T N_v^-1 b_v
        schur = h_v.T @ (minv_h - minv_j @ x)  # H^T W H
        ok = jnp.all(jnp.isfinite(sol)) & jnp.all(jnp.isfinite(minv))
        return u, zero(coupling), zero(schur), minv_h, minv_j, x, ok | ~use

    def _back_substitute(self, s_alpha, lin, aux, minv_h, minv_j, x, u, use):
        """``s_v = u_v - N_v^-1 B_v s_alpha`` by matrix products only: with M = I + G G^T,
        M^-1 G G^T H = H - M^-1 H, so ``N_v^-1 B_v s = (x s, G^T (M^-1 H s - M^-1 Jc x s))``."""
        pose = x @ s_alpha
        c = self.view_solver.g_transpose(lin, aux, minv_h @ s_alpha - minv_j @ pose)["c"]
        return {"pose": jnp.where(use, u["pose"] - pose, 0.0), "c": jnp.where(use, u["c"] - c, 0.0)}


def _solve_group(jops, config, data: GroupData, params, auxes):
    solver = ArrowSolver(jops, config)
    method = (GaussNewton(solver) if config.method == "gauss_newton" else
              LevenbergMarquardt(damping=_LM_SCHEDULE, initial_damping=config.initial_damping, linear_solver=solver))
    return least_squares(functools.partial(group_residual, jops, config), params, data, auxes, solver=method,
                         iterations=config.iterations, refresh=functools.partial(group_refresh, jops, config))


def _fit_group(jops: JointOperators, model, config, targets, confidence, image_sizes, used, alpha0, pose0):
    """One group ``[V, ...]``: the joint iterations, then per-photo results on the shared identity."""
    ops = jops.ops
    neutral = jnp.asarray(model.neutral)
    views, valid = jax.vmap(lambda t, c, s: _image_data(ops, t, c, s, neutral))(targets, confidence, image_sizes)
    data = GroupData(views, used)
    v, k = targets.shape[:2]
    dz, r = ops.prior.lag_index.shape[0], ops.prior.factor.shape[-1]
    auxes = IterationArgs(sel=jnp.tile(jnp.arange(k), (v, 1)), lag=jnp.zeros((v, dz)),
                          sqrt_w=jnp.sqrt(views.weights) * used[:, None])
    res = _solve_group(jops, config, data, {"alpha": alpha0, "pose": pose0, "c": jnp.zeros((v, r))}, auxes)
    alpha, final_aux = res.params["alpha"], res.args[1]
    on_identity = with_identity(jops, views, alpha)
    part = jax.vmap(functools.partial(_finish_view, ops, config))(
        on_identity, valid, res.params["pose"], res.params["c"], final_aux)
    prior = jnp.sum((identity_prior_sqrt(jops, used) * alpha) ** 2)
    group_ok = (res.status != Status.NON_FINITE) & (res.status != Status.SINGULAR) & jnp.all(jnp.isfinite(alpha))
    return part, alpha, prior, 2.0 * res.linearization_cost_history, 2.0 * res.cost_history, group_ok


def _finish_view(ops, config, data, valid, pose, c, aux) -> _ImageFit:
    view = _fitted_view(ops, config, data, valid, pose, c, aux.sel)
    status = jnp.where(view.behind, Status.DIVERGED, Status.OK).astype(jnp.int32)
    empty = jnp.zeros((0,))
    return _ImageFit(view.camera, view.landmarks2d, view.reprojection_error, view.energy_terms, empty, empty,
                     status, c, aux.lag)


def _fit_joint_padded(jops, model, config, targets, confidence, image_sizes, used, alpha0, pose0):
    g, v = targets.shape[:2]
    part, alpha, prior, before, after, group_ok = jax.vmap(
        lambda *a: _fit_group(jops, model, config, *a))(targets, confidence, image_sizes, used, alpha0, pose0)
    flat = jax.tree.map(lambda a: a.reshape((g * v,) + a.shape[2:]), part)
    nv = model.neutral.shape[0]
    base = model.neutral + (alpha @ model.identity_basis.reshape(model.num_identity, -1)).reshape(g, 1, nv, 3)
    views = _assemble(jops.ops, model, flat, jnp.broadcast_to(base, (g, v, nv, 3)).reshape(g * v, nv, 3))
    views = jax.tree.map(lambda a: a.reshape((g, v) + a.shape[1:]), views)
    n = before.shape[1]
    terms = {**views.energy_terms, "identity_prior": jnp.broadcast_to(prior[:, None], (g, v))}
    view_energy = jnp.sum(jnp.where(used, views.energy, 0.0), 1)
    status = jnp.where(~jnp.any(used, 1), Status.DEGENERATE_INPUT,
                       jnp.where(group_ok, Status.OK, Status.NON_FINITE)).astype(jnp.int32)
    views = views.replace(identity=jnp.broadcast_to(alpha[:, None], (g, v, alpha.shape[1])), energy_terms=terms,
                          cost_history=jnp.broadcast_to(before[:, None], (g, v, n)),
                          cost_after=jnp.broadcast_to(after[:, None], (g, v, n)),
                          status=jnp.where(status[:, None] == Status.OK, views.status, status[:, None]))
    return views, alpha, view_energy + prior, before, after, status


_fit_joint_jit = jax.jit(_fit_joint_padded, static_argnames=("config",))


def fit_joint(landmarks, image_sizes, config: FitConfig = FitConfig(), *, model: HeadModel | None = None,
              confidence=None, landmark_set: LandmarkSet | None = None,
              identity_prior: str = "per_photo") -> JointFitResult:
    """Fit G groups of V photos, each group one person: one identity per group.

    Args:
      landmarks: ``[G, V, K, 2]`` pixels; NaN marks a missing landmark, an all-NaN photo pads a
        group with fewer than V photos.
      image_sizes: ``[G, V, 2]`` (height, width).
      config: as for :func:`avatar_jax.fit.fit` (``fit_identity`` must be True).
      confidence: ``[G, V, K]`` optional per-landmark weights.
      identity_prior: ``"per_photo"`` (default): the group energy is the sum of the photos'
        single-image energies, each with its own identity prior, alpha shared; ``"once"``: the
        posterior of alpha given all photos (the prior counted once). See the module docstring.

    Returns:
      :class:`JointFitResult`. A photo whose own fit fails is left out of its group (and keeps
      that result); a group none of whose photos can be fitted gets ``DEGENERATE_INPUT``.
    """
    if model is None:
        from avatar_jax.model import load_head_model

        model = load_head_model()
    if not config.fit_identity:
        raise ValueError("fit_joint fits the shared identity: config.fit_identity must be True")
    landmarks = np.asarray(landmarks, np.float32)
    if landmarks.ndim != 4 or landmarks.shape[-1] != 2:
        raise ValueError(f"landmarks must have shape [G, V, K, 2], got {landmarks.shape}")
    g, v, k = landmarks.shape[:3]
    image_sizes = np.asarray(image_sizes, np.float32)
    if image_sizes.shape != (g, v, 2):
        raise ValueError(f"image_sizes must have shape [G, V, 2] = ({g}, {v}, 2), got {image_sizes.shape}")
    confidence = np.ones((g, v, k), np.float32) if confidence is None else np.asarray(confidence, np.float32)
    if confidence.shape != (g, v, k):
        raise ValueError(f"confidence must have shape [G, V, K] = ({g}, {v}, {k}), got {confidence.shape}")
    flat = lambda a: a.reshape((g * v,) + a.shape[2:])  # noqa: E731
    single = fit(flat(landmarks), flat(image_sizes), config=config, model=model, confidence=flat(confidence),
                 landmark_set=landmark_set)
    single = jax.tree.map(lambda a: np.asarray(a).reshape((g, v) + a.shape[1:]), single)
    used = single.status == Status.OK
    weights = used / np.maximum(used.sum(1, keepdims=True), 1)
    alpha0 = np.einsum("gv,gvk->gk", weights, single.identity).astype(np.float32)
    cam0 = single.camera
    pose0 = np.concatenate([cam0.rotvec, cam0.translation, cam0.log_fs[..., None]], -1).astype(np.float32)
    pose0 = np.where(used[..., None], pose0, np.array([0, 0, 0, 0, 0, -1000.0, 0], np.float32))
    jops = _cached_joint_operators(model, config, landmark_set, identity_prior)
    with single_blas_thread(), jax.default_matmul_precision("highest"):
        views, alpha, energy, before, after, status = jax.block_until_ready(_fit_joint_jit(
            jops, model, config, landmarks, confidence,
            image_sizes, used, alpha0, np.nan_to_num(pose0)))
    keep = lambda joint, own: np.where(  # noqa: E731
        used.reshape(used.shape + (1,) * (np.ndim(own) - 2)), np.asarray(joint), own)
    views = jax.tree.map(keep, views, single)
    return JointFitResult(views, np.asarray(alpha), np.asarray(energy), used, np.asarray(before),
                          np.asarray(after), np.asarray(status))


_JOINT_OPERATORS: IdentityCache[JointOperators] = IdentityCache()


def _cached_joint_operators(model, config, landmark_set, identity_prior):
    return _JOINT_OPERATORS.get((model, landmark_set), (config, identity_prior),
                                lambda: joint_operators(model, cached_operators(
                                    model, config, with_identity=False, landmark_set=landmark_set), config,
                                    identity_prior))
