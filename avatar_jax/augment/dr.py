"""Deformation representation (DR, Gao et al.) of meshes that share one triangulation.

The DR feature of vertex i is the local affine map T_i that carries the one-ring edges of a
reference mesh q onto those of the shape p (cotangent-weighted least squares), polar-decomposed
as T_i = R_i S_i and stored as ``[log R_i (axis-angle, 3), S_i - I (6 unique entries)]``.
Features are blended linearly (log-rotations and scale/shear alike) and decoded by the
ARAP-style Poisson system ``L p = b`` with ``b_i = sum_j c_ij/2 (T_i + T_j)(q_i - q_j)``.

Two deliberate additions to the paper's formulation (docs/augment.md explains and measures them):

- the fit of T_i carries one extra "normal edge" (the area-weighted vertex normal, scaled like an
  edge, as in deformation transfer) because one-ring edges are nearly coplanar, which leaves the
  normal column of a plain one-ring fit undetermined;
- ``dr_encode(..., exact=True)`` adds the smallest (Frobenius) change to all T_i that makes the
  decoder reproduce the encoded mesh exactly: the one-ring least-squares fit alone is lossy.

Host-side numpy/scipy in float64: the decoding system is factorised once per reference mesh.
Feature layout (last axis, 9): ``[wx, wy, wz, Sxx-1, Syy-1, Szz-1, Sxy, Sxz, Syz]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.sparse import csgraph
from scipy.spatial.transform import Rotation

from avatar_jax.geometry.mesh import cotangent_laplacian

FEATURE_DIM = 9
_SYM_ROWS = np.array([0, 1, 2, 0, 0, 1])
_SYM_COLS = np.array([0, 1, 2, 1, 2, 2])
_CHUNK = 64  # shapes per vectorised block: bounds the [B, V, W, 3] one-ring temporaries


@dataclass(frozen=True, eq=False)
class DRBasis:
    """Everything DR needs about one reference mesh, built once by :func:`dr_basis`.

    Attributes:
      reference: ``[V, 3]`` float64 reference vertices q.
      triangles: ``[F, 3]`` int64.
      neighbours: ``[V, W]`` one-ring vertex ids, padded with the vertex's own id.
      weights: ``[V, W]`` clamped cotangent weights c_ij (0 on padding).
      ref_edges: ``[V, W, 3]`` q_i - q_j.
      ref_normal_edges: ``[V, 3]`` reference normal edge n_i / sqrt(|n_i|) (n_i area-weighted).
      normal_weights: ``[V]`` weight of the normal edge in the fit of T_i.
      gram_inv: ``[V, 3, 3]`` inverse of the fit's normal matrix per vertex.
      adjacency: ``[V, V]`` sparse symmetric c_ij.
      laplacian: ``[V, V]`` sparse L = diag(sum_j c_ij) - adjacency.
      decode_operator: ``[V, 3V]`` sparse A with ``b[:, a] = A @ vec(row a of every T_k)``.
      vertex_face: ``[V, F]`` sparse incidence (sums face normals onto vertices).
      component: ``[V]`` connected-component label of each vertex.
      anchors: ``[C]`` one fixed vertex per component (its lowest id).
      ref_centroids: ``[C, 3]`` per-component vertex centroid of the reference.
      free: ``[V - C]`` the non-anchor vertices; laplacian_solver, correction_solver: SuperLU
        factors of ``L`` and ``A A^T`` restricted to them.
    """

    reference: np.ndarray
    triangles: np.ndarray
    neighbours: np.ndarray
    weights: np.ndarray
    ref_edges: np.ndarray
    ref_normal_edges: np.ndarray
    normal_weights: np.ndarray
    gram_inv: np.ndarray
    adjacency: sp.csr_matrix
    laplacian: sp.csr_matrix
    decode_operator: sp.csr_matrix
    vertex_face: sp.csr_matrix
    component: np.ndarray
    anchors: np.ndarray
    ref_centroids: np.ndarray
    free: np.ndarray = field(repr=False)
    laplacian_solver: object = field(repr=False)
    correction_solver: object = field(repr=False)

    @property
    def num_vertices(self) -> int:
        return self.reference.shape[0]

    @property
    def num_components(self) -> int:
        return self.anchors.shape[0]


# ----------------------------------------------------------------------------- construction

def dr_basis(reference, triangles, cotangent_floor: float = 1e-2,
             normal_weight: float = 1.0) -> DRBasis:
    """Build the DR basis of a reference mesh ``reference [V, 3]``, ``triangles [F, 3]``.

    Args:
      cotangent_floor: cotangent weights below it (obtuse triangles give negative ones) are
        raised to it, so that every fit is a minimum and ``L`` is a positive graph Laplacian.
      normal_weight: weight of the normal edge relative to the mean one-ring weight; 0 is the
        paper's plain one-ring fit (a tiny Tikhonov term then keeps planar rings invertible).

    Raises:
      ValueError: bad shapes, non-finite vertices, out-of-range or unused vertex ids.
    """
    q = _as_vertices("reference", reference)
    tri = _as_triangles(triangles, q.shape[0])
    if not cotangent_floor > 0 or not normal_weight >= 0:
        raise ValueError(f"dr_basis: need cotangent_floor > 0 and normal_weight >= 0, got "
                         f"{cotangent_floor}, {normal_weight}")
    adjacency = _clamped_cotangent_adjacency(q, tri, cotangent_floor)
    laplacian = (sp.diags(np.asarray(adjacency.sum(1)).ravel()) - adjacency).tocsr()
    neighbours, weights = _padded_one_rings(adjacency)
    ref_edges = q[:, None, :] - q[neighbours]
    vertex_face = _vertex_face_incidence(tri, q.shape[0])
    ref_normal_edges = _normal_edges(q[None], tri, vertex_face)[0]
    normal_weights = normal_weight * weights.sum(1) / (weights > 0).sum(1)
    gram = (np.einsum("vw,vwa,vwb->vab", weights, ref_edges, ref_edges)
            + normal_weights[:, None, None] * np.einsum("va,vb->vab", ref_normal_edges, ref_normal_edges))
    decode_operator = _decode_operator(adjacency, q, laplacian @ q)
    component, anchors = _components(adjacency)
    free = np.setdiff1d(np.arange(q.shape[0]), anchors)
    lap_free = laplacian[free][:, free].tocsc()
    correction_free = (decode_operator @ decode_operator.T).tocsr()[free][:, free].tocsc()
    return DRBasis(
        reference=q, triangles=tri, neighbours=neighbours, weights=weights, ref_edges=ref_edges,
        ref_normal_edges=ref_normal_edges, normal_weights=normal_weights,
        gram_inv=np.linalg.inv(_regularised(gram)), adjacency=adjacency, laplacian=laplacian,
        decode_operator=decode_operator, vertex_face=vertex_face, component=component,
        anchors=anchors, ref_centroids=_centroids(q[None], component, len(anchors))[0], free=free,
        laplacian_solver=_factorise(lap_free), correction_solver=_factorise(correction_free))


def _factorise(matrix: sp.csc_matrix):
    # Both systems are symmetric positive definite: a symmetric ordering keeps the fill low.
    return spla.splu(matrix, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})


def _clamped_cotangent_adjacency(q, tri, floor) -> sp.csr_matrix:
    lap = cotangent_laplacian(q, tri).tocoo()
    if not np.all(np.isfinite(lap.data)):
        raise ValueError("reference has a zero-area triangle: its cotangent weights are undefined")
    off = lap.row != lap.col
    rows, cols, vals = lap.row[off], lap.col[off], -lap.data[off]
    return sp.csr_matrix((np.maximum(vals, floor), (rows, cols)), shape=lap.shape)


def _padded_one_rings(adjacency: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    n = adjacency.shape[0]
    degree = np.diff(adjacency.indptr)
    rows = np.repeat(np.arange(n), degree)
    slot = np.arange(adjacency.nnz) - np.repeat(adjacency.indptr[:-1], degree)
    neighbours = np.repeat(np.arange(n)[:, None], degree.max(), 1)
    weights = np.zeros(neighbours.shape)
    neighbours[rows, slot] = adjacency.indices
    weights[rows, slot] = adjacency.data
    return neighbours, weights


def _vertex_face_incidence(tri, n) -> sp.csr_matrix:
    rows = tri.reshape(-1)
    cols = np.repeat(np.arange(tri.shape[0]), 3)
    return sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, tri.shape[0]))


def _normal_edges(shapes, tri, vertex_face) -> np.ndarray:
    """``[B, V, 3]`` n_i / sqrt(|n_i|): an edge-like vector that rotates and scales with the mesh."""
    t = shapes[:, tri]
    face_n = np.cross(t[:, :, 1] - t[:, :, 0], t[:, :, 2] - t[:, :, 0])  # [B, F, 3], |.| = 2 area
    b, f = face_n.shape[:2]
    n = (vertex_face @ face_n.transpose(1, 0, 2).reshape(f, -1)).reshape(-1, b, 3).transpose(1, 0, 2)
    return n / np.sqrt(np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-300))


def _regularised(gram: np.ndarray) -> np.ndarray:
    # Only a (near-)planar ring without the normal edge needs it; elsewhere the term is zero.
    eig = np.linalg.eigvalsh(gram)
    lift = np.maximum(1e-10 * eig[:, 2] - eig[:, 0], 0.0)
    return gram + lift[:, None, None] * np.eye(3)


def _decode_operator(adjacency: sp.csr_matrix, q, ref_laplacian) -> sp.csr_matrix:
    """``[V, 3V]`` A: ``b_i[a] = 1/2 (T_i[a] . d_i + sum_j c_ij T_j[a] . (q_i - q_j))``."""
    n = q.shape[0]
    coo = adjacency.tocoo()
    own_rows = np.repeat(np.arange(n), 3)
    own_cols = np.arange(3 * n)
    nbr_rows = np.repeat(coo.row, 3)
    nbr_cols = (3 * coo.col[:, None] + np.arange(3)).reshape(-1)
    nbr_vals = (coo.data[:, None] * (q[coo.row] - q[coo.col])).reshape(-1)
    return sp.csr_matrix((0.5 * np.concatenate([ref_laplacian.reshape(-1), nbr_vals]),
                          (np.concatenate([own_rows, nbr_rows]), np.concatenate([own_cols, nbr_cols]))),
                         shape=(n, 3 * n))


def _components(adjacency) -> tuple[np.ndarray, np.ndarray]:
    count, label = csgraph.connected_components(adjacency, directed=False)
    anchors = np.array([np.flatnonzero(label == c)[0] for c in range(count)])
    return label, anchors


def _centroids(shapes, component, count) -> np.ndarray:
    """``[B, C, 3]`` per-component vertex centroids of ``shapes [B, V, 3]``."""
    sums = np.zeros((shapes.shape[0], count, 3))
    np.add.at(sums, (slice(None), component), shapes)
    return sums / np.bincount(component, minlength=count)[None, :, None]


# ----------------------------------------------------------------------------- encode / decode

def component_centroids(basis: DRBasis, shapes) -> np.ndarray:
    """Per-component centroids ``[B, C, 3]`` of ``shapes [B, V, 3]`` (the decoder's ``anchor``)."""
    p, _ = _as_batch(basis, "shapes", shapes, 3)
    return _centroids(p, basis.component, basis.num_components)


def dr_encode(basis: DRBasis, shapes, exact: bool = True) -> np.ndarray:
    """DR features ``[B, V, 9]`` (or ``[V, 9]``) of ``shapes [B, V, 3]`` (or ``[V, 3]``).

    ``exact=True`` makes :func:`dr_decode` reproduce ``shapes`` (given their centroids);
    ``exact=False`` returns the paper's plain per-vertex least-squares features (lossy).
    """
    p, single = _as_batch(basis, "shapes", shapes, 3)
    out = np.concatenate([_features(_fit_gradients(basis, c, exact)) for c in _chunks(p)])
    return out[0] if single else out


def dr_decode(basis: DRBasis, features, anchor=None) -> np.ndarray:
    """Shapes ``[B, V, 3]`` (or ``[V, 3]``) from DR features ``[B, V, 9]`` (or ``[V, 9]``).

    Args:
      anchor: target per-component centroids, ``[C, 3]`` or ``[B, C, 3]`` (see
        :func:`component_centroids`); None = the reference's. DR fixes everything but one
        translation per connected component; this sets it.
    """
    d, single = _as_batch(basis, "features", features, FEATURE_DIM)
    target = _anchor_targets(basis, anchor, d.shape[0])
    out = np.concatenate([_solve_positions(basis, _gradients(c), t)
                          for c, t in zip(_chunks(d), _chunks(target))])
    return out[0] if single else out


def dr_interpolate(features, weights) -> np.ndarray:
    """Linear blend ``sum_i w_i D_i``: features ``[..., m, V, 9]``, weights ``[..., m]`` -> ``[..., V, 9]``."""
    d = np.asarray(features, np.float64)
    w = np.asarray(weights, np.float64)
    if d.ndim < 3 or d.shape[-1] != FEATURE_DIM or w.shape != d.shape[:-2]:
        raise ValueError(f"dr_interpolate: need features [..., m, V, 9] and weights [..., m], got "
                         f"{d.shape} and {w.shape}")
    _check_finite("dr_interpolate features", d)
    _check_finite("dr_interpolate weights", w)
    return np.einsum("...m,...mvf->...vf", w, d)


def _fit_gradients(basis: DRBasis, p, exact) -> np.ndarray:
    """``[B, V, 3, 3]`` T_i minimising sum_j c_ij |e_ij - T f_ij|^2 + c_n |e_n - T f_n|^2."""
    edges = p[:, :, None, :] - p[:, basis.neighbours]
    normal_edges = _normal_edges(p, basis.triangles, basis.vertex_face)
    moment = (np.einsum("vw,bvwa,vwc->bvac", basis.weights, edges, basis.ref_edges)
              + np.einsum("v,bva,vc->bvac", basis.normal_weights, normal_edges, basis.ref_normal_edges))
    t = moment @ basis.gram_inv
    return t + _exactness_correction(basis, p, t) if exact else t


def _exactness_correction(basis: DRBasis, p, t) -> np.ndarray:
    """Least-Frobenius ``[B, V, 3, 3]`` change of all T making the decoder's b equal L p."""
    b, n = p.shape[:2]
    residual = _stack(basis.laplacian @ _unstack(p)) - _decode_rhs(basis, t)  # [B, V, 3]
    lam = np.zeros_like(residual)
    lam[:, basis.free] = _solve(basis.correction_solver, residual[:, basis.free])
    rows = basis.decode_operator.T @ _unstack(lam)  # [3V, 3B]: row a of every T_k, per (b, a)
    return rows.reshape(n, 3, b, 3).transpose(2, 0, 3, 1)


def _decode_rhs(basis: DRBasis, t) -> np.ndarray:
    """``[B, V, 3]`` b of the Poisson system for gradients ``t [B, V, 3, 3]``."""
    b, n = t.shape[:2]
    rows = t.transpose(1, 3, 0, 2).reshape(3 * n, 3 * b)  # [(k, c), (b, a)] = T_k[a, c]
    return _stack(basis.decode_operator @ rows)


def _solve_positions(basis: DRBasis, t, target) -> np.ndarray:
    rhs = _decode_rhs(basis, t)
    p = np.zeros_like(rhs)
    p[:, basis.free] = _solve(basis.laplacian_solver, rhs[:, basis.free])
    shift = target - _centroids(p, basis.component, basis.num_components)
    return p + shift[:, basis.component]


def _features(t) -> np.ndarray:
    """Polar decomposition T = R S (R a proper rotation) -> ``[..., 9]`` features."""
    u, s, vt = np.linalg.svd(t)
    # A reflection would make R improper: move the sign into S instead.
    flip = np.linalg.det(u @ vt) < 0
    u[flip, :, 2] *= -1
    s[flip, 2] *= -1
    rot = u @ vt
    sym = np.einsum("...ji,...j,...jk->...ik", vt, s, vt) - np.eye(3)
    logr = Rotation.from_matrix(rot.reshape(-1, 3, 3)).as_rotvec().reshape(t.shape[:-2] + (3,))
    return np.concatenate([logr, sym[..., _SYM_ROWS, _SYM_COLS]], -1)


def _gradients(features) -> np.ndarray:
    """``[..., 9]`` features -> ``[..., 3, 3]`` T = exp(log R) (I + (S - I))."""
    rot = Rotation.from_rotvec(features[..., :3].reshape(-1, 3)).as_matrix()
    rot = rot.reshape(features.shape[:-1] + (3, 3))
    sym = np.zeros(features.shape[:-1] + (3, 3))
    sym[..., _SYM_ROWS, _SYM_COLS] = features[..., 3:]
    sym[..., _SYM_COLS, _SYM_ROWS] = features[..., 3:]
    return rot @ (sym + np.eye(3))


# ----------------------------------------------------------------------------- helpers

def _unstack(x) -> np.ndarray:
    """``[B, V, 3]`` -> ``[V, 3B]``: one sparse solve / product for the whole batch."""
    return x.transpose(1, 0, 2).reshape(x.shape[1], -1)


def _stack(x) -> np.ndarray:
    return x.reshape(x.shape[0], -1, 3).transpose(1, 0, 2)


def _solve(factor, rhs) -> np.ndarray:
    """``factor^-1 rhs`` for ``rhs [B, V', 3]``, one shape at a time: SuperLU's multi-column
    triangular solves get slower per column as the column count grows."""
    return np.stack([factor.solve(np.asfortranarray(r)) for r in rhs])


def _chunks(x):
    return [x[i:i + _CHUNK] for i in range(0, x.shape[0], _CHUNK)]


def _anchor_targets(basis: DRBasis, anchor, batch) -> np.ndarray:
    if anchor is None:
        return np.broadcast_to(basis.ref_centroids, (batch, basis.num_components, 3))
    a = np.asarray(anchor, np.float64)
    c = basis.num_components
    if a.shape not in ((c, 3), (batch, c, 3)):
        raise ValueError(f"dr_decode: anchor must be [{c}, 3] or [{batch}, {c}, 3] "
                         f"(per-component centroids), got {a.shape}")
    _check_finite("dr_decode anchor", a)
    return np.broadcast_to(a, (batch, c, 3))


def _as_batch(basis: DRBasis, name, x, last) -> tuple[np.ndarray, bool]:
    a = np.asarray(x, np.float64)
    v = basis.num_vertices
    if a.ndim not in (2, 3) or a.shape[-2:] != (v, last):
        raise ValueError(f"{name} must have shape [B, {v}, {last}] or [{v}, {last}], got {a.shape}")
    _check_finite(name, a)
    return (a[None], True) if a.ndim == 2 else (a, False)


def _as_vertices(name, x) -> np.ndarray:
    a = np.asarray(x, np.float64)
    if a.ndim != 2 or a.shape[1] != 3 or a.shape[0] < 3:
        raise ValueError(f"{name} must have shape [V, 3] with V >= 3, got {a.shape}")
    _check_finite(name, a)
    return a


def _as_triangles(triangles, n) -> np.ndarray:
    t = np.asarray(triangles)
    if t.ndim != 2 or t.shape[1] != 3 or t.shape[0] == 0 or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"triangles must be an integer array [F, 3] with F >= 1, got {t.shape} {t.dtype}")
    t = t.astype(np.int64)
    if t.min() < 0 or t.max() >= n:
        raise ValueError(f"triangles index vertices outside [0, {n})")
    unused = np.setdiff1d(np.arange(n), t)
    if unused.size:
        raise ValueError(f"{unused.size} vertices are used by no triangle (first: {unused[:5]}); "
                         "DR needs a one-ring at every vertex")
    return t


def _check_finite(name, a) -> None:
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
