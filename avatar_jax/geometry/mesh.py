"""Triangle-mesh operators: vertex normals (JAX, on hot paths), the cotangent Laplacian and
topology checks (host-side numpy/scipy, run once when an asset is built or a model prepared).

Meshes are ``verts [V, 3]`` and ``triangles [F, 3]`` (int, counter-clockwise seen from outside).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp


def vertex_normals(verts: jax.Array, triangles: jax.Array) -> jax.Array:
    """Unit area-weighted vertex normals ``[V, 3]`` for ``verts [V, 3]``, ``triangles [F, 3]``.

    Outward for counter-clockwise triangles; a vertex with no (or only zero-area) triangles
    gets the zero vector. Works under jit/vmap (fixed shapes) and on numpy inputs.
    """
    t = verts[triangles]
    fn = jnp.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])  # length = 2 * area: area weighting
    n = jax.ops.segment_sum(jnp.repeat(fn, 3, axis=0), jnp.asarray(triangles).reshape(-1),
                            num_segments=verts.shape[0])
    return n / jnp.maximum(jnp.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


def cotangent_laplacian(verts: np.ndarray, faces: np.ndarray) -> sp.csr_matrix:
    """Cotangent Laplacian ``[V, V]``: L_ij = -(cot a + cot b)/2 on edges, L_ii = -sum_j L_ij.

    Boundary edges get their single cot term. Dimensionless; rows sum to zero; symmetric.
    """
    verts = np.asarray(verts, np.float64)
    faces = np.asarray(faces)
    n = len(verts)
    rows, cols, vals = [], [], []
    for i in range(3):
        i0, i1, i2 = faces[:, i], faces[:, (i + 1) % 3], faces[:, (i + 2) % 3]
        # Angle at i0 is opposite edge (i1, i2).
        e1 = verts[i1] - verts[i0]
        e2 = verts[i2] - verts[i0]
        cot = np.einsum("ij,ij->i", e1, e2) / np.linalg.norm(np.cross(e1, e2), axis=1)
        rows += [i1, i2]
        cols += [i2, i1]
        vals += [-0.5 * cot, -0.5 * cot]
    off = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(n, n)).tocsr()
    diag = -np.asarray(off.sum(1)).ravel()
    return (off + sp.diags(diag)).tocsr()


def face_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit face normals ``[F, 3]`` (right-hand rule on the corner order)."""
    t = np.asarray(verts, np.float64)[faces]
    n = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300)


def edge_face_counts(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique undirected edges ``[E, 2]`` (sorted ids) and how many faces use each ``[E]``."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    uniq, counts = np.unique(e, axis=0, return_counts=True)
    return uniq, counts


def is_consistently_oriented(faces: np.ndarray) -> bool:
    """True when every interior edge is traversed once in each direction (coherent winding)."""
    d = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    _, counts = np.unique(d, axis=0, return_counts=True)
    return bool(counts.max() == 1)
