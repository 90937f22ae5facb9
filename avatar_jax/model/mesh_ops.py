"""Host-side (numpy/scipy) mesh geometry for precomputation, asset building and tests.

Nothing here is on a hot path: these run once when the head model asset is built or checked.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree


def closest_point_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray,
                               c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact closest point on triangles (a, b, c) to points p (Ericson, RTCD 5.1.5).

    Args: all ``[N, 3]`` float64 (row i: point i against triangle i).
    Returns: closest points ``[N, 3]`` and their barycentric coordinates ``[N, 3]``.
    """
    ab, ac, ap = b - a, c - a, p - a
    d1 = np.einsum("ij,ij->i", ab, ap)
    d2 = np.einsum("ij,ij->i", ac, ap)
    bp = p - b
    d3 = np.einsum("ij,ij->i", ab, bp)
    d4 = np.einsum("ij,ij->i", ac, bp)
    cp = p - c
    d5 = np.einsum("ij,ij->i", ab, cp)
    d6 = np.einsum("ij,ij->i", ac, cp)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2

    n = p.shape[0]
    bary = np.zeros((n, 3))
    done = np.zeros(n, bool)

    def assign(mask, w):
        nonlocal done
        m = mask & ~done
        bary[m] = w[m]
        done |= m

    one, zero = np.ones(n), np.zeros(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Vertex regions.
        assign((d1 <= 0) & (d2 <= 0), np.stack([one, zero, zero], 1))
        assign((d3 >= 0) & (d4 <= d3), np.stack([zero, one, zero], 1))
        assign((d6 >= 0) & (d5 <= d6), np.stack([zero, zero, one], 1))
        # Edge regions.
        v = d1 / (d1 - d3)
        assign((vc <= 0) & (d1 >= 0) & (d3 <= 0), np.stack([1 - v, v, zero], 1))
        w = d2 / (d2 - d6)
        assign((vb <= 0) & (d2 >= 0) & (d6 <= 0), np.stack([1 - w, zero, w], 1))
        w = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        assign((va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0), np.stack([zero, 1 - w, w], 1))
        # Interior.
        denom = 1.0 / (va + vb + vc)
        v, w = vb * denom, vc * denom
        assign(np.ones(n, bool), np.stack([1 - v - w, v, w], 1))
    # Degenerate triangles can leave NaNs: fall back to the nearest corner.
    bad = ~np.isfinite(bary).all(1)
    if bad.any():
        corners = np.stack([a[bad], b[bad], c[bad]], 1)
        k = np.argmin(((corners - p[bad, None]) ** 2).sum(-1), 1)
        bary[bad] = np.eye(3)[k]
    q = bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:] * c
    return q, bary


def closest_point_on_mesh(verts: np.ndarray, faces: np.ndarray, points: np.ndarray,
                          k: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact closest point on a triangle mesh to each query point.

    Candidates are first the ``k`` triangles with the nearest centroids; a second pass then
    checks every triangle that could still be closer (centroid within the current distance plus
    that triangle's centroid-to-corner radius), so the result is exact, not a heuristic.

    Args:
      verts: ``[V, 3]``; faces: ``[F, 3]`` int; points: ``[N, 3]``.
    Returns:
      closest ``[N, 3]``, distance ``[N]``, face id ``[N]``, barycentric ``[N, 3]``.
    """
    verts = np.asarray(verts, np.float64)
    points = np.asarray(points, np.float64)
    faces = np.asarray(faces)
    tri = verts[faces]
    centroid = tri.mean(1)
    radii = np.sqrt(((tri - centroid[:, None]) ** 2).sum(-1)).max(1)
    tree = cKDTree(centroid)
    k = min(k, len(faces))
    cdist, cand = tree.query(points, k=k)
    cand = cand.reshape(len(points), k)
    cdist = cdist.reshape(len(points), k)

    def best_of(pidx: np.ndarray, fidx: np.ndarray):
        q, bary = closest_point_on_triangles(points[pidx], *(tri[fidx, i] for i in range(3)))
        return q, np.sqrt(((q - points[pidx]) ** 2).sum(-1)), bary

    pidx = np.repeat(np.arange(len(points)), k)
    q, dist, bary = best_of(pidx, cand.ravel())
    dist = dist.reshape(-1, k)
    j = np.argmin(dist, 1)
    rows = np.arange(len(points))
    best_d = dist[rows, j]
    best_f = cand[rows, j]
    best_q = q.reshape(-1, k, 3)[rows, j]
    best_b = bary.reshape(-1, k, 3)[rows, j]

    # Exactness pass: a triangle within best_d has |p - centroid| <= best_d + its radius. Only
    # points whose k-th centroid is not already beyond best_d + max radius can have one left.
    unsure = np.flatnonzero(cdist[:, -1] <= best_d + radii.max())
    if len(unsure):
        balls = tree.query_ball_point(points[unsure], best_d[unsure] + radii.max() + 1e-9)
        lens = np.fromiter((len(x) for x in balls), int, len(balls))
        extra_p = np.repeat(unsure, lens)
        extra_f = np.concatenate([np.asarray(x, int) for x in balls])
        near = np.sqrt(((points[extra_p] - centroid[extra_f]) ** 2).sum(-1)) \
            <= best_d[extra_p] + radii[extra_f] + 1e-9
        extra_p, extra_f = extra_p[near], extra_f[near]
        q2, d2, b2 = best_of(extra_p, extra_f)
        order = np.lexsort((d2, extra_p))
        first = order[np.r_[True, extra_p[order][1:] != extra_p[order][:-1]]]
        pts_with = extra_p[first]
        better = d2[first] < best_d[pts_with]
        sel, src = pts_with[better], first[better]
        best_d[sel], best_f[sel], best_q[sel], best_b[sel] = d2[src], extra_f[src], q2[src], b2[src]
    return best_q, best_d, best_f, best_b


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
