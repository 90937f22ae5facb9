"""The fit's image-independent operators: the landmark embedding, the exact shape elimination
(:mod:`avatar_jax.fit.prior`), the contour candidates and the linear terms' energy operators.

:func:`prepare` builds them (host, float64; seconds, or milliseconds from the on-disk cache);
:func:`cached_operators` returns the same object for the same model, landmark set and config, so
repeated :func:`avatar_jax.fit.fit` calls reuse it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.experimental import sparse as jsparse

from avatar_jax._disk_cache import cache_key, cached_arrays
from avatar_jax._identity_cache import IdentityCache
from avatar_jax.fit.config import FitConfig
from avatar_jax.fit.prior import MarginalPrior, build_marginal_prior
from avatar_jax.fit.terms import IBUG_OUTER_EYE_CORNERS, ShapeLayout, linear_terms
from avatar_jax.geometry.mesh import vertex_normals
from avatar_jax.model.head import HeadModel, JAW_LANDMARKS

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
    """Precompute the reduced problem for ``model`` and ``config`` (host, float64; seconds, or
    milliseconds from the on-disk cache).

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
    which under jit is much faster than the sparse product with the 3V-row Laplacian
    (docs/solver.md)."""
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


_OPERATORS: IdentityCache[FitOperators] = IdentityCache(maxsize=16)


def cached_operators(model: HeadModel, config: FitConfig, with_identity: bool,
             landmark_set: LandmarkSet | None = None) -> FitOperators:
    """Cached :func:`prepare`, keyed on the model and landmark-set objects and the config."""
    return _OPERATORS.get((model, landmark_set), (config, with_identity),
                         lambda: prepare(model, config, landmark_set, with_identity=with_identity))


def shape_vector(ops: FitOperators, c, lag):
    """The shape unknowns ``x [nx]`` minimising the linear terms at (c, lag) (tests, debugging)."""
    return ops.prior.shape_from_c @ c + ops.prior.shape_from_lag @ lag

