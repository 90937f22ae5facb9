"""One image's least-squares problem, as :func:`avatar_jax.solve.least_squares` sees it.

Parameters ``{"pose": [7], "c": [r]}`` (camera rotation vector, translation, log focal scale;
whitened surface-point coordinates), per-image constants :class:`ImageData`, and the
:class:`IterationArgs` that :func:`refresh` re-picks at the start of every iteration (the
driver's ``args``). :func:`residual` is one small function per energy term stacked in a dict.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from avatar_jax.fit.config import FitConfig
from avatar_jax.fit.operators import FitOperators
from avatar_jax.fit.terms import focal_residual, landmark_residual, pose_residual, rotation_residual
from avatar_jax.geometry import camera as cam

class ImageData(NamedTuple):
    targets: jax.Array  # [K, 2]
    weights: jax.Array  # [K] 100/W_eye * confidence (0 = missing)
    focal: jax.Array  # []
    principal: jax.Array  # [2]
    base_points: jax.Array  # [P, 3]


class IterationArgs(NamedTuple):
    """What :func:`refresh` re-picks at the start of every iteration (the solver's ``args``)."""

    sel: jax.Array  # [K] active point index per landmark (the jaw slides over its candidates)
    lag: jax.Array  # [dz] beta^{t-1}: the lagged components of the previous iterate's shape
    sqrt_w: jax.Array  # [K] sqrt of the landmark weights, times the robust kernel's IRLS weights


def camera_at(pose, data: ImageData) -> cam.Camera:
    return cam.Camera(rotvec=pose[:3], translation=pose[3:6], log_fs=pose[6], focal=data.focal,
                      principal=data.principal)


def project_at(pose, points, data):
    return cam.project(camera_at(pose, data), points)


def surface_points_at(ops: FitOperators, data: ImageData, c):
    """All P surface points ``[P, 3]`` at whitened coordinates ``c [r]``: ``base + F c``. One GEMM
    over the batch chunk under vmap; the landmarks then gather their 3-vectors (gathering F's
    active rows per image instead is slower for the whole fit: docs/solver.md)."""
    factor = ops.prior.factor
    return data.base_points + (factor.reshape(-1, factor.shape[-1]) @ c).reshape(-1, 3)


def active_points_at(ops: FitOperators, data: ImageData, c, sel):
    """The K active points ``[K, 3]`` at whitened coordinates ``c [r]``."""
    return surface_points_at(ops, data, c)[sel]


def select_active(ops: FitOperators, config: FitConfig, pose, points, data) -> jax.Array:
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
        score = jnp.sum((project_at(pose, cand.reshape(-1, 3), data).reshape(j, c, 2)
                         - targets[:, None]) ** 2, -1)
        pick = jnp.take_along_axis(ops.candidate_index, jnp.argmin(score, -1)[:, None], 1)[:, 0]
    else:
        pick = cam.silhouette_pick(ops.candidate_index, cand, ops.candidate_normals,
                                   pose[:3], pose[3:6])
    return sel.at[jnp.asarray(ops.sliding)].set(pick)


def irls_weights(pose, active_points, data, config):
    if config.landmark_kernel is None:
        return data.weights
    d = project_at(pose, active_points, data) - data.targets
    return data.weights * config.landmark_kernel.weight(jax.lax.stop_gradient(jnp.sum(d * d, -1)))


def residual(ops: FitOperators, config: FitConfig, params, data: ImageData, aux: IterationArgs) -> dict:
    """Residuals of one iteration's energy on ``params = {"pose": [7], "c": [r]}``; ``|r|^2`` is
    E with the landmark kernel as IRLS weights: the landmarks, the linear terms minimised over
    the shapes that put the points at ``base + F c`` (exact, :mod:`avatar_jax.fit.prior`), the
    camera priors. The ``"lag"`` part is constant in the parameters (the linear terms' minimum
    for this beta^{t-1}); it makes the cost the energy."""
    pose, c, pr = params["pose"], params["c"], ops.prior
    active = active_points_at(ops, data, c, aux.sel)
    return {"landmarks": landmark_residual(project_at(pose, active, data), data.targets, aux.sqrt_w),
            "shape": c - pr.mean_from_lag @ aux.lag,
            "lag": pr.lag_cost_factor @ aux.lag,
            "pose": pose_residual(pose[:3], pose[3:6], pose[6], config)}


def refresh(ops: FitOperators, config: FitConfig, params, data: ImageData, aux: IterationArgs):
    """Start of an iteration: re-pick the contour points, freeze beta^{t-1} (the beta of the
    current shape), and re-weight the landmarks by the robust kernel."""
    pose, c, pr = params["pose"], params["c"], ops.prior
    points = surface_points_at(ops, data, c)
    sel = select_active(ops, config, pose, points, data)
    lag = pr.lag_from_c @ c + pr.lag_from_lag @ aux.lag
    sqrt_w = jnp.sqrt(irls_weights(pose, points[sel], data, config))
    return data, IterationArgs(sel, lag, sqrt_w)


def total_energy(ops, config, data, params, aux: IterationArgs):
    """Total energy E at ``params`` under the lag ``aux.lag`` (robust landmark kernel included)."""
    active = active_points_at(ops, data, params["c"], aux.sel)
    r = residual(ops, config, params, data, aux)
    sq = lambda v: jnp.sum(v * v)  # noqa: E731
    return sum(camera_energy_terms(config, data, params["pose"], active).values()) + sq(r["shape"]) + sq(r["lag"])


def camera_energy_terms(config, data, pose, active) -> dict:
    """Energies of the landmark and camera terms at the solution."""
    sq = lambda v: jnp.sum(v * v)  # noqa: E731
    d = project_at(pose, active, data) - data.targets
    s = jnp.sum(d * d, -1)
    per_lm = config.landmark_kernel.energy(s) if config.landmark_kernel is not None else s
    rot, trans, log_fs = pose[:3], pose[3:6], pose[6]
    terms = {"landmarks": jnp.sum(data.weights * per_lm),
             "focal_prior": sq(focal_residual(log_fs, config)),
             "rotation_prior": sq(rotation_residual(rot, config))}
    for spec in config.extra_pose_terms:
        terms[spec.name] = spec.weight * sq(spec.fn(rot, trans, log_fs))
    return terms


