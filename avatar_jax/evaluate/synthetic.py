"""Synthetic 3D benchmark with ground truth: ARMSE vs crop distance d (the paper's Fig. 3 setup).

Heads are sampled from the model's identity and expression spaces
(:func:`avatar_jax.fit.synthetic.sample`: yaw uniform in +-60 deg, pitch +-20, roll +-10, pinhole
camera 450-900 mm away) and then moved *out of the model's space* by a smooth random field, so
the truth is not exactly representable by any fit:

    X' = X + sum_k a_k exp(-|X - c_k|^2 / (2 r_k^2)) n(X)

``K`` Gaussian bumps along the head's own vertex normals ``n``; centres ``c_k`` on random vertices
of the face region (the region the ARMSE crops score), radii ``r_k`` uniform in 20-40 mm,
amplitudes ``a_k`` of random sign and magnitude uniform in 2-5 mm (dents and bulges: a longer
nose, flatter cheeks, a fuller chin). :func:`representation_residual` measures how much of it the
linear model cannot express.

The 68 landmarks are projected from the deformed mesh with the same rule as the generator (jaw on
the silhouette of the deformed mesh under the true pose), then Gaussian pixel noise is added at
each level; every level reuses the same heads, poses and unit noise draw (scaled), so the levels
differ in noise only.

Methods, all on the same landmarks and the same model:

* ``landmark-only``: :func:`avatar_jax.fit.fit` with ``FitConfig(use_corrective=False)``
  (identity + expression + camera).
* ``full energy``: ``FitConfig()``: the paper's energy with the per-vertex corrective field dP.
* ``mean identity``: ``FitConfig(fit_identity=False)``: the full energy on the model's mean
  identity (pose, expression and corrective field fitted; the identity not), the "average face"
  baseline of this field's benchmarks: a shape source that does not beat it adds nothing.
* ``eos-py``: ``eos.fitting.fit_shape_and_pose`` through :mod:`avatar_jax.evaluate.eos_peer` (the same
  model converted exactly); skipped with a note when eos or the benchmarks folder is missing.
* ``regressor + full energy`` is not run here: the regressor reads the photo, and these suites
  are scored by ``experiments/shape_sources.py`` instead (docs/regress.md), so it is listed as
  skipped with that pointer.

ARMSE (:func:`avatar_jax.evaluate.armse`) of each fitted mesh against the deformed truth, both
on the model topology; alignment points = the model's landmark embedding at
``ALIGNMENT_LANDMARKS`` on each mesh, crop centre = vertex ``model.nose_tip`` of each mesh.
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from avatar_jax.evaluate.armse import ArmseResult, armse
from avatar_jax.geometry import camera as cam
from avatar_jax.fit import synthetic as fit_synthetic
from avatar_jax.geometry.mesh import vertex_normals
from avatar_jax.status import Status
from avatar_jax.model.head import ALIGNMENT_LANDMARKS, HeadModel, landmarks as model_landmarks, silhouette_landmarks

DISTANCES = (80.0, 90.0, 100.0, 110.0)
NOISE_LEVELS = (0.0, 1.0, 2.0, 4.0)
METHODS = ("landmark-only", "full energy", "mean identity", "eos-py")
SKIPPED_METHODS = {"regressor + full energy": "the regressor reads the photo; the "
                                              "rendered suite's heads with each shape source are scored by "
                                              "experiments/shape_sources.py (docs/regress.md)"}


@struct.dataclass
class OutOfSpaceBatch:
    """n synthetic heads deformed out of the model space, seen at L noise levels.

    Attributes:
      landmarks: ``[L, n, 68, 2]`` pixels, one slice per noise level.
      noise_levels: ``[L]`` pixel noise standard deviations.
      clean_landmarks: ``[n, 68, 2]`` noise-free projections of the deformed mesh.
      image_sizes: ``[n, 2]`` (h, w).
      vertices: ``[n, V, 3]`` deformed (true) meshes, model frame, mm.
      base_vertices: ``[n, V, 3]`` the in-space heads before deformation.
      displacement: ``[n, V, 3]`` ``vertices - base_vertices``.
      camera: true cameras (``[n, ...]`` leaves).
      yaw_deg: ``[n]`` head yaw (rotation about the model's Y axis), degrees.
    """

    landmarks: jax.Array
    noise_levels: jax.Array
    clean_landmarks: jax.Array
    image_sizes: jax.Array
    vertices: jax.Array
    base_vertices: jax.Array
    displacement: jax.Array
    camera: cam.Camera
    yaw_deg: jax.Array


def smooth_displacement(model: HeadModel, key, verts: jax.Array, num_bumps: int = 4,
                        radius_mm=(20.0, 40.0), amplitude_mm=(2.0, 5.0), face_ids=None) -> jax.Array:
    """Random smooth out-of-space displacement ``[n, V, 3]`` for heads ``verts`` ``[n, V, 3]``.

    Sum of ``num_bumps`` Gaussian bumps along each head's vertex normals (see the module
    docstring); centres on face-region vertices (``face_ids`` ``[F]``, default: those of
    ``model.face_mask``; pass them to call this under ``jit``), radius and |amplitude| uniform in
    the ranges.
    """
    verts = jnp.asarray(verts, jnp.float32)
    if verts.ndim != 3 or verts.shape[1:] != model.neutral.shape:
        raise ValueError(f"smooth_displacement: verts must be [n, {model.num_vertices}, 3], got {verts.shape}")
    n = verts.shape[0]
    face_ids = jnp.flatnonzero(np.asarray(model.face_mask)) if face_ids is None else face_ids
    kc, kr, ka, ks = jax.random.split(key, 4)
    centre_ids = face_ids[jax.random.randint(kc, (n, num_bumps), 0, face_ids.shape[0])]
    radius = jax.random.uniform(kr, (n, num_bumps), minval=radius_mm[0], maxval=radius_mm[1])
    sign = jnp.where(jax.random.bernoulli(ks, 0.5, (n, num_bumps)), 1.0, -1.0)
    amplitude = sign * jax.random.uniform(ka, (n, num_bumps), minval=amplitude_mm[0], maxval=amplitude_mm[1])

    def one(v, ids, r, a):
        centres = v[ids]  # [K, 3]
        sq = jnp.sum((v[:, None, :] - centres[None]) ** 2, -1)  # [V, K]
        height = jnp.sum(a * jnp.exp(-sq / (2.0 * r**2)), -1)  # [V]
        return height[:, None] * vertex_normals(v, model.triangles)

    return jax.vmap(one)(verts, centre_ids, radius, amplitude)


def out_of_space_heads(model: HeadModel, key, n: int, noise_levels=NOISE_LEVELS, num_bumps: int = 4,
                       radius_mm=(20.0, 40.0), amplitude_mm=(2.0, 5.0), **sample_kwargs) -> OutOfSpaceBatch:
    """Sample n heads and poses (``sample_kwargs`` go to :func:`avatar_jax.fit.synthetic.sample`,
    e.g. ``yaw_deg``), deform them out of space and project their landmarks at each noise level."""
    if n < 1:
        raise ValueError(f"out_of_space_heads: n must be >= 1, got {n}")
    levels = jnp.atleast_1d(jnp.asarray(noise_levels, jnp.float32))
    if levels.ndim != 1 or bool(jnp.any(levels < 0)):
        raise ValueError(f"out_of_space_heads: noise_levels must be non-negative scalars, got {noise_levels}")
    face_ids = jnp.asarray(np.flatnonzero(np.asarray(model.face_mask)))
    return _out_of_space_heads(model, key, levels, face_ids, n, num_bumps, tuple(radius_mm),
                               tuple(amplitude_mm), tuple(sorted(sample_kwargs.items())))


@partial(jax.jit, static_argnums=(4, 5, 6, 7, 8))
def _out_of_space_heads(model, key, levels, face_ids, n, num_bumps, radius_mm, amplitude_mm,
                        sample_kwargs) -> OutOfSpaceBatch:
    k_heads, k_deform, k_noise = jax.random.split(key, 3)
    base = fit_synthetic.sample(model, k_heads, n, noise_px=0.0, **dict(sample_kwargs))
    disp = smooth_displacement(model, k_deform, base.vertices, num_bumps, radius_mm, amplitude_mm,
                               face_ids)
    verts = base.vertices + disp
    pts = jax.vmap(lambda v, c: silhouette_landmarks(model, v, c))(verts, base.camera)
    clean = jax.vmap(cam.project)(base.camera, pts)
    unit_noise = jax.random.normal(k_noise, clean.shape)
    noisy = clean[None] + levels[:, None, None, None] * unit_noise[None]
    rot = cam.rotation_matrix(base.camera.rotvec)  # R = Rz Ry Rx: R[2, 0] = -sin(yaw)
    yaw = jnp.rad2deg(-jnp.arcsin(jnp.clip(rot[:, 2, 0], -1.0, 1.0)))
    return OutOfSpaceBatch(noisy, levels, clean, base.image_sizes, verts, base.vertices, disp,
                           base.camera, yaw)


def representation_residual(model: HeadModel, verts) -> np.ndarray:
    """RMS distance (mm) ``[n]`` of meshes ``verts`` ``[n, V, 3]`` to the model's linear span.

    Unregularised least squares over all identity and expression coefficients (model frame, no
    pose): 0 for any head the model can express, > 0 for out-of-space deformations.
    """
    verts = np.asarray(verts, np.float64)
    if verts.ndim != 3 or verts.shape[1:] != tuple(model.neutral.shape):
        raise ValueError(f"representation_residual: verts must be [n, {model.num_vertices}, 3], got {verts.shape}")
    basis = np.concatenate([np.asarray(model.identity_basis, np.float64),
                            np.asarray(model.expression_basis, np.float64)]).reshape(
        model.num_identity + model.num_expression, -1).T  # [3V, K]
    target = (verts - np.asarray(model.neutral, np.float64)).reshape(verts.shape[0], -1).T  # [3V, n]
    q, _ = np.linalg.qr(basis)  # orthonormal basis of the span (full column rank)
    residual = (target - q @ (q.T @ target)).T.reshape(verts.shape)
    return np.sqrt(np.mean(np.sum(residual**2, -1), -1))


def armse_against_truth(model: HeadModel, pred_vertices, true_vertices, distances=DISTANCES,
                        **armse_kwargs) -> ArmseResult:
    """ARMSE of ``pred_vertices`` ``[V, 3]`` vs ``true_vertices`` ``[V, 3]``, both on the model
    topology: 7 alignment points from the model's landmark embedding, crop centre at the
    ``model.nose_tip`` vertex of each mesh."""
    align = np.asarray(ALIGNMENT_LANDMARKS)
    nose = int(model.nose_tip)
    pred, true = np.asarray(pred_vertices, np.float32), np.asarray(true_vertices, np.float32)
    pred_align = np.asarray(model_landmarks(model, jnp.asarray(pred)))[align]
    true_align = np.asarray(model_landmarks(model, jnp.asarray(true)))[align]
    return armse(pred, model.triangles, pred_align, pred[nose], true, model.triangles, true_align,
                 true[nose], distances=distances, **armse_kwargs)


# ----------------------------------------------------------------------------- the benchmark

@dataclasses.dataclass
class SyntheticResults:
    """Host-side results. M methods, L noise levels, n heads, D distances.

    Attributes:
      methods: the M method names that ran; ``skipped``: method -> reason for those that did not.
      noise_levels ``[L]``, distances ``[D]``, yaw_deg ``[n]``.
      armse: ``[M, L, n, D]`` mm (NaN where a fit failed). reprojection_error ``[M, L, n]`` px.
      status: ``[M, L, n]`` ``Status`` codes (eos-py: ``OK``, or ``FIT_FAILED`` if it raised or its
        mesh was non-finite).
      residual_mm: ``[n]`` RMS distance of each true mesh to the model's linear span.
      displacement_mm: ``[n]`` RMS length of the applied deformation.
      fit_seconds: method -> wall time of all its fits (incl. compilation for ours).
      armse_seconds: wall time of all ARMSE evaluations.
      example: data for the heat map: method, noise, head, ``true_vertices [V, 3]``,
        ``error [V]`` (each true vertex's distance to the fitted surface at the largest d, NaN
        outside the crop), ``d``, ``armse``.
      config: the run's parameters (num, seed, ...).
    """

    methods: tuple[str, ...]
    skipped: dict
    noise_levels: np.ndarray
    distances: np.ndarray
    yaw_deg: np.ndarray
    armse: np.ndarray
    reprojection_error: np.ndarray
    status: np.ndarray
    residual_mm: np.ndarray
    displacement_mm: np.ndarray
    fit_seconds: dict
    armse_seconds: float
    example: dict
    config: dict


def load_eos_peer():
    """``(avatar_jax.evaluate.eos_peer, None)``, or ``(None, reason)`` when eos-py (the ``bench``
    extra) is not installed."""
    try:
        from avatar_jax.evaluate import eos_peer
    except ImportError as err:
        return None, f"eos-py is not importable ({err}); pip install 'avatar-jax[bench]'"
    return eos_peer, None


def method_config(method: str):
    """The :class:`~avatar_jax.fit.FitConfig` of one of our :data:`METHODS` (not ``eos-py``)."""
    from avatar_jax.fit import FitConfig

    configs = {"landmark-only": FitConfig(use_corrective=False), "full energy": FitConfig(),
               "mean identity": FitConfig(fit_identity=False)}
    if method not in configs:
        raise ValueError(f"method_config: {method!r} is not one of our methods {tuple(configs)}")
    return configs[method]


def fit_ours(model, batch: OutOfSpaceBatch, config, landmark_set=None):
    """Our fit with ``config`` on every noise level of ``batch``: ``(verts [L, n, V, 3],
    reprojection [L, n], status [L, n])``. ``landmark_set``: where the 68 points sit on the head
    (default: the model's own, where this suite's exact landmarks come from)."""
    from avatar_jax.fit import fit

    levels, n = batch.landmarks.shape[:2]
    sizes = np.tile(np.asarray(batch.image_sizes), (levels, 1))
    result = fit(np.asarray(batch.landmarks).reshape(levels * n, 68, 2), sizes, config=config, model=model,
                 landmark_set=landmark_set)
    shape = lambda a, tail=(): np.asarray(a).reshape((levels, n) + tail)
    return (shape(result.vertices, tuple(model.neutral.shape)), shape(result.reprojection_error),
            shape(result.status))


def _fit_eos(eos_peer, model, batch: OutOfSpaceBatch, progress):
    bundle = eos_peer.make_bundle(model)
    levels, n = batch.landmarks.shape[:2]
    verts = np.full((levels, n) + tuple(model.neutral.shape), np.nan, np.float32)
    reproj = np.full((levels, n), np.nan, np.float32)
    status = np.zeros((levels, n), np.int32)
    lms, sizes = np.asarray(batch.landmarks), np.asarray(batch.image_sizes)
    for li, i in progress([(li, i) for li in range(levels) for i in range(n)], "eos-py fits"):
        try:
            out = eos_peer.eos_fit(bundle, lms[li, i], (int(sizes[i, 0]), int(sizes[i, 1])))
        except RuntimeError:  # eos's C++ exceptions: count as a failed fit, keep the run going
            status[li, i] = Status.FIT_FAILED
            continue
        ok = np.all(np.isfinite(out["vertices"]))
        verts[li, i] = out["vertices"] if ok else np.nan
        reproj[li, i] = out["reprojection_error"]
        status[li, i] = Status.OK if ok else Status.FIT_FAILED
    return verts, reproj, status


def _no_progress(items, desc):
    return items


def run_synthetic(model: HeadModel | None = None, num: int = 24, seed: int = 0,
                  noise_levels=NOISE_LEVELS, distances=DISTANCES, methods=METHODS,
                  yaw_deg: float = 60.0, progress=None, example=("full energy", 2.0)) -> SyntheticResults:
    """Run the synthetic benchmark (see the module docstring).

    Args:
      model: head model (default: the bundled one).
      num: heads n; seed: PRNG seed.
      noise_levels ``[L]`` px, distances ``[D]`` mm, methods: subset of :data:`METHODS`.
      yaw_deg: yaw range +-yaw_deg.
      progress: ``progress(iterable, desc) -> iterable`` (e.g. a tqdm wrapper) or None.
      example: (method, noise level) whose median-ARMSE head is kept for the heat map (falls
        back to the first method / level that ran).
    """
    if model is None:
        from avatar_jax.model import load_head_model

        model = load_head_model()
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"run_synthetic: unknown methods {unknown}; expected a subset of {METHODS}")
    if num < 1:
        raise ValueError(f"run_synthetic: num must be >= 1, got {num}")
    progress = progress or _no_progress
    distances = np.atleast_1d(np.asarray(distances, np.float32))
    batch = jax.tree.map(np.asarray, out_of_space_heads(model, jax.random.PRNGKey(seed), num, noise_levels,
                                                        yaw_deg=yaw_deg))
    skipped = dict(SKIPPED_METHODS)
    fitted, fit_seconds = {}, {}
    for method in methods:
        t0 = time.perf_counter()
        if method == "eos-py":
            peer, reason = load_eos_peer()
            if peer is None:
                skipped[method] = reason
                continue
            fitted[method] = _fit_eos(peer, model, batch, progress)
        else:
            fitted[method] = fit_ours(model, batch, method_config(method))
        fit_seconds[method] = time.perf_counter() - t0
    ran = tuple(fitted)
    levels = len(batch.noise_levels)
    scores = np.full((len(ran), levels, num, len(distances)), np.nan, np.float32)
    per_vertex = {}
    t0 = time.perf_counter()
    jobs = [(mi, li, i) for mi in range(len(ran)) for li in range(levels) for i in range(num)]
    for mi, li, i in progress(jobs, "ARMSE"):
        pred = fitted[ran[mi]][0][li, i]
        if not np.all(np.isfinite(pred)):
            continue
        res = armse_against_truth(model, pred, batch.vertices[i], distances)
        scores[mi, li, i] = np.asarray(res.armse)
        per_vertex[mi, li, i] = np.asarray(res.per_vertex_error_gt[-1])
    armse_seconds = time.perf_counter() - t0
    return SyntheticResults(
        methods=ran, skipped=skipped, noise_levels=np.asarray(batch.noise_levels), distances=distances,
        yaw_deg=np.asarray(batch.yaw_deg), armse=scores,
        reprojection_error=np.stack([fitted[m][1] for m in ran]) if ran else np.zeros((0, levels, num)),
        status=np.stack([fitted[m][2] for m in ran]) if ran else np.zeros((0, levels, num), np.int32),
        residual_mm=representation_residual(model, batch.vertices),
        displacement_mm=np.sqrt(np.mean(np.sum(np.asarray(batch.displacement) ** 2, -1), -1)),
        fit_seconds=fit_seconds, armse_seconds=armse_seconds,
        example=_pick_example(ran, batch, scores, per_vertex, distances, example),
        config=dict(num=num, seed=seed, yaw_deg=yaw_deg, pitch_deg=20.0, roll_deg=10.0,
                    deformation="4 Gaussian normal bumps, radius 20-40 mm, |amplitude| 2-5 mm"))


def _pick_example(ran, batch, scores, per_vertex, distances, wanted) -> dict:
    if not ran:
        return {}
    levels = list(np.asarray(batch.noise_levels))
    mi = ran.index(wanted[0]) if wanted[0] in ran else 0
    li = levels.index(wanted[1]) if wanted[1] in levels else 0
    last = scores[mi, li, :, -1]
    if not np.any(np.isfinite(last)):
        return {}
    finite = np.flatnonzero(np.isfinite(last))
    head = int(finite[np.argsort(last[finite])[len(finite) // 2]])
    return dict(method=ran[mi], noise_px=float(levels[li]), head=head, d=float(distances[-1]),
                armse=float(last[head]), true_vertices=np.asarray(batch.vertices[head]),
                error=per_vertex[mi, li, head])
