"""Non-rigid landmark fitting (paper section 3.4), batched and exact, on :mod:`avatar_jax.solve`.

Unknowns per image: ``p = [alpha, beta, dP, t, r, log_fs]`` (alpha only in landmark-only mode).
The shape unknowns ``x = [alpha, beta, dP]`` are eliminated exactly (:mod:`avatar_jax.fit.prior`):
the landmarks see x only through P surface points, so the solver works on the camera ``pose
[7]`` and whitened point coordinates ``c [r]`` (``points = base + F c``, ``F F^T = C`` the
points' prior covariance, r <= 3P), in which the linear terms, minimised over every x that puts
the points there, cost ``|c - cbar(beta^{t-1})|^2 + const``.

The pieces, one module each:

- :mod:`avatar_jax.fit.operators`: the image-independent operators (:func:`prepare`, cached by
  :func:`cached_operators`);
- :mod:`avatar_jax.fit.problem`: one image's residuals per energy term and the ``refresh`` that
  re-picks the jaw-contour points (``FitConfig.contour_rule``), freezes beta^{t-1} for Ec as the
  paper does and sets the robust kernel's IRLS weights at the start of every iteration;
- :mod:`avatar_jax.fit.woodbury`: :class:`ShapeEliminatingSolver`, the damped normal equations
  by the Woodbury identity, one ``2K x 2K`` Cholesky (K landmarks) plus a 7 x 7 solve per image;
- this module: the driver, :func:`avatar_jax.solve.least_squares` (Gauss-Newton or
  Levenberg-Marquardt) run per image under ``vmap``, and the batch-wide mesh rebuild.

The step is algebraically the Gauss-Newton step of the full problem; ``tests/test_fit.py`` checks
it against a dense solve of the full normal equations on the real model (float64, ~1e-11). The
full ``x`` (and the mesh) is rebuilt once at the end for the whole batch.

``method="levenberg_marquardt"`` (default) accepts a step only if it lowers the energy of the
iteration (same contour, lag and weights) and otherwise damps the camera block; starting
undamped, it equals the paper's Gauss-Newton while steps succeed. The first iteration runs from
EPnP's pose and from its depth-flipped twin and keeps the one of lower energy.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from avatar_jax._devices import check_devices
from avatar_jax._threads import single_blas_thread
from avatar_jax.fit.config import FitConfig
from avatar_jax.fit.operators import FitOperators, LandmarkSet, cached_operators
from avatar_jax.fit.problem import (ImageData, IterationArgs, active_points_at, camera_at, camera_energy_terms,
                                    refresh, residual, total_energy)
from avatar_jax.fit.terms import landmark_weights
from avatar_jax.fit.woodbury import ShapeEliminatingSolver
from avatar_jax.geometry import camera as cam
from avatar_jax.model.head import HeadModel, sample_surface
from avatar_jax.solve import FactorDamping, GaussNewton, LevenbergMarquardt, least_squares
from avatar_jax.status import Status

MIN_VALID_LANDMARKS = 6
# Levenberg-Marquardt schedule of the (Marquardt-scaled) camera damping: x0.3 after an accepted
# step, x10 after a rejected one and at least 0.1. A gentler restart (x5, at least 1e-3) spent
# the remaining iterations on rejected steps on a few noisy high-yaw faces (docs/solver.md).
_LM_SCHEDULE = FactorDamping(decrease=0.3, increase=10.0, restart=0.1)


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
    return ImageData(targets, weights, focal, principal, base_points), valid


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



def _solve(ops, config, data, params, aux, iterations, damping):
    """``iterations`` Gauss-Newton / LM iterations of :func:`avatar_jax.solve.least_squares`, LM from
    the camera damping ``damping []`` (carried between the two solves of :func:`_fit_one`)."""
    linear_solver = ShapeEliminatingSolver(ops, config)
    solver = (GaussNewton(linear_solver) if config.method == "gauss_newton" else
              LevenbergMarquardt(damping=_LM_SCHEDULE, initial_damping=damping, linear_solver=linear_solver))
    return least_squares(functools.partial(residual, ops, config), params, data, aux, solver=solver,
                         iterations=iterations, refresh=functools.partial(refresh, ops, config))


def _fit_one(ops: FitOperators, model: HeadModel, config: FitConfig, targets, confidence,
             image_size, base_vertices):
    data, valid = _image_data(ops, targets, confidence, image_size, base_vertices)
    pose0, init_ok = _initial_pose(ops, data, valid, image_size)
    pose0 = jnp.where(init_ok, pose0, jnp.array([0, 0, 0, 0, 0, -1000.0, 0]))
    k, dz, r = ops.num_landmarks, ops.prior.lag_index.shape[0], ops.prior.factor.shape[-1]
    aux0 = IterationArgs(sel=jnp.arange(k), lag=jnp.zeros((dz,)), sqrt_w=jnp.sqrt(data.weights))
    damping0 = jnp.asarray(config.initial_damping, jnp.float32)

    # First iteration from both EPnP's pose and its depth-flipped twin; keep the lower energy
    # (the true one: with a robust kernel the step's IRLS-weighted cost favours the start whose
    # landmarks are all far off, as it down-weights them).
    firsts = jax.vmap(lambda p: _solve(ops, config, data, {"pose": p, "c": jnp.zeros((r,))}, aux0, 1, damping0))(
        jnp.stack([pose0, _depth_flipped(pose0)]))
    energy0 = jax.vmap(lambda res: total_energy(ops, config, data, res.params, res.args[1]))(firsts)
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


class _FittedView(NamedTuple):
    camera: cam.Camera
    landmarks2d: jax.Array  # [K, 2]
    reprojection_error: jax.Array  # [] mean over the valid landmarks
    energy_terms: dict  # the camera terms
    behind: jax.Array  # [] bool: a valid landmark at or behind the camera


def _fitted_view(ops, config, data, valid, pose, c, sel) -> _FittedView:
    """One image's camera, fitted landmarks, reprojection error and camera energy terms at the
    solution ``(pose, c)`` (also for the joint fit's photos)."""
    camera = camera_at(pose, data)
    active = active_points_at(ops, data, c, sel)
    lm2d = cam.project(camera, active)
    err = jnp.linalg.norm(lm2d - data.targets, axis=-1)
    reproj = jnp.sum(jnp.where(valid, err, 0.0)) / jnp.maximum(jnp.sum(valid), 1)
    behind = jnp.any(valid & (cam.transform(camera, active)[:, 2] >= 0.0))
    return _FittedView(camera, lm2d, reproj, camera_energy_terms(config, data, pose, active), behind)


def _finish_image(ops, config, data, valid, res, runs, init_ok) -> _ImageFit:
    pose, c, aux = res.params["pose"], res.params["c"], res.args[1]
    view = _fitted_view(ops, config, data, valid, pose, c, aux.sel)
    camera, lm2d, reproj, terms, behind = view
    solved = functools.reduce(jnp.logical_and, [run.status != Status.NON_FINITE for run in runs]) \
        & (res.status != Status.SINGULAR)
    ok = solved & jnp.isfinite(sum(terms.values())) & jnp.all(jnp.isfinite(c))
    status = jnp.where(~init_ok, Status.DEGENERATE_INPUT, jnp.where(
        ~ok, Status.NON_FINITE, jnp.where(behind, Status.DIVERGED, Status.OK)))
    # the solver's cost is E / 2
    before = 2.0 * jnp.concatenate([run.linearization_cost_history for run in runs])
    after = 2.0 * jnp.concatenate([run.cost_history for run in runs])
    return _ImageFit(camera, lm2d, reproj, terms, before, after, status.astype(jnp.int32), c, aux.lag)


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

# Images per vmap chunk on a CPU backend: the fastest of 16, 32 and 64 (docs/solver.md).
_CPU_CHUNK = 32


def _chunk_size(config: FitConfig) -> int:
    """``config.chunk_size``, or by default 32 on a CPU backend (chunks in sequence under lax.map
    keep each chunk's working set in cache) and the whole batch on an accelerator, which one vmap
    fills and chunks leave idle (README, "Measured")."""
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


def _fit_sharded(ops, model, config, chunk, mesh, targets, confidence, image_sizes, base_vertices):
    """:func:`_fit_padded` on each device's slice of the batch axis, one program over ``mesh``
    (images are independent, so nothing crosses devices)."""
    shards = P(mesh.axis_names[0])
    local = lambda o, m, *arrays: _fit_padded(o, m, config, chunk, *arrays)
    # check_vma=False: the solver's loop carries begin as constants (device-invariant) and leave
    # as per-device values, which shard_map's type check rejects; every value here is per device
    return jax.shard_map(local, mesh=mesh, in_specs=(P(), P()) + (shards,) * 4, out_specs=shards,
                         check_vma=False)(ops, model, targets, confidence, image_sizes, base_vertices)


_fit_sharded_jit = jax.jit(_fit_sharded, static_argnames=("config", "chunk", "mesh"))


def fit(landmarks, image_sizes, base_shape=None, config: FitConfig = FitConfig(), *,
        model: HeadModel | None = None, confidence=None,
        landmark_set: LandmarkSet | None = None, devices: Sequence[jax.Device] | None = None) -> FitResult:
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
        landmark term's W_eye (inter-ocular distance) uses the set's ``eye_corners``.
      devices: local devices to shard the batch axis over (``jax.sharding.Mesh`` of one axis,
        every device fitting its slice in one program), e.g. ``jax.local_devices()``; None: JAX's
        default device. Several CPU devices need a larger XLA thread pool
        (:func:`avatar_jax.use_host_devices`). Results equal the one-device fit's up to float
        rounding, which can send an ill-conditioned image to another local minimum.

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
    ops = cached_operators(model, config, with_identity=base_shape is None, landmark_set=landmark_set)
    if k != ops.num_landmarks:
        raise ValueError(f"landmarks has {k} points per image, the landmark set has {ops.num_landmarks}")
    if base_shape is None:
        base = np.broadcast_to(np.asarray(model.neutral), (b,) + model.neutral.shape)
    else:
        base = np.asarray(base_shape, np.float32)
        if base.shape != (b,) + tuple(model.neutral.shape):
            raise ValueError(f"base_shape must have shape [B, V, 3] = ({b}, {model.num_vertices}, 3), "
                             f"got {base.shape}")
    devices = None if devices is None else check_devices(devices)
    shards = 1 if devices is None else len(devices)
    chunk = _chunk_size(config)
    local = _padded_size(-(-b // shards), chunk)  # each device's slice, padded like a batch
    padded = local * shards
    pad = lambda a, fill: np.concatenate([a, np.full((padded - b,) + a.shape[1:], fill, a.dtype)])
    sizes_fill = image_sizes[:1] if b else np.ones((1, 2), np.float32)
    # Full float32 products: GPUs default to TF32 passes (~1e-3 relative), which moved the fitted
    # heads far from the CPU fit (docs/solver.md); the fit's GEMMs are small, so full precision
    # costs little. No effect on CPU.
    arrays = (pad(landmarks, np.nan), pad(confidence, 1.0),
              np.concatenate([image_sizes, np.repeat(sizes_fill, padded - b, 0)]), pad(np.ascontiguousarray(base), 0.0))
    with single_blas_thread(), jax.default_matmul_precision("highest"):
        if shards == 1:
            with jax.default_device(None if devices is None else devices[0]):
                out = _fit_jit(ops, model, config, chunk, *arrays)
        else:
            mesh = Mesh(np.asarray(devices), ("batch",))
            arrays = [jax.device_put(a, NamedSharding(mesh, P("batch"))) for a in arrays]
            out = _fit_sharded_jit(ops, model, config, min(chunk, local), mesh, *arrays)
        out = jax.block_until_ready(out)
    return jax.tree.map(lambda a: a[:b], out)


def _padded_size(b: int, chunk: int) -> int:
    """Batch sizes are padded to a power of two, and to a multiple of ``chunk`` above it."""
    if b <= chunk:
        return 1 << max(0, math.ceil(math.log2(max(b, 1))))
    return chunk * (1 << math.ceil(math.log2(math.ceil(b / chunk))))

